//! The agent with exactly the Linux capabilities the pod template grants
//! (deploy/k8s/cnf-deployment.yaml), on the real NAT44 chain: it still
//! attaches, translates, pins and manages addresses, routes and neighbours;
//! and each of those capabilities is needed: without it the agent refuses
//! to start, saying which permission it lacks.
//!
//! The capabilities are read from the manifest, not repeated here, so the
//! manifest cannot drift from what was tested. capsh cuts the bounding set
//! to them and sets no_new_privs, as a container runtime does for a
//! container running as uid 0 with `capabilities: {drop: [ALL], add: …}`
//! and `allowPrivilegeEscalation: false`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::Deployment;
use xcnf_tests::{
    agent::{Agent, Nat44, ReportOnPanic, Scratch, nat_chain_config, pin_dir, read_sessions},
    netns::{CNF_OUTSIDE_IP, Chain, ChainSpec, Netns, SERVER_IP, unique_prefix},
    workspace_root,
};

const HTTP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-http-echo");
const MANIFEST: &str = "deploy/k8s/cnf-deployment.yaml";
const AGENT_CONTAINER: &str = "xcnf-agent";

/// What the manifest's agent container adds after dropping ALL, as capsh
/// names them (`cap_bpf`).
fn manifest_capabilities() -> BTreeSet<String> {
    let path = workspace_root().join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let d: Deployment =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
    let c = pod
        .containers
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)
        .unwrap_or_else(|| panic!("no container {AGENT_CONTAINER} in {MANIFEST}"));
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .unwrap_or_else(|| panic!("{MANIFEST}: {AGENT_CONTAINER} has no capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{MANIFEST}: the agent must drop ALL and add back only what it needs"
    );
    let add: BTreeSet<String> = caps
        .add
        .iter()
        .flatten()
        .map(|c| format!("cap_{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!add.is_empty(), "{MANIFEST}: no capabilities added");
    add
}

/// capsh's names for the capabilities in `mask`.
fn decode(mask: u64) -> BTreeSet<String> {
    let out = Command::new("capsh")
        .arg(format!("--decode={mask:#x}"))
        .output()
        .unwrap_or_else(|e| panic!("capsh: {e} (Debian package libcap2-bin)"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "0x0000008000001000=cap_net_admin,cap_bpf"
    text.trim()
        .split_once('=')
        .map(|(_, names)| {
            names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Every capability this kernel knows.
fn all_capabilities() -> BTreeSet<String> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap_or_else(|e| panic!("cap_last_cap: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("cap_last_cap: {e}"));
    decode((1u64 << (last + 1)) - 1)
}

/// capsh's arguments for running `program` with only `keep`: the others
/// dropped from the bounding set (so a program exec'd as uid 0 gets exactly
/// `keep`), no inheritable or ambient capabilities, no_new_privs. The
/// program's own arguments follow.
fn capsh_args(keep: &BTreeSet<String>, program: &Path) -> Vec<String> {
    let drop: Vec<String> = all_capabilities().difference(keep).cloned().collect();
    vec![
        format!("--drop={}", drop.join(",")),
        "--inh=".into(),
        "--noamb".into(),
        "--no-new-privs".into(),
        format!("--shell={}", program.display()),
        "--".into(),
    ]
}

/// A launcher running the agent under capsh with only `keep`.
fn capsh_launcher(keep: &BTreeSet<String>) -> impl Fn(&Netns, &Scratch) -> Command + use<> {
    let args = capsh_args(keep, &xcnf_tests::agent::agent_binary());
    move |ns: &Netns, _: &Scratch| {
        let mut c = ns.command("capsh");
        c.args(&args)
            .env("XCNF_EBPF_OBJECT", xcnf_tests::ebpf_object());
        c
    }
}

/// A capability set of a running process (`CapEff`, `CapBnd`, …).
fn process_caps(pid: u32, field: &str) -> BTreeSet<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    decode(u64::from_str_radix(hex.trim(), 16).unwrap_or_else(|e| panic!("{hex}: {e}")))
}

/// The chain's NAT config plus what exercises rtnetlink under the granted
/// capabilities: an address the agent must add, a route and a static
/// neighbour.
fn config(instance: &str) -> String {
    let nat = Nat44::default().pool(CNF_OUTSIDE_IP, "80.80.80.105", None);
    let base = nat_chain_config(instance, "{hook: tc}", &nat);
    let with_addr = base.replacen(
        "      kernel: {hostIfName: c1}\n",
        "      kernel: {hostIfName: c1}\n      ipAddresses: [80.80.80.100/24, 80.80.80.110/24]\n",
        1,
    );
    assert_ne!(with_addr, base, "the chain config changed shape");
    format!(
        "{with_addr}  routes:
    - {{dst: 10.99.0.0/24, via: {SERVER_IP}, interface: outside}}
  neighbors:
    - {{interface: outside, ip: 80.80.80.81, mac: \"02:00:00:00:00:81\"}}
"
    )
}

/// `ip -n <ns> args` as text.
fn ip_show(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.name()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agent_runs_with_only_the_manifest_capabilities() {
    let keep = manifest_capabilities();
    let prefix = unique_prefix("lp");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let launch = capsh_launcher(&keep);
    let mut agent = Agent::start_via(&chain.cnf, &prefix, &config(&prefix), &[], &launch);
    check_running(&agent, &chain, &keep);

    // And it stops cleanly: detached, pins gone.
    let pins = pin_dir(&prefix);
    let st = agent.stop();
    assert!(st.success(), "agent exit: {st}\n{}", agent.log());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pins.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pins.exists(), "{} left behind", pins.display());
}

/// What the agent running under `keep` must have done.
fn check_running(agent: &Agent, chain: &Chain, keep: &BTreeSet<String>) {
    let _report = ReportOnPanic {
        agent,
        cnf: &chain.cnf,
        ifnames: vec!["c0", "c1"],
        namespaces: chain.namespaces(),
    };
    let prefix = agent.instance.as_str();

    // The process that attached is the agent itself (capsh exec'd it), with
    // exactly the manifest's capabilities and nothing it could regain.
    let pid = agent.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "xcnf-agent", "pid {pid} is not the agent");
    assert_eq!(&process_caps(pid, "CapEff"), keep, "effective capabilities");
    assert_eq!(&process_caps(pid, "CapPrm"), keep, "permitted capabilities");
    assert_eq!(&process_caps(pid, "CapBnd"), keep, "bounding set");
    assert!(process_caps(pid, "CapInh").is_empty(), "inheritable set");
    assert!(process_caps(pid, "CapAmb").is_empty(), "ambient set");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.lines().any(|l| l == "NoNewPrivs:\t1"),
        "no_new_privs not set:\n{status}"
    );

    // Attached on both interfaces, and pinned.
    for ifname in ["c0", "c1"] {
        let progs = chain.cnf.attached_programs(ifname);
        assert!(!progs.is_empty(), "nothing attached to {ifname}");
    }
    let pins = pin_dir(prefix);
    for name in ["nat_sessions", "counters", "links"] {
        assert!(
            pins.join(name).exists(),
            "{} not pinned",
            pins.join(name).display()
        );
    }

    // rtnetlink writes: the address it added, its route and neighbour.
    let addrs = ip_show(&chain.cnf, &["-4", "-o", "addr", "show", "dev", "c1"]);
    assert!(addrs.contains("80.80.80.110/24"), "{addrs}");
    let routes = ip_show(&chain.cnf, &["route", "show", "10.99.0.0/24"]);
    assert!(routes.contains(&format!("via {SERVER_IP}")), "{routes}");
    let neigh = ip_show(&chain.cnf, &["neigh", "show", "80.80.80.81", "dev", "c1"]);
    assert!(neigh.contains("02:00:00:00:00:81"), "{neigh}");

    // Translates: the web server sees the pool's first address.
    let _http = chain.start_http_server(Path::new(HTTP_ECHO));
    let seen = chain
        .client
        .curl(&format!("http://{SERVER_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, CNF_OUTSIDE_IP, "the web server saw {seen}");
    let sessions = read_sessions(&pins).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sessions.iter().any(|(k, _)| k.dport == 8080),
        "no session for the curl in the pinned map"
    );

    // xcnfctl, run the way `kubectl exec` runs it in the agent's container:
    // with the same capabilities.
    let xcnfctl = xcnf_tests::agent::xcnfctl_binary().expect("xcnfctl is built");
    let out = chain
        .cnf
        .command("capsh")
        .args(capsh_args(keep, &xcnfctl))
        .args(["nat", "sessions", "--instance", prefix])
        .output()
        .unwrap_or_else(|e| panic!("xcnfctl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(":8080"),
        "xcnfctl nat sessions ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without any one of the manifest's capabilities the agent fails to start,
/// and says it lacks a permission, rather than half-working.
#[test]
fn every_manifest_capability_is_needed() {
    let keep = manifest_capabilities();
    let prefix = unique_prefix("lq");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let mut failures = Vec::new();
    for missing in &keep {
        let mut fewer = keep.clone();
        fewer.remove(missing);
        let instance = format!(
            "{prefix}-{}",
            missing.trim_start_matches("cap_").replace('_', "-")
        );
        let launch = capsh_launcher(&fewer);
        let out = Agent::run_to_exit_via(&chain.cnf, &instance, &config(&instance), &[], &launch);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let error = stderr
            .lines()
            .find(|l| l.starts_with("xcnf-agent: error:"))
            .unwrap_or_default()
            .to_owned();
        eprintln!("without {missing}: {} {error}", out.status);
        if out.status.success() || !error.to_lowercase().contains("permission") {
            failures.push(format!(
                "without {missing} the agent exited {} with no permission error:\n{}",
                out.status,
                xcnf_tests::agent::abridged(&stderr)
            ));
        }
        // Nothing of it stays attached.
        for ifname in ["c0", "c1"] {
            let progs = chain.cnf.attached_programs(ifname);
            assert!(
                progs.is_empty(),
                "without {missing}: {progs:?} left on {ifname}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The other bpffs option (deploy/k8s/README.md): with no bpffs mounted for
/// it, the agent mounts its own, which takes CAP_SYS_ADMIN on top of the
/// manifest's set, and the pins then live only as long as the agent's mount
/// namespace (as a container's would).
#[test]
fn mounting_its_own_bpffs_takes_sys_admin() {
    let keep = manifest_capabilities();
    let prefix = unique_prefix("lm");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let mount_point = Scratch::new(&format!("{prefix}-bpffs"));
    let bpffs = mount_point.path().display().to_string();
    let args = ["--bpffs", bpffs.as_str()];
    // A private mount namespace per run, like a container's: a bpffs the
    // agent mounts never shows on the host.
    let in_own_mount_ns = |keep: &BTreeSet<String>| {
        let args = capsh_args(keep, &xcnf_tests::agent::agent_binary());
        move |ns: &Netns, _: &Scratch| {
            let mut c = ns.command("unshare");
            c.args(["--mount", "--propagation", "private", "--", "capsh"])
                .args(&args)
                .env("XCNF_EBPF_OBJECT", xcnf_tests::ebpf_object());
            c
        }
    };

    let launch = in_own_mount_ns(&keep);
    let out = Agent::run_to_exit_via(&chain.cnf, &prefix, &config(&prefix), &args, &launch);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("CAP_SYS_ADMIN"),
        "without CAP_SYS_ADMIN ({}): {stderr}",
        out.status
    );

    let mut more = keep.clone();
    more.insert("cap_sys_admin".to_owned());
    let launch = in_own_mount_ns(&more);
    let mut agent = Agent::start_via(&chain.cnf, &prefix, &config(&prefix), &args, &launch);
    assert!(
        agent.log().contains("mounted bpffs"),
        "the agent did not mount bpffs:\n{}",
        agent.log()
    );
    for ifname in ["c0", "c1"] {
        assert!(
            !chain.cnf.attached_programs(ifname).is_empty(),
            "nothing attached to {ifname}"
        );
    }
    // The host sees neither the mount nor any pin.
    assert!(
        std::fs::read_dir(mount_point.path())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false),
        "the agent's bpffs leaked to the host mount namespace"
    );
    let st = agent.stop();
    assert!(st.success(), "agent exit: {st}\n{}", agent.log());
    for ifname in ["c0", "c1"] {
        let progs = chain.cnf.attached_programs(ifname);
        assert!(progs.is_empty(), "{progs:?} still on {ifname}");
    }
}
