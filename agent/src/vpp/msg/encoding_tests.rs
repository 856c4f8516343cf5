//! Every message against bytes written by hand from the layouts in
//! `nsm-vpp-api.md` Part B and the `.api` files (offsets from the start of
//! the payload, big-endian), never produced by the encoder under test.

use std::net::Ipv4Addr;

use super::{
    Reply, Request, decode_reply, encode_request, interface::*, ip::*, memclnt::*, memif::*,
    nat44::*, vpe::*,
};
use crate::config::Ipv4Prefix;

/// Request header used throughout: id 0x1234, client_index 0x80000001, context 7.
const HDR: [u8; 10] = [0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 7];

fn enc<R: Request>(r: &R) -> Vec<u8> {
    encode_request(r, 0x1234, 0x8000_0001, 7).unwrap_or_else(|e| panic!("{e}"))
}

fn with_hdr(body: &[u8]) -> Vec<u8> {
    let mut v = HDR.to_vec();
    v.extend_from_slice(body);
    v
}

fn dec<R: Reply>(bytes: &[u8]) -> R {
    decode_reply(bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// A reply/details payload of `len` bytes with id 0x0042 and context 7, the
/// rest zero, to be filled at the documented offsets.
fn reply_buf(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..6].copy_from_slice(&[0, 0x42, 0, 0, 0, 7]);
    v
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn pfx(s: &str) -> Ipv4Prefix {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sockclnt_create() {
    let b = SockclntCreate {
        name: "xcnf".into(),
    }
    .encode(0x0102_0304)
    .unwrap_or_else(|e| panic!("{e}"));
    let mut want = vec![0, 15, 1, 2, 3, 4, b'x', b'c', b'n', b'f'];
    want.resize(70, 0);
    assert_eq!(b, want);
}

#[test]
fn sockclnt_create_reply() {
    let mut b = vec![
        0, 16, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0x80, 0, 0, 5, 0, 2,
    ];
    let mut e1 = vec![0, 23];
    e1.extend_from_slice(b"control_ping_51077d14");
    e1.resize(66, 0);
    let mut e2 = vec![0x01, 0x2c];
    e2.extend_from_slice(b"memif_create_v2_8c7de5f7\x13");
    e2.resize(66, 0);
    b.extend(e1);
    b.extend(e2);
    let r = SockclntCreateReply::decode(&b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.context, 0x0102_0304);
    assert_eq!(r.response, 0);
    assert_eq!(r.index, 0x8000_0005);
    assert_eq!(
        r.table,
        vec![
            TableEntry {
                id: 23,
                name_crc: "control_ping_51077d14".into()
            },
            TableEntry {
                id: 300,
                name_crc: "memif_create_v2_8c7de5f7".into()
            },
        ]
    );
    // A table shorter than its count is an error, not a short table.
    assert!(SockclntCreateReply::decode(&b[..b.len() - 1]).is_err());
}

#[test]
fn sockclnt_delete() {
    assert_eq!(
        enc(&SockclntDelete { index: 0x8000_0005 }),
        with_hdr(&[0x80, 0, 0, 5])
    );
    let r: SockclntDeleteReply = dec(&[0, 0x42, 0, 0, 0, 7, 0, 0, 0, 1]);
    assert_eq!((r.response, r.retval()), (1, 0));
    let r: SockclntDeleteReply = dec(&[0, 0x42, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(r.retval(), -1);
}

#[test]
fn header_only_requests() {
    assert_eq!(enc(&ControlPing), HDR.to_vec());
    assert_eq!(enc(&ShowVersion), HDR.to_vec());
    assert_eq!(enc(&Nat44UserDump), HDR.to_vec());
}

#[test]
fn control_ping_reply() {
    let b = [
        0, 0x42, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xfa, 0x80, 0, 0, 1, 0, 0, 0x30, 0x39,
    ];
    let r: ControlPingReply = dec(&b);
    assert_eq!(
        r,
        ControlPingReply {
            retval: -6,
            client_index: 0x8000_0001,
            vpe_pid: 12345
        }
    );
}

#[test]
fn show_version_reply() {
    let mut b = reply_buf(362);
    put(&mut b, 10, b"vpe");
    put(&mut b, 42, b"v25.10-release");
    put(&mut b, 74, b"2025-10-29");
    put(&mut b, 106, b"/build/vpp");
    let r: ShowVersionReply = dec(&b);
    assert_eq!(r.retval, 0);
    assert_eq!(r.program, "vpe");
    assert_eq!(r.version, "v25.10-release");
    assert_eq!(r.build_date, "2025-10-29");
    assert_eq!(r.build_directory, "/build/vpp");
    assert!(decode_reply::<ShowVersionReply>(&b[..361]).is_err());
}

#[test]
fn cli_inband() {
    let b = enc(&CliInband {
        cmd: "show int".into(),
    });
    assert_eq!(b, with_hdr(b"\0\0\0\x08show int"));
    let r: CliInbandReply = dec(b"\0\x42\0\0\0\x07\0\0\0\0\0\0\0\x03ok\n");
    assert_eq!(r.reply, "ok\n");
}

#[test]
fn memif_socket_filename_add_del_v2() {
    let b = enc(&MemifSocketFilenameAddDelV2 {
        is_add: true,
        socket_id: SOCKET_ID_AUTO,
        socket_filename: "abstract:m".into(),
    });
    assert_eq!(b, with_hdr(b"\x01\xff\xff\xff\xff\0\0\0\x0aabstract:m"));
    let r: MemifSocketFilenameAddDelV2Reply = dec(&[0, 0x42, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
    assert_eq!(
        r,
        MemifSocketFilenameAddDelV2Reply {
            retval: 0,
            socket_id: 3
        }
    );
}

#[test]
fn memif_create_v2() {
    let b = enc(&MemifCreateV2 {
        role: ROLE_SLAVE,
        mode: MODE_IP,
        rx_queues: 2,
        tx_queues: 3,
        id: 5,
        socket_id: 7,
        ring_size: 1024,
        buffer_size: 2048,
        no_zero_copy: false,
        use_dma: false,
        hw_addr: [0x02, 0xfe, 1, 2, 3, 4],
        secret: "s".into(),
    });
    let mut want = vec![0u8; 66];
    want[..10].copy_from_slice(&HDR);
    put(&mut want, 10, &[0, 0, 0, 1]); // role SLAVE
    put(&mut want, 14, &[0, 0, 0, 1]); // mode IP
    put(&mut want, 18, &[2, 3]); // rx, tx queues
    put(&mut want, 20, &[0, 0, 0, 5]); // id
    put(&mut want, 24, &[0, 0, 0, 7]); // socket_id
    put(&mut want, 28, &[0, 0, 4, 0]); // ring_size
    put(&mut want, 32, &[8, 0]); // buffer_size
    put(&mut want, 34, &[0, 0]); // no_zero_copy, use_dma
    put(&mut want, 36, &[0x02, 0xfe, 1, 2, 3, 4]); // hw_addr
    put(&mut want, 42, b"s"); // secret[24]
    assert_eq!(b, want);
    let r: MemifCreateV2Reply = dec(&[0, 0x42, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9]);
    assert_eq!(r.sw_if_index, 9);
    // A 24-byte secret leaves no room for the NUL.
    let long = MemifCreateV2 {
        secret: "x".repeat(24),
        ..Default::default()
    };
    assert!(encode_request(&long, 1, 1, 1).is_err());
}

#[test]
fn memif_delete() {
    assert_eq!(
        enc(&MemifDelete { sw_if_index: 9 }),
        with_hdr(&[0, 0, 0, 9])
    );
    let r: MemifDeleteReply = dec(&[0, 0x42, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(r.retval(), -2);
}

#[test]
fn memif_dumps_and_details() {
    assert_eq!(enc(&MemifDump), HDR.to_vec());
    assert_eq!(enc(&MemifSocketFilenameDump), HDR.to_vec());

    let mut d = reply_buf(118);
    put(&mut d, 6, &[0, 0, 0, 3]); // socket_id
    put(&mut d, 10, b"abstract:m,netns_name=/run/netns/a"); // socket_filename[108]
    let s: MemifSocketFilenameDetails = dec(&d);
    assert_eq!(s.socket_id, 3);
    assert_eq!(s.socket_filename, "abstract:m,netns_name=/run/netns/a");

    let mut d = reply_buf(107);
    put(&mut d, 6, &[0, 0, 0, 9]); // sw_if_index
    put(&mut d, 10, &[0x02, 0xfe, 0, 0, 0, 9]); // hw_addr
    put(&mut d, 16, &[0, 0, 0, 5]); // id
    put(&mut d, 20, &[0, 0, 0, 1]); // role SLAVE
    put(&mut d, 24, &[0, 0, 0, 1]); // mode IP
    put(&mut d, 28, &[1]); // zero_copy
    put(&mut d, 29, &[0, 0, 0, 3]); // socket_id
    put(&mut d, 33, &[0, 0, 4, 0]); // ring_size
    put(&mut d, 37, &[8, 0]); // buffer_size
    put(&mut d, 39, &[0, 0, 0, 3]); // flags
    put(&mut d, 43, b"memif3/5"); // if_name[64]
    let m: MemifDetails = dec(&d);
    assert_eq!(
        m,
        MemifDetails {
            sw_if_index: 9,
            hw_addr: [0x02, 0xfe, 0, 0, 0, 9],
            id: 5,
            role: ROLE_SLAVE,
            mode: MODE_IP,
            zero_copy: true,
            socket_id: 3,
            ring_size: 1024,
            buffer_size: 2048,
            flags: 3,
            if_name: "memif3/5".into(),
        }
    );
    assert!(decode_reply::<MemifDetails>(&d[..106]).is_err());
}

#[test]
fn sw_interface_set_flags() {
    let b = enc(&SwInterfaceSetFlags {
        sw_if_index: 9,
        flags: IF_STATUS_ADMIN_UP,
    });
    assert_eq!(b, with_hdr(&[0, 0, 0, 9, 0, 0, 0, 1]));
    assert_eq!(b.len(), 18);
    let r: SwInterfaceSetFlagsReply = dec(&[0, 0x42, 0, 0, 0, 7, 0, 0, 0, 0]);
    assert_eq!(r.retval, 0);
}

#[test]
fn sw_interface_add_del_address() {
    let b = enc(&SwInterfaceAddDelAddress {
        sw_if_index: 9,
        is_add: true,
        del_all: false,
        prefix: pfx("192.168.1.1/24"),
    });
    assert_eq!(
        b,
        with_hdr(&[
            0, 0, 0, 9, // sw_if_index @10
            1, 0, // is_add @14, del_all @15
            0, // af IP4 @16
            192, 168, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // un[16] @17
            24, // len @33
        ])
    );
    assert_eq!(b.len(), 34);
    let r: SwInterfaceAddDelAddressReply = dec(&[0, 0x42, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0x81]);
    assert_eq!(r.retval, -127);
}

#[test]
fn sw_interface_dump() {
    assert_eq!(
        enc(&SwInterfaceDump::default()),
        with_hdr(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0])
    );
    let filtered = SwInterfaceDump {
        sw_if_index: u32::MAX,
        name_filter: Some("memif".into()),
    };
    assert_eq!(
        enc(&filtered),
        with_hdr(b"\xff\xff\xff\xff\x01\0\0\0\x05memif")
    );
}

#[test]
fn sw_interface_details() {
    let mut b = reply_buf(295);
    put(&mut b, 6, &[0, 0, 0, 4]); // sw_if_index
    put(&mut b, 10, &[0, 0, 0, 4]); // sup_sw_if_index
    put(&mut b, 14, &[0x02, 0xfe, 0xaa, 0xbb, 0xcc, 0xdd]); // l2_address
    put(&mut b, 20, &[0, 0, 0, 3]); // flags: admin up | link up
    put(&mut b, 36, &[0x05, 0xdc]); // link_mtu 1500
    put(&mut b, 38, &[0, 0, 0x05, 0xdc]); // mtu[0] (L3)
    put(&mut b, 59, &[0xff, 0xff]); // sub_outer_vlan_id: skipped
    put(&mut b, 99, &[0xff, 0xff, 0xff, 0xff]); // i_sid: skipped
    put(&mut b, 103, b"memif0/1");
    put(&mut b, 167, b"memif");
    put(&mut b, 231, b"xcnf:a");
    let d: SwInterfaceDetails = dec(&b);
    assert_eq!(d.sw_if_index, 4);
    assert_eq!(d.sup_sw_if_index, 4);
    assert_eq!(d.l2_address, [0x02, 0xfe, 0xaa, 0xbb, 0xcc, 0xdd]);
    assert_eq!(d.flags, 3);
    assert_eq!(d.link_mtu, 1500);
    assert_eq!(d.mtu, [1500, 0, 0, 0]);
    assert_eq!(d.interface_name, "memif0/1");
    assert_eq!(d.interface_dev_type, "memif");
    assert_eq!(d.tag, "xcnf:a");
    assert!(decode_reply::<SwInterfaceDetails>(&b[..294]).is_err());
}

#[test]
fn ip_route_add_del() {
    let b = enc(&IpRouteAddDel {
        is_add: true,
        is_multipath: false,
        table_id: 0,
        prefix: pfx("10.1.0.0/16"),
        paths: vec![FibPath {
            sw_if_index: u32::MAX,
            table_id: 0,
            weight: 1,
            preference: 0,
            path_type: FIB_PATH_TYPE_NORMAL,
            flags: FIB_PATH_FLAG_NONE,
            proto: FIB_PATH_NH_PROTO_IP4,
            next_hop: Ipv4Addr::new(10, 0, 0, 1),
        }],
    });
    let mut want = vec![0u8; 206];
    want[..10].copy_from_slice(&HDR);
    put(&mut want, 10, &[1, 0]); // is_add, is_multipath
    put(&mut want, 12, &[0, 0, 0, 0]); // table_id
    put(&mut want, 16, &[0, 0, 0, 0]); // stats_index
    put(&mut want, 20, &[0]); // af IP4
    put(&mut want, 21, &[10, 1, 0, 0]); // address
    put(&mut want, 37, &[16]); // len
    put(&mut want, 38, &[1]); // n_paths
    let p = 39;
    put(&mut want, p, &[0xff, 0xff, 0xff, 0xff]); // sw_if_index ~0
    put(&mut want, p + 12, &[1]); // weight
    put(&mut want, p + 26, &[10, 0, 0, 1]); // nh.address
    assert_eq!(b, want);
    let r: IpRouteAddDelReply = dec(&[0, 0x42, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    assert_eq!(r.stats_index, 17);
}

#[test]
fn nat44_ed_plugin_enable_disable() {
    let b = enc(&Nat44EdPluginEnableDisable {
        sessions: 1000,
        enable: true,
        ..Default::default()
    });
    assert_eq!(
        b,
        with_hdr(&[
            0, 0, 0, 0, // inside_vrf
            0, 0, 0, 0, // outside_vrf
            0, 0, 0x03, 0xe8, // sessions
            0, 0, 0, 0, // session_memory
            1, 0, // enable, flags
        ])
    );
    assert_eq!(b.len(), 28);
}

#[test]
fn nat44_add_del_address_range() {
    let b = enc(&Nat44AddDelAddressRange {
        first: Ipv4Addr::new(80, 80, 80, 1),
        last: Ipv4Addr::new(80, 80, 80, 10),
        vrf_id: u32::MAX,
        is_add: true,
        flags: 0,
    });
    assert_eq!(
        b,
        with_hdr(&[80, 80, 80, 1, 80, 80, 80, 10, 0xff, 0xff, 0xff, 0xff, 1, 0])
    );
    assert_eq!(b.len(), 24);
}

#[test]
fn nat44_interface_add_del_feature() {
    let b = enc(&Nat44InterfaceAddDelFeature {
        is_add: true,
        flags: NAT_IS_INSIDE,
        sw_if_index: 3,
    });
    assert_eq!(b, with_hdr(&[1, 0x20, 0, 0, 0, 3]));
    let out = enc(&Nat44InterfaceAddDelFeature {
        is_add: false,
        flags: NAT_IS_OUTSIDE,
        sw_if_index: 4,
    });
    assert_eq!(out, with_hdr(&[0, 0x10, 0, 0, 0, 4]));
}

#[test]
fn nat44_add_del_static_mapping_v2() {
    let b = enc(&Nat44AddDelStaticMappingV2 {
        is_add: true,
        match_pool: false,
        flags: 0,
        pool_ip: Ipv4Addr::UNSPECIFIED,
        local_ip: Ipv4Addr::new(10, 0, 0, 2),
        external_ip: Ipv4Addr::new(80, 80, 80, 100),
        protocol: 6,
        local_port: 8080,
        external_port: 80,
        external_sw_if_index: u32::MAX,
        vrf_id: 0,
        tag: "t".into(),
    });
    let mut want = vec![0u8; 102];
    want[..10].copy_from_slice(&HDR);
    put(&mut want, 10, &[1, 0, 0]); // is_add, match_pool, flags
    put(&mut want, 13, &[0, 0, 0, 0]); // pool_ip
    put(&mut want, 17, &[10, 0, 0, 2]); // local_ip
    put(&mut want, 21, &[80, 80, 80, 100]); // external_ip
    put(&mut want, 25, &[6]); // protocol
    put(&mut want, 26, &[0x1f, 0x90]); // local_port 8080
    put(&mut want, 28, &[0, 80]); // external_port
    put(&mut want, 30, &[0xff, 0xff, 0xff, 0xff]); // external_sw_if_index
    put(&mut want, 34, &[0, 0, 0, 0]); // vrf_id
    put(&mut want, 38, b"t"); // tag[64]
    assert_eq!(b, want);
}

#[test]
fn nat44_add_del_identity_mapping() {
    let b = enc(&Nat44AddDelIdentityMapping {
        is_add: true,
        flags: NAT_IS_ADDR_ONLY,
        ip: Ipv4Addr::new(10, 0, 0, 5),
        protocol: 0,
        port: 0,
        sw_if_index: u32::MAX,
        vrf_id: 0,
        tag: String::new(),
    });
    let mut want = vec![0u8; 91];
    want[..10].copy_from_slice(&HDR);
    put(&mut want, 10, &[1, 0x08]); // is_add, flags ADDR_ONLY
    put(&mut want, 12, &[10, 0, 0, 5]); // ip_address
    put(&mut want, 16, &[0]); // protocol
    put(&mut want, 17, &[0, 0]); // port
    put(&mut want, 19, &[0xff, 0xff, 0xff, 0xff]); // sw_if_index
    put(&mut want, 23, &[0, 0, 0, 0]); // vrf_id, then tag[64] @27
    assert_eq!(b, want);
}

#[test]
fn nat_set_timeouts() {
    let b = enc(&NatSetTimeouts {
        udp: 300,
        tcp_established: 7440,
        tcp_transitory: 240,
        icmp: 60,
    });
    assert_eq!(
        b,
        with_hdr(&[
            0, 0, 1, 0x2c, 0, 0, 0x1d, 0x10, 0, 0, 0, 0xf0, 0, 0, 0, 0x3c
        ])
    );
}

#[test]
fn nat44_user_dump_and_details() {
    let d: Nat44UserDetails = dec(&[
        0, 0x42, 0, 0, 0, 7, // header
        0, 0, 0, 0, // vrf_id @6
        10, 0, 0, 2, // ip @10
        0, 0, 0, 3, // nsessions @14
        0, 0, 0, 1, // nstaticsessions @18
    ]);
    assert_eq!(
        d,
        Nat44UserDetails {
            vrf_id: 0,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            nsessions: 3,
            nstaticsessions: 1
        }
    );
}

#[test]
fn nat44_user_session_v3_dump_and_details() {
    let b = enc(&Nat44UserSessionV3Dump {
        ip: Ipv4Addr::new(10, 0, 0, 2),
        vrf_id: 0,
    });
    assert_eq!(b, with_hdr(&[10, 0, 0, 2, 0, 0, 0, 0]));

    let mut d = reply_buf(62);
    put(&mut d, 6, &[80, 80, 80, 1]); // outside_ip
    put(&mut d, 10, &[0x04, 0x00]); // outside_port 1024
    put(&mut d, 12, &[10, 0, 0, 2]); // inside_ip
    put(&mut d, 16, &[0xc3, 0x50]); // inside_port 50000
    put(&mut d, 18, &[0, 17]); // protocol UDP
    put(&mut d, 20, &[0x80]); // flags EXT_HOST_VALID
    put(&mut d, 21, &[0, 0, 0, 0, 0, 0, 0, 100]); // last_heard
    put(&mut d, 29, &[0, 0, 0, 0, 0, 0, 0, 2]); // time_since_last_heard
    put(&mut d, 37, &[0, 0, 0, 0, 0, 0, 0x10, 0]); // total_bytes 4096
    put(&mut d, 45, &[0, 0, 0, 4]); // total_pkts
    put(&mut d, 49, &[192, 0, 2, 9]); // ext_host_ip
    put(&mut d, 53, &[0, 53]); // ext_host_port
    put(&mut d, 55, &[0, 0, 0, 0]); // ext_host_nat_ip
    put(&mut d, 59, &[0, 0]); // ext_host_nat_port
    put(&mut d, 61, &[1]); // is_timed_out
    let s: Nat44UserSessionV3Details = dec(&d);
    assert_eq!(s.outside_ip, Ipv4Addr::new(80, 80, 80, 1));
    assert_eq!(s.outside_port, 1024);
    assert_eq!(s.inside_ip, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(s.inside_port, 50000);
    assert_eq!(s.protocol, 17);
    assert_eq!(s.flags, NAT_IS_EXT_HOST_VALID);
    assert_eq!(s.last_heard, 100);
    assert_eq!(s.time_since_last_heard, 2);
    assert_eq!(s.total_bytes, 4096);
    assert_eq!(s.total_pkts, 4);
    assert_eq!(s.ext_host_ip, Ipv4Addr::new(192, 0, 2, 9));
    assert_eq!(s.ext_host_port, 53);
    assert!(s.is_timed_out);
    assert!(decode_reply::<Nat44UserSessionV3Details>(&d[..61]).is_err());
}

#[test]
fn retval_replies_share_one_layout() {
    let b = [0, 0x42, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xaf];
    assert_eq!(dec::<Nat44EdPluginEnableDisableReply>(&b).retval, -81);
    assert_eq!(dec::<Nat44AddDelAddressRangeReply>(&b).retval, -81);
    assert_eq!(dec::<Nat44InterfaceAddDelFeatureReply>(&b).retval, -81);
    assert_eq!(dec::<Nat44AddDelStaticMappingV2Reply>(&b).retval, -81);
    assert_eq!(dec::<Nat44AddDelIdentityMappingReply>(&b).retval, -81);
    assert_eq!(dec::<NatSetTimeoutsReply>(&b).retval, -81);
}
