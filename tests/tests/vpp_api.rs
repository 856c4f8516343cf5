//! The agent's VPP API client against the VPP API double: handshake and
//! CRC check, calls by context, dumps, retvals, timeouts, reconnects, and
//! the NAT44-over-memif chain as VPP records it. No root needed.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use xcnf_agent::{
    config::{Ipv4Prefix, NatTimeouts},
    vpp::{
        Backoff, Client, ClientOptions, IdentityMapping, Ipv4Route, MemifMode, MemifRole,
        MemifSpec, NatProto, NatSide, StaticMapping, SwIfIndex, VppConnection, VppError,
    },
};
use xcnf_tests::{
    netns::unique_prefix,
    vpp_double::{
        DEFAULT_MEMIF_SOCKET, DoubleSession, IdentityMap, Mode, NatIfSides, Role, RoutePath,
        StaticMap, Timeouts, VERSION, VppDouble, VppState,
    },
};

/// Guards against a hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    double: VppDouble,
    _dir: TempDir,
}

fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(unique_prefix(&format!("xcnf-vpp-{tag}-")));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let double = VppDouble::start(&dir.join("api.sock"));
    Fixture {
        double,
        _dir: TempDir(dir),
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        call_timeout: PATIENCE,
        client_name: "xcnf-test".to_owned(),
    }
}

async fn connect(f: &Fixture) -> Client {
    Client::connect(f.double.path(), opts())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

fn ok<T>(r: Result<T, VppError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn pfx(s: &str) -> Ipv4Prefix {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {PATIENCE:?}"))
}

fn supervise(f: &Fixture) -> VppConnection {
    VppConnection::start(
        f.double.path(),
        opts(),
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
    )
}

#[tokio::test]
async fn handshake_registers_and_checks_the_table() {
    let f = fixture("hs");
    let c = connect(&f).await;
    assert_eq!(f.double.clients(), vec!["xcnf-test".to_owned()]);
    assert_ne!(c.client_index() & 0x8000_0000, 0);
    assert!(c.vpp_message_count() > 60);
    let v = ok(c.show_version().await, "show_version");
    assert_eq!((v.program.as_str(), v.version.as_str()), ("vpe", VERSION));
    // Requests carry the client_index VPP gave: the double drops others.
    assert_eq!(f.double.received(), vec!["show_version".to_owned()]);
}

#[tokio::test]
async fn crc_mismatch_is_refused_naming_the_message_and_both_crcs() {
    let f = fixture("crc");
    f.double.set_crc("memif_create_v2", "deadbeef");
    let e = Client::connect(f.double.path(), opts()).await.err();
    match &e {
        Some(VppError::CrcMismatch { msg, expected, vpp }) => {
            assert_eq!(
                (*msg, *expected, *vpp),
                ("memif_create_v2", 0x8c7d_e5f7, 0xdead_beef)
            );
        }
        other => panic!("want CrcMismatch, got {other:?}"),
    }
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("memif_create_v2") && text.contains("deadbeef") && text.contains("8c7de5f7"),
        "{text}"
    );
    // Nothing was sent to a VPP that failed the check.
    assert!(f.double.received().is_empty());
}

#[tokio::test]
async fn a_reply_crc_mismatch_is_refused_too() {
    let f = fixture("crc2");
    f.double
        .set_crc("nat44_user_session_v3_details", "00000001");
    let e = Client::connect(f.double.path(), opts()).await.err();
    assert!(
        matches!(
            e,
            Some(VppError::CrcMismatch {
                msg: "nat44_user_session_v3_details",
                expected: 0xedae_926e,
                vpp: 1
            })
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_message_missing_from_the_table_is_refused() {
    let f = fixture("missing");
    f.double.remove_message("nat44_ed_plugin_enable_disable");
    let e = Client::connect(f.double.path(), opts()).await.err();
    assert!(
        matches!(
            e,
            Some(VppError::MissingMessage {
                msg: "nat44_ed_plugin_enable_disable",
                api: "nat44_ed",
                ..
            })
        ),
        "{e:?}"
    );
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("nat44_ed_plugin_enable_disable_be17f8dd"),
        "{text}"
    );
}

#[tokio::test]
async fn no_vpp_is_a_connect_error_naming_the_path() {
    let f = fixture("nopath");
    let path = f.double.path().with_file_name("nothing.sock");
    let e = Client::connect(&path, opts()).await.err();
    assert!(matches!(&e, Some(VppError::Connect { .. })), "{e:?}");
    assert!(e.is_some_and(|e| e.is_unreachable() && e.to_string().contains("nothing.sock")));
}

#[tokio::test]
async fn replies_out_of_order_reach_their_calls_by_context() {
    let f = fixture("ctx");
    let c = connect(&f).await;
    f.double.defer("cli_inband");
    let cli = tokio::spawn({
        let c = c.clone();
        async move { c.cli("show version").await }
    });
    // The CLI reply is held until the double answers something else.
    within("cli_inband reaching the double", async {
        while f.double.count("cli_inband") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let v = ok(c.show_version().await, "show_version");
    assert_eq!(v.version, VERSION);
    let out = ok(
        within("cli", cli).await.unwrap_or_else(|e| panic!("{e}")),
        "cli",
    );
    assert_eq!(out, format!("vpp {VERSION} built by the xcnf tests\n"));
}

#[tokio::test]
async fn many_concurrent_calls_each_get_their_reply() {
    let f = fixture("conc");
    let c = connect(&f).await;
    let calls = (0..40).map(|i| {
        let c = c.clone();
        async move {
            if i % 2 == 0 {
                c.cli(&format!("cmd {i}")).await.map(|s| (i, s))
            } else {
                c.interfaces().await.map(|v| (i, v[0].name.clone()))
            }
        }
    });
    for r in futures::future::join_all(calls).await {
        let (i, s) = ok(r, "call");
        if i % 2 == 0 {
            assert_eq!(s, format!("unknown input `cmd {i}'\n"));
        } else {
            assert_eq!(s, "local0");
        }
    }
}

#[tokio::test]
async fn a_dump_is_ended_by_control_ping() {
    let f = fixture("dump");
    let c = connect(&f).await;
    let sock = ok(
        c.memif_socket_add(None, "/run/xcnf/memif-a.sock").await,
        "socket",
    );
    for id in [1, 2] {
        let spec = MemifSpec::new(MemifRole::Master, MemifMode::Ip, id, sock);
        ok(c.memif_create(&spec).await, "memif_create");
    }
    let all = ok(c.interfaces().await, "interfaces");
    let names: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
    assert_eq!(
        names,
        vec![
            "local0".to_owned(),
            format!("memif{sock}/1"),
            format!("memif{sock}/2")
        ]
    );
    assert_eq!(all[1].dev_type, "memif");
    assert!(!all[1].admin_up);
    let r = f.double.received();
    let at = r.iter().position(|m| m == "sw_interface_dump");
    assert_eq!(
        at.and_then(|i| r.get(i + 1)).map(String::as_str),
        Some("control_ping")
    );
    // An empty dump is the ping reply alone.
    assert!(ok(c.nat44_sessions().await, "sessions").is_empty());
}

#[tokio::test]
async fn a_retval_is_a_readable_error() {
    let f = fixture("rv");
    let c = connect(&f).await;
    let e = c.memif_delete(SwIfIndex(99)).await.err();
    match &e {
        Some(VppError::Retval {
            msg,
            retval,
            meaning,
        }) => {
            assert_eq!((*msg, *retval), ("memif_delete", -2));
            assert_eq!(
                meaning,
                "Invalid sw_if_index (VNET_API_ERROR_INVALID_SW_IF_INDEX)"
            );
        }
        other => panic!("want Retval, got {other:?}"),
    }
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some(
            "memif_delete failed: VPP returned -2 \
             (Invalid sw_if_index (VNET_API_ERROR_INVALID_SW_IF_INDEX))"
        )
    );

    // An injected failure on the 2nd call changes nothing.
    f.double.fail_nth("sw_interface_set_flags", 2, -7);
    ok(c.set_flags(SwIfIndex(0), true).await, "1st set_flags");
    let e = c.set_flags(SwIfIndex(0), false).await.err();
    assert!(
        matches!(e, Some(VppError::Retval { retval: -7, .. })),
        "{e:?}"
    );
    assert!(f.double.snapshot().interfaces[&0].admin_up);
}

#[tokio::test]
async fn vpp_like_validation_answers_vpp_codes() {
    let f = fixture("val");
    let c = connect(&f).await;
    let sock = ok(
        c.memif_socket_add(None, "abstract:xcnf-val").await,
        "socket",
    );
    let spec = MemifSpec::new(MemifRole::Slave, MemifMode::Ethernet, 0, sock);
    let a = ok(c.memif_create(&spec).await, "memif a");
    let code = |e: Result<(), VppError>| match e {
        Err(VppError::Retval { retval, .. }) => retval,
        other => panic!("want a retval, got {other:?}"),
    };
    // Same id on the same socket.
    let dup = c.memif_create(&spec).await.map(|_| ());
    assert_eq!(code(dup), -68);
    // A socket in use cannot go.
    assert_eq!(code(c.memif_socket_del(sock).await), -74);
    ok(c.add_del_address(a, pfx("10.0.0.1/24"), true).await, "addr");
    // VPP 26.06 calls the same address again on the same interface "in use".
    assert_eq!(
        code(c.add_del_address(a, pfx("10.0.0.1/24"), true).await),
        -105
    );
    assert_eq!(
        code(c.add_del_address(a, pfx("10.0.0.9/24"), false).await),
        -60
    );
    // nat44 before the plugin is enabled, and enabling twice.
    assert_eq!(
        code(c.nat44_interface(a, NatSide::Inside, true).await),
        -126
    );
    ok(c.nat44_enable(0).await, "enable");
    assert_eq!(code(c.nat44_enable(0).await), -170);
    let m = StaticMapping::AddressOnly {
        local: Ipv4Addr::new(10, 0, 0, 2),
        external: Ipv4Addr::new(80, 80, 80, 2),
    };
    ok(c.nat44_static_mapping(&m, true).await, "static");
    assert_eq!(code(c.nat44_static_mapping(&m, true).await), -81);
    ok(c.nat44_static_mapping(&m, false).await, "static del");
    assert_eq!(code(c.nat44_static_mapping(&m, false).await), -6);
}

#[tokio::test]
async fn a_call_without_reply_times_out_naming_the_message() {
    let f = fixture("timeout");
    let c = ok(
        Client::connect(
            f.double.path(),
            ClientOptions {
                call_timeout: Duration::from_millis(200),
                client_name: "xcnf-test".to_owned(),
            },
        )
        .await,
        "connect",
    );
    f.double.ignore("show_version");
    let e = c.show_version().await.err();
    assert!(
        matches!(
            e,
            Some(VppError::Timeout {
                msg: "show_version",
                ..
            })
        ),
        "{e:?}"
    );
    // The connection stays usable.
    f.double.answer("show_version");
    assert_eq!(ok(c.show_version().await, "again").version, VERSION);
}

#[tokio::test]
async fn disconnect_unregisters() {
    let f = fixture("bye");
    let c = connect(&f).await;
    ok(c.disconnect().await, "disconnect");
    assert_eq!(f.double.received(), vec!["sockclnt_delete".to_owned()]);
    assert!(c.is_closed());
    let e = c.show_version().await.err();
    assert!(e.is_some_and(|e| e.is_unreachable()));
}

#[tokio::test]
async fn socket_closed_mid_call_fails_the_call_and_the_supervisor_reconnects() {
    let f = fixture("close");
    let conn = supervise(&f);
    let s = within("first connect", conn.connected_since(1)).await;
    assert_eq!(s.epoch, 1);
    let c = ok(conn.client(), "client");
    let sock = ok(c.memif_socket_add(None, "/run/xcnf/m.sock").await, "socket");

    f.double.close_on("memif_create_v2");
    let spec = MemifSpec::new(MemifRole::Master, MemifMode::Ip, 7, sock);
    let e = c.memif_create(&spec).await.err();
    assert!(
        matches!(
            e,
            Some(VppError::Disconnected {
                msg: "memif_create_v2"
            })
        ),
        "{e:?}"
    );
    let s = within("reconnect", conn.connected_since(2)).await;
    assert_eq!((s.epoch, s.connected), (2, true));
    assert_eq!(f.double.clients().len(), 2);
    // VPP itself did not restart: what it had is still there.
    let c = ok(conn.client(), "client after reconnect");
    ok(c.memif_create(&spec).await, "memif_create after reconnect");
    assert_eq!(f.double.snapshot().interfaces.len(), 2);
}

#[tokio::test]
async fn vpp_restart_loses_state_and_starts_a_new_epoch() {
    let f = fixture("restart");
    let conn = supervise(&f);
    within("first connect", conn.connected_since(1)).await;
    let c = ok(conn.client(), "client");
    ok(c.nat44_enable(0).await, "enable");
    assert!(f.double.snapshot().nat44.is_some());

    f.double.restart();
    let s = within("reconnect", conn.connected_since(2)).await;
    assert_eq!(s.epoch, 2);
    assert_eq!(f.double.snapshot(), VppState::default());
    // The old client is dead; the new one works and VPP can be resynced.
    assert!(c.is_closed());
    let c = ok(conn.client(), "client");
    ok(c.nat44_enable(0).await, "enable again");
}

#[tokio::test]
async fn calls_while_disconnected_fail_fast() {
    let f = fixture("down");
    let conn = supervise(&f);
    within("first connect", conn.connected_since(1)).await;
    let mut status = conn.subscribe();

    f.double.stop();
    let s = within(
        "disconnect seen",
        status.wait_for(|s| !s.connected && s.error.is_some()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .clone();
    assert_eq!(s.epoch, 1);
    let e = conn.client().err();
    assert!(matches!(&e, Some(VppError::NotConnected { .. })), "{e:?}");
    assert!(e.is_some_and(
        |e| e.is_unreachable() && e.to_string().starts_with("VPP API socket not reachable")
    ));

    f.double.resume();
    let s = within("reconnect", conn.connected_since(2)).await;
    assert_eq!(s.epoch, 2);
    ok(ok(conn.client(), "client").show_version().await, "version");
    conn.shutdown().await;
}

/// The NAT44 chain over memif: client → NAT (inside memif, outside memif)
/// → server, as the reconciler will program it.
#[tokio::test]
async fn nat44_chain_over_memif_is_recorded() {
    let f = fixture("chain");
    let c = connect(&f).await;
    let inside_sock = ok(
        c.memif_socket_add(Some(10), "abstract:xcnf-in,netns_name=/run/netns/cli")
            .await,
        "socket in",
    );
    let outside_sock = ok(
        c.memif_socket_add(None, "/run/xcnf/out.sock").await,
        "socket out",
    );
    assert_eq!(inside_sock, 10);

    let mut spec = MemifSpec::new(MemifRole::Slave, MemifMode::Ip, 0, inside_sock);
    spec.ring_size = 2048;
    let inside = ok(c.memif_create(&spec).await, "memif in");
    let outside = ok(
        c.memif_create(&MemifSpec::new(
            MemifRole::Master,
            MemifMode::Ip,
            0,
            outside_sock,
        ))
        .await,
        "memif out",
    );
    for i in [inside, outside] {
        ok(c.set_flags(i, true).await, "up");
    }
    ok(
        c.add_del_address(inside, pfx("192.168.100.1/24"), true)
            .await,
        "addr in",
    );
    ok(
        c.add_del_address(outside, pfx("80.80.80.1/24"), true).await,
        "addr out",
    );
    let route = Ipv4Route {
        prefix: pfx("10.10.0.0/16"),
        via: Some(Ipv4Addr::new(192, 168, 100, 2)),
        sw_if_index: Some(inside),
        table_id: 0,
    };
    ok(c.route_add_del(&route, true).await, "route");
    ok(c.nat44_enable(4096).await, "nat44 enable");
    ok(
        c.nat44_address_range(
            Ipv4Addr::new(80, 80, 80, 100),
            Ipv4Addr::new(80, 80, 80, 102),
            true,
        )
        .await,
        "pool",
    );
    ok(
        c.nat44_interface(inside, NatSide::Inside, true).await,
        "inside",
    );
    ok(
        c.nat44_interface(outside, NatSide::Outside, true).await,
        "outside",
    );
    let port_map = StaticMapping::Port {
        protocol: NatProto::Tcp,
        local: SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 2), 8080),
        external: SocketAddrV4::new(Ipv4Addr::new(80, 80, 80, 110), 80),
    };
    ok(c.nat44_static_mapping(&port_map, true).await, "static port");
    let one_to_one = StaticMapping::AddressOnly {
        local: Ipv4Addr::new(192, 168, 100, 3),
        external: Ipv4Addr::new(80, 80, 80, 111),
    };
    ok(
        c.nat44_static_mapping(&one_to_one, true).await,
        "static addr",
    );
    let identity = IdentityMapping {
        addr: Ipv4Addr::new(80, 80, 80, 1),
        port: Some((NatProto::Udp, 53)),
    };
    ok(c.nat44_identity_mapping(&identity, true).await, "identity");
    let timeouts = NatTimeouts {
        udp: Duration::from_secs(120),
        tcp_established: Duration::from_secs(3600),
        tcp_transitory: Duration::from_secs(30),
        icmp: Duration::from_secs(10),
    };
    ok(c.nat44_set_timeouts(&timeouts).await, "timeouts");

    let s = f.double.snapshot();
    assert_eq!(
        s.memif_sockets.into_iter().collect::<Vec<_>>(),
        vec![
            (0, DEFAULT_MEMIF_SOCKET.to_owned()),
            (1, "/run/xcnf/out.sock".to_owned()),
            (10, "abstract:xcnf-in,netns_name=/run/netns/cli".to_owned()),
        ]
    );
    let m_in = s.interfaces[&inside.0]
        .memif
        .unwrap_or_else(|| panic!("not a memif"));
    assert_eq!(
        (
            m_in.role,
            m_in.mode,
            m_in.id,
            m_in.socket_id,
            m_in.ring_size
        ),
        (Role::Slave, Mode::Ip, 0, 10, 2048)
    );
    let m_out = s.interfaces[&outside.0]
        .memif
        .unwrap_or_else(|| panic!("not a memif"));
    assert_eq!((m_out.role, m_out.socket_id), (Role::Master, outside_sock));
    assert!(s.interfaces[&inside.0].admin_up && s.interfaces[&outside.0].admin_up);
    assert_eq!(
        s.interfaces[&inside.0]
            .addresses
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![(Ipv4Addr::new(192, 168, 100, 1), 24)]
    );
    assert_eq!(
        s.interfaces[&outside.0]
            .addresses
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![(Ipv4Addr::new(80, 80, 80, 1), 24)]
    );
    assert_eq!(
        s.routes.into_iter().collect::<Vec<_>>(),
        vec![(
            (0, Ipv4Addr::new(10, 10, 0, 0), 16),
            vec![RoutePath {
                sw_if_index: inside.0,
                next_hop: Ipv4Addr::new(192, 168, 100, 2),
                weight: 1
            }]
        )]
    );
    assert_eq!(s.nat44.map(|n| n.sessions), Some(4096));
    assert_eq!(
        s.nat_addresses.into_iter().collect::<Vec<_>>(),
        vec![
            Ipv4Addr::new(80, 80, 80, 100),
            Ipv4Addr::new(80, 80, 80, 101),
            Ipv4Addr::new(80, 80, 80, 102)
        ]
    );
    assert_eq!(
        s.nat_interfaces.into_iter().collect::<Vec<_>>(),
        vec![
            (
                inside.0,
                NatIfSides {
                    inside: true,
                    outside: false
                }
            ),
            (
                outside.0,
                NatIfSides {
                    inside: false,
                    outside: true
                }
            ),
        ]
    );
    let statics: Vec<_> = s.static_mappings.into_iter().collect();
    assert_eq!(
        statics,
        vec![
            StaticMap {
                addr_only: false,
                protocol: 6,
                local: Ipv4Addr::new(192, 168, 100, 2),
                local_port: 8080,
                external: Ipv4Addr::new(80, 80, 80, 110),
                external_port: 80,
                vrf_id: 0,
                flags: 0,
                tag: String::new(),
            },
            StaticMap {
                addr_only: true,
                protocol: 0,
                local: Ipv4Addr::new(192, 168, 100, 3),
                local_port: 0,
                external: Ipv4Addr::new(80, 80, 80, 111),
                external_port: 0,
                vrf_id: 0,
                flags: 0x08,
                tag: String::new(),
            },
        ]
    );
    assert_eq!(
        s.identity_mappings.into_iter().collect::<Vec<_>>(),
        vec![IdentityMap {
            addr_only: false,
            addr: Ipv4Addr::new(80, 80, 80, 1),
            protocol: 17,
            port: 53,
            vrf_id: 0
        }]
    );
    assert_eq!(
        s.timeouts,
        Timeouts {
            udp: 120,
            tcp_established: 3600,
            tcp_transitory: 30,
            icmp: 10
        }
    );

    // What adoption after an agent restart reads back.
    let sockets = ok(c.memif_sockets().await, "memif sockets");
    assert_eq!(
        sockets,
        vec![
            (0, DEFAULT_MEMIF_SOCKET.to_owned()),
            (1, "/run/xcnf/out.sock".to_owned()),
            (10, "abstract:xcnf-in,netns_name=/run/netns/cli".to_owned()),
        ]
    );
    let memifs = ok(c.memifs().await, "memifs");
    let seen: Vec<_> = memifs
        .iter()
        .map(|m| (m.sw_if_index, m.role, m.mode, m.id, m.socket_id, m.admin_up))
        .collect();
    assert_eq!(
        seen,
        vec![
            (inside, MemifRole::Slave, MemifMode::Ip, 0, 10, true),
            (
                outside,
                MemifRole::Master,
                MemifMode::Ip,
                0,
                outside_sock,
                true
            ),
        ]
    );

    // Tearing down in reverse leaves VPP as it started (the default
    // socket and local0), except for the timeouts, which VPP keeps.
    ok(
        c.nat44_identity_mapping(&identity, false).await,
        "identity del",
    );
    ok(
        c.nat44_static_mapping(&one_to_one, false).await,
        "static addr del",
    );
    ok(
        c.nat44_static_mapping(&port_map, false).await,
        "static port del",
    );
    ok(
        c.nat44_interface(outside, NatSide::Outside, false).await,
        "outside del",
    );
    ok(
        c.nat44_interface(inside, NatSide::Inside, false).await,
        "inside del",
    );
    ok(
        c.nat44_address_range(
            Ipv4Addr::new(80, 80, 80, 100),
            Ipv4Addr::new(80, 80, 80, 102),
            false,
        )
        .await,
        "pool del",
    );
    ok(c.nat44_disable().await, "disable");
    ok(c.route_add_del(&route, false).await, "route del");
    for i in [inside, outside] {
        ok(c.memif_delete(i).await, "memif del");
    }
    for sock in [inside_sock, outside_sock] {
        ok(c.memif_socket_del(sock).await, "socket del");
    }
    let s = f.double.snapshot();
    assert_eq!(
        VppState {
            timeouts: Timeouts::default(),
            ..s
        },
        VppState::default()
    );
}

#[tokio::test]
async fn nat44_sessions_lists_every_users_sessions() {
    let f = fixture("sess");
    let c = connect(&f).await;
    let sa = |a: [u8; 4], p| SocketAddrV4::new(Ipv4Addr::from(a), p);
    let sessions = vec![
        DoubleSession {
            protocol: 6,
            inside: sa([10, 0, 0, 2], 40000),
            outside: sa([80, 80, 80, 100], 1024),
            ext_host: sa([192, 0, 2, 1], 443),
            is_static: false,
            total_bytes: 1500,
            total_pkts: 3,
            seconds_since_last_heard: 4,
        },
        DoubleSession {
            protocol: 17,
            inside: sa([10, 0, 0, 3], 5353),
            outside: sa([80, 80, 80, 101], 2000),
            ext_host: sa([192, 0, 2, 2], 53),
            is_static: true,
            total_bytes: 80,
            total_pkts: 1,
            seconds_since_last_heard: 9,
        },
        DoubleSession {
            protocol: 1,
            inside: sa([10, 0, 0, 2], 7),
            outside: sa([80, 80, 80, 100], 7),
            ext_host: sa([192, 0, 2, 9], 7),
            is_static: false,
            total_bytes: 84,
            total_pkts: 1,
            seconds_since_last_heard: 0,
        },
    ];
    f.double.set_sessions(sessions.clone());
    let mut got = ok(c.nat44_sessions().await, "sessions");
    got.sort_by_key(|s| (s.inside, s.protocol));
    let mut want = sessions;
    want.sort_by_key(|s| (s.inside, s.protocol));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (
                g.protocol,
                g.inside,
                g.outside,
                g.ext_host,
                g.is_static,
                g.total_bytes,
                g.total_pkts,
                g.seconds_since_last_heard
            ),
            (
                w.protocol,
                w.inside,
                w.outside,
                Some(w.ext_host),
                w.is_static,
                w.total_bytes,
                w.total_pkts,
                w.seconds_since_last_heard
            )
        );
    }
    // One user dump, then one session dump per user (two users).
    assert_eq!(f.double.count("nat44_user_dump"), 1);
    assert_eq!(f.double.count("nat44_user_session_v3_dump"), 2);
    assert_eq!(f.double.count("control_ping"), 3);
}

#[tokio::test]
async fn the_supervisor_reports_an_incompatible_vpp_and_keeps_trying() {
    let f = fixture("supcrc");
    f.double.set_crc("ip_route_add_del", "12345678");
    let conn = supervise(&f);
    let mut status = conn.subscribe();
    let s = within(
        "the CRC error in the status",
        status.wait_for(|s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("ip_route_add_del"))
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .clone();
    assert_eq!((s.epoch, s.connected), (0, false));
    let e = conn
        .client()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("12345678") && e.contains("b8ecfe0d"), "{e}");
    // Once VPP is replaced by a compatible one, the supervisor gets in.
    f.double.set_crc("ip_route_add_del", "b8ecfe0d");
    let s = within("connect", conn.connected_since(1)).await;
    assert_eq!(s.epoch, 1);
}
