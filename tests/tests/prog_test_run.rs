//! Fixture tests of the forwarding datapath through `BPF_PROG_TEST_RUN`.
//!
//! Each test runs on its own thread inside its own network namespace
//! ([`xcnf_tests::testrun`] says why), so they run in parallel and need no
//! cleanup.
//!
//! Every fixture pins down the verdict, the whole output frame and the whole
//! counter record, so a stray write or a miscounted reason fails as loudly as
//! a wrong verdict.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step must abort the test loudly"
)]

use xcnf_tests::{
    packet::{
        ETH_HLEN, ETH_P_IP, IPV4_HLEN, Ip4, Ipv4, Mac, arp_request, ethernet, ipv6_frame, routed,
        ttl_decremented, udp_frame,
    },
    testrun::{
        Case, Datapath, Hook, LO, LoadOptions, Out, check, check_all, dotted, ip, isolated,
        set_ip_forward, veth,
    },
};

/// Loopback's MAC: frames addressed to it count as "for us".
const LO_MAC: Mac = [0; 6];
/// The sender on the ingress side. Only its MAC and address appear in frames.
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xaa];
const CLIENT_IP: Ip4 = [10, 8, 0, 10];

/// v0's own address: traffic to it is for the CNF itself.
const LOCAL_IP: Ip4 = [10, 9, 0, 1];
/// The resolved next hop on v0, and its MAC.
const NEXT_HOP: Ip4 = [10, 9, 0, 2];
const NEXT_HOP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// On v0's subnet, never resolved.
const UNRESOLVED: Ip4 = [10, 9, 0, 3];
/// Reached through NEXT_HOP as a gateway.
const BEHIND_GATEWAY: Ip4 = [10, 20, 0, 5];
/// The resolved next hop on u0, an interface xcnf does not manage.
const UNMANAGED: Ip4 = [10, 9, 1, 2];
const UNMANAGED_MAC: Mac = [0x02, 0, 0, 0, 1, 0x02];
/// On u0's subnet, never resolved.
const UNMANAGED_UNRESOLVED: Ip4 = [10, 9, 1, 3];
/// Inside the blackhole route.
const BLACKHOLED: Ip4 = [198, 51, 100, 1];
/// Inside an `unreachable` route, and inside a `prohibit` route.
const UNREACHABLE: Ip4 = [192, 0, 2, 1];
const PROHIBITED: Ip4 = [198, 18, 0, 1];
/// Covered by no route at all (the namespace has no default route).
const NOWHERE: Ip4 = [203, 0, 113, 1];

/// The MTU forced onto v0 by the fragmentation fixtures.
const SMALL_MTU: usize = 1280;

/// The namespace every fixture runs in:
///
/// ```text
///  lo (ingress, managed)        v0 10.9.0.1/24 (managed) ── 10.9.0.2 resolved
///                                  10.20.0.0/16 via 10.9.0.2, 10.9.0.3 unresolved
///                               u0 10.9.1.1/24 (unmanaged) ── 10.9.1.2 resolved
///  blackhole 198.51.100.0/24, unreachable 192.0.2.0/24, prohibit 198.18.0.0/15,
///  no default route, ip_forward=1
/// ```
struct Net {
    v0: u32,
    v0_mac: Mac,
    u0: u32,
    u0_mac: Mac,
}

impl Net {
    fn new() -> Self {
        ip(&["link", "set", "lo", "up"]);
        let (v0, v0_mac) = veth("v0", "v1", "10.9.0.1/24", &[(NEXT_HOP, NEXT_HOP_MAC)]);
        let (u0, u0_mac) = veth("u0", "u1", "10.9.1.1/24", &[(UNMANAGED, UNMANAGED_MAC)]);
        ip(&[
            "route",
            "add",
            "10.20.0.0/16",
            "via",
            &dotted(NEXT_HOP),
            "dev",
            "v0",
        ]);
        ip(&["route", "add", "blackhole", "198.51.100.0/24"]);
        ip(&["route", "add", "unreachable", "192.0.2.0/24"]);
        ip(&["route", "add", "prohibit", "198.18.0.0/15"]);
        // Last, so every interface inherits forwarding=1 as well.
        set_ip_forward(true);
        Net {
            v0,
            v0_mac,
            u0,
            u0_mac,
        }
    }

    fn set_v0_mtu(&self, mtu: usize) {
        ip(&["link", "set", "dev", "v0", "mtu", &mtu.to_string()]);
    }
}

/// Loaded and configured the way the agent would for `net`: lo and v0
/// managed, lo counted, v0 a redirect target; u0 deliberately left out.
fn datapath_for(net: &Net, log_level: u8) -> Datapath {
    let mut dp = Datapath::load(LoadOptions {
        log_level,
        ..LoadOptions::default()
    });
    dp.manage(LO, LO_MAC);
    dp.manage(net.v0, net.v0_mac);
    dp.count(LO);
    dp.tx_port(net.v0);
    dp
}

// ---------------------------------------------------------------- fixtures

/// A UDP frame from the client, addressed to loopback at L2, with an IPv4
/// total length of `ip_len`.
fn client_frame(ip: &Ipv4, ip_len: usize) -> Vec<u8> {
    udp_frame(LO_MAC, CLIENT_MAC, ip, ip_len)
}

fn to(dst: Ip4) -> Ipv4 {
    Ipv4::new(CLIENT_IP, dst)
}

/// Overwrites bytes of the IPv4 header and fixes its 20-byte checksum, so
/// the frame is wrong only in the field under test.
fn with_ip_bytes(mut frame: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
    let at = ETH_HLEN + offset;
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    let check = ETH_HLEN + 10;
    frame[check..check + 2].fill(0);
    let c = xcnf_common::csum::checksum(&frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN]);
    frame[check..check + 2].copy_from_slice(&c.to_be_bytes());
    frame
}

fn udp_case(net: &Net) -> Case {
    let f = client_frame(&to(NEXT_HOP), 128);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("UDP to the resolved next hop", f, out)
}

fn gateway_case(net: &Net) -> Case {
    let f = client_frame(&to(BEHIND_GATEWAY), 200);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("UDP to a network behind the gateway", f, out)
}

/// A 28-byte IPv4 packet in a minimum-size (60-byte) Ethernet frame: the
/// trailing padding is not part of the packet and must go out as it came.
fn padded_case(net: &Net) -> Case {
    let mut f = client_frame(&to(NEXT_HOP), 28);
    f.resize(60, 0);
    f[ETH_HLEN + 28..].fill(0x5a);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("28-byte packet in a padded 60-byte frame", f, out)
}

fn ttl_cases(net: &Net) -> Vec<Case> {
    let mut cases: Vec<Case> = [255u8, 64, 2]
        .into_iter()
        .map(|ttl| {
            let f = client_frame(&to(NEXT_HOP).ttl(ttl), 100);
            let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
            Case::forwarded(format!("TTL {ttl}"), f, out)
        })
        .collect();
    cases.extend([1u8, 0].map(|ttl| {
        Case::passed(
            format!("TTL {ttl}"),
            client_frame(&to(NEXT_HOP).ttl(ttl), 100),
            |p| &mut p.ttl_expired,
        )
    }));
    cases
}

fn non_ipv4_cases() -> Vec<Case> {
    vec![
        Case::passed(
            "ARP request",
            arp_request(CLIENT_MAC, CLIENT_IP, LOCAL_IP),
            |p| &mut p.not_ipv4,
        ),
        Case::passed("IPv6", ipv6_frame(LO_MAC, CLIENT_MAC, 64), |p| {
            &mut p.not_ipv4
        }),
    ]
}

/// Too short for an IPv4 header, plus the boundary: a bare 20-byte header
/// is a complete (empty) packet and is forwarded.
fn truncated_cases(net: &Net, hook: Hook) -> Vec<Case> {
    let whole = client_frame(&to(NEXT_HOP), 100);
    let mut cases: Vec<Case> = [0usize, 1, 19]
        .into_iter()
        .map(|n| Case {
            refusable: hook == Hook::Tc,
            ..Case::dropped(
                format!("IPv4 ethertype with {n} bytes after Ethernet"),
                whole[..ETH_HLEN + n].to_vec(),
                |d| &mut d.malformed,
            )
        })
        .collect();
    let bare = ethernet(LO_MAC, CLIENT_MAC, ETH_P_IP, &to(NEXT_HOP).encode(&[]));
    let out = routed(&bare, NEXT_HOP_MAC, net.v0_mac);
    cases.push(Case::forwarded("bare 20-byte IPv4 header", bare, out));
    cases
}

fn malformed_cases() -> Vec<Case> {
    let f = client_frame(&to(NEXT_HOP), 100);
    let ipv6_as_ipv4 = {
        let v6 = ipv6_frame(LO_MAC, CLIENT_MAC, 64);
        ethernet(LO_MAC, CLIENT_MAC, ETH_P_IP, &v6[ETH_HLEN..])
    };
    let malformed = |what: &str, frame| Case::dropped(what, frame, |d| &mut d.malformed);
    vec![
        malformed("IHL 4", with_ip_bytes(f.clone(), 0, &[0x44])),
        malformed("IHL 0", with_ip_bytes(f.clone(), 0, &[0x40])),
        malformed("version 6 header", with_ip_bytes(f.clone(), 0, &[0x65])),
        malformed("an IPv6 packet under the IPv4 ethertype", ipv6_as_ipv4),
        malformed(
            "total length one past the frame",
            with_ip_bytes(f.clone(), 2, &101u16.to_be_bytes()),
        ),
        malformed(
            "total length 65535",
            with_ip_bytes(f.clone(), 2, &u16::MAX.to_be_bytes()),
        ),
        malformed(
            "total length 19, under the header size",
            with_ip_bytes(f.clone(), 2, &19u16.to_be_bytes()),
        ),
        malformed("a corrupted header checksum (RFC 1812 5.2.2)", {
            let mut bad = f;
            bad[ETH_HLEN + 10] ^= 0x01;
            bad
        }),
    ]
}

fn ip_options_cases() -> Vec<Case> {
    // Router alert (RFC 2113), a real option routers see.
    let ip = to(NEXT_HOP).options(&[0x94, 0x04, 0x00, 0x00]);
    vec![Case::passed(
        "IHL 6 (router alert option)",
        client_frame(&ip, 100),
        |p| &mut p.ip_options,
    )]
}

fn local_cases() -> Vec<Case> {
    vec![Case::passed(
        "to the CNF's own address",
        client_frame(&to(LOCAL_IP), 100),
        |p| &mut p.not_forwarded,
    )]
}

fn no_route_cases() -> Vec<Case> {
    [
        ("an unreachable route", UNREACHABLE),
        ("a prohibit route", PROHIBITED),
    ]
    .into_iter()
    .map(|(what, dst)| {
        Case::passed(format!("into {what}"), client_frame(&to(dst), 100), |p| {
            &mut p.no_route
        })
    })
    .collect()
}

/// No route at all: the FIB answers NOT_FWDED, the same code as for a local
/// destination, so it is counted with those; the kernel sends unreachable.
fn missing_route_cases() -> Vec<Case> {
    vec![Case::passed(
        "to an address no route covers",
        client_frame(&to(NOWHERE), 100),
        |p| &mut p.not_forwarded,
    )]
}

fn blackhole_cases() -> Vec<Case> {
    vec![Case::dropped(
        "into a blackhole route",
        client_frame(&to(BLACKHOLED), 100),
        |d| &mut d.blackhole,
    )]
}

/// Frames the L2 filter must hand to the kernel: XDP compares the
/// destination MAC with IFACES, TC relies on the skb's `pkt_type`.
fn not_for_us_cases() -> Vec<Case> {
    let ip = to(NEXT_HOP);
    [
        ("another host's MAC", [0x02, 0, 0, 0, 0, 0x99]),
        ("broadcast", [0xff; 6]),
        ("IPv4 multicast MAC", [0x01, 0x00, 0x5e, 0, 0, 1]),
    ]
    .into_iter()
    .map(|(what, dst)| {
        Case::passed(
            format!("IPv4 to {what}"),
            udp_frame(dst, CLIENT_MAC, &ip, 100),
            |p| &mut p.not_for_us,
        )
    })
    .collect()
}

/// XDP cannot resolve neighbours, so it leaves the packet to the kernel; TC
/// hands it to `bpf_redirect_neigh` with the TTL already decremented and the
/// MACs left for the kernel to fill in.
fn unresolved_cases(hook: Hook) -> Vec<Case> {
    let f = client_frame(&to(UNRESOLVED), 100);
    match hook {
        Hook::Xdp => vec![Case::passed("to an unresolved neighbour", f, |p| {
            &mut p.no_neigh
        })],
        Hook::Tc => {
            let out = ttl_decremented(&f);
            vec![Case::forwarded(
                "to an unresolved neighbour (bpf_redirect_neigh)",
                f,
                out,
            )]
        }
    }
}

fn unmanaged_cases(hook: Hook) -> Vec<Case> {
    let unresolved = client_frame(&to(UNMANAGED_UNRESOLVED), 100);
    vec![
        Case::passed(
            "out of an unmanaged interface",
            client_frame(&to(UNMANAGED), 100),
            |p| &mut p.unmanaged_egress,
        ),
        match hook {
            // XDP gives up on the missing neighbour before asking about egress.
            Hook::Xdp => Case::passed(
                "to an unresolved neighbour on an unmanaged interface",
                unresolved,
                |p| &mut p.no_neigh,
            ),
            Hook::Tc => Case::passed(
                "to an unresolved neighbour on an unmanaged interface",
                unresolved,
                |p| &mut p.unmanaged_egress,
            ),
        },
    ]
}

/// Needs v0's MTU at [`SMALL_MTU`].
fn frag_cases(net: &Net) -> Vec<Case> {
    let fits = client_frame(&to(NEXT_HOP), SMALL_MTU);
    let fits_out = routed(&fits, NEXT_HOP_MAC, net.v0_mac);
    vec![
        Case::forwarded(
            format!("{SMALL_MTU}-byte packet, exactly the MTU"),
            fits,
            fits_out,
        ),
        Case::passed(
            format!("{}-byte packet, one over the MTU", SMALL_MTU + 1),
            client_frame(&to(NEXT_HOP), SMALL_MTU + 1),
            |p| &mut p.frag_needed,
        ),
        Case::passed("1400-byte packet", client_frame(&to(NEXT_HOP), 1400), |p| {
            &mut p.frag_needed
        }),
    ]
}

/// Runs `fixture` in a fresh namespace with the standard datapath.
fn with_datapath(hook: Hook, fixture: fn(&Net, &Datapath, Hook)) {
    isolated(move || {
        let net = Net::new();
        let dp = datapath_for(&net, 0);
        fixture(&net, &dp, hook);
    });
}

xcnf_tests::on_both_hooks!(
    with_datapath:
    forwards_udp,
    forwards_via_gateway,
    forwards_padded_frame,
    ttl,
    non_ipv4_passes,
    truncated_ip_drops,
    malformed_ip_drops,
    ip_options_pass,
    local_passes,
    no_route_passes,
    missing_route_passes,
    blackhole_drops,
    not_for_us_passes,
    unresolved_neighbour,
    unmanaged_egress_passes,
    frag_needed_passes,
    forwarding_disabled_passes,
    counters_add_up,
);

fn forwards_udp(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &udp_case(net));
    let c = dp.counters(LO);
    assert_eq!((c.rx.packets, c.forwarded.packets), (1, 1), "{hook:?}");
}

fn forwards_via_gateway(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &gateway_case(net));
}

fn forwards_padded_frame(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &padded_case(net));
}

fn ttl(net: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &ttl_cases(net));
    let c = dp.counters(LO);
    assert_eq!(
        (c.forwarded.packets, c.passed.ttl_expired),
        (3, 2),
        "{hook:?}"
    );
}

fn non_ipv4_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &non_ipv4_cases());
}

fn truncated_ip_drops(net: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &truncated_cases(net, hook));
}

fn malformed_ip_drops(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &malformed_cases());
}

fn ip_options_pass(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &ip_options_cases());
}

fn local_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &local_cases());
}

fn no_route_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &no_route_cases());
}

fn missing_route_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &missing_route_cases());
}

fn blackhole_drops(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &blackhole_cases());
}

fn not_for_us_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &not_for_us_cases());
}

fn unresolved_neighbour(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &unresolved_cases(hook));
}

fn unmanaged_egress_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &unmanaged_cases(hook));
}

fn frag_needed_passes(net: &Net, dp: &Datapath, hook: Hook) {
    net.set_v0_mtu(SMALL_MTU);
    check_all(dp, hook, &frag_cases(net));
}

fn forwarding_disabled_passes(_: &Net, dp: &Datapath, hook: Hook) {
    set_ip_forward(false);
    check(
        dp,
        hook,
        &Case::passed(
            "with net.ipv4.ip_forward=0",
            client_frame(&to(NEXT_HOP), 100),
            |p| &mut p.fwd_disabled,
        ),
    );
}

/// Every case of every fixture through one datapath: each packet must land
/// in exactly one outcome, so the outcomes add up to `rx`.
fn counters_add_up(net: &Net, dp: &Datapath, hook: Hook) {
    let mut cases = vec![udp_case(net), gateway_case(net), padded_case(net)];
    cases.extend(ttl_cases(net));
    cases.extend(non_ipv4_cases());
    cases.extend(truncated_cases(net, hook));
    cases.extend(malformed_cases());
    cases.extend(ip_options_cases());
    cases.extend(local_cases());
    cases.extend(no_route_cases());
    cases.extend(missing_route_cases());
    cases.extend(blackhole_cases());
    cases.extend(not_for_us_cases());
    cases.extend(unresolved_cases(hook));
    cases.extend(unmanaged_cases(hook));
    let mut ran = check_all(dp, hook, &cases);
    // Changes the namespace, so it comes last.
    net.set_v0_mtu(SMALL_MTU);
    let frag = frag_cases(net);
    ran.extend(check_all(dp, hook, &frag));

    let n = ran.len() as u64;
    let bytes: u64 = ran.iter().map(|f| f.len() as u64).sum();
    let c = dp.counters(LO);
    assert_eq!((c.rx.packets, c.rx.bytes), (n, bytes), "{hook:?}: rx");
    assert_eq!(
        c.rx.packets,
        c.forwarded.packets + c.passed.total() + c.dropped.total(),
        "{hook:?}: outcomes do not add up to rx: {c:#?}"
    );
    // Every outcome the fixtures can reach was reached, so the identity above
    // is not satisfied vacuously by a few counters.
    let reached = [
        c.forwarded.packets,
        c.passed.not_ipv4,
        c.passed.not_for_us,
        c.passed.ip_options,
        c.passed.ttl_expired,
        c.passed.not_forwarded,
        c.passed.no_route,
        c.passed.frag_needed,
        c.passed.unmanaged_egress,
        c.dropped.malformed,
        c.dropped.blackhole,
    ];
    assert!(
        reached.iter().all(|&v| v > 0),
        "{hook:?}: an outcome was never reached: {c:#?}"
    );
}

// ---------------------------------------------------------------- single-hook

/// XDP rewrites the frame before the devmap redirect can fail, so a managed
/// egress missing from TX_PORTS drops the frame (as `redirect_failed`)
/// rather than handing the kernel a half-forwarded one.
#[test]
fn xdp_missing_tx_port_drops() {
    isolated(|| {
        let net = Net::new();
        let mut dp = datapath_for(&net, 0);
        dp.remove_tx_port(net.v0);
        check(
            &dp,
            Hook::Xdp,
            &missing_tx_port_case(&net, "v0 missing from TX_PORTS"),
        );
    });
}

fn missing_tx_port_case(net: &Net, what: &str) -> Case {
    let f = client_frame(&to(NEXT_HOP), 100);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case {
        out: Out::Exact(out),
        ..Case::dropped(what, f, |d| &mut d.redirect_failed)
    }
}

/// Managing u0 must be all it takes to forward out of it.
#[test]
fn managing_an_interface_enables_egress() {
    for hook in [Hook::Xdp, Hook::Tc] {
        isolated(move || {
            let net = Net::new();
            let mut dp = datapath_for(&net, 0);
            dp.manage(net.u0, net.u0_mac);
            dp.tx_port(net.u0);
            let f = client_frame(&to(UNMANAGED), 100);
            let out = routed(&f, UNMANAGED_MAC, net.u0_mac);
            check(
                &dp,
                hook,
                &Case::forwarded("out of u0 once managed", f, out),
            );
        });
    }
}

/// The agent writes its configured aya-log level into AYA_LOG_LEVEL before
/// loading. Off (0) and debug (4) must both verify and forward alike, and 0
/// must really take the log calls out (smaller translated programs).
#[test]
fn log_level_override() {
    isolated(|| {
        let net = Net::new();
        let mut sizes = Vec::new();
        for level in [0u8, 4] {
            let mut dp = datapath_for(&net, level);
            for hook in [Hook::Xdp, Hook::Tc] {
                check(&dp, hook, &udp_case(&net));
            }
            // Redirect failure is where the XDP program logs at debug level.
            dp.remove_tx_port(net.v0);
            let what = format!("redirect failure at log level {level}");
            check(&dp, Hook::Xdp, &missing_tx_port_case(&net, &what));
            sizes.push([Hook::Xdp, Hook::Tc].map(|h| dp.translated_size(h)));
        }
        for (i, hook) in [Hook::Xdp, Hook::Tc].into_iter().enumerate() {
            assert!(
                sizes[0][i] < sizes[1][i],
                "{hook:?}: AYA_LOG_LEVEL=0 should prune the log calls, yet translated \
                 sizes are {} (level 0) and {} (level 4)",
                sizes[0][i],
                sizes[1][i],
            );
        }
    });
}
