//! The agent with `backend: vpp` interfaces against the VPP API double: the
//! NAT44 chain over memif as VPP records it, a VPP error in the middle of a
//! transaction, VPP down at start, VPP restarting, the socket closing in
//! the middle of a transaction, and a VPP whose API does not match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;
use xcnf_tests::{
    agent::{Agent, xcnfctl, xcnfctl_output},
    netns::{Netns, unique_prefix},
    vpp_double::{DoubleSession, VERSION, VppDoubleHost, VppState},
};

/// Guards against a hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// The double on its own runtime; the agent is another process.
type Vpp = VppDoubleHost;

/// The classic chain with both CNF interfaces as memifs in VPP.
fn chain(instance: &str, dir: &Path, extra: &str, statics: &str) -> String {
    format!(
        r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {{name: {instance}}}
spec:
  interfaces:
    - name: inside
      memif: {{socket: {dir}/memif-inside.sock, role: master, id: 1}}
      backend: vpp
      ipAddresses: [192.168.100.1/24]
    - name: outside
      memif: {{socket: {dir}/memif-outside.sock, role: master, id: 2}}
      backend: vpp
      ipAddresses: [80.80.80.100/24]
{extra}  routes:
    - {{dst: 10.0.0.0/8, via: 80.80.80.1, interface: outside}}
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {{first: 80.80.80.100, last: 80.80.80.105}}
    staticMappings:
      - {{protocol: tcp, external: "80.80.80.100:8080", local: "192.168.100.10:80"}}
{statics}    identityMappings:
      - {{protocol: udp, address: 80.80.80.100, port: 53}}
    timeouts: {{tcpEstablished: 7200s, tcpTransitory: 240s, udp: 120s, icmp: 30s}}
    maxSessions: 4096
"#,
        dir = dir.display()
    )
}

/// What VPP holds, with interfaces by name rather than sw_if_index (which a
/// VPP restart may hand out differently), in one comparable text.
fn summary(s: &VppState) -> String {
    let name = |sw: u32| {
        s.interfaces
            .get(&sw)
            .map_or_else(|| format!("sw{sw}?"), |i| i.name.clone())
    };
    let mut out = Vec::new();
    for (id, f) in &s.memif_sockets {
        out.push(format!("socket {id} {f}"));
    }
    for i in s.interfaces.values() {
        out.push(format!(
            "iface {} up={} memif={:?} addrs={:?}",
            i.name, i.admin_up, i.memif, i.addresses
        ));
    }
    for ((t, a, l), paths) in &s.routes {
        let p: Vec<String> = paths
            .iter()
            .map(|p| format!("via {} {}", p.next_hop, name(p.sw_if_index)))
            .collect();
        out.push(format!("route {t} {a}/{l} {p:?}"));
    }
    out.push(format!("nat44 {:?}", s.nat44));
    out.push(format!("pool {:?}", s.nat_addresses));
    let sides: BTreeMap<String, _> = s
        .nat_interfaces
        .iter()
        .map(|(sw, x)| (name(*sw), (x.inside, x.outside)))
        .collect();
    out.push(format!("nat interfaces {sides:?}"));
    out.push(format!("static {:?}", s.static_mappings));
    out.push(format!("identity {:?}", s.identity_mappings));
    out.push(format!("timeouts {:?}", s.timeouts));
    out.join("\n")
}

/// The memifs' MACs, in interface order.
fn macs(s: &VppState) -> Vec<[u8; 6]> {
    s.interfaces
        .values()
        .filter(|i| i.memif.is_some())
        .map(|i| i.mac)
        .collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {PATIENCE:?}\n--- agent log ---\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `xcnfctl -o json status`: (key, state, reason) of every item.
fn statuses(ns: &Netns, instance: &str) -> Vec<(String, String, String)> {
    let out = xcnfctl_output(ns, instance, &["-o", "json", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "xcnfctl status: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (text("key"), text("state"), s.to_string())
        })
        .collect()
}

fn all_configured(ns: &Netns, instance: &str) -> bool {
    let s = statuses(ns, instance);
    !s.is_empty() && s.iter().all(|(_, state, _)| state == "configured")
}

/// The whole chain as VPP must hold it.
fn assert_chain(s: &VppState, dir: &Path) {
    let sockets: Vec<&String> = s.memif_sockets.values().collect();
    for f in ["memif-inside.sock", "memif-outside.sock"] {
        let want = dir.join(f).display().to_string();
        assert!(
            sockets.contains(&&want),
            "{want} not registered: {sockets:?}"
        );
    }
    let memifs: Vec<_> = s
        .interfaces
        .values()
        .filter(|i| i.memif.is_some())
        .collect();
    assert_eq!(memifs.len(), 2, "{}", summary(s));
    let by_addr = |a: &str| {
        s.interfaces
            .iter()
            .find(|(_, i)| i.addresses.iter().any(|(ip, l)| format!("{ip}/{l}") == a))
            .map(|(sw, i)| (*sw, i.clone()))
            .unwrap_or_else(|| panic!("no interface with {a}:\n{}", summary(s)))
    };
    let (inside, i) = by_addr("192.168.100.1/24");
    assert!(i.admin_up && i.memif.is_some_and(|m| m.id == 1), "{i:?}");
    let (outside, o) = by_addr("80.80.80.100/24");
    assert!(o.admin_up && o.memif.is_some_and(|m| m.id == 2), "{o:?}");
    let route = &s.routes[&(0, "10.0.0.0".parse().unwrap(), 8)];
    assert_eq!(route.len(), 1, "{route:?}");
    assert_eq!(route[0].next_hop.to_string(), "80.80.80.1");
    assert_eq!(route[0].sw_if_index, outside);
    assert_eq!(s.nat44.map(|n| n.sessions), Some(4096), "{}", summary(s));
    let pool: Vec<String> = s.nat_addresses.iter().map(ToString::to_string).collect();
    assert_eq!(
        pool,
        (100..=105)
            .map(|n| format!("80.80.80.{n}"))
            .collect::<Vec<_>>()
    );
    assert!(s.nat_interfaces[&inside].inside && !s.nat_interfaces[&inside].outside);
    assert!(s.nat_interfaces[&outside].outside && !s.nat_interfaces[&outside].inside);
    let statics: Vec<String> = s
        .static_mappings
        .iter()
        .map(|m| {
            format!(
                "{} {}:{} {}:{}",
                m.protocol, m.external, m.external_port, m.local, m.local_port
            )
        })
        .collect();
    assert!(
        statics.contains(&"6 80.80.80.100:8080 192.168.100.10:80".to_owned()),
        "{statics:?}"
    );
    let identities: Vec<String> = s
        .identity_mappings
        .iter()
        .map(|m| format!("{} {}:{}", m.protocol, m.addr, m.port))
        .collect();
    assert_eq!(identities, ["17 80.80.80.100:53"]);
    assert_eq!(
        (
            s.timeouts.tcp_established,
            s.timeouts.tcp_transitory,
            s.timeouts.udp,
            s.timeouts.icmp
        ),
        (7200, 240, 120, 30)
    );
}

/// The agent with the chain config, once every item is configured.
fn start_configured(ns: &Netns, instance: &str, vpp: &Vpp) -> Agent {
    let agent = start_agent(ns, instance, vpp, &chain(instance, &vpp.dir, "", ""));
    wait_until(
        "every item configured",
        || all_configured(ns, instance),
        || agent.log(),
    );
    agent
}

fn start_agent(ns: &Netns, instance: &str, vpp: &Vpp, config: &str) -> Agent {
    let socket = vpp.socket_arg();
    Agent::start(ns, instance, config, &["--vpp-api-socket", &socket])
}

#[test]
fn nat44_chain_over_memif_is_programmed_into_vpp() {
    let prefix = unique_prefix("vpc");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("chain");
    let _agent = start_configured(&ns, &prefix, &vpp);
    assert_chain(&vpp.double.snapshot(), &vpp.dir);
    let keys: Vec<String> = statuses(&ns, &prefix).into_iter().map(|s| s.0).collect();
    for k in [
        "vpp/interface/inside",
        "vpp/interface/outside",
        "vpp/address/inside/192.168.100.1/24",
        "vpp/route/10.0.0.0/8",
        "vpp/nat44",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
    // The agent registered under its instance name.
    assert!(
        vpp.double
            .clients()
            .iter()
            .any(|c| c == &format!("xcnf-agent-{prefix}")),
        "{:?}",
        vpp.double.clients()
    );
}

#[test]
fn a_vpp_error_mid_transaction_reverts_the_whole_transaction() {
    let prefix = unique_prefix("vpe");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("revert");
    let agent = start_configured(&ns, &prefix, &vpp);
    let before = summary(&vpp.double.snapshot());
    let old_config = xcnfctl(&ns, &prefix, &["config", "get"]).unwrap();

    // A third memif with an address, and a second static mapping that VPP
    // refuses after the memif and its address were made.
    let extra = format!(
        "    - name: extra\n      memif: {{socket: {}/memif-extra.sock, role: slave, id: 3}}\n      backend: vpp\n      ipAddresses: [10.9.0.1/24]\n",
        vpp.dir.display()
    );
    let statics = "      - {protocol: udp, external: \"80.80.80.101:5000\", local: \"192.168.100.11:5000\"}\n";
    let file = vpp.dir.join("update.yaml");
    std::fs::write(&file, chain(&prefix, &vpp.dir, &extra, statics)).unwrap();
    vpp.double
        .fail_nth("nat44_add_del_static_mapping_v2", 1, -7);
    let out = xcnfctl_output(
        &ns,
        &prefix,
        &["config", "apply", &file.display().to_string()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}\n{}", agent.log());
    assert!(
        err.contains("vpp/nat44") && err.contains("-7") && err.contains("rolled back"),
        "{err}"
    );
    // The memif, its address and the mapping are gone again; the rest is
    // as before, and so is the config in force.
    assert_eq!(summary(&vpp.double.snapshot()), before);
    assert_eq!(
        xcnfctl(&ns, &prefix, &["config", "get"]).unwrap(),
        old_config
    );
    assert!(
        all_configured(&ns, &prefix),
        "{:#?}",
        statuses(&ns, &prefix)
    );
}

#[test]
fn vpp_down_at_start_is_pending_then_applied_when_it_comes_up() {
    let prefix = unique_prefix("vpd");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("down");
    vpp.double.stop();
    let agent = start_agent(&ns, &prefix, &vpp, &chain(&prefix, &vpp.dir, "", ""));
    let s = statuses(&ns, &prefix);
    let memif = s
        .iter()
        .find(|x| x.0 == "vpp/interface/inside")
        .unwrap_or_else(|| panic!("{s:#?}"));
    assert_eq!(memif.1, "pending", "{memif:?}");
    assert!(memif.2.contains("not reachable"), "{memif:?}");

    vpp.resume();
    wait_until(
        "configured",
        || all_configured(&ns, &prefix),
        || agent.log(),
    );
    assert_chain(&vpp.double.snapshot(), &vpp.dir);
}

#[test]
fn vpp_restart_loses_everything_and_the_agent_applies_it_again() {
    let prefix = unique_prefix("vpr");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("restart");
    let agent = start_configured(&ns, &prefix, &vpp);
    let before = summary(&vpp.double.snapshot());
    let macs_before = macs(&vpp.double.snapshot());
    assert_eq!(macs_before.len(), 2);

    vpp.restart();
    wait_until(
        "VPP configured again after its restart",
        || vpp.double.snapshot().nat44.is_some() && all_configured(&ns, &prefix),
        || agent.log(),
    );
    assert_chain(&vpp.double.snapshot(), &vpp.dir);
    assert_eq!(summary(&vpp.double.snapshot()), before);
    // The memifs keep their MACs (else the peers' neighbour entries would
    // point at MACs that no longer exist): locally administered unicast.
    assert_eq!(macs(&vpp.double.snapshot()), macs_before);
    for m in &macs_before {
        assert_eq!(m[0], 0x02, "{macs_before:02x?}");
    }
    assert!(
        agent.log().contains("re-applying every VPP item"),
        "{}",
        agent.log()
    );
}

#[test]
fn socket_closed_mid_transaction_reconnects_and_resyncs() {
    let prefix = unique_prefix("vps");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("close");
    // The first apply loses its connection halfway through the NAT section.
    vpp.double.close_on("nat44_add_del_address_range");
    let _agent = start_configured(&ns, &prefix, &vpp);
    assert_chain(&vpp.double.snapshot(), &vpp.dir);
    assert!(
        vpp.double.clients().len() >= 2,
        "no reconnect: {:?}",
        vpp.double.clients()
    );
}

#[test]
fn a_vpp_with_another_api_is_refused_naming_the_message_and_both_crcs() {
    let prefix = unique_prefix("vpx");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("crc");
    vpp.double.set_crc("memif_create_v2", "deadbeef");
    let agent = start_agent(&ns, &prefix, &vpp, &chain(&prefix, &vpp.dir, "", ""));
    let mut reason = String::new();
    wait_until(
        "the memif pending with the CRC mismatch",
        || {
            let s = statuses(&ns, &prefix);
            match s.iter().find(|x| x.0 == "vpp/interface/inside") {
                Some(x) if x.2.contains("deadbeef") => {
                    reason = x.2.clone();
                    true
                }
                _ => false,
            }
        },
        || agent.log(),
    );
    assert!(reason.contains("memif_create_v2"), "{reason}");
    // Nothing was configured in a VPP the agent cannot drive.
    assert_eq!(vpp.double.snapshot().interfaces.len(), 1, "only local0");
}

#[test]
fn xcnfctl_reads_sessions_and_runs_cli_commands_in_vpp() {
    let prefix = unique_prefix("vpq");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("cli");
    vpp.double.set_sessions(vec![DoubleSession {
        protocol: 6,
        inside: "192.168.100.10:41000".parse().unwrap(),
        outside: "80.80.80.100:41000".parse().unwrap(),
        ext_host: "80.80.80.80:80".parse().unwrap(),
        is_static: false,
        total_bytes: 4321,
        total_pkts: 12,
        seconds_since_last_heard: 3,
    }]);
    let _agent = start_configured(&ns, &prefix, &vpp);

    let out = xcnfctl(&ns, &prefix, &["vpp", "cli", "show version"]).unwrap();
    assert!(out.contains(VERSION), "{out}");
    assert!(
        vpp.double
            .snapshot()
            .cli_commands
            .contains(&"show version".to_owned()),
        "{:?}",
        vpp.double.snapshot().cli_commands
    );

    let json = xcnfctl(&ns, &prefix, &["-o", "json", "nat", "sessions"]).unwrap();
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let text = v.to_string();
    for want in ["192.168.100.10", "41000", "80.80.80.100", "80.80.80.80"] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    // VPP does not say when a session began: no age rather than a made-up 0.
    assert!(
        v["sessions"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|s| s["ageNs"].is_null()),
        "{text}"
    );
    let table = xcnfctl(&ns, &prefix, &["nat", "sessions"]).unwrap();
    assert!(
        table.contains("192.168.100.10:41000") && table.contains("80.80.80.100:41000"),
        "{table}"
    );

    // An empty command is refused by the agent, naming the field.
    let out = xcnfctl_output(&ns, &prefix, &["vpp", "cli", " "]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("command"), "{err}");
}

/// An agent killed without cleaning up leaves its configuration in a VPP
/// that keeps running; the next one adopts it instead of failing on it or
/// making it twice.
#[test]
fn a_restarted_agent_adopts_what_it_left_in_vpp() {
    let prefix = unique_prefix("vpa");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("adopt");
    let mut first = start_configured(&ns, &prefix, &vpp);
    let before = summary(&vpp.double.snapshot());
    let macs_before = macs(&vpp.double.snapshot());
    first.kill9();
    drop(first);
    assert_eq!(
        summary(&vpp.double.snapshot()),
        before,
        "kill -9 changed VPP"
    );

    let _second = start_configured(&ns, &prefix, &vpp);
    assert_chain(&vpp.double.snapshot(), &vpp.dir);
    assert_eq!(summary(&vpp.double.snapshot()), before);
    assert_eq!(macs(&vpp.double.snapshot()), macs_before);
    assert_eq!(
        vpp.double.count("memif_create_v2"),
        2,
        "{:?}",
        vpp.double.received()
    );
}

/// A restarted agent removes from VPP what an earlier run made and its new
/// config no longer has (the record kept next to `owned.json`), and leaves
/// the rest in place: the inside memif is adopted, not made again.
#[test]
fn a_restarted_agent_removes_what_its_new_config_dropped() {
    let prefix = unique_prefix("vpl");
    let ns = Netns::new(&prefix);
    let vpp = Vpp::start("leftover");
    let mut first = start_configured(&ns, &prefix, &vpp);
    let s = vpp.double.snapshot();
    let inside_sw = s
        .interfaces
        .iter()
        .find(|(_, i)| {
            i.addresses
                .contains(&("192.168.100.1".parse().unwrap(), 24))
        })
        .map(|(sw, _)| *sw)
        .unwrap_or_else(|| panic!("no inside memif:\n{}", summary(&s)));
    assert!(s.nat44.is_some() && !s.routes.is_empty(), "{}", summary(&s));
    first.kill9();
    first.keep_pins();
    drop(first);

    let only_inside = format!(
        r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {{name: {prefix}}}
spec:
  interfaces:
    - name: inside
      memif: {{socket: {dir}/memif-inside.sock, role: master, id: 1}}
      backend: vpp
      ipAddresses: [192.168.100.1/24]
"#,
        dir = vpp.dir.display()
    );
    let second = start_agent(&ns, &prefix, &vpp, &only_inside);
    let outside_socket = vpp.dir.join("memif-outside.sock").display().to_string();
    wait_until(
        "VPP holding only the inside memif",
        || {
            let s = vpp.double.snapshot();
            let memifs: Vec<u32> = s
                .interfaces
                .iter()
                .filter(|(_, i)| i.memif.is_some())
                .map(|(sw, _)| *sw)
                .collect();
            s.nat44.is_none()
                && s.routes.is_empty()
                && memifs == [inside_sw]
                && !s.memif_sockets.values().any(|f| *f == outside_socket)
                && all_configured(&ns, &prefix)
        },
        || format!("{}\n{}", summary(&vpp.double.snapshot()), second.log()),
    );
    let s = vpp.double.snapshot();
    assert_eq!(
        s.interfaces[&inside_sw].addresses,
        [("192.168.100.1".parse().unwrap(), 24)].into(),
        "{}",
        summary(&s)
    );
    assert_eq!(
        vpp.double.count("memif_create_v2"),
        2,
        "the inside memif was made again: {:?}",
        vpp.double.received()
    );
}
