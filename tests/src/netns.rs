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

    /// A counter of `dev` from its sysfs statistics (`rx_packets`,
    /// `tx_packets`, ...), read through `ip netns exec`, which mounts the
    /// namespace's own sysfs.
    pub fn link_stat(&self, dev: &str, stat: &str) -> u64 {
        let path = format!("/sys/class/net/{dev}/statistics/{stat}");
        let out = run(Command::new("ip").args(["netns", "exec", &self.name, "cat", &path]));
        let s = String::from_utf8_lossy(&out.stdout);
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path} in {}: {s:?}: {e}", self.name))
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

/// The classic NAT44 example chain and its variants:
/// `client` 192.168.100.10/24 — `cnf` c0 192.168.100.1/24 | c1 80.80.80.100/24 — `server` 80.80.80.80/24.
///
/// [`ChainSpec`] adds a second inside host on a bridged LAN (for hairpinning),
/// a router between the cnf and a far server subnet (so ICMP errors come from
/// a hop the NAT has to translate), and decides whether the outside knows a
/// route back to the inside subnet (a forwarding-only hop needs one; a NAT
/// must not, so untranslated packets cannot find their way back).
#[derive(Debug)]
pub struct Chain {
    // Field order is drop order: the cnf (and its veths) go first.
    pub cnf: Netns,
    pub client: Netns,
    pub server: Netns,
    /// The second inside host, on the same LAN as `client`.
    pub client2: Option<Netns>,
    /// The bridge joining the cnf's c0 and the inside hosts.
    pub lan: Option<Netns>,
    /// The router between the cnf's c1 and the server's subnet.
    pub router: Option<Netns>,
    pub prefix: String,
    pub client_ip: String,
    pub client2_ip: Option<String>,
    pub server_ip: String,
}

pub const CLIENT_IP: &str = "192.168.100.10";
pub const CLIENT2_IP: &str = "192.168.100.11";
pub const INSIDE_SUBNET: &str = "192.168.100.0/24";
pub const CNF_INSIDE_IP: &str = "192.168.100.1";
pub const CNF_OUTSIDE_IP: &str = "80.80.80.100";
pub const OUTSIDE_SUBNET: &str = "80.80.80.0/24";
pub const SERVER_IP: &str = "80.80.80.80";
/// The router's address on the cnf's outside link.
pub const ROUTER_NEAR_IP: &str = "80.80.80.1";
/// The router's address on the far link.
pub const ROUTER_FAR_IP: &str = "80.80.81.1";
pub const FAR_SUBNET: &str = "80.80.81.0/24";
/// The server's address when it sits behind the router.
pub const FAR_SERVER_IP: &str = "80.80.81.80";

/// What to build around the cnf; [`ChainSpec::default`] is the classic chain
/// as plain forwarding needs it.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub client_ip: String,
    /// A second inside host: both then hang off a bridge namespace.
    pub client2_ip: Option<String>,
    /// A router namespace between the cnf and the server, whose far link
    /// (router ↔ server) has this MTU.
    pub router_far_mtu: Option<u32>,
    /// Whether the outside hosts route the inside subnet back via the cnf.
    pub outside_routes_inside: bool,
}

impl Default for ChainSpec {
    fn default() -> Self {
        Self {
            client_ip: CLIENT_IP.to_owned(),
            client2_ip: None,
            router_far_mtu: None,
            outside_routes_inside: true,
        }
    }
}

impl ChainSpec {
    /// A chain for NAT: the outside has no route to the inside subnet, so
    /// only translated traffic gets answers.
    pub fn nat() -> Self {
        Self {
            outside_routes_inside: false,
            ..Self::default()
        }
    }

    pub fn client_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.to_owned();
        self
    }

    pub fn second_client(mut self, ip: &str) -> Self {
        self.client2_ip = Some(ip.to_owned());
        self
    }

    pub fn router(mut self, far_mtu: u32) -> Self {
        self.router_far_mtu = Some(far_mtu);
        self
    }
}

/// A veth pair from `a`'s `a_if` to `b`'s `b_if`, created across namespaces
/// so its names never exist in the root namespace and cannot clash between
/// tests.
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
}

/// Gives `ifname` in `ns` an address and brings it up.
fn address(ns: &Netns, ifname: &str, cidr: &str) {
    ns.ip(&["addr", "add", cidr, "dev", ifname]);
    ns.ip(&["link", "set", ifname, "up"]);
}

impl Chain {
    /// Builds the classic chain; `prefix` makes the namespace names unique.
    pub fn new(prefix: &str) -> Self {
        Self::build(prefix, &ChainSpec::default())
    }

    pub fn build(prefix: &str, spec: &ChainSpec) -> Self {
        let cnf = Netns::new(&format!("{prefix}-cnf"));
        let client = Netns::new(&format!("{prefix}-client"));
        let server = Netns::new(&format!("{prefix}-webserver"));
        let client2 = spec
            .client2_ip
            .as_ref()
            .map(|_| Netns::new(&format!("{prefix}-client2")));
        let lan = client2
            .as_ref()
            .map(|_| Netns::new(&format!("{prefix}-lan")));
        let router = spec
            .router_far_mtu
            .map(|_| Netns::new(&format!("{prefix}-rtr")));

        // Inside: the client directly on c0, or every inside host on a bridge.
        let mut inside_hosts = vec![(&client, spec.client_ip.as_str())];
        if let (Some(lan), Some(c2), Some(ip2)) = (&lan, &client2, &spec.client2_ip) {
            inside_hosts.push((c2, ip2.as_str()));
            lan.ip(&["link", "add", "br0", "type", "bridge"]);
            lan.ip(&["link", "set", "br0", "up"]);
            veth(&cnf, "c0", lan, "p0");
            for (i, (host, _)) in inside_hosts.iter().enumerate() {
                veth(host, "eth0", lan, &format!("p{}", i + 1));
            }
            for i in 0..=inside_hosts.len() {
                let port = format!("p{i}");
                lan.ip(&["link", "set", &port, "master", "br0"]);
                lan.ip(&["link", "set", &port, "up"]);
            }
            // The cnf redirects frames into this port; see the GRO note below.
            lan.run("ethtool", &["-K", "p0", "gro", "on"]);
        } else {
            veth(&cnf, "c0", &client, "eth0");
        }
        address(&cnf, "c0", "192.168.100.1/24");

        // Outside: the server directly on c1, or behind the router.
        let c1_up = |cnf: &Netns| address(cnf, "c1", "80.80.80.100/24");
        let server_ip = if let (Some(rtr), Some(mtu)) = (&router, spec.router_far_mtu) {
            veth(&cnf, "c1", rtr, "r0");
            c1_up(&cnf);
            veth(rtr, "r1", &server, "eth0");
            address(rtr, "r0", "80.80.80.1/24");
            address(rtr, "r1", "80.80.81.1/24");
            let mtu = mtu.to_string();
            rtr.ip(&["link", "set", "r1", "mtu", &mtu]);
            server.ip(&["link", "set", "eth0", "mtu", &mtu]);
            rtr.sysctl("net.ipv4.ip_forward", "1");
            rtr.run("ethtool", &["-K", "r0", "gro", "on"]);
            address(&server, "eth0", "80.80.81.80/24");
            server.ip(&["route", "add", "default", "via", ROUTER_FAR_IP]);
            cnf.ip(&["route", "add", FAR_SUBNET, "via", ROUTER_NEAR_IP]);
            if spec.outside_routes_inside {
                rtr.ip(&["route", "add", INSIDE_SUBNET, "via", CNF_OUTSIDE_IP]);
            }
            // Traceroute and tracepath draw several ICMP errors per hop in a
            // burst; the kernel's per-destination rate limit would turn
            // some into silent "*" hops.
            for ns in [&cnf, rtr, &server] {
                ns.sysctl("net.ipv4.icmp_ratelimit", "0");
            }
            FAR_SERVER_IP
        } else {
            veth(&cnf, "c1", &server, "eth0");
            c1_up(&cnf);
            address(&server, "eth0", "80.80.80.80/24");
            SERVER_IP
        };
        if spec.outside_routes_inside {
            server.ip(&["route", "add", INSIDE_SUBNET, "via", CNF_OUTSIDE_IP]);
        }
        cnf.sysctl("net.ipv4.ip_forward", "1");

        for (host, ip) in &inside_hosts {
            address(host, "eth0", &format!("{ip}/24"));
            host.ip(&["route", "add", OUTSIDE_SUBNET, "via", CNF_INSIDE_IP]);
            if router.is_some() {
                host.ip(&["route", "add", FAR_SUBNET, "via", CNF_INSIDE_IP]);
            }
        }
        for ns in inside_hosts.iter().map(|(h, _)| *h).chain([&server]) {
            // veth only delivers XDP-redirected frames to a peer whose NAPI is
            // on: GRO (or an XDP program) on the receiving end enables it.
            ns.run("ethtool", &["-K", "eth0", "gro", "on"]);
        }
        let client2_ip = spec.client2_ip.clone();
        Self {
            cnf,
            client,
            server,
            client2,
            lan,
            router,
            prefix: prefix.to_owned(),
            client_ip: spec.client_ip.clone(),
            client2_ip,
            server_ip: server_ip.to_owned(),
        }
    }

    /// Pings the server from the client `count` times, asserting all replies.
    pub fn ping(&self, count: u32) {
        let out = self.client.output(
            "ping",
            &[
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                &self.server_ip,
            ],
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
        self.server.start_http_echo(bin, "0.0.0.0:8080")
    }

    /// The hosts that send into the cnf, with the interface they send from.
    fn senders(&self) -> Vec<(&Netns, &str)> {
        let mut v = vec![(&self.client, "eth0")];
        if let Some(c2) = &self.client2 {
            v.push((c2, "eth0"));
        }
        // A router forwards the server's skbs as they are, partial checksums
        // included, so its cnf-facing port is the sender the cnf sees.
        match &self.router {
            Some(r) => v.extend([(r, "r0"), (&self.server, "eth0")]),
            None => v.push((&self.server, "eth0")),
        }
        v
    }

    /// Native XDP on veth turns skbs into XDP frames and loses their
    /// CHECKSUM_PARTIAL state, so senders behind it must checksum in software.
    pub fn disable_peer_tx_checksum(&self) {
        for (ns, ifname) in self.senders() {
            ns.run("ethtool", &["-K", ifname, "tx", "off"]);
        }
    }

    /// Makes the cnf's own interfaces complete checksums in software on
    /// transmit, so every receiver verifies what the datapath produced.
    ///
    /// On veth, a packet a local socket left `CHECKSUM_PARTIAL` stays partial
    /// all the way to the receiving socket, which then trusts it: a NAT that
    /// corrupts the pseudo-header seed in the checksum field would never be
    /// caught. With `tx off` on the cnf's egress the kernel folds that seed
    /// into a real checksum right after the datapath redirected the packet,
    /// and the receiver checks it (and counts `InCsumErrors` if it is wrong).
    /// The senders keep their default offloads: the datapath still sees
    /// partial checksums, which is what the TC hook must handle.
    pub fn verify_checksums_after_cnf(&self) {
        for ifname in ["c0", "c1"] {
            self.cnf.run("ethtool", &["-K", ifname, "tx", "off"]);
        }
    }

    /// Every namespace of the chain, for diagnostics.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.cnf, &self.client, &self.server];
        v.extend(self.client2.iter());
        v.extend(self.lan.iter());
        v.extend(self.router.iter());
        v
    }
}

/// What `iperf3 --json` reported about one run.
#[derive(Clone, Debug, Default)]
pub struct Iperf3Report {
    /// Bytes the sending side wrote (`end.sum_sent.bytes`).
    pub sent_bytes: u64,
    /// Bytes the receiving side read (`end.sum_received.bytes`).
    pub received_bytes: u64,
    /// UDP only: datagrams the receiver counted and found missing.
    pub received_packets: Option<u64>,
    pub lost_packets: Option<u64>,
    pub json: String,
}

/// The unsigned integer after `"key":` in `text`, if any.
fn json_u64(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The flat JSON object that follows `"key":` in `text` (iperf3's `sum_*`
/// objects hold no nested objects).
fn json_object<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{key}\""))?;
    let open = start + text[start..].find('{')?;
    let close = open + text[open..].find('}')?;
    Some(&text[open..=close])
}

impl Iperf3Report {
    fn parse(json: String) -> Result<Self, String> {
        if let Some(i) = json.find("\"error\"") {
            let tail: String = json[i..].chars().take(300).collect();
            return Err(format!("iperf3 reported {tail}"));
        }
        let sent = json_object(&json, "sum_sent").ok_or("no end.sum_sent")?;
        let received = json_object(&json, "sum_received").ok_or("no end.sum_received")?;
        let sent_bytes = json_u64(sent, "bytes").ok_or("no sum_sent.bytes")?;
        let received_bytes = json_u64(received, "bytes").ok_or("no sum_received.bytes")?;
        let received_packets = json_u64(received, "packets");
        let lost_packets = json_u64(received, "lost_packets");
        Ok(Self {
            sent_bytes,
            received_bytes,
            received_packets,
            lost_packets,
            json,
        })
    }
}

/// Hops of a traceroute: for each TTL, the addresses that answered.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub hops: Vec<Vec<String>>,
    pub text: String,
}

impl Trace {
    fn parse(text: String) -> Self {
        let mut hops = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(n) = words.next().and_then(|w| w.parse::<usize>().ok()) else {
                continue; // the "traceroute to ..." header
            };
            let addrs: Vec<String> = words
                .filter(|w| w.parse::<std::net::Ipv4Addr>().is_ok())
                .map(str::to_owned)
                .collect();
            if hops.len() < n {
                hops.resize(n, Vec::new());
            }
            hops[n - 1].extend(addrs);
        }
        Self { hops, text }
    }
}

/// What tracepath concluded (its `Resume:` line).
#[derive(Clone, Debug, Default)]
pub struct TracepathReport {
    pub pmtu: Option<u32>,
    pub hops: Option<u32>,
    pub reached: bool,
    pub text: String,
}

impl TracepathReport {
    fn parse(text: String) -> Self {
        let resume = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Resume:"))
            .unwrap_or("");
        let after = |key: &str| {
            let mut w = resume.split_whitespace();
            w.position(|x| x == key)?;
            w.next()?.parse().ok()
        };
        Self {
            pmtu: after("pmtu"),
            hops: after("hops"),
            reached: text.lines().any(|l| l.contains("reached")),
            text,
        }
    }
}

/// One UDP flow of `xcnf-udp-echo ask`: the inside port and, if an answer
/// came, the source the echo server saw (`ip:port`).
pub type UdpAnswer = (u16, Option<String>);

impl Netns {
    /// Waits until something listens on `proto` (`tcp`/`udp`) `port`.
    pub fn wait_listening(&self, proc: &mut Proc, proto: &str, port: u16) {
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        proc.wait_until(Duration::from_secs(10), || {
            !self.output("ss", &[flag, &filter]).stdout.is_empty()
        });
    }

    /// Starts the HTTP echo server `bin` on `bind` (`ip:port`) and waits
    /// until it listens.
    pub fn start_http_echo(&self, bin: &Path, bind: &str) -> Proc {
        let mut cmd = self.command(bin);
        cmd.arg(bind);
        let mut p = Proc::spawn(cmd, &format!("http echo on {bind} in {}", self.name));
        self.wait_listening(&mut p, "tcp", port_of(bind));
        p
    }

    /// Starts the UDP echo server `bin` (`xcnf-udp-echo`) on `bind`.
    pub fn start_udp_echo(&self, bin: &Path, bind: &str) -> Proc {
        let mut cmd = self.command(bin);
        cmd.args(["serve", bind]);
        let mut p = Proc::spawn(cmd, &format!("udp echo on {bind} in {}", self.name));
        self.wait_listening(&mut p, "udp", port_of(bind));
        p
    }

    /// Sends one datagram to `to` from each of `ports` on `local_ip` and
    /// collects the echo server's answers (what source it saw).
    pub fn udp_ask(
        &self,
        bin: &Path,
        local_ip: &str,
        ports: std::ops::RangeInclusive<u16>,
        to: &str,
        timeout: Duration,
    ) -> Vec<UdpAnswer> {
        let range = format!("{}-{}", ports.start(), ports.end());
        let ms = timeout.as_millis().to_string();
        let out = self
            .command(bin)
            .args(["ask", local_ip, &range, to, &ms])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let answers: Vec<UdpAnswer> = text
            .lines()
            .filter_map(|l| {
                let (port, answer) = l.split_once(' ')?;
                let answer = (answer != "timeout").then(|| answer.to_owned());
                Some((port.parse().ok()?, answer))
            })
            .collect();
        assert_eq!(
            answers.len(),
            ports.count(),
            "xcnf-udp-echo ask {range} {to} ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        answers
    }

    /// `curl` from this namespace: the body, or curl's error.
    pub fn curl(&self, url: &str, extra: &[&str]) -> Result<String, String> {
        let mut args = vec!["-sS", "--max-time", "10"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.output("curl", &args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "curl {url} from {} ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Starts `iperf3 -s` and waits until it listens on 5201.
    pub fn start_iperf3_server(&self) -> Proc {
        let mut cmd = self.command("iperf3");
        cmd.arg("-s").stdout(Stdio::null()).stderr(Stdio::null());
        let mut p = Proc::spawn(cmd, &format!("iperf3 server in {}", self.name));
        self.wait_listening(&mut p, "tcp", 5201);
        p
    }

    /// Runs an iperf3 client against `server` for `seconds`, with `extra`
    /// arguments (`-u`, `-R`, ...); `timeout` bounds a run that hangs.
    pub fn iperf3(
        &self,
        server: &str,
        seconds: u32,
        extra: &[&str],
    ) -> Result<Iperf3Report, String> {
        let secs = seconds.to_string();
        let mut args = vec![
            "60",
            "iperf3",
            "-c",
            server,
            "-J",
            "--connect-timeout",
            "5000",
            "-t",
            &secs,
        ];
        args.extend_from_slice(extra);
        let out = self.output("timeout", &args);
        let json = String::from_utf8_lossy(&out.stdout).into_owned();
        Iperf3Report::parse(json).map_err(|e| {
            format!(
                "iperf3 {extra:?} to {server} from {} ({}): {e}\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `traceroute -n` to `dst` with `extra` (e.g. `-I` for ICMP echo probes),
    /// one probe in flight at a time so rate limits never hide a hop.
    pub fn traceroute(&self, dst: &str, extra: &[&str]) -> Trace {
        let mut args = vec!["-n", "-N", "1", "-q", "2", "-w", "3", "-m", "8"];
        args.extend_from_slice(extra);
        args.push(dst);
        let out = self.output("traceroute", &args);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Trace::parse(text)
    }

    pub fn tracepath(&self, dst: &str) -> TracepathReport {
        let out = self.output("tracepath", &["-n", "-m", "8", dst]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        TracepathReport::parse(text)
    }

    /// The namespace's SNMP counters (`/proc/net/snmp`) as `Tcp.InCsumErrors`
    /// and so on.
    pub fn snmp(&self) -> std::collections::BTreeMap<String, i64> {
        let out = self.run("cat", &["/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut m = std::collections::BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some((group, names)), Some((_, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = v.parse() {
                    m.insert(format!("{group}.{n}"), v);
                }
            }
        }
        m
    }

    /// The MAC address of `ifname`.
    pub fn mac(&self, ifname: &str) -> String {
        let out = self.run("ip", &["-o", "link", "show", "dev", ifname]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut w = text.split_whitespace();
        w.position(|x| x == "link/ether");
        w.next()
            .unwrap_or_else(|| panic!("no MAC in {text}"))
            .to_owned()
    }

    /// The link-layer address this namespace resolved `ip` to, if any.
    pub fn neighbor_mac(&self, ip: &str) -> Option<String> {
        let out = self.run("ip", &["neigh", "show", ip]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut w = text.split_whitespace();
        w.position(|x| x == "lladdr")?;
        w.next().map(str::to_owned)
    }
}

/// The port of an `ip:port` string.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
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
    pub fn wait_until(&mut self, timeout: Duration, ready: impl FnMut() -> bool) {
        if let Err(e) = self.try_wait_until(timeout, ready) {
            panic!("{e}");
        }
    }

    /// [`Proc::wait_until`], returning the failure instead of panicking (so
    /// the caller can add what it knows, such as the process's log).
    pub fn try_wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("{} exited before it was ready: {st}", self.what));
            }
            if Instant::now() >= deadline {
                return Err(format!("{} not ready after {timeout:?}", self.what));
            }
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
