//! The agent's life cycle on a real topology: bad input leaves nothing behind,
//! a kept datapath forwards without the agent, a restart adopts it, `kill -9`
//! does not stop forwarding, and `--cleanup` removes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use xcnf_tests::{
    agent::{
        Agent, PinGuard, Scratch, agent_binary, chain_config, pin_dir, read_counters, read_iface,
        xcnfctl,
    },
    netns::{Chain, Netns, unique_prefix},
};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one error line the agent prints before exiting.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "agent succeeded: {}", stderr(out));
    let err = stderr(out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("xcnf-agent: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "want exactly one error line in:\n{err}");
    lines[0].to_owned()
}

/// Names of the programs attached to `ifname` (tcx ingress and XDP).
fn attached(ns: &Netns, ifname: &str) -> String {
    ns.attached_programs(ifname).join(",")
}

fn forwarded(instance: &str, chain: &Chain) -> u64 {
    read_counters(&pin_dir(instance), chain.cnf.ifindex("c0"))
        .expect("counters for c0")
        .forwarded
        .packets
}

#[test]
fn malformed_yaml_names_the_file_and_position() {
    let prefix = unique_prefix("by");
    let ns = Netns::new(&prefix);
    let out = Agent::run_to_exit(&ns, &prefix, "apiVersion: [oops\n", &[]);
    let line = error_line(&out);
    assert!(
        line.contains("config.yaml") && line.contains("line 1"),
        "{line}"
    );
    assert!(!pin_dir(&prefix).exists());
}

#[test]
fn unknown_field_names_its_path() {
    let prefix = unique_prefix("uf");
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, "{hook: tc}")
        .replace("hostIfName: c0}", "hostIfName: c0, colour: red}");
    let out = Agent::run_to_exit(&chain.cnf, &prefix, &cfg, &[]);
    let line = error_line(&out);
    assert!(
        line.contains("spec.interfaces[0].kernel: unknown field `colour`"),
        "{line}"
    );
    assert!(!pin_dir(&prefix).exists());
    assert!(!attached(&chain.cnf, "c0").contains("xcnf"));
}

#[test]
fn missing_interface_stays_pending_until_it_appears() {
    let prefix = unique_prefix("mi");
    let chain = Chain::new(&prefix);
    // c1 exists under another name until the test renames it, as an
    // interface NSM injects minutes after the agent started.
    chain.cnf.ip(&["link", "set", "c1", "down"]);
    chain.cnf.ip(&["link", "set", "c1", "name", "late1"]);
    let cfg = chain_config(&prefix, "{hook: tc}").replace("hostIfName: c1", "hostIfName: c9");
    let agent = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    assert!(attached(&chain.cnf, "c0").contains("xcnf"));
    let status =
        xcnfctl(&chain.cnf, &prefix, &["status"]).expect_err("status exits 5 while pending");
    assert!(
        status.contains("interface/outside")
            && status.contains("pending")
            && status.contains("\"c9\" does not exist"),
        "{status}"
    );
    assert!(
        status.contains("datapath/outside") && status.contains("waiting for interface/outside"),
        "{status}"
    );

    chain.cnf.ip(&["link", "set", "late1", "name", "c9"]);
    chain.cnf.ip(&["link", "set", "c9", "up"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !attached(&chain.cnf, "c9").contains("xcnf") {
        assert!(
            std::time::Instant::now() < deadline,
            "c9 never attached:\n{}",
            agent.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = xcnfctl(&chain.cnf, &prefix, &["status"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.contains("pending"), "{status}");
    // The chain's routes were on c1; with the name back on the same device
    // (ifindex unchanged) traffic flows through both attachments.
    let before = forwarded(&prefix, &chain);
    chain.ping(3);
    assert!(forwarded(&prefix, &chain) >= before + 3);
}

/// A CNF namespace with forwarding off drops everything it should pass on;
/// the agent says so per interface instead of attaching silently.
#[test]
fn forwarding_off_is_reported_per_interface() {
    let prefix = unique_prefix("fw");
    let chain = Chain::new(&prefix);
    chain.cnf.sysctl("net.ipv4.conf.c1.forwarding", "0");
    let cfg = chain_config(&prefix, "{hook: tc}");
    let agent = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    let warned = |ifname: &str| {
        agent.log().lines().any(|l| {
            l.contains("IPv4 forwarding is off")
                && l.contains(&format!("net.ipv4.conf.{ifname}.forwarding=0"))
        })
    };
    assert!(warned("c1"), "{}", agent.log());
    assert!(!warned("c0"), "{}", agent.log());
}

#[test]
fn missing_object_names_the_build_command() {
    let prefix = unique_prefix("mo");
    let chain = Chain::new(&prefix);
    let out = Agent::run_to_exit(
        &chain.cnf,
        &prefix,
        &chain_config(&prefix, "{hook: tc}"),
        &["--ebpf-object", "/nonexistent/xcnf.o"],
    );
    let line = error_line(&out);
    assert!(
        line.contains("/nonexistent/xcnf.o") && line.contains("cargo xtask build-ebpf"),
        "{line}"
    );
    assert!(!pin_dir(&prefix).exists());
}

#[test]
fn no_bpf_permission_is_reported_and_leaves_no_pins() {
    let prefix = unique_prefix("np");
    let chain = Chain::new(&prefix);
    let cfg_dir = xcnf_tests::agent::Scratch::new(&prefix);
    let cfg = cfg_dir.path().join("config.yaml");
    std::fs::write(&cfg, chain_config(&prefix, "{hook: tc}")).unwrap();
    // Root, but without the capabilities that allow bpf(2).
    let out = chain
        .cnf
        .command("setpriv")
        .args(["--bounding-set=-bpf,-sys_admin,-perfmon", "--"])
        .arg(agent_binary())
        .arg("--config")
        .arg(&cfg)
        .args(["--instance", &prefix])
        .env("XCNF_EBPF_OBJECT", xcnf_tests::ebpf_object())
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(
        line.contains("permission denied") && line.contains("CAP_BPF"),
        "{line}"
    );
    assert!(!pin_dir(&prefix).exists(), "pins left behind");
    assert!(!attached(&chain.cnf, "c0").contains("xcnf"));
}

/// The second interface cannot be attached (another XDP link holds it), so the
/// first one's fresh TC link must be rolled back and the pins removed.
#[test]
fn failed_attach_rolls_back_what_was_attached() {
    let prefix = unique_prefix("rb");
    let chain = Chain::new(&prefix);
    let holder_name = format!("{prefix}h");
    let holder_cfg = format!(
        "apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {{name: {holder_name}}}
spec:
  interfaces:
    - name: outside
      kernel: {{hostIfName: c1}}
      datapath: {{hook: xdp, xdpMode: generic}}
"
    );
    let _holder = Agent::start(&chain.cnf, &holder_name, &holder_cfg, &[]);
    let cfg = chain_config(&prefix, "{hook: tc}").replacen(
        "hostIfName: c1}\n      datapath: {hook: tc}",
        "hostIfName: c1}\n      datapath: {hook: xdp, xdpMode: native}",
        1,
    );
    assert!(cfg.contains("xdpMode: native"), "{cfg}");
    let out = Agent::run_to_exit(&chain.cnf, &prefix, &cfg, &[]);
    let line = error_line(&out);
    assert!(line.contains("interface c1: attaching xdp"), "{line}");
    assert!(
        !pin_dir(&prefix).exists(),
        "pins of the failed instance left behind"
    );
    assert!(
        !attached(&chain.cnf, "c0").contains("xcnf_tc"),
        "c0 still attached"
    );
    // The other instance is untouched.
    assert!(attached(&chain.cnf, "c1").contains("xcnf_xdp"));
}

/// Keep → forwards without the agent; restart → adopts the links and keeps
/// counters; kill -9 → still forwards; --cleanup → detached.
#[test]
fn datapath_outlives_the_agent_and_is_adopted() {
    let prefix = unique_prefix("kp");
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, "{hook: auto}");
    // Declared after the chain so it drops first: the pins go even on failure.
    let _pins = PinGuard(prefix.clone());

    let mut a = Agent::start(&chain.cnf, &prefix, &cfg, &["--keep-datapath"]);
    chain.ping(3);
    a.keep_pins();
    assert!(a.stop().success());
    assert!(
        pin_dir(&prefix).join("links/tc-c0").exists(),
        "links unpinned"
    );
    let before = forwarded(&prefix, &chain);
    chain.ping(3);
    let after_exit = forwarded(&prefix, &chain);
    assert!(
        after_exit >= before + 3,
        "not forwarded by eBPF after exit: {before} → {after_exit}"
    );
    drop(a);

    let mut b = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    // The program the first agent verified is reused, not verified again.
    assert!(
        b.log()
            .contains("reusing the TC program an earlier start verified"),
        "{}",
        b.log()
    );
    let adopted = forwarded(&prefix, &chain);
    assert!(
        adopted >= after_exit,
        "counters reset on adoption: {after_exit} → {adopted}"
    );
    // Adoption swaps the program inside the same link: still one tcx program.
    let shown = attached(&chain.cnf, "c0");
    assert_eq!(shown.matches("xcnf_tc").count(), 1, "{shown}");
    chain.ping(3);

    b.kill9();
    let k = forwarded(&prefix, &chain);
    chain.ping(3);
    assert!(
        forwarded(&prefix, &chain) >= k + 3,
        "not forwarding after kill -9"
    );

    let out = chain
        .cnf
        .command(agent_binary())
        .args(["--cleanup", "--instance", &prefix])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!pin_dir(&prefix).exists());
    assert!(
        !attached(&chain.cnf, "c0").contains("xcnf"),
        "still attached after cleanup"
    );
    chain.ping(3); // the kernel forwards again
}

/// Lazily unmounts and removes a directory on drop.
struct Mountpoint(std::path::PathBuf);

impl Drop for Mountpoint {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid path; MNT_DETACH never blocks.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With no bpffs at `--bpffs`, the agent mounts one there and pins into it.
#[test]
fn mounts_a_bpffs_where_none_is_mounted() {
    let prefix = unique_prefix("fs");
    let chain = Chain::new(&prefix);
    let root = std::env::temp_dir().join(format!("xcnf-bpffs-{prefix}"));
    std::fs::create_dir_all(&root).unwrap();
    // Declared before the agent so the agent stops before the unmount.
    let _mount = Mountpoint(root.clone());
    let mut agent = Agent::start(
        &chain.cnf,
        &prefix,
        &chain_config(&prefix, "{hook: tc}"),
        &["--bpffs", root.to_str().unwrap()],
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == root.to_str())
        .unwrap_or_else(|| panic!("{} not mounted:\n{mounts}", root.display()));
    assert_eq!(line.split_whitespace().nth(2), Some("bpf"), "{line}");
    let pins = root.join("xcnf").join(&prefix);
    assert!(pins.join("counters").exists() && pins.join("links/tc-c0").exists());
    chain.ping(3);
    let c = read_counters(&pins, chain.cnf.ifindex("c0")).expect("counters");
    assert!(c.forwarded.packets >= 3, "{c:#?}");
    assert!(agent.stop().success());
    assert!(!pins.exists(), "pins left in the mounted bpffs");
}

#[test]
fn pins_of_another_map_layout_are_recreated_not_reused() {
    let prefix = unique_prefix("ly");
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, "{hook: tc}");
    let _pins = PinGuard(prefix.clone());

    let mut a = Agent::start(&chain.cnf, &prefix, &cfg, &["--keep-datapath"]);
    chain.ping(3);
    a.keep_pins();
    assert!(a.stop().success());
    drop(a);
    let before = forwarded(&prefix, &chain);
    assert!(before >= 3);
    // Pretend an older build made the pins: its layout marker differs.
    let markers: Vec<_> = std::fs::read_dir(pin_dir(&prefix))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("layout-")
        })
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    std::fs::rename(
        &markers[0],
        pin_dir(&prefix).join("layout-00000000000000aa"),
    )
    .unwrap();

    let b = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    let log = b.log();
    assert!(
        log.contains("pinned map is incompatible with this build: recreating it")
            && log.contains("another map layout"),
        "{log}"
    );
    // Fresh maps: the counters start again from zero, and forwarding goes on.
    assert!(
        forwarded(&prefix, &chain) < before,
        "old counters map reused"
    );
    chain.ping(3);
    assert!(forwarded(&prefix, &chain) >= 3);
    assert!(!pin_dir(&prefix).join("layout-00000000000000aa").exists());
    assert_eq!(attached(&chain.cnf, "c0").matches("xcnf_tc").count(), 1);
}

/// Polls `f` every 100 ms until it holds, or fails naming `what`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The example chain with the agent running on it (TC). Fields drop in
/// order: the agent, then its pins, then the namespaces.
struct Running {
    agent: Agent,
    _pins: PinGuard,
    chain: Chain,
    prefix: String,
    cfg: String,
}

fn running(tag: &str) -> Running {
    let prefix = unique_prefix(tag);
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, "{hook: tc}");
    let _pins = PinGuard(prefix.clone());
    let agent = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    Running {
        agent,
        _pins,
        chain,
        prefix,
        cfg,
    }
}

/// An interface dropped from the config gives its counter slot back;
/// attached again it takes the lowest free slot (its old one here, which
/// still holds the old counts) and must count from zero.
#[test]
fn a_dropped_and_readded_interface_counts_from_zero() {
    let Running {
        agent,
        chain,
        prefix,
        cfg,
        ..
    } = &running("sl");
    chain.ping(3);
    let before = forwarded(prefix, chain);
    assert!(before >= 3, "{before}");

    let inside = "    - name: inside\n      kernel: {hostIfName: c0}\n      datapath: {hook: tc}\n";
    let only_c1 = cfg.replace(inside, "");
    assert_ne!(&only_c1, cfg, "the inside interface is not in:\n{cfg}");
    let c0 = chain.cnf.ifindex("c0");
    agent.replace_config(&only_c1);
    wait_until("c0 is no longer registered", || {
        read_counters(&pin_dir(prefix), c0).is_none()
    });
    agent.replace_config(cfg);
    wait_until("c0 is registered again", || {
        read_counters(&pin_dir(prefix), c0).is_some()
    });
    let again = forwarded(prefix, chain);
    assert!(
        again < before,
        "the re-added interface inherited the old counts: {before} → {again}"
    );
    chain.ping(3);
    assert!(forwarded(prefix, chain) >= again + 3);
}

/// A running agent keeps each interface's `ifaces` entry in step with its
/// link: c1's peer moved from the server's namespace into the cnf's own
/// must lose `PEER_REDIRECT` (the kernel drops `bpf_redirect_peer` to a peer
/// in the same namespace), and a changed MAC must reach the entry, both
/// without re-attaching.
#[test]
fn a_running_agent_follows_the_links_peer_namespace_and_mac() {
    let Running {
        agent,
        chain,
        prefix,
        ..
    } = &running("pf");
    let c1 = chain.cnf.ifindex("c1");
    let entry = || {
        read_iface(&pin_dir(prefix), c1)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("c1 has no ifaces entry"))
    };
    let peer = xcnf_common::iface::flags::PEER_REDIRECT;
    assert_eq!(
        entry().flags & peer,
        peer,
        "c1's peer is in the server's namespace"
    );

    let mac = [0x02, 0x5a, 0, 0, 0, 0x01];
    chain
        .cnf
        .ip(&["link", "set", "c1", "address", "02:5a:00:00:00:01"]);
    wait_until("c1's new MAC is in its ifaces entry", || entry().mac == mac);

    chain
        .server
        .ip(&["link", "set", "eth0", "netns", chain.cnf.name()]);
    wait_until("c1 lost PEER_REDIRECT", || entry().flags & peer == 0);
    assert!(
        agent.log().contains("datapath entry updated"),
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("no longer in place"),
        "an item was re-applied instead of updated:\n{}",
        agent.log()
    );
    assert_eq!(attached(&chain.cnf, "c1"), "xcnf_tc");
}

/// Whoever sees the agent ready may stop it at once: SIGTERM sent the moment
/// the ready file appears is a clean stop (exit 0, pins removed), not
/// SIGTERM's default action killing the agent half way.
#[test]
fn sigterm_right_after_ready_stops_cleanly() {
    let prefix = unique_prefix("st");
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, "{hook: tc}");
    let _pins = PinGuard(prefix.clone());
    let scratch = Scratch::new(&prefix);
    let ready = scratch.path().join("ready");
    let log_path = scratch.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Agent::command(&chain.cnf, &scratch, &cfg, &["--instance", &prefix]);
    cmd.arg("--ready-file")
        .arg(&ready)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = cmd.spawn().unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Guards against a hang, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the agent exited before it was ready: {st}\n{}", log());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("not ready after 60 s\n{}", log());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 20 s after SIGTERM\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}\n{}", log());
    assert!(!pin_dir(&prefix).exists(), "pins left behind\n{}", log());
}
