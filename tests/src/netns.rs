//! Network namespaces, the NAT44 example chain, and processes inside them.
//!
//! Every object here removes what it created when dropped, so a failing test
//! (which unwinds) still leaves no namespace, pin or link behind. Names carry
//! a per-process, per-call prefix so tests run in parallel without clashing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A unique short prefix for namespace and instance names.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        ip(&v);
    }

    /// A command run inside the namespace with the host's mounts (so
    /// `/sys/fs/bpf` stays visible, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `program args` in the namespace; returns the output, success or not.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// Runs and asserts success.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        run(self.command(program).args(args))
    }

    /// The interface's index inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = run(Command::new("ip").args(["-n", &self.name, "-o", "link", "show", ifname]));
        let s = String::from_utf8_lossy(&out.stdout);
        s.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {s:?}"))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.run("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace (setns is
    /// per-thread), for kernel queries that only work from inside it.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: a valid netns fd; only this thread changes namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in {} panicked", self.name))
    }

    /// Names of the programs attached to `ifname`: tcx ingress (which
    /// Debian's bpftool 7.1 cannot list) and XDP.
    pub fn attached_programs(&self, ifname: &str) -> Vec<String> {
        let name = ifname.to_owned();
        let mut progs = self.within(move || {
            use aya::programs::{SchedClassifier, TcAttachType};
            match SchedClassifier::query_tcx(&name, TcAttachType::Ingress) {
                Ok((_, infos)) => infos
                    .iter()
                    .map(|i| i.name_as_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>(),
                Err(e) => panic!("query tcx on {name}: {e}"),
            }
        });
        // `ip -d link` shows an attached XDP program as "prog/xdp id N name X".
        let out = run(Command::new("ip").args(["-n", &self.name, "-d", "link", "show", ifname]));
        let text = String::from_utf8_lossy(&out.stdout);
        for rest in text.split("prog/xdp id ").skip(1) {
            if let Some(n) = rest
                .split(" name ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
            {
                progs.push(n.to_owned());
            }
        }
        progs
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The classic NAT44 example chain:
/// `client` 192.168.100.10/24 — `cnf` c0 192.168.100.1/24 | c1 80.80.80.100/24 — `server` 80.80.80.80/24.
///
/// The cnf forwards in the kernel until an agent attaches; the server routes
/// the client subnet back through the cnf, as a forwarding-only hop needs.
#[derive(Debug)]
pub struct Chain {
    // Field order is drop order: the cnf (and its veths) go first.
    pub cnf: Netns,
    pub client: Netns,
    pub server: Netns,
    pub prefix: String,
}

pub const CLIENT_IP: &str = "192.168.100.10";
pub const CNF_INSIDE_IP: &str = "192.168.100.1";
pub const CNF_OUTSIDE_IP: &str = "80.80.80.100";
pub const SERVER_IP: &str = "80.80.80.80";

impl Chain {
    /// Builds the chain; `prefix` makes the namespace names unique.
    pub fn new(prefix: &str) -> Self {
        let cnf = Netns::new(&format!("{prefix}-cnf"));
        let client = Netns::new(&format!("{prefix}-client"));
        let server = Netns::new(&format!("{prefix}-webserver"));
        // Veth pairs are created directly across namespaces, so their names
        // never exist in the root namespace and cannot clash between tests.
        for (cnf_if, peer) in [("c0", &client), ("c1", &server)] {
            cnf.ip(&[
                "link",
                "add",
                cnf_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                peer.name(),
            ]);
        }
        cnf.ip(&["addr", "add", "192.168.100.1/24", "dev", "c0"]);
        cnf.ip(&["addr", "add", "80.80.80.100/24", "dev", "c1"]);
        cnf.ip(&["link", "set", "c0", "up"]);
        cnf.ip(&["link", "set", "c1", "up"]);
        cnf.sysctl("net.ipv4.ip_forward", "1");

        client.ip(&["addr", "add", "192.168.100.10/24", "dev", "eth0"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["route", "add", "80.80.80.0/24", "via", CNF_INSIDE_IP]);
        server.ip(&["addr", "add", "80.80.80.80/24", "dev", "eth0"]);
        server.ip(&["link", "set", "eth0", "up"]);
        server.ip(&["route", "add", "192.168.100.0/24", "via", CNF_OUTSIDE_IP]);
        for ns in [&client, &server] {
            // veth only delivers XDP-redirected frames to a peer whose NAPI is
            // on: GRO (or an XDP program) on the receiving end enables it.
            ns.run("ethtool", &["-K", "eth0", "gro", "on"]);
        }
        Self {
            cnf,
            client,
            server,
            prefix: prefix.to_owned(),
        }
    }
    /// Pings the server from the client `count` times, asserting all replies.
    pub fn ping(&self, count: u32) {
        let out = self.client.output(
            "ping",
            &["-c", &count.to_string(), "-i", "0.2", "-W", "2", SERVER_IP],
        );
        assert!(
            out.status.success(),
            "ping through the cnf failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Starts the HTTP echo server binary `bin` on port 8080 in the server
    /// namespace and waits until it accepts connections.
    pub fn start_http_server(&self, bin: &Path) -> Proc {
        let mut cmd = self.server.command(bin);
        cmd.arg("0.0.0.0:8080");
        let mut p = Proc::spawn(cmd, "http server");
        p.wait_until(Duration::from_secs(10), || {
            self.server
                .output("bash", &["-c", "exec 3<>/dev/tcp/127.0.0.1/8080"])
                .status
                .success()
        });
        p
    }

    /// Native XDP on veth turns skbs into XDP frames and loses their
    /// CHECKSUM_PARTIAL state, so senders behind it must checksum in software.
    pub fn disable_peer_tx_checksum(&self) {
        for ns in [&self.client, &self.server] {
            ns.run("ethtool", &["-K", "eth0", "tx", "off"]);
        }
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Self {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `sig` and waits up to `timeout` for the exit; returns the status.
    pub fn signal_and_wait(
        &mut self,
        sig: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `ready()` holds, panicking if the process exits first or
    /// the deadline passes.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("{} exited before it was ready: {st}", self.what);
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes the child out, e.g. to collect its output.
    pub fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
