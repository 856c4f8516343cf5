//! `cargo xtask demo`: the classic CNF chain on one machine, no cluster.
//!
//! client 192.168.100.x/24 — cnf 192.168.100.1/24 | 80.80.80.100/24 — webserver 80.80.80.80/24,
//! with the real agent in `cnf` source-translating the client to the pool
//! 80.80.80.100–105 (deploy/examples/nat44-chain.yaml), a real HTTP server in
//! `webserver`, and curl from `client`. The web server has no route back to
//! the inside subnet, so only translated traffic gets an answer. Every
//! namespace, process and pin is removed on the way out, also on failure and
//! on Ctrl-C.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};
use xcnf_tests::{
    agent::{
        Agent, abridged, format_session, paired_address_in_maps, pin_dir, read_counters,
        read_nat_stats, read_sessions, xcnfctl, xcnfctl_binary, xcnfctl_sessions,
    },
    netns::{CLIENT_IP, CNF_OUTSIDE_IP, Chain, ChainSpec, Netns, SERVER_IP},
};

use crate::{build, setup};

const PREFIX: &str = "xcnf-demo";
const CONFIG: &str = "deploy/examples/nat44-chain.yaml";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once Ctrl-C was pressed, so the caller returns and its guards
/// (namespaces, processes, pins) clean up on the way out.
pub(crate) fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Args {
    /// The CNF's NAT in VPP over memif instead of eBPF: three VPPs (client
    /// wire, the CNF's NAT configured by the agent over VPP's binary API,
    /// web server wire) with deploy/examples/nat44-memif.yaml.
    #[arg(long, conflicts_with = "nsm")]
    pub vpp: bool,
    /// The `vpp` binary for --vpp (default: `vpp` on PATH); `vppctl` is
    /// taken from the same directory, else from PATH.
    #[arg(long, value_name = "PATH", requires = "vpp")]
    pub vpp_bin: Option<PathBuf>,
    /// The cnf's interfaces from NSM (the NSM manager double in
    /// tests/src/nsm_double): the agent is an NSM endpoint for the client
    /// and an NSM client of the web server's service, over mTLS with SPIFFE
    /// SVIDs (Workload API doubles) and path tokens.
    #[arg(long)]
    pub nsm: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.vpp {
        return crate::demo_vpp::run(args.vpp_bin.as_deref());
    }
    if args.nsm {
        return crate::demo_nsm::run();
    }
    prepare("cargo xtask demo")?;
    let config_text = std::fs::read_to_string(setup::root().join(CONFIG))
        .with_context(|| format!("reading {CONFIG}"))?;
    let instance = "cnf-nat44";
    remove_leftovers(instance);
    // The classic client. Paired pooling gives the first host it sees the
    // pool's first address, 80.80.80.100, as the classic example shows.
    let client_ip: std::net::Ipv4Addr = CLIENT_IP.parse()?;

    println!(
        "\n== topology: client {client_ip} — cnf (c0 192.168.100.1 | c1 80.80.80.100) — webserver 80.80.80.80"
    );
    println!(
        "   (the web server has no route to 192.168.100.0/24: it can only answer translated traffic)"
    );
    let chain = Chain::build(PREFIX, &ChainSpec::nat().client_ip(&client_ip.to_string()));
    check_interrupt()?;

    println!(
        "\n== starting xcnf-agent in {} with {CONFIG}",
        chain.cnf.name()
    );
    let agent = Agent::start(&chain.cnf, instance, &config_text, &[]);
    check_interrupt()?;

    println!("\n== starting an HTTP server in {}", chain.server.name());
    let http = chain.start_http_server(&setup::root().join("target/debug/xcnf-http-echo"));
    check_interrupt()?;

    println!("\n== ping -c 3 {SERVER_IP} from client");
    let ping = chain
        .client
        .output("ping", &["-c", "3", "-i", "0.2", SERVER_IP]);
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    check_interrupt()?;

    let url = format!("http://{SERVER_IP}:8080/");
    println!("\n== curl {url} from client");
    let seen = chain
        .client
        .curl(&url, &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("web server saw source address: {seen}");
    let expected = paired_address_in_maps(&agent.pin_dir(), client_ip)
        .map_err(|e| anyhow::anyhow!("reading the pairing from the pinned maps: {e}"))?;
    println!("paired pooling gave {client_ip} the pool address {expected} (nat_hosts)");
    check_interrupt()?;

    println!("\n== xcnfctl nat sessions --instance {instance}");
    match (xcnfctl_binary(), xcnfctl_sessions(&chain.cnf, instance)) {
        (Some(_), Ok(text)) => print!("{text}"),
        (Some(_), Err(e)) => bail!("{e}"),
        (None, _) => {
            let sessions = pin_dir(instance).join("nat_sessions");
            println!(
                "(xcnfctl is not built; bpftool map dump pinned {})",
                sessions.display()
            );
            let dump = Command::new("bpftool")
                .args(["map", "dump", "pinned"])
                .arg(&sessions)
                .output()
                .context("running bpftool")?;
            print!("{}", String::from_utf8_lossy(&dump.stdout));
            let halves = read_sessions(&agent.pin_dir()).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("in short:");
            for (k, v) in &halves {
                println!("  {}", format_session(k, v));
            }
        }
    }

    let counters = pin_dir(instance).join("counters");
    println!("\n== bpftool map dump pinned {}", counters.display());
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(&counters)
        .output()
        .context("running bpftool")?;
    print!("{}", String::from_utf8_lossy(&dump.stdout));

    if xcnfctl_binary().is_some() {
        for args in [["status"].as_slice(), &["stats"], &["nat", "stats"]] {
            print_xcnfctl(&chain.cnf, instance, args)?;
        }
    } else {
        println!("\n== per-interface totals (all CPUs)");
        for ifname in ["c0", "c1"] {
            let ifindex = chain.cnf.ifindex(ifname);
            if let Some(c) = read_counters(&agent.pin_dir(), ifindex) {
                println!(
                    "{ifname} (ifindex {ifindex}): rx {} forwarded {} passed {} dropped {} (no mapping {}, pool exhausted {})",
                    c.rx.packets,
                    c.forwarded.packets,
                    c.passed.total(),
                    c.dropped.total(),
                    c.dropped.nat_no_mapping,
                    c.dropped.nat_pool_exhausted
                );
            }
        }
        println!("\n== NAT statistics (nat_stats, all CPUs)");
        let stats = read_nat_stats(&agent.pin_dir()).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{stats:#?}");
    }

    println!("\n== agent log");
    println!("{}", abridged(&agent.log()));

    println!("\n== tearing down");
    drop(http);
    drop(agent);
    drop(chain);
    if seen != expected.to_string() {
        bail!("the web server saw {seen}, not the client's pool address {expected}");
    }
    if seen != CNF_OUTSIDE_IP {
        bail!("the web server saw {seen}, not {CNF_OUTSIDE_IP}");
    }
    println!("done: the web server saw {seen}");
    Ok(())
}

/// What every demo needs first: root, the tools, the eBPF object and the
/// binaries built, Ctrl-C turned into a clean teardown, and the environment
/// the test harness reads (`XCNF_EBPF_OBJECT`, a PATH with the sbin dirs).
pub(crate) fn prepare(what: &str) -> Result<()> {
    if !setup::is_root() {
        bail!("{what} needs root: it creates network namespaces and loads eBPF");
    }
    setup::ensure_tools()?;
    let object = build::ebpf(true)?;
    build::userspace()?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    // SAFETY: setenv before any thread of ours reads the environment concurrently.
    unsafe {
        std::env::set_var("XCNF_EBPF_OBJECT", &object);
        std::env::set_var("PATH", setup::path_with_sbin());
    }
    Ok(())
}

/// `xcnfctl <args>` against the agent `instance` in `ns`, printed under a
/// heading.
pub(crate) fn print_xcnfctl(ns: &Netns, instance: &str, args: &[&str]) -> Result<()> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    println!("\n== xcnfctl {} --instance {instance}", shown.join(" "));
    print!(
        "{}",
        xcnfctl(ns, instance, args).map_err(|e| anyhow::anyhow!("{e}"))?
    );
    Ok(())
}

/// A demo killed hard (SIGKILL, power loss) can leave its namespaces and pins.
fn remove_leftovers(instance: &str) {
    for ns in ["cnf", "client", "webserver"] {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{PREFIX}-{ns}")])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(pin_dir(instance));
}
