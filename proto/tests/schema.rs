//! Schema tests: round trip of the config.md example, hand-derived wire bytes
//! (so a renumbered field breaks the build of the contract, not a user), and the
//! JSON names that make the proto3 JSON mapping match config.md.

use std::collections::HashMap;
use std::error::Error;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use xcnf_proto::FILE_DESCRIPTOR_SET;
use xcnf_proto::v1alpha1::{
    Config, Datapath, DropReasons, InterfaceCounters, KernelInterface, MemifInterface, Metadata,
    Nat44, Nat44IdentityMapping, Nat44Pool, Nat44StaticMapping, Nat44Timeouts, Neighbor,
    NsmInterface, PacketBytes, PassReasons, Protocol, Route, Spec, datapath, interface,
    memif_interface, nat44, nsm_interface,
};

type TestResult = Result<(), Box<dyn Error>>;

fn s(v: &str) -> String {
    v.to_owned()
}

/// The example of config.md: the cnf of the classic NAT44 chain
/// client 192.168.100.10 — cnf (inside 192.168.100.1/24 | outside 80.80.80.100/24) — web server.
fn nat44_chain_example() -> Config {
    Config {
        api_version: s("xcnf.io/v1alpha1"),
        kind: s("CNFConfiguration"),
        metadata: Some(Metadata {
            name: s("cnf-nat44"),
        }),
        spec: Some(Spec {
            interfaces: vec![
                xcnf_proto::v1alpha1::Interface {
                    name: s("inside"),
                    kind: Some(interface::Kind::Kernel(KernelInterface {
                        host_if_name: s("c0"),
                    })),
                    ip_addresses: vec![s("192.168.100.1/24")],
                    mtu: Some(1500),
                    enabled: Some(true),
                    datapath: Some(Datapath {
                        hook: datapath::Hook::Auto.into(),
                        xdp_mode: datapath::XdpMode::Native.into(),
                        peer_redirect: None,
                    }),
                    backend: interface::Backend::Unspecified.into(),
                },
                xcnf_proto::v1alpha1::Interface {
                    name: s("outside"),
                    kind: Some(interface::Kind::Nsm(NsmInterface {
                        network_service: s("cnf-nat-example"),
                        role: nsm_interface::Role::Client.into(),
                        mechanism: nsm_interface::Mechanism::Kernel.into(),
                        labels: HashMap::from([(s("app"), s("nat44"))]),
                        interface_name: s("nsm1"),
                        ..Default::default()
                    })),
                    ip_addresses: vec![s("80.80.80.100/24")],
                    ..Default::default()
                },
                xcnf_proto::v1alpha1::Interface {
                    name: s("memif0"),
                    kind: Some(interface::Kind::Memif(MemifInterface {
                        socket: s("/run/vpp/memif.sock"),
                        role: memif_interface::Role::Master.into(),
                        id: 0,
                        mode: memif_interface::Mode::Ethernet.into(),
                    })),
                    backend: interface::Backend::Vpp.into(),
                    ..Default::default()
                },
            ],
            routes: vec![Route {
                dst: s("0.0.0.0/0"),
                via: s("80.80.80.1"),
                interface: s("outside"),
                metric: Some(100),
            }],
            neighbors: vec![Neighbor {
                interface: s("outside"),
                ip: s("80.80.80.1"),
                mac: s("02:00:00:00:00:01"),
            }],
            nat44: Some(Nat44 {
                inside: vec![s("inside")],
                outside: vec![s("outside")],
                pools: vec![Nat44Pool {
                    first: s("80.80.80.100"),
                    last: s("80.80.80.105"),
                    ports: s("1024-65535"),
                }],
                mapping: nat44::Mapping::EndpointIndependent.into(),
                static_mappings: vec![
                    Nat44StaticMapping {
                        protocol: Protocol::Tcp.into(),
                        external: s("80.80.80.100:8080"),
                        local: s("192.168.100.10:80"),
                    },
                    Nat44StaticMapping {
                        protocol: Protocol::Any.into(),
                        external: s("80.80.80.101"),
                        local: s("192.168.100.11"),
                    },
                ],
                identity_mappings: vec![Nat44IdentityMapping {
                    protocol: Protocol::Udp.into(),
                    address: s("80.80.80.100"),
                    port: Some(53),
                }],
                timeouts: Some(Nat44Timeouts {
                    tcp_established: s("7440s"),
                    tcp_transitory: s("240s"),
                    udp: s("300s"),
                    icmp: s("60s"),
                }),
                max_sessions: Some(262_144),
            }),
        }),
    }
}

#[test]
fn nat44_chain_example_round_trips() -> TestResult {
    let config = nat44_chain_example();
    let bytes = config.encode_to_vec();
    let decoded = Config::decode(bytes.as_slice())?;
    assert_eq!(decoded, config);
    // Optional scalars keep their presence: `enabled: true` and an absent
    // `enabled` are different configurations.
    let spec = decoded.spec.ok_or("spec lost")?;
    assert_eq!(spec.interfaces[0].enabled, Some(true));
    assert_eq!(spec.interfaces[1].enabled, None);
    assert_eq!(spec.interfaces[2].mtu, None);
    Ok(())
}

// Wire format reminders: a key byte is (field_number << 3) | wire_type, with
// wire type 0 = varint, 2 = length-delimited (string, bytes, message). A varint
// is little-endian base-128 with the high bit set on every byte but the last.
// proto3 omits scalars equal to their default unless the field is `optional`.

#[test]
fn kernel_interface_wire_bytes() {
    let msg = KernelInterface {
        host_if_name: s("c0"),
    };
    let expected: &[u8] = &[
        0x0A, 0x02, b'c', b'0', // host_if_name = 1, LEN: (1 << 3) | 2, length 2
    ];
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn route_wire_bytes() {
    let msg = Route {
        dst: s("0.0.0.0/0"),
        via: s("80.80.80.1"),
        interface: s("outside"),
        metric: Some(100),
    };
    let mut expected = vec![0x0A, 0x09]; // dst = 1, LEN, 9 bytes
    expected.extend_from_slice(b"0.0.0.0/0");
    expected.extend_from_slice(&[0x12, 0x0A]); // via = 2, LEN: (2 << 3) | 2, 10 bytes
    expected.extend_from_slice(b"80.80.80.1");
    expected.extend_from_slice(&[0x1A, 0x07]); // interface = 3, LEN: (3 << 3) | 2, 7 bytes
    expected.extend_from_slice(b"outside");
    expected.extend_from_slice(&[0x20, 0x64]); // metric = 4, VARINT: (4 << 3) | 0, 100
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn interface_wire_bytes() {
    let msg = xcnf_proto::v1alpha1::Interface {
        name: s("inside"),
        kind: Some(interface::Kind::Kernel(KernelInterface {
            host_if_name: s("c0"),
        })),
        ip_addresses: vec![s("192.168.100.1/24")],
        mtu: Some(1500),
        enabled: Some(false),
        datapath: Some(Datapath {
            hook: datapath::Hook::Tc.into(),
            xdp_mode: datapath::XdpMode::Unspecified.into(),
            peer_redirect: None,
        }),
        backend: interface::Backend::Unspecified.into(),
    };
    let mut expected = vec![0x0A, 0x06]; // name = 1, LEN, 6 bytes
    expected.extend_from_slice(b"inside");
    expected.extend_from_slice(&[0x12, 0x10]); // ip_addresses = 2, LEN, 16 bytes
    expected.extend_from_slice(b"192.168.100.1/24");
    expected.extend_from_slice(&[
        0x18, 0xDC, 0x0B, // mtu = 3, VARINT: 1500 = 0b1011_1011100 -> 0x5C|0x80, 0x0B
        0x20, 0x00, // enabled = 4, VARINT 0: `optional`, so false is still sent
        0x2A, 0x02, // datapath = 5, LEN, 2 bytes:
        0x08, 0x03, //   hook = 1, VARINT, HOOK_TC = 3 (xdp_mode 0 omitted)
        // backend = 6 is BACKEND_UNSPECIFIED (0): omitted
        0x52, 0x04, // kernel = 10 (oneof kind), LEN: (10 << 3) | 2 = 0x52, 4 bytes:
        0x0A, 0x02, b'c', b'0', //   host_if_name = 1, LEN, "c0"
    ]);
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn nat44_wire_bytes() {
    let msg = Nat44 {
        static_mappings: vec![Nat44StaticMapping {
            protocol: Protocol::Tcp.into(),
            external: s("80.80.80.100:8080"),
            local: s("192.168.100.10:80"),
        }],
        max_sessions: Some(262_144),
        ..Default::default()
    };
    // static_mappings = 5, LEN: (5 << 3) | 2 = 0x2A, 2 + 19 + 19 = 40 bytes:
    let mut expected = vec![0x2A, 0x28];
    expected.extend_from_slice(&[0x08, 0x01]); //   protocol = 1, VARINT, PROTOCOL_TCP = 1
    expected.extend_from_slice(&[0x12, 0x11]); //   external = 2, LEN, 17 bytes
    expected.extend_from_slice(b"80.80.80.100:8080");
    expected.extend_from_slice(&[0x1A, 0x11]); //   local = 3, LEN, 17 bytes
    expected.extend_from_slice(b"192.168.100.10:80");
    // max_sessions = 8, VARINT: (8 << 3) | 0 = 0x40; 262144 = 1 << 18 -> 0x80, 0x80, 0x10
    expected.extend_from_slice(&[0x40, 0x80, 0x80, 0x10]);
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn identity_mapping_icmp_wire_bytes() {
    let msg = Nat44IdentityMapping {
        protocol: Protocol::Icmp.into(),
        address: s("80.80.80.1"),
        port: None,
    };
    let mut expected = vec![0x08, 0x04]; // protocol = 1, VARINT, PROTOCOL_ICMP = 4
    expected.extend_from_slice(&[0x12, 0x0A]); // address = 2, LEN, 10 bytes
    expected.extend_from_slice(b"80.80.80.1");
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn interface_counters_wire_bytes() {
    let msg = InterfaceCounters {
        interface: s("inside"),
        rx: Some(PacketBytes {
            packets: 300,
            bytes: 1,
        }),
        forwarded: Some(PacketBytes::default()),
        passed: Some(PassReasons {
            unmanaged_egress: 7,
            ..Default::default()
        }),
        dropped: Some(DropReasons {
            redirect_failed: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut expected = vec![0x0A, 0x06]; // interface = 1, LEN, 6 bytes
    expected.extend_from_slice(b"inside");
    expected.extend_from_slice(&[
        0x12, 0x05, // rx = 2, LEN, 5 bytes:
        0x08, 0xAC, 0x02, //   packets = 1, VARINT: 300 = 0b10_0101100 -> 0x2C|0x80, 0x02
        0x10, 0x01, //   bytes = 2, VARINT, 1
        0x1A, 0x00, // forwarded = 3, LEN, empty message (present, all zero)
        0x22, 0x02, // passed = 4, LEN, 2 bytes:
        0x50, 0x07, //   unmanaged_egress = 10, VARINT: (10 << 3) | 0 = 0x50, 7
        0x2A, 0x02, // dropped = 5, LEN, 2 bytes:
        0x18, 0x02, //   redirect_failed = 3, VARINT, 2
    ]);
    assert_eq!(msg.encode_to_vec(), expected);
}

fn descriptor_set() -> Result<FileDescriptorSet, prost::DecodeError> {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
}

/// Finds the message `xcnf.v1alpha1.<name>` (top level) in the descriptor set.
fn message<'a>(fds: &'a FileDescriptorSet, name: &str) -> Option<&'a DescriptorProto> {
    fds.file
        .iter()
        .filter(|f| f.package() == "xcnf.v1alpha1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
}

fn json_name(fds: &FileDescriptorSet, msg: &str, field: &str) -> Option<String> {
    message(fds, msg)?
        .field
        .iter()
        .find(|f| f.name() == field)
        .map(|f| f.json_name().to_owned())
}

#[test]
fn descriptor_json_names_match_config_md() -> TestResult {
    let fds = descriptor_set()?;
    for (msg, field, json) in [
        ("KernelInterface", "host_if_name", "hostIfName"),
        ("Interface", "ip_addresses", "ipAddresses"),
        ("Interface", "xdp_mode", ""), // not here: it lives in Datapath
        ("Datapath", "xdp_mode", "xdpMode"),
        ("Datapath", "peer_redirect", "peerRedirect"),
        ("Nat44", "static_mappings", "staticMappings"),
        ("Nat44", "identity_mappings", "identityMappings"),
        ("Nat44", "max_sessions", "maxSessions"),
        ("Nat44Timeouts", "tcp_established", "tcpEstablished"),
        ("NsmInterface", "network_service", "networkService"),
        ("NsmInterface", "interface_name", "interfaceName"),
        ("Config", "api_version", "apiVersion"),
    ] {
        let got = json_name(&fds, msg, field);
        if json.is_empty() {
            assert_eq!(got, None, "{msg}.{field} should not exist");
        } else {
            assert_eq!(got.as_deref(), Some(json), "json_name of {msg}.{field}");
        }
    }
    Ok(())
}

/// Every field of every xcnf message has the default JSON name (lowerCamelCase
/// of the snake_case name): no `json_name` override may drift from config.md.
#[test]
fn descriptor_json_names_are_lower_camel_case() -> TestResult {
    fn lower_camel(snake: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in snake.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }
    fn check(m: &DescriptorProto, count: &mut usize) {
        for f in &m.field {
            assert_eq!(
                f.json_name(),
                lower_camel(f.name()),
                "{}.{}",
                m.name(),
                f.name()
            );
            *count += 1;
        }
        for nested in &m.nested_type {
            check(nested, count);
        }
    }
    let fds = descriptor_set()?;
    let mut count = 0;
    for file in fds.file.iter().filter(|f| f.package() == "xcnf.v1alpha1") {
        for m in &file.message_type {
            check(m, &mut count);
        }
    }
    assert!(count > 50, "only {count} fields checked");
    Ok(())
}

#[test]
fn descriptor_set_holds_every_file_and_the_service() -> TestResult {
    let fds = descriptor_set()?;
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    assert!(names.contains(&"xcnf/v1alpha1/config.proto"), "{names:?}");
    assert!(names.contains(&"xcnf/v1alpha1/datapath.proto"), "{names:?}");
    assert!(names.contains(&"xcnf/v1alpha1/api.proto"), "{names:?}");
    let service = fds
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "AgentService")
        .ok_or("AgentService missing")?;
    let stats = service
        .method
        .iter()
        .find(|m| m.name() == "Stats")
        .ok_or("Stats missing")?;
    assert_eq!(stats.input_type(), ".xcnf.v1alpha1.StatsRequest");
    assert_eq!(stats.output_type(), ".xcnf.v1alpha1.StatsResponse");
    Ok(())
}
