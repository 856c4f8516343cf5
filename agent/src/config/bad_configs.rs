//! The table of bad configs: each is one edit of a good document and must be
//! reported at exactly one field path, with the reason.

use super::Config;

/// Valid, and touches every section the edits below break.
const BASE: &str = r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: cnf}
spec:
  interfaces:
    - name: inside
      kernel: {hostIfName: c0}
      ipAddresses: [192.168.100.1/24]
      mtu: 1500
    - name: outside
      kernel: {hostIfName: c1}
      ipAddresses: [80.80.80.100/24]
    - name: spare
      kernel: {hostIfName: c2}
      enabled: false
  routes:
    - {dst: 0.0.0.0/0, via: 80.80.80.1, interface: outside, metric: 100}
    - {dst: 10.0.0.0/8, via: 192.168.100.254, interface: inside}
  neighbors:
    - {interface: outside, ip: 80.80.80.1, mac: "02:00:00:00:00:01"}
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.105}
"#;

/// Every problem as `path: message`; a parse error is one problem, and
/// serde_yaml's message already starts with the path.
fn problems(yaml: &str) -> Vec<String> {
    match Config::parse(yaml) {
        Err(m) => vec![m],
        Ok(c) => match c.validate() {
            Ok(()) => vec![],
            Err(es) => es.iter().map(ToString::to_string).collect(),
        },
    }
}

/// `BASE` with `from` (which must occur exactly once) replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once");
    BASE.replacen(from, to, 1)
}

const ROUTES_END: &str = "  neighbors:\n";
const NEIGHBORS_END: &str = "  nat44:\n";

#[test]
fn base_is_valid() {
    assert_eq!(problems(BASE), Vec::<String>::new());
}

/// (from, to, path, fragment of the message).
const CASES: &[(&str, &str, &str, &str)] = &[
    // interface addresses
    (
        "[192.168.100.1/24]",
        "[192.168.100.1]",
        "spec.interfaces[0].ipAddresses[0]",
        "\"192.168.100.1\" is not an IPv4 prefix (want a.b.c.d/len)",
    ),
    (
        "[192.168.100.1/24]",
        "[192.168.100.1/33]",
        "spec.interfaces[0].ipAddresses[0]",
        "prefix length \"33\" is out of range 0-32",
    ),
    (
        "[192.168.100.1/24]",
        "[192.168.300.1/24]",
        "spec.interfaces[0].ipAddresses[0]",
        "\"192.168.300.1\" is not an IPv4 address",
    ),
    (
        "[192.168.100.1/24]",
        "[0.0.0.0/24]",
        "spec.interfaces[0].ipAddresses[0]",
        "0.0.0.0 is the unspecified address",
    ),
    (
        "[192.168.100.1/24]",
        "[224.0.0.5/24]",
        "spec.interfaces[0].ipAddresses[0]",
        "224.0.0.5 is a multicast address",
    ),
    (
        "[192.168.100.1/24]",
        "[127.0.0.2/8]",
        "spec.interfaces[0].ipAddresses[0]",
        "127.0.0.2 is a loopback address",
    ),
    (
        "[192.168.100.1/24]",
        "[255.255.255.255/32]",
        "spec.interfaces[0].ipAddresses[0]",
        "255.255.255.255 is the limited broadcast address",
    ),
    (
        "[192.168.100.1/24]",
        "[192.168.100.0/24]",
        "spec.interfaces[0].ipAddresses[0]",
        "192.168.100.0 is the network address of 192.168.100.0/24",
    ),
    (
        "[192.168.100.1/24]",
        "[192.168.100.255/24]",
        "spec.interfaces[0].ipAddresses[0]",
        "192.168.100.255 is the broadcast address of 192.168.100.0/24",
    ),
    (
        "[192.168.100.1/24]",
        "[10.0.0.4/30]",
        "spec.interfaces[0].ipAddresses[0]",
        "10.0.0.4 is the network address of 10.0.0.4/30",
    ),
    (
        "[192.168.100.1/24]",
        "[192.168.100.1/24, 10.0.0.1/8, 192.168.100.1/16]",
        "spec.interfaces[0].ipAddresses[2]",
        "192.168.100.1 is already listed as spec.interfaces[0].ipAddresses[0]",
    ),
    (
        "[80.80.80.100/24]",
        "[80.80.80.100/24, 192.168.100.1/24]",
        "spec.interfaces[1].ipAddresses[1]",
        "192.168.100.1 is already assigned to interface \"inside\" (spec.interfaces[0].ipAddresses[0])",
    ),
    (
        "[80.80.80.100/24]",
        "80.80.80.100/24",
        "spec.interfaces[1].ipAddresses",
        "invalid type: string \"80.80.80.100/24\", expected a sequence",
    ),
    // mtu
    (
        "mtu: 1500",
        "mtu: 67",
        "spec.interfaces[0].mtu",
        "67 is out of range 68-65535",
    ),
    (
        "mtu: 1500",
        "mtu: 65536",
        "spec.interfaces[0].mtu",
        "65536 is out of range 68-65535",
    ),
    (
        "mtu: 1500",
        "mtu: -1",
        "spec.interfaces[0].mtu",
        "invalid type: integer `-1`, expected u32",
    ),
    (
        "mtu: 1500",
        "mtu: jumbo",
        "spec.interfaces[0].mtu",
        "invalid type: string \"jumbo\", expected u32",
    ),
    // routes
    (
        "dst: 10.0.0.0/8",
        "dst: 10.1.0.0/8",
        "spec.routes[1].dst",
        "\"10.1.0.0/8\" has host bits set; did you mean 10.0.0.0/8?",
    ),
    (
        "dst: 10.0.0.0/8",
        "dst: 10.0.0.0",
        "spec.routes[1].dst",
        "\"10.0.0.0\" is not an IPv4 prefix",
    ),
    (
        "via: 80.80.80.1,",
        "via: 0.0.0.0,",
        "spec.routes[0].via",
        "0.0.0.0 is the unspecified address",
    ),
    (
        "via: 80.80.80.1,",
        "via: 224.1.1.1,",
        "spec.routes[0].via",
        "224.1.1.1 is a multicast address",
    ),
    (
        "via: 80.80.80.1,",
        "via: gateway,",
        "spec.routes[0].via",
        "\"gateway\" is not an IPv4 address",
    ),
    (
        "interface: outside, metric: 100",
        "interface: x, metric: 100",
        "spec.routes[0].interface",
        "unknown interface \"x\"",
    ),
    (
        ROUTES_END,
        "    - {dst: 0.0.0.0/0, via: 80.80.80.2, interface: outside, metric: 100}\n  neighbors:\n",
        "spec.routes[2].dst",
        "0.0.0.0/0 with metric 100 is already routed by spec.routes[0]",
    ),
    (
        ROUTES_END,
        "    - {dst: 10.0.0.0/8, interface: outside, metric: 0}\n  neighbors:\n",
        "spec.routes[2].dst",
        "10.0.0.0/8 with metric 0 is already routed by spec.routes[1]",
    ),
    (
        "interface: inside}",
        "interface: spare}",
        "spec.routes[1].interface",
        "\"spare\" (spec.interfaces[2]) is disabled (enabled: false)",
    ),
    (
        "metric: 100}",
        "metric: 100, table: 5}",
        "spec.routes[0]",
        "unknown field `table`",
    ),
    (
        "metric: 100}",
        "metric: high}",
        "spec.routes[0].metric",
        "invalid type: string \"high\", expected u32",
    ),
    (
        "{dst: 10.0.0.0/8, via: 192.168.100.254, interface: inside}",
        "{dst: 10.0.0.0/8, via: 192.168.100.254}",
        "spec.routes[1]",
        "missing field `interface`",
    ),
    // neighbors
    (
        "{interface: outside, ip:",
        "{interface: nope, ip:",
        "spec.neighbors[0].interface",
        "unknown interface \"nope\"",
    ),
    (
        "ip: 80.80.80.1,",
        "ip: 255.255.255.255,",
        "spec.neighbors[0].ip",
        "255.255.255.255 is the limited broadcast address",
    ),
    (
        "\"02:00:00:00:00:01\"",
        "\"02:00:00:00:00\"",
        "spec.neighbors[0].mac",
        "\"02:00:00:00:00\" is not a MAC address (want aa:bb:cc:dd:ee:ff)",
    ),
    (
        "\"02:00:00:00:00:01\"",
        "\"02-00-00-00-00-01\"",
        "spec.neighbors[0].mac",
        "is not a MAC address",
    ),
    (
        "\"02:00:00:00:00:01\"",
        "\"00:00:00:00:00:00\"",
        "spec.neighbors[0].mac",
        "00:00:00:00:00:00 is the all-zero address",
    ),
    (
        "\"02:00:00:00:00:01\"",
        "\"FF:FF:FF:FF:FF:FF\"",
        "spec.neighbors[0].mac",
        "ff:ff:ff:ff:ff:ff is a multicast or broadcast address",
    ),
    (
        "\"02:00:00:00:00:01\"",
        "\"01:00:5e:00:00:01\"",
        "spec.neighbors[0].mac",
        "01:00:5e:00:00:01 is a multicast or broadcast address",
    ),
    (
        NEIGHBORS_END,
        "    - {interface: outside, ip: 80.80.80.1, mac: \"02:00:00:00:00:02\"}\n  nat44:\n",
        "spec.neighbors[1].ip",
        "80.80.80.1 on \"outside\" is already given by spec.neighbors[0]",
    ),
    (
        "mac: \"02:00:00:00:00:01\"}",
        "mac: \"02:00:00:00:00:01\", state: permanent}",
        "spec.neighbors[0]",
        "unknown field `state`",
    ),
    // interfaces
    (
        "name: spare",
        "name: outside",
        "spec.interfaces[2].name",
        "\"outside\" is already used by spec.interfaces[1]",
    ),
    (
        "hostIfName: c2",
        "hostIfName: c1",
        "spec.interfaces[2].kernel.hostIfName",
        "\"c1\" is already used by spec.interfaces[1]",
    ),
    (
        "hostIfName: c2",
        "hostIfName: eth0:1",
        "spec.interfaces[2].kernel.hostIfName",
        "is not a valid Linux interface name",
    ),
    (
        "name: spare",
        "name: Spare",
        "spec.interfaces[2].name",
        "must be 1-32 characters of [a-z0-9-]",
    ),
    (
        "enabled: false",
        "enabled: nope",
        "spec.interfaces[2].enabled",
        "invalid type: string \"nope\", expected a boolean",
    ),
    (
        "mtu: 1500",
        "mtu: 1500\n      speed: 10",
        "spec.interfaces[0]",
        "unknown field `speed`",
    ),
    (
        "mtu: 1500",
        "mtu: 1500\n      datapath: {hook: fast}",
        "spec.interfaces[0].datapath.hook",
        "unknown variant `fast`",
    ),
    (
        "mtu: 1500",
        "mtu: 1500\n      datapath: {hook: tc, xdpMode: generic}",
        "spec.interfaces[0].datapath.xdpMode",
        "only applies to hook xdp or auto",
    ),
    (
        "mtu: 1500",
        "mtu: 1500\n      datapath: {hook: xdp, peerRedirect: false}",
        "spec.interfaces[0].datapath.peerRedirect",
        "only applies to hook tc or auto",
    ),
    (
        "mtu: 1500",
        "mtu: 1500\n      backend: vpp",
        "spec.interfaces[0].backend",
        "kernel interfaces use the ebpf backend",
    ),
    (
        "kernel: {hostIfName: c2}",
        "memif: {socket: run/m.sock, role: master}\n      backend: vpp",
        "spec.interfaces[2].memif.socket",
        "\"run/m.sock\" is not a socket: want an absolute path or @name (abstract)",
    ),
    (
        "kernel: {hostIfName: c2}",
        "memif: {socket: /run/m.sock, role: master}\n      backend: vpp\n      mtu: 9000",
        "spec.interfaces[2].mtu",
        "only applies to the ebpf backend",
    ),
    (
        "kernel: {hostIfName: c2}",
        "memif: {socket: /run/m.sock, role: master, id: 7}\n      backend: vpp\n    - name: m2\n      memif: {socket: /run/m.sock, role: slave, id: 7}\n      backend: vpp",
        "spec.interfaces[3].memif.id",
        "id 7 on socket \"/run/m.sock\" is already used by spec.interfaces[2]",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: client, mechanism: memif, interfaceName: nsm1}\n      backend: vpp",
        "spec.interfaces[2].nsm.interfaceName",
        "does not apply to mechanism memif: VPP names memif interfaces",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: endpoint, mechanism: memif, interfaceNamePrefix: nsm}\n      backend: vpp",
        "spec.interfaces[2].nsm.interfaceNamePrefix",
        "does not apply to mechanism memif: VPP names memif interfaces",
    ),
    (
        "kernel: {hostIfName: c2}",
        "memif: {socket: /run/m.sock, role: master, mode: tun}\n      backend: vpp",
        "spec.interfaces[2].memif.mode",
        "unknown variant `tun`",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: client}",
        "spec.interfaces[2].nsm.interfaceName",
        "is required for role client",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: client, interfaceName: c1}",
        "spec.interfaces[2].nsm.interfaceName",
        "\"c1\" is already used by spec.interfaces[1]",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: client, interfaceName: n1, ipam: {cidr: 10.0.0.0/24}}",
        "spec.interfaces[2].nsm.ipam",
        "only applies to role endpoint",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: endpoint, ipam: {cidr: 10.0.0.0/24}}",
        "spec.interfaces[2].nsm",
        "exactly one of interfaceNamePrefix and interfaceNameFromLabel",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: endpoint, interfaceNamePrefix: nsm, ipam: {cidr: 10.0.0.1/24}}",
        "spec.interfaces[2].nsm.ipam.cidr",
        "has host bits set",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: endpoint, interfaceNamePrefix: averylongprefix, ipam: {cidr: 10.0.0.0/24}}",
        "spec.interfaces[2].nsm.interfaceNamePrefix",
        "longer than 11 bytes",
    ),
    (
        "kernel: {hostIfName: c2}",
        "nsm: {networkService: ns, role: server}",
        "spec.interfaces[2].nsm.role",
        "unknown variant `server`",
    ),
    (
        "kernel: {hostIfName: c2}",
        "enabled: true",
        "spec.interfaces[2]",
        "duplicate field `enabled`",
    ),
    // top level
    (
        "xcnf.io/v1alpha1",
        "xcnf.io/v1",
        "apiVersion",
        "must be \"xcnf.io/v1alpha1\", not \"xcnf.io/v1\"",
    ),
    (
        "kind: CNFConfiguration",
        "kind: Config",
        "kind",
        "must be \"CNFConfiguration\"",
    ),
    (
        "{name: cnf}",
        "{name: cnf-}",
        "metadata.name",
        "must be 1-63 characters",
    ),
    (
        "{name: cnf}",
        "{name: cnf, uid: 7}",
        "metadata",
        "unknown field `uid`",
    ),
    (
        ROUTES_END,
        "  vlans: []\n  neighbors:\n",
        "spec",
        "unknown field `vlans`",
    ),
    // nat44 cross-references
    (
        "inside: [inside]",
        "inside: [nowhere]",
        "spec.nat44.inside[0]",
        "\"nowhere\" is not the name of any spec.interfaces entry",
    ),
    (
        "outside: [outside]",
        "outside: [outside, inside]",
        "spec.nat44.outside[1]",
        "\"inside\" is also listed in spec.nat44.inside",
    ),
    (
        "last: 80.80.80.105}\n",
        "last: 80.80.80.105}\n      - {first: 80.80.80.104}\n",
        "spec.nat44.pools[1]",
        "80.80.80.104-80.80.80.104 overlaps spec.nat44.pools[0] (80.80.80.100-80.80.80.105)",
    ),
    (
        "last: 80.80.80.105}\n",
        "last: 80.80.80.105}\n    staticMappings: [{protocol: tcp, external: \"80.80.80.100:70000\", local: \"192.168.100.10:80\"}]\n",
        "spec.nat44.staticMappings[0].external",
        "port 70000 is out of range 1-65535",
    ),
    (
        "last: 80.80.80.105}\n",
        "last: 80.80.80.105}\n    mapping: symmetric\n",
        "spec.nat44.mapping",
        "unknown variant `symmetric`",
    ),
];

#[test]
fn every_bad_config_is_named_with_its_path() {
    assert!(CASES.len() >= 30);
    let mut failed = Vec::new();
    for (from, to, path, fragment) in CASES {
        let got = problems(&edit(from, to));
        let prefix = format!("{path}: ");
        if !(got.len() == 1 && got[0].starts_with(&prefix) && got[0].contains(fragment)) {
            failed.push(format!(
                "{from:?} -> {to:?}: want one problem at {path} with {fragment:?}, got {got:#?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn cases_are_distinct() {
    for (n, case) in CASES.iter().enumerate() {
        assert!(
            !CASES[..n].contains(case),
            "case {n} repeats an earlier one"
        );
    }
}

#[test]
fn refused_interface_kinds_also_report_their_other_problems() {
    let got = problems(&edit(
        "kernel: {hostIfName: c2}",
        "memif: {socket: /run/m.sock, role: master}",
    ));
    assert_eq!(
        got,
        ["spec.interfaces[2].backend: memif interfaces require backend: vpp"]
    );
    let got = problems(&edit(
        "kernel: {hostIfName: c2}",
        "kernel: {hostIfName: c2}\n      nsm: {networkService: ns, role: client, mechanism: memif}",
    ));
    assert_eq!(
        got,
        [
            "spec.interfaces[2]: exactly one of kernel, nsm and memif must be set",
            "spec.interfaces[2].backend: nsm mechanism memif requires backend: vpp",
        ]
    );
}

#[test]
fn a_bad_config_reports_all_its_problems() {
    let yaml = BASE
        .replace("[192.168.100.1/24]", "[192.168.100.0/24, 80.80.80.100/24]")
        .replace("mtu: 1500", "mtu: 10")
        .replace("dst: 10.0.0.0/8", "dst: 10.0.0.1/8")
        .replace("via: 80.80.80.1,", "via: 127.0.0.1,")
        .replace("interface: inside}", "interface: lan}")
        .replace("mac: \"02:00:00:00:00:01\"", "mac: \"03:00:00:00:00:01\"")
        .replace("ip: 80.80.80.1,", "ip: 80.80.80,")
        .replace("inside: [inside]", "inside: [lan]")
        .replace("{name: cnf}", "{name: CNF}");
    let got = problems(&yaml);
    let want = [
        "metadata.name: \"CNF\" must be",
        "spec.interfaces[0].ipAddresses[0]: 192.168.100.0 is the network address of 192.168.100.0/24",
        "spec.interfaces[0].mtu: 10 is out of range",
        "spec.interfaces[1].ipAddresses[0]: 80.80.80.100 is already assigned to interface \"inside\" (spec.interfaces[0].ipAddresses[1])",
        "spec.routes[0].via: 127.0.0.1 is a loopback address",
        "spec.routes[1].dst: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
        "spec.routes[1].interface: unknown interface \"lan\"",
        "spec.neighbors[0].ip: \"80.80.80\" is not an IPv4 address",
        "spec.neighbors[0].mac: 03:00:00:00:00:01 is a multicast",
        "spec.nat44.inside[0]: \"lan\" is not the name of any spec.interfaces entry",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

/// The VPP backend's own rules: what VPP cannot express is refused by name.
#[test]
fn vpp_interfaces_routes_and_nat_are_checked_for_what_vpp_can_do() {
    const VPP: &str = r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: cnf}
spec:
  interfaces:
    - name: inside
      memif: {socket: /run/vpp/memif-in.sock, role: master}
      backend: vpp
      ipAddresses: [192.168.100.1/24]
    - name: outside
      memif: {socket: "@nsm/outside", role: slave, id: 3, mode: ip}
      backend: vpp
      ipAddresses: [80.80.80.100/24]
    - name: kern
      kernel: {hostIfName: c2}
  routes:
    - {dst: 0.0.0.0/0, via: 80.80.80.1, interface: outside}
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.105}
    staticMappings:
      - {protocol: tcp, external: "80.80.80.100:8080", local: "192.168.100.10:80"}
      - {protocol: any, external: "80.80.80.101", local: "192.168.100.11"}
    identityMappings:
      - {protocol: udp, address: 80.80.80.100, port: 53}
      - {protocol: any, address: 80.80.80.102}
"#;
    assert_eq!(problems(VPP), Vec::<String>::new());
    let cases = [
        (
            "interface: outside}",
            "interface: outside, metric: 10}",
            "spec.routes[0].metric: \"outside\" is a vpp interface and VPP routes have no metric",
        ),
        (
            "  nat44:\n",
            "  neighbors:\n    - {interface: outside, ip: 80.80.80.1, mac: \"02:00:00:00:00:01\"}\n  nat44:\n",
            "spec.neighbors[0].interface: \"outside\" is a vpp interface; static neighbours apply to kernel interfaces",
        ),
        (
            "outside: [outside]",
            "outside: [kern]",
            "spec.nat44.outside[0]: \"kern\" uses backend ebpf but \"inside\" uses backend vpp: a NAT44 domain lives in one backend",
        ),
        (
            "    pools:\n",
            "    mapping: endpoint-independent\n    pools:\n",
            "spec.nat44.mapping: the vpp backend (nat44-ed) is endpoint-dependent only",
        ),
        (
            "last: 80.80.80.105}",
            "last: 80.80.80.105, ports: 2000-3000}",
            "spec.nat44.pools[0].ports: the vpp backend allocates ports itself",
        ),
        (
            "{protocol: any, external: \"80.80.80.101\"",
            "{protocol: icmp, external: \"80.80.80.101\"",
            "spec.nat44.staticMappings[1].protocol: vpp address-only mappings translate every protocol",
        ),
        (
            "{protocol: any, address: 80.80.80.102}",
            "{protocol: icmp, address: 80.80.80.102}",
            "spec.nat44.identityMappings[1].protocol: vpp identity mappings without a port exempt every protocol",
        ),
    ];
    for (from, to, want) in cases {
        assert_eq!(VPP.matches(from).count(), 1, "{from:?} must occur once");
        let got = problems(&VPP.replacen(from, to, 1));
        assert!(
            got.len() == 1 && got[0].starts_with(want),
            "{from:?} -> {to:?}: want one problem starting {want:?}, got {got:#?}"
        );
    }
}
