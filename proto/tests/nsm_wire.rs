//! NSM protos: every message against wire bytes derived by hand from the
//! protobuf encoding (so a renumbered or retyped field breaks this test, not
//! the interop with a stock nsmgr), the enum values, and the gRPC paths, both
//! in the descriptor set and as the generated client sends them to the
//! generated server.
//!
//! Wire format reminders: a key byte is (field_number << 3) | wire_type, wire
//! type 0 = VARINT, 2 = LEN. proto3 omits scalars equal to their default, but
//! a set sub-message is written even when empty (`LEN 0`). A map entry is a
//! sub-message with key = 1 and value = 2. google.protobuf.Timestamp is
//! `seconds = 1` (int64), `nanos = 2` (int32).

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Debug;

use prost::Message;
use prost_types::Timestamp;
use xcnf_proto::nsm::connection::{
    Connection, ConnectionEvent, ConnectionEventType, Mechanism, MonitorScopeSelector, Path,
    PathSegment, State,
};
use xcnf_proto::nsm::connectioncontext::{
    ConnectionContext, DnsConfig, DnsContext, EthernetContext, ExtraPrefixRequest, IpContext,
    IpFamily, IpNeighbor, PolicyRoute, Route, ip_family,
};
use xcnf_proto::nsm::networkservice::NetworkServiceRequest;
use xcnf_proto::nsm::registry::{
    Destination, Match, Metadata, NetworkService, NetworkServiceEndpoint,
    NetworkServiceEndpointQuery, NetworkServiceEndpointResponse, NetworkServiceLabels,
    NetworkServiceQuery, NetworkServiceResponse,
};

type TestResult = Result<(), Box<dyn Error>>;

fn s(v: &str) -> String {
    v.to_owned()
}

fn map(entries: &[(&str, &str)]) -> HashMap<String, String> {
    entries.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `msg` encodes to exactly `expected`, and `expected` decodes to `msg`.
fn check<M: Message + Default + PartialEq + Debug>(msg: &M, expected: &[u8]) -> TestResult {
    assert_eq!(msg.encode_to_vec(), expected, "encoding of {msg:?}");
    assert_eq!(&M::decode(expected)?, msg, "decoding of {expected:02X?}");
    Ok(())
}

/// For a message with a map of several entries, whose order on the wire is
/// the map's iteration order: `msg` encodes to one of `orders`, and each of
/// them decodes to `msg`.
fn check_any_order<M: Message + Default + PartialEq + Debug>(
    msg: &M,
    orders: &[Vec<u8>],
) -> TestResult {
    let got = msg.encode_to_vec();
    assert!(
        orders.contains(&got),
        "encoding of {msg:?} is {got:02X?}, none of {orders:02X?}"
    );
    for bytes in orders {
        assert_eq!(
            &M::decode(bytes.as_slice())?,
            msg,
            "decoding of {bytes:02X?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- connectioncontext

/// `IpNeighbor{ip: "172.16.1.0", hardware_address: "02:00:00:00:00:01"}`: 31 bytes.
fn ip_neighbor_bytes() -> Vec<u8> {
    cat(&[
        &[0x0A, 0x0A], // ip = 1, LEN 10
        b"172.16.1.0",
        &[0x12, 0x11], // hardware_address = 2, LEN 17
        b"02:00:00:00:00:01",
    ])
}

#[test]
fn ip_neighbor_wire_bytes() -> TestResult {
    let msg = IpNeighbor {
        ip: s("172.16.1.0"),
        hardware_address: s("02:00:00:00:00:01"),
    };
    check(&msg, &ip_neighbor_bytes())
}

#[test]
fn route_wire_bytes() -> TestResult {
    let msg = Route {
        prefix: s("10.0.0.0/8"),
        next_hop: s("10.0.0.1"),
    };
    let expected = cat(&[
        &[0x0A, 0x0A], // prefix = 1, LEN 10
        b"10.0.0.0/8",
        &[0x12, 0x08], // nextHop = 2, LEN 8
        b"10.0.0.1",
    ]);
    check(&msg, &expected)
}

#[test]
fn ip_family_wire_bytes_and_enum_values() -> TestResult {
    assert_eq!(ip_family::Family::Ipv4 as i32, 0);
    assert_eq!(ip_family::Family::Ipv6 as i32, 1);
    let v6 = IpFamily {
        family: ip_family::Family::Ipv6.into(),
    };
    check(&v6, &[0x08, 0x01])?; // family = 1, VARINT, IPV6 = 1
    // IPV4 is the default: nothing on the wire.
    let v4 = IpFamily {
        family: ip_family::Family::Ipv4.into(),
    };
    check(&v4, &[])
}

#[test]
fn extra_prefix_request_wire_bytes() -> TestResult {
    let msg = ExtraPrefixRequest {
        addr_family: Some(IpFamily {
            family: ip_family::Family::Ipv6.into(),
        }),
        prefix_len: 64,
        required_number: 1,
        requested_number: 300,
    };
    let expected = [
        0x0A, 0x02, 0x08, 0x01, // addr_family = 1, LEN 2: family = IPV6
        0x10, 0x40, // prefix_len = 2, VARINT 64
        0x18, 0x01, // required_number = 3, VARINT 1
        0x20, 0xAC, 0x02, // requested_number = 4, VARINT 300 (0b10_0101100)
    ];
    check(&msg, &expected)
}

#[test]
fn policy_route_wire_bytes() -> TestResult {
    let msg = PolicyRoute {
        from: s("10.0.0.1/32"),
        proto: s("6"),
        dst_port: s("80"),
        src_port: s("1024-2048"),
        routes: vec![
            Route {
                prefix: s("0.0.0.0/0"),
                next_hop: String::new(),
            },
            Route {
                prefix: s("::/0"),
                next_hop: String::new(),
            },
        ],
    };
    let expected = cat(&[
        &[0x0A, 0x0B], // from = 1, LEN 11
        b"10.0.0.1/32",
        &[0x12, 0x01], // proto = 2, LEN 1
        b"6",
        &[0x1A, 0x02], // dst_port = 3, LEN 2
        b"80",
        &[0x22, 0x09], // src_port = 4, LEN 9
        b"1024-2048",
        &[0x2A, 0x0B, 0x0A, 0x09], // routes = 5, LEN 11: prefix = 1, LEN 9
        b"0.0.0.0/0",
        &[0x2A, 0x06, 0x0A, 0x04], // routes = 5, LEN 6: prefix = 1, LEN 4
        b"::/0",
    ]);
    check(&msg, &expected)
}

#[test]
fn ip_context_wire_bytes() -> TestResult {
    let msg = IpContext {
        src_ip_addrs: vec![s("172.16.1.1/32")],
        dst_ip_addrs: vec![s("172.16.1.0/32")],
        src_ip_required: true,
        dst_ip_required: true,
        src_routes: vec![Route {
            prefix: s("172.16.1.0/32"),
            next_hop: String::new(),
        }],
        dst_routes: vec![Route {
            prefix: s("172.16.1.1/32"),
            next_hop: String::new(),
        }],
        excluded_prefixes: vec![s("10.96.0.0/12"), s("10.244.0.0/16")],
        ip_neighbors: vec![IpNeighbor {
            ip: s("172.16.1.0"),
            hardware_address: s("02:00:00:00:00:01"),
        }],
        extra_prefix_request: vec![ExtraPrefixRequest {
            // IPV4 is the default, but the sub-message is set: LEN 0.
            addr_family: Some(IpFamily {
                family: ip_family::Family::Ipv4.into(),
            }),
            prefix_len: 24,
            required_number: 1,
            requested_number: 2,
        }],
        extra_prefixes: vec![s("10.0.0.0/24")],
        policies: vec![PolicyRoute {
            proto: s("17"),
            ..PolicyRoute::default()
        }],
    };
    let expected = cat(&[
        &[0x0A, 0x0D], // src_ip_addrs = 1, LEN 13
        b"172.16.1.1/32",
        &[0x12, 0x0D], // dst_ip_addrs = 2, LEN 13
        b"172.16.1.0/32",
        &[0x18, 0x01],             // src_ip_required = 3, true
        &[0x20, 0x01],             // dst_ip_required = 4, true
        &[0x2A, 0x0F, 0x0A, 0x0D], // src_routes = 5, LEN 15: prefix, LEN 13
        b"172.16.1.0/32",
        &[0x32, 0x0F, 0x0A, 0x0D], // dst_routes = 6, LEN 15: prefix, LEN 13
        b"172.16.1.1/32",
        &[0x3A, 0x0C], // excluded_prefixes = 7, LEN 12
        b"10.96.0.0/12",
        &[0x3A, 0x0D], // excluded_prefixes = 7, LEN 13
        b"10.244.0.0/16",
        &[0x42, 0x1F], // ip_neighbors = 8, LEN 31
        &ip_neighbor_bytes(),
        // extra_prefix_request = 9, LEN 8: addr_family LEN 0, prefix_len 24,
        // required_number 1, requested_number 2
        &[0x4A, 0x08, 0x0A, 0x00, 0x10, 0x18, 0x18, 0x01, 0x20, 0x02],
        &[0x52, 0x0B], // extra_prefixes = 10, LEN 11
        b"10.0.0.0/24",
        &[0x5A, 0x04, 0x12, 0x02], // policies = 11, LEN 4: proto = 2, LEN 2
        b"17",
    ]);
    check(&msg, &expected)
}

#[test]
fn dns_config_and_context_wire_bytes() -> TestResult {
    let config = DnsConfig {
        dns_server_ips: vec![s("10.0.0.10"), s("fd00::a")],
        search_domains: vec![s("svc.local")],
    };
    let config_bytes = cat(&[
        &[0x0A, 0x09], // dns_server_ips = 1, LEN 9
        b"10.0.0.10",
        &[0x0A, 0x07], // dns_server_ips = 1, LEN 7
        b"fd00::a",
        &[0x12, 0x09], // search_domains = 2, LEN 9
        b"svc.local",
    ]);
    check(&config, &config_bytes)?;

    let context = DnsContext {
        configs: vec![
            DnsConfig {
                dns_server_ips: vec![s("1.1.1.1")],
                search_domains: vec![],
            },
            DnsConfig {
                dns_server_ips: vec![],
                search_domains: vec![s("a")],
            },
        ],
    };
    let context_bytes = cat(&[
        &[0x0A, 0x09, 0x0A, 0x07], // configs = 1, LEN 9: dns_server_ips, LEN 7
        b"1.1.1.1",
        &[0x0A, 0x03, 0x12, 0x01], // configs = 1, LEN 3: search_domains, LEN 1
        b"a",
    ]);
    check(&context, &context_bytes)
}

#[test]
fn ethernet_context_wire_bytes() -> TestResult {
    let msg = EthernetContext {
        src_mac: s("02:00:00:00:00:01"),
        dst_mac: s("02:00:00:00:00:02"),
        vlan_tag: -1,
    };
    let expected = cat(&[
        &[0x0A, 0x11], // src_mac = 1, LEN 17
        b"02:00:00:00:00:01",
        &[0x12, 0x11], // dst_mac = 2, LEN 17
        b"02:00:00:00:00:02",
        // vlan_tag = 3, VARINT: int32 -1 is sign-extended to ten bytes
        &[
            0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ],
    ]);
    check(&msg, &expected)
}

#[test]
fn connection_context_wire_bytes() -> TestResult {
    let msg = ConnectionContext {
        ip_context: Some(IpContext {
            src_ip_addrs: vec![s("10.0.0.1/32")],
            ..IpContext::default()
        }),
        dns_context: Some(DnsContext { configs: vec![] }),
        ethernet_context: Some(EthernetContext {
            vlan_tag: 100,
            ..EthernetContext::default()
        }),
        extra_context: map(&[("k", "v")]),
        mtu: 1500,
    };
    let expected = cat(&[
        &[0x0A, 0x0D, 0x0A, 0x0B], // ip_context = 1, LEN 13: src_ip_addrs, LEN 11
        b"10.0.0.1/32",
        &[0x12, 0x00],             // dns_context = 2, set but empty
        &[0x1A, 0x02, 0x18, 0x64], // ethernet_context = 3, LEN 2: vlan_tag 100
        // extra_context = 4, LEN 6: entry {key = 1 "k", value = 2 "v"}
        &[0x22, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v'],
        &[0x28, 0xDC, 0x0B], // MTU = 5, VARINT 1500 (0b1011_1011100)
    ]);
    check(&msg, &expected)
}

// ---------------------------------------------------------------- connection

#[test]
fn mechanism_wire_bytes_with_one_and_two_parameters() -> TestResult {
    let one = Mechanism {
        cls: s("LOCAL"),
        r#type: s("KERNEL"),
        parameters: map(&[("name", "nsm-1")]),
    };
    let head: &[u8] = &cat(&[
        &[0x0A, 0x05], // cls = 1, LEN 5
        b"LOCAL",
        &[0x12, 0x06], // type = 2, LEN 6
        b"KERNEL",
    ]);
    // parameters = 3, LEN 13: {key = 1, LEN 4 "name"; value = 2, LEN 5 "nsm-1"}
    let name: &[u8] = &cat(&[&[0x1A, 0x0D, 0x0A, 0x04], b"name", &[0x12, 0x05], b"nsm-1"]);
    check(&one, &cat(&[head, name]))?;

    // The KERNEL preference of a client: name and the netns inode URL.
    let two = Mechanism {
        parameters: map(&[("name", "nsm-1"), ("inodeURL", "inode://4/4026532000")]),
        ..one
    };
    // parameters = 3, LEN 32: {key LEN 8 "inodeURL"; value LEN 20 "inode://..."}
    let inode: &[u8] = &cat(&[
        &[0x1A, 0x20, 0x0A, 0x08],
        b"inodeURL",
        &[0x12, 0x14],
        b"inode://4/4026532000",
    ]);
    check_any_order(
        &two,
        &[cat(&[head, name, inode]), cat(&[head, inode, name])],
    )
}

#[test]
fn state_and_event_type_enum_values() {
    assert_eq!(State::Up as i32, 0);
    assert_eq!(State::Down as i32, 1);
    assert_eq!(State::RefreshRequested as i32, 2);
    assert_eq!(State::ReselectRequested as i32, 3);
    assert_eq!(ConnectionEventType::InitialStateTransfer as i32, 0);
    assert_eq!(ConnectionEventType::Update as i32, 1);
    assert_eq!(ConnectionEventType::Delete as i32, 2);
    // The protobuf names, as they appear in the descriptor and JSON.
    assert_eq!(State::RefreshRequested.as_str_name(), "REFRESH_REQUESTED");
    assert_eq!(
        ConnectionEventType::InitialStateTransfer.as_str_name(),
        "INITIAL_STATE_TRANSFER"
    );
}

#[test]
fn path_segment_wire_bytes_with_timestamp() -> TestResult {
    let msg = PathSegment {
        name: s("nsc"),
        id: s("c1"),
        token: s("jwt"),
        expires: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        metrics: map(&[("rtt", "1ms")]),
    };
    let expected = cat(&[
        &[0x0A, 0x03], // name = 1, LEN 3
        b"nsc",
        &[0x12, 0x02], // id = 2, LEN 2
        b"c1",
        &[0x1A, 0x03], // token = 3, LEN 3
        b"jwt",
        // expires = 4, LEN 8: seconds = 1, VARINT 1700000000 (0x6553F100, five
        // 7-bit groups, low first); nanos = 2, VARINT 5
        &[0x22, 0x08, 0x08, 0x80, 0xE2, 0xCF, 0xAA, 0x06, 0x10, 0x05],
        // metrics = 5, LEN 10: {key LEN 3 "rtt"; value LEN 3 "1ms"}
        &[0x2A, 0x0A, 0x0A, 0x03],
        b"rtt",
        &[0x12, 0x03],
        b"1ms",
    ]);
    check(&msg, &expected)
}

#[test]
fn path_wire_bytes() -> TestResult {
    let msg = Path {
        index: 1,
        path_segments: vec![
            PathSegment {
                name: s("nsc"),
                id: s("c1"),
                ..PathSegment::default()
            },
            PathSegment {
                name: s("nsmgr"),
                id: s("m1"),
                ..PathSegment::default()
            },
        ],
    };
    let expected = cat(&[
        &[0x08, 0x01],             // index = 1, VARINT 1
        &[0x12, 0x09, 0x0A, 0x03], // path_segments = 2, LEN 9: name LEN 3
        b"nsc",
        &[0x12, 0x02], // id LEN 2
        b"c1",
        &[0x12, 0x0B, 0x0A, 0x05], // path_segments = 2, LEN 11: name LEN 5
        b"nsmgr",
        &[0x12, 0x02], // id LEN 2
        b"m1",
    ]);
    check(&msg, &expected)
}

#[test]
fn connection_wire_bytes() -> TestResult {
    let msg = Connection {
        id: s("c1"),
        network_service: s("svc"),
        mechanism: Some(Mechanism {
            cls: s("LOCAL"),
            r#type: s("KERNEL"),
            parameters: HashMap::new(),
        }),
        context: Some(ConnectionContext {
            mtu: 1500,
            ..ConnectionContext::default()
        }),
        labels: map(&[("app", "cnf")]),
        path: Some(Path {
            index: 0,
            path_segments: vec![PathSegment {
                name: s("nsc"),
                ..PathSegment::default()
            }],
        }),
        network_service_endpoint_name: s("nse-1"),
        payload: s("ETHERNET"),
        state: State::Down.into(),
    };
    let expected = cat(&[
        &[0x0A, 0x02], // id = 1, LEN 2
        b"c1",
        &[0x12, 0x03], // network_service = 2, LEN 3
        b"svc",
        &[0x1A, 0x0F, 0x0A, 0x05], // mechanism = 3, LEN 15: cls LEN 5
        b"LOCAL",
        &[0x12, 0x06], // type LEN 6
        b"KERNEL",
        &[0x22, 0x03, 0x28, 0xDC, 0x0B], // context = 4, LEN 3: MTU 1500
        &[0x2A, 0x0A, 0x0A, 0x03],       // labels = 5, LEN 10: key LEN 3
        b"app",
        &[0x12, 0x03], // value LEN 3
        b"cnf",
        // path = 6, LEN 7: index 0 omitted; path_segments = 2, LEN 5: name LEN 3
        &[0x32, 0x07, 0x12, 0x05, 0x0A, 0x03],
        b"nsc",
        &[0x3A, 0x05], // network_service_endpoint_name = 7, LEN 5
        b"nse-1",
        &[0x42, 0x08], // payload = 8, LEN 8
        b"ETHERNET",
        &[0x48, 0x01], // state = 9, VARINT DOWN = 1
    ]);
    check(&msg, &expected)
}

#[test]
fn connection_event_wire_bytes() -> TestResult {
    let msg = ConnectionEvent {
        r#type: ConnectionEventType::Update.into(),
        connections: [(
            s("c1"),
            Connection {
                id: s("c1"),
                state: State::Down.into(),
                ..Connection::default()
            },
        )]
        .into_iter()
        .collect(),
    };
    let expected = cat(&[
        &[0x08, 0x01], // type = 1, VARINT UPDATE = 1
        // connections = 2, LEN 12: entry {key = 1, LEN 2 "c1";
        &[0x12, 0x0C, 0x0A, 0x02],
        b"c1",
        // value = 2, LEN 6: Connection {id LEN 2 "c1"; state DOWN}}
        &[0x12, 0x06, 0x0A, 0x02],
        b"c1",
        &[0x48, 0x01],
    ]);
    check(&msg, &expected)
}

#[test]
fn monitor_scope_selector_wire_bytes() -> TestResult {
    let msg = MonitorScopeSelector {
        path_segments: vec![PathSegment {
            name: s("nsc"),
            id: s("c1"),
            ..PathSegment::default()
        }],
        network_services: vec![s("svc")],
    };
    let expected = cat(&[
        &[0x0A, 0x09, 0x0A, 0x03], // path_segments = 1, LEN 9: name LEN 3
        b"nsc",
        &[0x12, 0x02], // id LEN 2
        b"c1",
        &[0x12, 0x03], // network_services = 2, LEN 3
        b"svc",
    ]);
    check(&msg, &expected)
}

// ---------------------------------------------------------------- networkservice

#[test]
fn network_service_request_wire_bytes() -> TestResult {
    let msg = NetworkServiceRequest {
        connection: Some(Connection {
            id: s("c1"),
            network_service: s("svc"),
            ..Connection::default()
        }),
        mechanism_preferences: vec![
            Mechanism {
                cls: s("LOCAL"),
                r#type: s("KERNEL"),
                parameters: map(&[("name", "nsm-1")]),
            },
            Mechanism {
                cls: String::new(),
                r#type: s("MEMIF"),
                parameters: HashMap::new(),
            },
        ],
    };
    let expected = cat(&[
        &[0x0A, 0x09, 0x0A, 0x02], // connection = 1, LEN 9: id LEN 2
        b"c1",
        &[0x12, 0x03], // network_service LEN 3
        b"svc",
        // mechanism_preferences = 2, LEN 30: cls LEN 5, type LEN 6,
        // parameters LEN 13 {key LEN 4, value LEN 5}
        &[0x12, 0x1E, 0x0A, 0x05],
        b"LOCAL",
        &[0x12, 0x06],
        b"KERNEL",
        &[0x1A, 0x0D, 0x0A, 0x04],
        b"name",
        &[0x12, 0x05],
        b"nsm-1",
        &[0x12, 0x07, 0x12, 0x05], // mechanism_preferences = 2, LEN 7: type LEN 5
        b"MEMIF",
    ]);
    check(&msg, &expected)
}

#[test]
fn close_returns_empty_which_is_no_bytes() -> TestResult {
    // google.protobuf.Empty is generated as `()`.
    let empty: () = <()>::decode(&[][..])?;
    assert!(empty.encode_to_vec().is_empty());
    Ok(())
}

// ---------------------------------------------------------------- registry

/// `Destination{destination_selector: {app: b}, weight: 10}`: 12 bytes.
fn destination_bytes() -> Vec<u8> {
    cat(&[
        &[0x0A, 0x08, 0x0A, 0x03], // destination_selector = 1, LEN 8: key LEN 3
        b"app",
        &[0x12, 0x01, b'b'], // value LEN 1
        &[0x10, 0x0A],       // weight = 2, VARINT 10
    ])
}

/// `Metadata{labels: {k: v}}`: 8 bytes.
fn metadata_bytes() -> Vec<u8> {
    // labels = 1, LEN 6: {key LEN 1 "k"; value LEN 1 "v"}
    vec![0x0A, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v']
}

/// The `Match` of `match_example`: 36 bytes.
fn match_bytes() -> Vec<u8> {
    cat(&[
        &[0x0A, 0x08, 0x0A, 0x03], // source_selector = 1, LEN 8: key LEN 3
        b"app",
        &[0x12, 0x01, b'a'], // value LEN 1
        &[0x12, 0x0C],       // routes = 2, LEN 12
        &destination_bytes(),
        &[0x18, 0x01], // fallthrough = 3, true
        &[0x22, 0x08], // metadata = 4, LEN 8
        &metadata_bytes(),
    ])
}

fn match_example() -> Match {
    Match {
        source_selector: map(&[("app", "a")]),
        routes: vec![Destination {
            destination_selector: map(&[("app", "b")]),
            weight: 10,
        }],
        fallthrough: true,
        metadata: Some(Metadata {
            labels: map(&[("k", "v")]),
        }),
    }
}

#[test]
fn destination_metadata_and_match_wire_bytes() -> TestResult {
    check(
        &Destination {
            destination_selector: map(&[("app", "b")]),
            weight: 10,
        },
        &destination_bytes(),
    )?;
    check(
        &Metadata {
            labels: map(&[("k", "v")]),
        },
        &metadata_bytes(),
    )?;
    check(&match_example(), &match_bytes())
}

#[test]
fn network_service_wire_bytes() -> TestResult {
    let msg = NetworkService {
        name: s("svc"),
        payload: s("IP"),
        matches: vec![match_example()],
        path_ids: vec![s("id1")],
    };
    let expected = cat(&[
        &[0x0A, 0x03], // name = 1, LEN 3
        b"svc",
        &[0x12, 0x02], // payload = 2, LEN 2
        b"IP",
        &[0x1A, 0x24], // matches = 3, LEN 36
        &match_bytes(),
        &[0x22, 0x03], // path_ids = 4, LEN 3
        b"id1",
    ]);
    check(&msg, &expected)
}

/// `NetworkServiceLabels{labels: {app: x}}`: 10 bytes.
fn labels_bytes() -> Vec<u8> {
    // labels = 1, LEN 8: {key LEN 3 "app"; value LEN 1 "x"}
    cat(&[&[0x0A, 0x08, 0x0A, 0x03], b"app", &[0x12, 0x01, b'x']])
}

#[test]
fn network_service_labels_wire_bytes() -> TestResult {
    let msg = NetworkServiceLabels {
        labels: map(&[("app", "x")]),
    };
    check(&msg, &labels_bytes())
}

#[test]
fn network_service_endpoint_wire_bytes() -> TestResult {
    let msg = NetworkServiceEndpoint {
        name: s("nse-1"),
        network_service_names: vec![s("svc"), s("svc2")],
        network_service_labels: [(
            s("svc"),
            NetworkServiceLabels {
                labels: map(&[("app", "x")]),
            },
        )]
        .into_iter()
        .collect(),
        url: s("unix:///l.sock"),
        expiration_time: Some(Timestamp {
            seconds: 1_700_000_600,
            nanos: 0,
        }),
        initial_registration_time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 250_000_000,
        }),
        path_ids: vec![s("p1")],
    };
    let expected = cat(&[
        &[0x0A, 0x05], // name = 1, LEN 5
        b"nse-1",
        &[0x12, 0x03], // network_service_names = 2, LEN 3
        b"svc",
        &[0x12, 0x04], // network_service_names = 2, LEN 4
        b"svc2",
        // network_service_labels = 3, LEN 17: entry {key LEN 3 "svc";
        // value = 2, LEN 10: NetworkServiceLabels}
        &[0x1A, 0x11, 0x0A, 0x03],
        b"svc",
        &[0x12, 0x0A],
        &labels_bytes(),
        &[0x22, 0x0E], // url = 4, LEN 14
        b"unix:///l.sock",
        // expiration_time = 5, LEN 6: seconds 1700000600, nanos 0 omitted
        &[0x2A, 0x06, 0x08, 0xD8, 0xE6, 0xCF, 0xAA, 0x06],
        // initial_registration_time = 6, LEN 11: seconds 1700000000,
        // nanos 250000000 (0x0EE6B280)
        &[0x32, 0x0B, 0x08, 0x80, 0xE2, 0xCF, 0xAA, 0x06],
        &[0x10, 0x80, 0xE5, 0x9A, 0x77],
        &[0x3A, 0x02], // path_ids = 7, LEN 2
        b"p1",
    ]);
    check(&msg, &expected)
}

#[test]
fn queries_and_responses_wire_bytes() -> TestResult {
    let service = || {
        Some(NetworkService {
            name: s("svc"),
            ..NetworkService::default()
        })
    };
    let endpoint = || {
        Some(NetworkServiceEndpoint {
            name: s("nse-1"),
            url: s("tcp://1.2.3.4:5"),
            ..NetworkServiceEndpoint::default()
        })
    };
    // NetworkService {name LEN 3 "svc"}: 5 bytes.
    let service_bytes: &[u8] = &cat(&[&[0x0A, 0x03], b"svc"]);
    // NetworkServiceEndpoint {name LEN 5 "nse-1"; url = 4, LEN 15}: 24 bytes.
    let endpoint_bytes: &[u8] = &cat(&[&[0x0A, 0x05], b"nse-1", &[0x22, 0x0F], b"tcp://1.2.3.4:5"]);
    // field 1, LEN; then watch/deleted = 2, true
    check(
        &NetworkServiceQuery {
            network_service: service(),
            watch: true,
        },
        &cat(&[&[0x0A, 0x05], service_bytes, &[0x10, 0x01]]),
    )?;
    check(
        &NetworkServiceResponse {
            network_service: service(),
            deleted: true,
        },
        &cat(&[&[0x0A, 0x05], service_bytes, &[0x10, 0x01]]),
    )?;
    check(
        &NetworkServiceEndpointQuery {
            network_service_endpoint: endpoint(),
            watch: true,
        },
        &cat(&[&[0x0A, 0x18], endpoint_bytes, &[0x10, 0x01]]),
    )?;
    check(
        &NetworkServiceEndpointResponse {
            network_service_endpoint: endpoint(),
            deleted: true,
        },
        &cat(&[&[0x0A, 0x18], endpoint_bytes, &[0x10, 0x01]]),
    )?;
    // watch = false is the default: only the query itself.
    check(
        &NetworkServiceQuery {
            network_service: service(),
            watch: false,
        },
        &cat(&[&[0x0A, 0x05], service_bytes]),
    )
}

#[test]
fn unknown_fields_are_skipped_not_rejected() -> TestResult {
    // A newer nsmgr may add fields: field 15, LEN 1 "x" and field 16, VARINT 1
    // in a Connection must not fail the decode.
    let bytes = cat(&[&[0x0A, 0x02], b"c1", &[0x7A, 0x01, b'x', 0x80, 0x01, 0x01]]);
    let conn = Connection::decode(bytes.as_slice())?;
    assert_eq!(
        conn,
        Connection {
            id: s("c1"),
            ..Connection::default()
        }
    );
    Ok(())
}

#[test]
fn health_messages_have_the_grpc_health_v1_bytes() {
    use prost::Message as _;
    use xcnf_proto::health::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    };
    let req = HealthCheckRequest {
        service: "networkservice.NetworkService".into(),
    };
    let mut want = vec![0x0a, 29];
    want.extend_from_slice(b"networkservice.NetworkService");
    assert_eq!(req.encode_to_vec(), want);
    let resp = HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    };
    assert_eq!(resp.encode_to_vec(), [0x08, 0x01]);
    assert_eq!(
        HealthCheckResponse::decode(&[0x08, 0x03][..]).map(|r| r.status()),
        Ok(ServingStatus::ServiceUnknown)
    );
    assert_eq!(
        <xcnf_proto::health::health_server::HealthServer<()> as tonic::server::NamedService>::NAME,
        "grpc.health.v1.Health"
    );
}
