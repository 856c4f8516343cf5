//! `cargo xtask demo`: the classic CNF chain on one machine, no cluster.
//!
//! client 192.168.100.10/24 — cnf 192.168.100.1/24 | 80.80.80.100/24 — webserver 80.80.80.80/24,
//! with the real agent in `cnf`, a real HTTP server in `webserver`, and curl
//! from `client`. Every namespace, process and pin is removed on the way out,
//! also on failure and on Ctrl-C.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};
use xcnf_tests::{
    agent::{Agent, pin_dir, read_counters},
    netns::{Chain, SERVER_IP},
};

use crate::{build, setup};

const PREFIX: &str = "xcnf-demo";
const CONFIG: &str = "deploy/examples/nat44-chain.yaml";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    if !setup::is_root() {
        bail!("cargo xtask demo needs root: it creates network namespaces and loads eBPF");
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

    let config_text = std::fs::read_to_string(setup::root().join(CONFIG))
        .with_context(|| format!("reading {CONFIG}"))?;
    let instance = "cnf-nat44";
    remove_leftovers(instance);

    println!(
        "\n== topology: client 192.168.100.10 — cnf (c0 192.168.100.1 | c1 80.80.80.100) — webserver 80.80.80.80"
    );
    let chain = Chain::new(PREFIX);
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
    let out = chain
        .client
        .output("curl", &["-sS", "--max-time", "10", &url]);
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    println!("web server saw source address: {seen}");
    check_interrupt()?;

    let counters = pin_dir(instance).join("counters");
    println!("\n== bpftool map dump pinned {}", counters.display());
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(&counters)
        .output()
        .context("running bpftool")?;
    print!("{}", String::from_utf8_lossy(&dump.stdout));

    println!("\n== per-interface totals (all CPUs)");
    for ifname in ["c0", "c1"] {
        let ifindex = chain.cnf.ifindex(ifname);
        if let Some(c) = read_counters(&agent.pin_dir(), ifindex) {
            println!(
                "{ifname} (ifindex {ifindex}): rx {} forwarded {} passed {} dropped {}",
                c.rx.packets,
                c.forwarded.packets,
                c.passed.total(),
                c.dropped.total()
            );
        }
    }
    println!("\n== tearing down");
    drop(http);
    drop(agent);
    drop(chain);
    println!("done");
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
