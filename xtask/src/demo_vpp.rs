//! `cargo xtask demo --vpp`: the classic chain with the CNF's NAT in VPP.
//!
//! ```text
//! netns client                       VPP "client" (L2 wire)          VPP "nat" (xcnf-agent)           VPP "server" (L2 wire)           netns webserver
//! c0 192.168.100.10 ==veth== host-vpp0 ─ bd1 ─ memif slave ~~ memif master 192.168.100.1 (in)
//!                                                               memif master 80.80.80.100 (out) ~~ memif slave ─ bd1 ─ host-vpp0 ==veth== s0 80.80.80.80
//! ```
//!
//! Three real VPP processes, each with a startup.conf generated here (no
//! hugepages, no DPDK). The client and web server VPPs are plain L2 wires
//! between an af_packet interface on a veth and a memif slave, configured
//! with vppctl: they stand in for the NSM forwarder or the neighbouring CNFs
//! that would own those memifs. The NAT VPP gets nothing but its startup
//! config: `xcnf-agent` creates the memif masters, their addresses and
//! nat44-ed through VPP's binary API, from deploy/examples/nat44-memif.yaml
//! with its socket paths moved into the run directory. The client and web
//! server are kernel network namespaces, as in the eBPF demo, and the web
//! server has no route to the inside subnet. Everything (VPPs, namespaces,
//! /dev/shm segments, sockets, run directory) goes on the way out, also on
//! failure and Ctrl-C; the VPPs also die with xtask if it is killed.

use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use xcnf_agent::config::Config;
use xcnf_tests::{
    agent::{Agent, abridged, wait_all_configured},
    netns::{Netns, Proc, SERVER_IP},
};

use crate::{
    demo::{check_interrupt, prepare, print_xcnfctl},
    setup,
};

const PREFIX: &str = "xcnf-demo-vpp";
const CONFIG: &str = "deploy/examples/nat44-memif.yaml";
const CLIENT_ADDR: &str = "192.168.100.10/24";
const CLIENT_GATEWAY: &str = "192.168.100.1";
const SERVER_ADDR: &str = "80.80.80.80/24";
/// Plugins of the NAT VPP (ping: VPP answers echo requests to its own
/// addresses) and of the two wire VPPs.
const NAT_PLUGINS: &[&str] = &["memif", "nat", "ping"];
const WIRE_PLUGINS: &[&str] = &["memif", "af_packet"];
/// Generous: three VPPs, the agent and two builders share two cores.
const PATIENCE: Duration = Duration::from_secs(90);

const NO_VPP: &str = "\
cargo xtask demo --vpp needs a VPP build and found no `vpp` on PATH.
Point it at one with `cargo xtask demo --vpp --vpp-bin /path/to/vpp` (vppctl is taken
from the same directory, else from PATH). The demo starts three instances of it, so it needs:
  - the memif, nat and ping plugins (the CNF's VPP, configured by xcnf-agent),
  - the memif and af_packet plugins (the client's and web server's VPPs, L2 wires),
  - no DPDK and no hugepages: the generated startup.conf has `buffers { page-size 4k }`
    and `memory { main-heap-page-size 4k }`.
VPP v26.06 is the version checked (README, VPP compatibility); building it from the FDio/vpp
sources with only those plugins takes about 10 minutes.";

/// `vpp` and the `vppctl` that drives it.
struct VppBins {
    vpp: PathBuf,
    vppctl: PathBuf,
}

/// `--vpp-bin`, else `vpp` on PATH; `vppctl` next to it, else on PATH.
fn find_vpp(explicit: Option<&Path>) -> Result<VppBins> {
    let vpp = match explicit {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(p) => bail!("--vpp-bin {}: no such file", p.display()),
        None => setup::which("vpp").ok_or_else(|| anyhow!("{NO_VPP}"))?,
    };
    let beside = vpp.with_file_name("vppctl");
    let vppctl = if beside.is_file() {
        beside
    } else {
        setup::which("vppctl").ok_or_else(|| {
            anyhow!(
                "no vppctl next to {} nor on PATH: the demo configures the client's and web server's VPPs with it",
                vpp.display()
            )
        })?
    };
    Ok(VppBins { vpp, vppctl })
}

pub fn run(vpp_bin: Option<&Path>) -> Result<()> {
    // Before building anything: a missing VPP is the likeliest problem. It
    // ends the demo with status 2 and only the explanation (no error chain
    // or backtrace around it): the demo did not run, but nothing failed.
    let bins = match find_vpp(vpp_bin) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    prepare("cargo xtask demo --vpp")?;
    println!(
        "VPP: {} (vppctl {})",
        bins.vpp.display(),
        bins.vppctl.display()
    );
    remove_leftovers();

    let run_dir = std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()));
    let demo = DemoConfig::derive(&run_dir.join("nat"))?;

    println!(
        "\n== topology: client {CLIENT_ADDR} — VPP wire ~memif~ VPP nat (192.168.100.1 | 80.80.80.100, xcnf-agent) ~memif~ VPP wire — webserver {SERVER_ADDR}"
    );
    println!(
        "   (the web server has no route to 192.168.100.0/24: it can only answer translated traffic)"
    );
    let client = Netns::new(&format!("{PREFIX}-client"));
    let server = Netns::new(&format!("{PREFIX}-webserver"));
    let cnf = Netns::new(&format!("{PREFIX}-cnf"));
    kernel_endpoint(&client, CLIENT_ADDR, Some(CLIENT_GATEWAY));
    kernel_endpoint(&server, SERVER_ADDR, None);
    let mut lab = Lab::new(run_dir)?;
    check_interrupt()?;

    println!("\n== starting three VPPs in {}", lab.dir.display());
    lab.start(&bins, &cnf, "nat", NAT_PLUGINS)?;
    lab.start(&bins, &client, "client", WIRE_PLUGINS)?;
    lab.start(&bins, &server, "server", WIRE_PLUGINS)?;
    for vpp in &mut lab.vpps {
        vpp.wait_up()?;
        vpp.check_plugins()?;
    }
    println!("{}", lab.vpps[0].cli("show version")?.trim());
    check_interrupt()?;

    println!(
        "\n== client and web server VPPs: af_packet on the veth and a memif slave in bridge domain 1"
    );
    lab.vpps[1].wire(&demo.inside_socket)?;
    lab.vpps[2].wire(&demo.outside_socket)?;
    check_interrupt()?;

    println!("\n== starting an HTTP server in {}", server.name());
    let http = server.start_http_echo(
        &setup::root().join("target/debug/xcnf-http-echo"),
        &format!("{SERVER_IP}:8080"),
    );
    check_interrupt()?;

    let api = lab.vpps[0].dir.join("api.sock");
    println!(
        "\n== starting xcnf-agent in {} with {CONFIG} (memif sockets in {}), --vpp-api-socket {}",
        cnf.name(),
        lab.vpps[0].dir.display(),
        api.display()
    );
    println!("{}", demo.yaml.trim_end());
    let api_arg = api.display().to_string();
    let agent = Agent::start(
        &cnf,
        &demo.instance,
        &demo.yaml,
        &["--vpp-api-socket", &api_arg],
    );
    wait_all_configured(&cnf, &demo.instance, PATIENCE)
        .map_err(|e| anyhow!("{e}\n--- agent log ---\n{}", abridged(&agent.log())))?;
    println!("every item configured");
    print_xcnfctl(&cnf, &demo.instance, &["status"])?;
    check_interrupt()?;

    println!("\n== waiting for the memifs to connect (ping {SERVER_IP} from client)");
    wait_reachable(&client, &lab)?;
    let ping = client.output("ping", &["-c", "3", "-i", "0.2", SERVER_IP]);
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    check_interrupt()?;

    let url = format!("http://{SERVER_IP}:8080/");
    println!("\n== curl {url} from client");
    let seen = client.curl(&url, &[]).map_err(|e| anyhow!("{e}"))?;
    println!("web server saw source address: {seen}");
    check_interrupt()?;

    print_xcnfctl(&cnf, &demo.instance, &["vpp", "cli", "show nat44 sessions"])?;
    print_xcnfctl(&cnf, &demo.instance, &["nat", "sessions"])?;

    println!("\n== agent log");
    println!("{}", abridged(&agent.log()));

    println!("\n== tearing down");
    drop(agent);
    drop(http);
    drop(lab);
    drop((cnf, server, client));
    let seen_ip: Ipv4Addr = seen
        .parse()
        .with_context(|| format!("the web server's answer {seen:?} is not an address"))?;
    if !demo
        .pools
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&seen_ip))
    {
        bail!(
            "the web server saw {seen}, not an address of the pool {}",
            demo.pools_text()
        );
    }
    println!(
        "done: the web server saw {seen}, from the pool {} (nat44-ed picks the pool address by a hash of the inside source)",
        demo.pools_text()
    );
    Ok(())
}

/// The agent's config: the example, with its memif sockets in the run
/// directory, and the facts the demo takes from it.
struct DemoConfig {
    instance: String,
    yaml: String,
    /// The memif sockets of the NAT's inside and outside interfaces, which
    /// the client's and web server's VPPs connect to.
    inside_socket: PathBuf,
    outside_socket: PathBuf,
    pools: Vec<(Ipv4Addr, Ipv4Addr)>,
}

impl DemoConfig {
    fn derive(socket_dir: &Path) -> Result<Self> {
        let path = setup::root().join(CONFIG);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut cfg = Config::parse(&text).map_err(|e| anyhow!("{CONFIG}: {e}"))?;
        for iface in &mut cfg.spec.interfaces {
            if let Some(m) = &mut iface.memif {
                let file = Path::new(&m.socket).file_name().ok_or_else(|| {
                    anyhow!(
                        "{CONFIG}: interface {}: memif socket {:?} has no file name",
                        iface.name,
                        m.socket
                    )
                })?;
                m.socket = socket_dir.join(file).display().to_string();
            }
        }
        let nat = cfg
            .spec
            .nat44
            .as_ref()
            .ok_or_else(|| anyhow!("{CONFIG}: no nat44 section"))?;
        let socket_of = |side: &[String], what: &str| -> Result<PathBuf> {
            let name = side
                .first()
                .ok_or_else(|| anyhow!("{CONFIG}: spec.nat44.{what} is empty"))?;
            cfg.spec
                .interfaces
                .iter()
                .find(|i| &i.name == name)
                .and_then(|i| i.memif.as_ref())
                .map(|m| PathBuf::from(&m.socket))
                .ok_or_else(|| {
                    anyhow!("{CONFIG}: spec.nat44.{what}: {name} is not a memif interface")
                })
        };
        let inside_socket = socket_of(&nat.inside, "inside")?;
        let outside_socket = socket_of(&nat.outside, "outside")?;
        let pools = nat
            .pools
            .iter()
            .map(|p| -> Result<(Ipv4Addr, Ipv4Addr)> {
                let first: Ipv4Addr = p
                    .first
                    .parse()
                    .with_context(|| format!("{CONFIG}: pool {}", p.first))?;
                let last = match &p.last {
                    Some(l) => l.parse().with_context(|| format!("{CONFIG}: pool {l}"))?,
                    None => first,
                };
                Ok((first, last))
            })
            .collect::<Result<Vec<_>>>()?;
        let yaml = serde_yaml::to_string(&cfg).context("writing the demo config")?;
        Ok(Self {
            instance: cfg.metadata.name.clone(),
            yaml,
            inside_socket,
            outside_socket,
            pools,
        })
    }

    fn pools_text(&self) -> String {
        self.pools
            .iter()
            .map(|(f, l)| format!("{f}-{l}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A kernel endpoint in `ns`: `c0` with `addr`, its veth peer `vpp0` left
/// for the VPP in the same namespace to take with af_packet.
fn kernel_endpoint(ns: &Netns, addr: &str, gateway: Option<&str>) {
    ns.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "vpp0"]);
    ns.ip(&["addr", "add", addr, "dev", "c0"]);
    ns.ip(&["link", "set", "c0", "up"]);
    ns.ip(&["link", "set", "vpp0", "up"]);
    // Full checksums from the kernel: af_packet and memif carry no offload
    // metadata, so a partial checksum would arrive as a wrong one.
    ns.run("ethtool", &["-K", "c0", "tx", "off"]);
    if let Some(gw) = gateway {
        ns.ip(&["route", "add", "default", "via", gw]);
    }
}

/// Pings until one answer comes back (memif slaves retry their connection
/// every few seconds) or [`PATIENCE`] runs out.
fn wait_reachable(client: &Netns, lab: &Lab) -> Result<()> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        check_interrupt()?;
        if client
            .output("ping", &["-c", "1", "-W", "1", SERVER_IP])
            .status
            .success()
        {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let mut why = String::new();
            for vpp in &lab.vpps {
                why.push_str(&format!(
                    "--- VPP {}: show memif ---\n{}\n",
                    vpp.name,
                    vpp.cli("show memif").unwrap_or_else(|e| e.to_string())
                ));
            }
            bail!("{SERVER_IP} not reachable from the client after {PATIENCE:?}\n{why}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The run directory and the VPPs in it; dropping it stops them and removes
/// their files.
struct Lab {
    dir: PathBuf,
    vpps: Vec<Vpp>,
}

impl Lab {
    fn new(dir: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            vpps: Vec::new(),
        })
    }

    /// The API segment prefix of every instance starts with this, so its
    /// /dev/shm files can be found again.
    fn shm_prefix(&self) -> String {
        format!("{PREFIX}-{}-", std::process::id())
    }

    /// Starts instance `name` in `ns` (not waiting for it).
    fn start(
        &mut self,
        bins: &VppBins,
        ns: &Netns,
        name: &'static str,
        plugins: &[&str],
    ) -> Result<()> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("startup.conf");
        let segment = format!("{}{name}", self.shm_prefix());
        std::fs::write(&conf, startup_conf(&dir, &segment, plugins))
            .with_context(|| format!("writing {}", conf.display()))?;
        let log = dir.join("stdout.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.command(&bins.vpp);
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork
        // and exec. The signal survives nsenter's exec of vpp, so a VPP never
        // outlives an xtask that was killed without a chance to clean up.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = Proc::spawn(cmd, &format!("VPP {name}"));
        self.vpps.push(Vpp {
            name,
            proc,
            dir,
            vppctl: bins.vppctl.clone(),
        });
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM, then SIGKILL after 5 s (Proc's drop), before their files go.
        self.vpps.clear();
        remove_shm(&self.shm_prefix());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Our own minimal startup.conf: private runtime dir and sockets, a unique
/// API segment prefix (else instances collide on /dev/shm/vpe-api), 4k
/// pages everywhere (no hugepages), only the plugins named.
fn startup_conf(dir: &Path, segment: &str, plugins: &[&str]) -> String {
    let d = dir.display();
    let plugins: String = plugins
        .iter()
        .map(|p| format!("  plugin {p}_plugin.so {{ enable }}\n"))
        .collect();
    format!(
        "unix {{
  nodaemon
  runtime-dir {d}
  cli-listen {d}/cli.sock
  log {d}/vpp.log
  poll-sleep-usec 100
  nocolor
  nobanner
}}
socksvr {{ socket-name {d}/api.sock }}
api-segment {{ prefix {segment} }}
statseg {{
  socket-name {d}/stats.sock
  size 8M
  page-size 4k
}}
memory {{
  main-heap-size 256M
  main-heap-page-size 4k
}}
buffers {{
  buffers-per-numa 16384
  page-size 4k
}}
plugins {{
  plugin default {{ disable }}
{plugins}}}
logging {{ default-log-level info default-syslog-log-level error }}
"
    )
}

struct Vpp {
    name: &'static str,
    proc: Proc,
    dir: PathBuf,
    vppctl: PathBuf,
}

impl Vpp {
    /// Runs one CLI command; VPP's complaints come back as errors.
    fn cli(&self, command: &str) -> Result<String> {
        let out = Command::new(&self.vppctl)
            .arg("-s")
            .arg(self.dir.join("cli.sock"))
            .args(command.split_whitespace())
            .output()
            .with_context(|| format!("running {}", self.vppctl.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lower = text.to_lowercase();
        if !out.status.success()
            || lower.contains("unknown input")
            || lower.contains("error")
            || lower.contains("failed")
        {
            bail!(
                "VPP {}: `{command}`: {}{}{}",
                self.name,
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    fn wait_up(&mut self) -> Result<()> {
        let sock = self.dir.join("cli.sock");
        let vppctl = self.vppctl.clone();
        let up = self.proc.try_wait_until(PATIENCE, || {
            sock.exists()
                && Command::new(&vppctl)
                    .arg("-s")
                    .arg(&sock)
                    .args(["show", "version"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        up.map_err(|e| {
            anyhow!(
                "{e}\n--- {} ---\n{}",
                self.dir.join("stdout.log").display(),
                std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
            )
        })
    }

    /// A VPP without one of the plugins starts anyway; say which is missing
    /// rather than fail later with a missing message or CLI command.
    fn check_plugins(&self) -> Result<()> {
        let loaded = self.cli("show plugins")?;
        let conf = std::fs::read_to_string(self.dir.join("startup.conf")).unwrap_or_default();
        let missing: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("plugin "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| p.ends_with(".so") && !loaded.contains(p))
            .collect();
        if !missing.is_empty() {
            bail!(
                "VPP {} did not load {}: this VPP build lacks them (see `cargo xtask demo --vpp` without a VPP for what it needs)",
                self.name,
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// An L2 wire: the kernel endpoint's veth (af_packet) and a memif slave
    /// to `socket` in bridge domain 1.
    fn wire(&self, socket: &Path) -> Result<()> {
        let socket = socket.display();
        for c in [
            format!("create memif socket id 1 filename {socket}"),
            "create interface memif id 0 socket-id 1 slave".to_owned(),
            "create host-interface name vpp0".to_owned(),
            "set interface state memif1/0 up".to_owned(),
            "set interface state host-vpp0 up".to_owned(),
            "set interface l2 bridge memif1/0 1".to_owned(),
            "set interface l2 bridge host-vpp0 1".to_owned(),
        ] {
            println!("vpp {}# {c}", self.name);
            self.cli(&c)?;
        }
        Ok(())
    }
}

/// Removes /dev/shm files whose name starts with `prefix`.
fn remove_shm(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A demo killed hard leaves its namespaces, and possibly its run directory
/// and segments (its VPPs die with it): remove those of demos whose process
/// is gone.
fn remove_leftovers() {
    for ns in ["client", "webserver", "cnf"] {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{PREFIX}-{ns}")])
            .stderr(Stdio::null())
            .status();
    }
    for dir in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}
