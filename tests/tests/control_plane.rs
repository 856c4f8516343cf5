//! The agent's control plane on real namespaces: L3 items it owns (and the
//! ones it must leave alone), live config file edits, gRPC transactions that
//! roll back, and a datapath that keeps translating while the agent is
//! killed and restarted.
//!
//! Every test builds its own namespaces (unique names) and tears them down on
//! the way out; on failure it prints the agent's log (and, for the NAT tests,
//! the counters, sessions and links of every namespace).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;
use xcnf_common::nat::{self, Session, SessionKey};
use xcnf_tests::{
    agent::{
        Agent, Nat44, PinGuard, ReportOnPanic, Scratch, chain_config, format_session,
        nat_chain_config, pin_dir, read_counters, read_sessions, state_dir, xcnfctl,
        xcnfctl_output,
    },
    netns::{CLIENT_IP, CNF_OUTSIDE_IP, Chain, ChainSpec, Netns, SERVER_IP, unique_prefix},
};

const HTTP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-http-echo");
const UDP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-udp-echo");
const TC: &str = "{hook: tc}";
/// The protocol number that marks the agent's routes (`XCNF_RTPROT`).
const XCNF_RTPROT: &str = "167";

fn http_echo() -> &'static Path {
    Path::new(HTTP_ECHO)
}

fn udp_echo() -> &'static Path {
    Path::new(UDP_ECHO)
}

/// A pool of just the cnf's own outside address, so the translated source
/// is known and no ARP for an unconfigured address is involved.
fn own_address_pool() -> Nat44 {
    Nat44::default().pool(CNF_OUTSIDE_IP, CNF_OUTSIDE_IP, None)
}

/// Retries `f` until it succeeds; fails with its last error after `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: still not so after {timeout:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `ip -j <args>` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut v = vec!["-j"];
    v.extend_from_slice(args);
    let out = ns.run("ip", &v);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ip {v:?} in {}: {e}: {}", ns.name(), text(&out.stdout)))
}

/// The IPv4 addresses of `dev` in `ns`, as `addr/len`.
fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    let v = ip_json(ns, &["-4", "addr", "show", "dev", dev]);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
        .collect()
}

fn mtu(ns: &Netns, dev: &str) -> u64 {
    let v = ip_json(ns, &["link", "show", "dev", dev]);
    v[0]["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no mtu for {dev}: {v}"))
}

/// The main-table routes to exactly `dst` in `ns`.
fn routes_to(ns: &Netns, dst: &str) -> Vec<Value> {
    let v = ip_json(ns, &["-4", "route", "show", "exact", dst]);
    v.as_array().cloned().unwrap_or_default()
}

/// The neighbour entry for `ip` on `dev`, if any.
fn neighbor(ns: &Netns, dev: &str, ip: &str) -> Option<Value> {
    let v = ip_json(ns, &["-4", "neigh", "show", "dev", dev, "to", ip]);
    v.as_array().and_then(|a| a.first().cloned())
}

/// `xcnfctl -o json status`: the exit code and every item's (key, state).
fn statuses(ns: &Netns, instance: &str) -> (Option<i32>, Vec<(String, String)>) {
    let out = xcnfctl_output(ns, instance, &["-o", "json", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("xcnfctl status -o json: {e}: {}", show(&out)));
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("status is not a list: {v}"))
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap_or_default().to_owned(),
                s["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (out.status.code(), items)
}

/// `xcnfctl config get`: the config in force, as YAML.
fn config_get(ns: &Netns, instance: &str) -> String {
    xcnfctl(ns, instance, &["config", "get"]).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts every status is `configured` and `xcnfctl status` exits 0.
fn assert_all_configured(ns: &Netns, instance: &str, want: &[&str]) {
    let (code, items) = statuses(ns, instance);
    assert_eq!(code, Some(0), "xcnfctl status exit code: {items:#?}");
    for (k, s) in &items {
        assert_eq!(s, "configured", "{k}: {items:#?}");
    }
    for w in want {
        assert!(
            items.iter().any(|(k, _)| k == w),
            "no status for {w}: {items:#?}"
        );
    }
}

/// The classic chain's config plus an address the agent adds, one it finds
/// already there (192.168.100.1/24, put there by the chain as NSM would),
/// an MTU, a route with a gateway and metric, and a static neighbour.
fn l3_config(name: &str) -> String {
    format!(
        "apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata:
  name: {name}
spec:
  interfaces:
    - name: inside
      kernel: {{hostIfName: c0}}
      datapath: {TC}
      ipAddresses: [192.168.100.1/24, 10.99.0.1/24]
      mtu: 1400
    - name: outside
      kernel: {{hostIfName: c1}}
      datapath: {TC}
  routes:
    - {{dst: 10.200.0.0/16, via: {SERVER_IP}, interface: outside, metric: 50}}
  neighbors:
    - {{interface: outside, ip: 80.80.80.77, mac: \"02:00:00:00:00:77\"}}
"
    )
}

#[test]
fn l3_config_is_applied_and_only_what_the_agent_created_is_removed() {
    let prefix = unique_prefix("l3");
    let chain = Chain::new(&prefix);
    let cnf = &chain.cnf;
    let mtu_before = mtu(cnf, "c0");
    assert_ne!(mtu_before, 1400, "the test needs an MTU the agent changes");
    assert!(addresses(cnf, "c0").contains(&"192.168.100.1/24".to_owned()));
    assert!(!addresses(cnf, "c0").contains(&"10.99.0.1/24".to_owned()));
    // Something for the route to reach: an address behind the web server.
    chain
        .server
        .ip(&["addr", "add", "10.200.0.1/32", "dev", "lo"]);

    let mut agent = Agent::start(cnf, &prefix, &l3_config(&prefix), &[]);

    let addrs = addresses(cnf, "c0");
    assert!(
        addrs.contains(&"10.99.0.1/24".to_owned())
            && addrs.contains(&"192.168.100.1/24".to_owned()),
        "c0: {addrs:?}"
    );
    assert_eq!(mtu(cnf, "c0"), 1400);
    let routes = routes_to(cnf, "10.200.0.0/16");
    assert_eq!(routes.len(), 1, "{routes:#?}");
    let r = &routes[0];
    assert_eq!(r["gateway"], SERVER_IP, "{r}");
    assert_eq!(r["dev"], "c1", "{r}");
    assert_eq!(r["metric"], 50, "{r}");
    assert_eq!(
        r["protocol"].as_str().map(str::to_owned),
        Some(XCNF_RTPROT.to_owned()),
        "{r}"
    );
    let n = neighbor(cnf, "c1", "80.80.80.77").unwrap_or_else(|| panic!("no neighbour entry"));
    assert_eq!(n["lladdr"], "02:00:00:00:00:77", "{n}");
    assert!(
        n["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "PERMANENT")),
        "{n}"
    );
    // The route is the kernel's, in use: the cnf reaches the address behind
    // the web server through it.
    let ping = cnf.output("ping", &["-c", "1", "-W", "2", "10.200.0.1"]);
    assert!(
        ping.status.success(),
        "ping over the agent's route: {}",
        show(&ping)
    );
    assert_all_configured(
        cnf,
        &prefix,
        &[
            "interface/inside",
            "interface/outside",
            "address/inside/192.168.100.1/24",
            "address/inside/10.99.0.1/24",
            "route/10.200.0.0/16/metric/50",
            "neighbor/outside/80.80.80.77",
            "datapath/inside",
            "datapath/outside",
        ],
    );

    let st = agent.stop();
    assert!(st.success(), "agent exit: {st}\n{}", agent.log());

    let addrs = addresses(cnf, "c0");
    assert!(
        !addrs.contains(&"10.99.0.1/24".to_owned()),
        "the agent's address outlived it: {addrs:?}"
    );
    assert!(
        addrs.contains(&"192.168.100.1/24".to_owned()),
        "the agent removed an address it did not create: {addrs:?}\n{}",
        agent.log()
    );
    assert!(
        addresses(cnf, "c1").contains(&format!("{CNF_OUTSIDE_IP}/24")),
        "c1 lost its address"
    );
    let left = routes_to(cnf, "10.200.0.0/16");
    assert!(left.is_empty(), "the agent's route outlived it: {left:#?}");
    assert_eq!(
        neighbor(cnf, "c1", "80.80.80.77"),
        None,
        "the agent's neighbour entry outlived it"
    );
    assert_eq!(mtu(cnf, "c0"), mtu_before, "MTU not restored");
    assert!(!pin_dir(&prefix).exists(), "pins left behind");
    // The chain's own setup still works without the agent.
    chain.ping(2);
}

/// A chain with a running agent, for the NAT tests.
struct Lab {
    chain: Chain,
    agent: Agent,
}

impl Lab {
    fn start(tag: &str, nat: &Nat44) -> Self {
        let prefix = unique_prefix(tag);
        let chain = Chain::build(&prefix, &ChainSpec::nat());
        let agent = Agent::start(
            &chain.cnf,
            &prefix,
            &nat_chain_config(&prefix, TC, nat),
            &[],
        );
        Self { chain, agent }
    }

    fn report(&self) -> ReportOnPanic<'_> {
        ReportOnPanic {
            agent: &self.agent,
            cnf: &self.chain.cnf,
            ifnames: vec!["c0", "c1"],
            namespaces: self.chain.namespaces(),
        }
    }

    fn instance(&self) -> &str {
        &self.agent.instance
    }
}

#[test]
fn config_file_edits_apply_live_and_bad_edits_are_rejected() {
    let lab = Lab::start("fe", &own_address_pool());
    let _report = lab.report();
    let (cnf, client, server) = (&lab.chain.cnf, &lab.chain.client, &lab.chain.server);
    let _web = lab.chain.start_http_server(http_echo());
    let _inside_web = client.start_http_echo(http_echo(), "0.0.0.0:80");
    let forwarded_url = format!("http://{CNF_OUTSIDE_IP}:8080/");

    // SNAT only: the client gets out, nothing gets in.
    let seen = client
        .curl(&format!("http://{SERVER_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, CNF_OUTSIDE_IP);
    let refused = server.curl(&forwarded_url, &["--max-time", "3"]);
    assert!(
        refused.is_err(),
        "reached the client before any mapping: {refused:?}"
    );

    // An editor's save: a static mapping to the client's web server.
    let with_mapping = nat_chain_config(
        lab.instance(),
        TC,
        &own_address_pool().static_mapping(
            "tcp",
            &format!("{CNF_OUTSIDE_IP}:8080"),
            &format!("{CLIENT_IP}:80"),
        ),
    );
    lab.agent.replace_config(&with_mapping);
    let seen = poll(
        Duration::from_secs(30),
        "the edited mapping forwards",
        || server.curl(&forwarded_url, &["--max-time", "3"]),
    );
    assert_eq!(seen, SERVER_IP, "the client's web server saw {seen}");
    let good = config_get(cnf, lab.instance());
    assert!(
        good.contains(&format!("{CNF_OUTSIDE_IP}:8080"))
            && good.contains(&format!("{CLIENT_IP}:80")),
        "xcnfctl config get does not show the mapping:\n{good}"
    );
    lab.agent
        .wait_for_log_line(Duration::from_secs(10), |l| {
            l.contains("config file change applied")
        })
        .unwrap_or_else(|e| panic!("{e}"));

    // A bad save: a port out of range. Logged with the file and the field,
    // and nothing changes.
    let bad = with_mapping.replace(
        &format!("{CNF_OUTSIDE_IP}:8080"),
        &format!("{CNF_OUTSIDE_IP}:70000"),
    );
    assert_ne!(bad, with_mapping);
    lab.agent.replace_config(&bad);
    let path = lab.agent.config.display().to_string();
    let line = lab
        .agent
        .wait_for_log_line(Duration::from_secs(30), |l| {
            l.contains("config edit rejected")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line.contains(&path) && line.contains("spec.nat44.staticMappings[0].external"),
        "the rejection must name {path} and the field: {line}"
    );
    assert!(line.contains("70000"), "{line}");
    assert_eq!(
        config_get(cnf, lab.instance()),
        good,
        "the config in force changed after a rejected edit"
    );
    let seen = server
        .curl(&forwarded_url, &[])
        .unwrap_or_else(|e| panic!("after the rejected edit: {e}"));
    assert_eq!(seen, SERVER_IP);
    let seen = client
        .curl(&format!("http://{SERVER_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("SNAT after the rejected edit: {e}"));
    assert_eq!(seen, CNF_OUTSIDE_IP);
    assert_all_configured(cnf, lab.instance(), &["nat44"]);
}

/// The chain's config with an extra address on `inside` and, if `route`,
/// a route to 10.77.0.0/16 metric 7 through the client.
fn with_address_and_route(name: &str, route: bool) -> String {
    let mut y = chain_config(name, TC).replacen(
        "hostIfName: c0}\n",
        "hostIfName: c0}\n      ipAddresses: [10.98.0.1/24]\n",
        1,
    );
    assert!(y.contains("10.98.0.1/24"), "{y}");
    if route {
        y.push_str(&format!(
            "  routes:\n    - {{dst: 10.77.0.0/16, via: {CLIENT_IP}, interface: inside, metric: 7}}\n"
        ));
    }
    y
}

/// A route to 10.77.0.0/16 metric 7 that the agent did not make, with the
/// key of the one [`with_address_and_route`] asks for: applying that config
/// fails in its route step.
fn add_foreign_route(cnf: &Netns) {
    cnf.ip(&[
        "route",
        "add",
        "10.77.0.0/16",
        "via",
        SERVER_IP,
        "metric",
        "7",
    ]);
}

#[test]
fn grpc_apply_that_fails_rolls_back() {
    let prefix = unique_prefix("rb");
    let chain = Chain::new(&prefix);
    let cnf = &chain.cnf;
    let agent = Agent::start(cnf, &prefix, &chain_config(&prefix, TC), &[]);
    // Someone else's route with the key the new config wants.
    add_foreign_route(cnf);
    let files = Scratch::new(&format!("{prefix}-files"));
    let write = |name: &str, yaml: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, yaml).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p.display().to_string()
    };
    let old_config = config_get(cnf, &prefix);
    let (code, old_status) = statuses(cnf, &prefix);
    assert_eq!(code, Some(0), "{old_status:#?}");

    let conflicting = write("conflicting.yaml", &with_address_and_route(&prefix, true));
    let out = xcnfctl_output(cnf, &prefix, &["config", "apply", &conflicting]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("route/10.77.0.0/16/metric/7") && err.contains("rolled back"),
        "{err}"
    );
    let addrs = addresses(cnf, "c0");
    assert!(
        !addrs.contains(&"10.98.0.1/24".to_owned()),
        "the address of the failed transaction stayed: {addrs:?}\n{}",
        agent.log()
    );
    let theirs = routes_to(cnf, "10.77.0.0/16");
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0]["gateway"], SERVER_IP, "{theirs:#?}");
    assert_ne!(
        theirs[0]["protocol"].as_str(),
        Some(XCNF_RTPROT),
        "{theirs:#?}"
    );
    assert_eq!(config_get(cnf, &prefix), old_config);
    assert_eq!(statuses(cnf, &prefix), (Some(0), old_status.clone()));

    // A dry run prints the plan and changes nothing.
    let address_only = write("address.yaml", &with_address_and_route(&prefix, false));
    let out = xcnfctl_output(
        cnf,
        &prefix,
        &["config", "apply", "--dry-run", &address_only],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("address/inside/10.98.0.1/24") && plan.contains("dry run: nothing changed"),
        "{plan}"
    );
    assert!(!addresses(cnf, "c0").contains(&"10.98.0.1/24".to_owned()));
    assert_eq!(config_get(cnf, &prefix), old_config);

    // An invalid config is refused with the field's path.
    let invalid = write(
        "invalid.yaml",
        &chain_config(&prefix, TC).replacen(
            "hostIfName: c0}\n",
            "hostIfName: c0}\n      mtu: 10\n",
            1,
        ),
    );
    let mtu_before = mtu(cnf, "c0");
    let out = xcnfctl_output(cnf, &prefix, &["config", "apply", &invalid]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("spec.interfaces[0].mtu"),
        "{}",
        show(&out)
    );
    assert_eq!(mtu(cnf, "c0"), mtu_before);
    assert_eq!(config_get(cnf, &prefix), old_config);
    assert_eq!(statuses(cnf, &prefix), (Some(0), old_status));

    // The same address without the conflict applies: the rollback above
    // was the route's doing.
    let out = xcnfctl_output(cnf, &prefix, &["config", "apply", &address_only]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(addresses(cnf, "c0").contains(&"10.98.0.1/24".to_owned()));
    assert_all_configured(cnf, &prefix, &["address/inside/10.98.0.1/24"]);
    assert_ne!(config_get(cnf, &prefix), old_config);
}

/// The inside halves of the TCP sessions to port `dport`.
fn inside_tcp_halves(pins: &Path, dport: u16) -> Vec<(SessionKey, Session)> {
    read_sessions(pins)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|(k, _)| {
            k.dir == nat::role::INSIDE && k.proto == nat::proto::TCP && k.dport == dport
        })
        .collect()
}

fn bytes_of(halves: &[(SessionKey, Session)]) -> u64 {
    halves.iter().map(|(_, v)| v.bytes).sum()
}

/// A `maxSessions` change in a transaction that fails is rolled back with
/// the rest: the session tables keep their size and their sessions. (The
/// tables used to be resized before the first step, outside the
/// transaction.)
#[test]
fn a_failed_apply_keeps_the_session_tables() {
    let lab = Lab::start("mx", &own_address_pool().max_sessions(1000));
    let _report = lab.report();
    let (cnf, client) = (&lab.chain.cnf, &lab.chain.client);
    let _web = lab.chain.start_http_server(http_echo());
    let through_the_nat = |when: &str| {
        let seen = client
            .curl(&format!("http://{SERVER_IP}:8080/"), &[])
            .unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(seen, CNF_OUTSIDE_IP, "{when}");
    };
    let pins = pin_dir(lab.instance());
    let table = || {
        let info = aya::maps::MapInfo::from_pin(pins.join("nat_sessions"))
            .unwrap_or_else(|e| panic!("nat_sessions: {e}"));
        (info.id(), info.max_entries())
    };
    let keys = || {
        let mut k: Vec<SessionKey> = read_sessions(&pins)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        k.sort_by_key(|k| format!("{k:?}"));
        k
    };
    let files = Scratch::new(&format!("{}-files", lab.instance()));
    let apply = |name: &str, yaml: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        xcnfctl_output(
            cnf,
            lab.instance(),
            &["config", "apply", &path.display().to_string()],
        )
    };
    let reloaded = || {
        lab.agent
            .log()
            .contains("reloading the datapath with new session tables")
    };
    let bigger = nat_chain_config(lab.instance(), TC, &own_address_pool().max_sessions(2000));

    through_the_nat("before any change");
    let (table_before, keys_before) = (table(), keys());
    assert!(!keys_before.is_empty(), "curl made no session");

    // Someone else's route with the key the new config wants: the route
    // step fails, before the nat44 step would resize the tables.
    add_foreign_route(cnf);
    let with_route = format!(
        "{bigger}  routes:\n    - {{dst: 10.77.0.0/16, via: {CLIENT_IP}, interface: inside, metric: 7}}\n"
    );
    let out = apply("bigger-with-route.yaml", &with_route);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(text(&out.stderr).contains("rolled back"), "{}", show(&out));
    assert_eq!(
        table(),
        table_before,
        "the session table was replaced (map id, entries) by a rolled-back apply"
    );
    assert_eq!(keys(), keys_before, "sessions lost in a rolled-back apply");
    assert!(!reloaded(), "{}", lab.agent.log());
    through_the_nat("after the rolled-back apply");

    // Without the conflicting route the same change applies, and the nat44
    // step resizes the tables.
    let out = apply("bigger.yaml", &bigger);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (_, entries) = table();
    assert!(
        entries > table_before.1,
        "maxSessions 2000: {entries} entries, 1000 had {}",
        table_before.1
    );
    assert!(reloaded(), "{}", lab.agent.log());
    through_the_nat("after the resize");
}

#[test]
fn kill_9_during_iperf3_through_nat_does_not_reset_the_transfer() {
    let mut lab = Lab::start("k9", &own_address_pool());
    let pins = lab.agent.pin_dir();
    let _iperf_server = lab.chain.server.start_iperf3_server();
    let Lab { chain, agent } = &mut lab;
    let (report, bytes_at_kill) = std::thread::scope(|s| {
        let run = s.spawn(|| chain.client.iperf3(SERVER_IP, 8, &[]));
        // Kill once data is flowing through the NAT.
        let at_kill = poll(
            Duration::from_secs(30),
            "iperf3 data through the NAT",
            || {
                let b = bytes_of(&inside_tcp_halves(&pins, 5201));
                if b >= 1 << 20 {
                    Ok(b)
                } else if run.is_finished() {
                    panic!("iperf3 ended before any data flowed")
                } else {
                    Err(format!("{b} bytes so far"))
                }
            },
        );
        agent.kill9();
        assert!(
            !run.is_finished(),
            "iperf3 finished before the kill: the test proved nothing"
        );
        let report = run
            .join()
            .unwrap_or_else(|_| panic!("iperf3 thread panicked"));
        (report, at_kill)
    });
    let _report = lab.report();
    let r = report.unwrap_or_else(|e| panic!("iperf3 across the kill: {e}"));
    assert!(r.sent_bytes > 0 && r.received_bytes > 0, "{}", r.json);
    let after = inside_tcp_halves(&pins, 5201);
    let bytes_after = bytes_of(&after);
    println!(
        "iperf3: sent {} received {}; NAT session bytes at the kill {bytes_at_kill}, at the end {bytes_after}",
        r.sent_bytes, r.received_bytes
    );
    assert!(
        bytes_after > bytes_at_kill + (1 << 20),
        "the datapath translated (almost) nothing after the kill: {bytes_at_kill} -> {bytes_after}\n{}",
        after
            .iter()
            .map(|(k, v)| format_session(k, v))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for p in ["links/tc-c0", "links/tc-c1", "nat_sessions"] {
        assert!(pins.join(p).exists(), "{p} unpinned after kill -9");
    }
}

/// A TCP connection from the client to the web server through the NAT,
/// made with plain sockets created in each namespace (a socket stays in
/// the namespace it was created in, whichever thread uses it).
struct TcpFlow {
    inside: TcpStream,
    outside: TcpStream,
}

const TCP_PORT: u16 = 7100;

impl TcpFlow {
    fn open(chain: &Chain) -> Self {
        let listener = chain.server.within(|| {
            TcpListener::bind((SERVER_IP, TCP_PORT)).unwrap_or_else(|e| panic!("bind: {e}"))
        });
        let inside = chain.client.within(|| {
            let to = std::net::SocketAddr::from((
                SERVER_IP.parse::<std::net::Ipv4Addr>().unwrap(),
                TCP_PORT,
            ));
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect through the NAT: {e}"))
        });
        let (outside, seen) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
        assert_eq!(
            seen.ip().to_string(),
            CNF_OUTSIDE_IP,
            "untranslated: {seen}"
        );
        for s in [&inside, &outside] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        Self { inside, outside }
    }

    /// One message each way on the open connection.
    fn exchange(&self, what: &str) {
        for (mut from, mut to, msg) in [
            (&self.inside, &self.outside, format!("{what}: out")),
            (&self.outside, &self.inside, format!("{what}: back")),
        ] {
            from.write_all(msg.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: send {msg:?}: {e}"));
            let mut buf = vec![0u8; msg.len()];
            to.read_exact(&mut buf)
                .unwrap_or_else(|e| panic!("{what}: receive {msg:?}: {e}"));
            assert_eq!(String::from_utf8_lossy(&buf), msg);
        }
    }
}

#[test]
fn restart_adopts_pins_without_flushing_sessions() {
    let prefix = unique_prefix("ra");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let _pins = PinGuard(prefix.clone());
    let cfg = nat_chain_config(&prefix, TC, &own_address_pool());
    let mut a = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    let _echo = chain
        .server
        .start_udp_echo(udp_echo(), &format!("{SERVER_IP}:7000"));
    let ports = 31000..=31002u16;
    let ask = || {
        chain.client.udp_ask(
            udp_echo(),
            CLIENT_IP,
            ports.clone(),
            &format!("{SERVER_IP}:7000"),
            Duration::from_secs(3),
        )
    };
    let first = ask();
    assert!(first.iter().all(|(_, a)| a.is_some()), "{first:?}");
    let tcp = TcpFlow::open(&chain);
    tcp.exchange("before the restart");
    let pins = pin_dir(&prefix);
    // The inside halves of the three UDP flows and the TCP connection.
    let flows = |pins: &Path| -> Vec<(SessionKey, Session)> {
        let mut v: Vec<_> = read_sessions(pins)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|(k, _)| {
                k.dir == nat::role::INSIDE
                    && ((k.proto == nat::proto::UDP && ports.contains(&k.sport))
                        || (k.proto == nat::proto::TCP && k.dport == TCP_PORT))
            })
            .collect();
        v.sort_by_key(|(k, _)| (k.proto, k.sport));
        v
    };
    let before = flows(&pins);
    assert_eq!(before.len(), 4, "{before:?}");
    let all_keys = |pins: &Path| -> Vec<SessionKey> {
        read_sessions(pins)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };

    a.kill9();
    a.keep_pins();
    drop(a);
    let b = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    let _report = ReportOnPanic {
        agent: &b,
        cnf: &chain.cnf,
        ifnames: vec!["c0", "c1"],
        namespaces: chain.namespaces(),
    };
    // Nothing was flushed: both halves of every flow are still there.
    let keys = all_keys(&pins);
    for (k, v) in &before {
        assert!(
            keys.contains(k),
            "inside half lost: {}",
            format_session(k, v)
        );
        assert!(
            keys.contains(&k.peer(v)),
            "outside half lost: {}",
            format_session(k, v)
        );
    }
    // The same flows go on: the same external endpoints, the same sessions.
    let again = ask();
    assert_eq!(again, first, "the flows' external endpoints changed");
    tcp.exchange("after the restart");
    let after = flows(&pins);
    assert_eq!(after.len(), before.len(), "{after:?}");
    for ((k0, v0), (k1, v1)) in before.iter().zip(&after) {
        assert_eq!(k0, k1);
        assert!(
            v1.packets > v0.packets && (v1.saddr, v1.sport) == (v0.saddr, v0.sport),
            "not the same session, or it did not count: {} -> {}",
            format_session(k0, v0),
            format_session(k1, v1)
        );
    }
    let shown = chain.cnf.attached_programs("c0").join(",");
    assert_eq!(shown.matches("xcnf_tc").count(), 1, "{shown}");
    assert_all_configured(
        &chain.cnf,
        &prefix,
        &["nat44", "datapath/inside", "datapath/outside"],
    );
}

#[test]
fn api_socket_is_private() {
    let prefix = unique_prefix("as");
    let chain = Chain::new(&prefix);
    let cfg = chain_config(&prefix, TC);
    let agent = Agent::start(&chain.cnf, &prefix, &cfg, &[]);
    let socket = agent.api_socket();
    let mode = |p: &Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .mode()
            & 0o7777
    };
    let meta =
        std::fs::symlink_metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        socket.display()
    );
    assert_eq!(mode(&socket), 0o600, "{}", socket.display());
    let dir = socket.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let health = xcnfctl(&chain.cnf, &prefix, &["health"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(health.starts_with("serving"), "{health}");

    // A second agent for the same instance stops at the socket.
    let scratch = Scratch::new(&format!("{prefix}-second"));
    let out = Agent::run_beside(
        &chain.cnf,
        &scratch,
        &prefix,
        &cfg,
        &[],
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success(),
        "the second agent ran: {}",
        show(&out)
    );
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("xcnf-agent: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&socket.display().to_string()) && line.contains("another process is serving"),
        "{line}"
    );
    assert!(
        !err.contains("loading datapath") && !err.contains("hook chosen"),
        "the second agent touched the datapath before failing:\n{err}"
    );

    // The first one is untouched: its socket, its pins, its attachments.
    assert_eq!(mode(&socket), 0o600);
    let health = xcnfctl(&chain.cnf, &prefix, &["health"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(health.starts_with("serving"), "{health}");
    for ifname in ["c0", "c1"] {
        let shown = chain.cnf.attached_programs(ifname).join(",");
        assert_eq!(shown.matches("xcnf_tc").count(), 1, "{ifname}: {shown}");
    }
    let c0 = chain.cnf.ifindex("c0");
    let forwarded = || {
        read_counters(&agent.pin_dir(), c0)
            .unwrap_or_else(|| panic!("no counters for c0"))
            .forwarded
            .packets
    };
    let before = forwarded();
    chain.ping(3);
    assert!(
        forwarded() >= before + 3,
        "the first agent's datapath stopped forwarding"
    );
    assert!(
        !agent.log().contains(" ERROR "),
        "the first agent logged an error:\n{}",
        agent.log()
    );
}

/// A start that fails after the API socket was bound (here: no eBPF object)
/// leaves neither the socket nor its directory behind: `xcnfctl` would
/// otherwise find a dead instance next to the live ones and, without
/// `--instance`, refuse to pick.
#[test]
fn failed_start_leaves_no_api_socket() {
    let prefix = unique_prefix("fa");
    let ns = Netns::new(&prefix);
    let _guard = PinGuard(prefix.clone());
    let scratch = Scratch::new(&prefix);
    let out = Agent::run_beside(
        &ns,
        &scratch,
        &prefix,
        &chain_config(&prefix, TC),
        &["--ebpf-object", "/nonexistent/xcnf.o"],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("/nonexistent/xcnf.o"),
        "{}",
        show(&out)
    );
    let dir = state_dir(&prefix);
    assert!(
        !dir.join("api.sock").exists(),
        "the failed agent left its socket: {}",
        show(&out)
    );
    assert!(!dir.exists(), "the failed agent left {}", dir.display());
}
