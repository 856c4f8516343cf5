//! NAT44 fixtures through `BPF_PROG_TEST_RUN`: input frame → exact output
//! frame, verdict, counters and NAT state, on both programs.
//!
//! Expectations come from the behaviour spec (`docs/nat44.md`) and RFC 4787,
//! 5382 and 5508, never from the program's output: every expected frame is
//! built from scratch with full checksums (test-run skbs are CHECKSUM_NONE,
//! so the TC helpers write complete checksums, as XDP does). The only value
//! read back from the datapath before building an expectation is a port the
//! spec lets it choose at random.
//!
//! Each test runs in its own network namespace ([`xcnf_tests::testrun`]):
//!
//! ```text
//!  lo  ingress, MAC CNF_MAC, role switched per packet (inside / outside / none)
//!  in0  192.168.100.1/24  inside   neighbours .10 client, .11 port-forward target,
//!                                   .12 1:1 host, .13 identity host, .20-.40 more hosts
//!  out0 80.80.80.100/24   outside  neighbours 80.80.80.80 server, 80.80.80.1 router;
//!                                   default route via the router (203.0.113.0/24 "remote")
//!  n0   10.50.0.1/24      no role  neighbour 10.50.0.2
//!  pool 80.80.80.101-104 (not local), static 80.80.80.110 (tcp 8080 → .11:80,
//!  udp 5000 → .11:5001), 80.80.80.120 ↔ .12 (1:1), identity .13 and 80.80.80.100:53/udp
//! ```
//!
//! Where the spec leaves a detail open, a fixture checks only what the spec
//! fixes and says so (`ignore` lists of NAT statistics, [`Kind::Has`],
//! byte accounting at L2 or L3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step must abort the test loudly"
)]

use xcnf_common::{
    DropReasons, PassReasons,
    nat::{
        Binding, BindingKey, INITIATOR, NatConfig, NatStats, PoolRange, RouteCtl, Session,
        SessionKey, StaticKey, StaticMapping, addr_flags, config_flags, kind, proto, role,
        static_flags, tcp_seen,
    },
};
use xcnf_tests::{
    packet::{
        ETH_HLEN, ETH_P_IP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ip4, Ipv4, Mac,
        Tcp, arp_reply, arp_request, ethernet, frag_needed, gre, icmp, icmp_echo, icmp_error,
        l4_checksum, payload, quote, tcp_flags, udp, udp_without_checksum,
    },
    testrun::{
        Case, Datapath, Hook, LO, LoadOptions, Out, check, dotted, ip, isolated, mac_str,
        set_ip_forward, veth,
    },
};

// ---------------------------------------------------------------- topology

/// Loopback's MAC (set on it): frames addressed to it are for the CNF.
const CNF_MAC: Mac = [0x02, 0xcf, 0, 0, 0, 0x01];

const INSIDE_NET: [u8; 3] = [192, 168, 100];
const CLIENT: Ip4 = [192, 168, 100, 10];
/// Behind the port forwards of FWD_EXT.
const HOST_B: Ip4 = [192, 168, 100, 11];
/// 1:1 with ONE_TO_ONE_EXT.
const HOST_C: Ip4 = [192, 168, 100, 12];
/// Exempt from NAT by an address-only identity mapping.
const HOST_D: Ip4 = [192, 168, 100, 13];
/// Further inside hosts, without any mapping.
const HOST_X: Ip4 = [192, 168, 100, 20];
const MORE_HOSTS: std::ops::RangeInclusive<u8> = 20..=40;

const OUTSIDE_NET: [u8; 3] = [80, 80, 80];
/// out0's own address: local to the CNF, not in the standard pool.
const OUTSIDE_ADDR: Ip4 = [80, 80, 80, 100];
const SERVER: Ip4 = [80, 80, 80, 80];
const ROUTER: Ip4 = [80, 80, 80, 1];
/// Behind the router (default route).
const REMOTE: Ip4 = [203, 0, 113, 9];
const REMOTE2: Ip4 = [203, 0, 113, 77];

const PLAIN_NET: [u8; 3] = [10, 50, 0];
const PLAIN_HOST: Ip4 = [10, 50, 0, 2];

const POOL_FIRST: Ip4 = [80, 80, 80, 101];
const POOL_COUNT: u32 = 4;
const FWD_EXT: Ip4 = [80, 80, 80, 110];
const ONE_TO_ONE_EXT: Ip4 = [80, 80, 80, 120];
/// The identity-mapped port on OUTSIDE_ADDR (udp).
const IDENTITY_PORT: u16 = 53;
/// A port forward to an address inside an `unreachable` route.
const UNROUTABLE_LOCAL: Ip4 = [10, 99, 0, 5];
const UNROUTABLE_EXT_PORT: u16 = 9090;

/// The MAC the fixtures give the host at `a` (neighbours are permanent).
fn mac_of(a: Ip4) -> Mac {
    [0x02, 0x00, a[0], a[1], a[2], a[3]]
}

fn on(net: [u8; 3], a: Ip4) -> bool {
    a[..3] == net
}

fn add(a: Ip4, n: u32) -> Ip4 {
    (u32::from_be_bytes(a) + n).to_be_bytes()
}

#[derive(Clone, Copy)]
struct Net {
    in0: u32,
    in0_mac: Mac,
    out0: u32,
    out0_mac: Mac,
    n0: u32,
    n0_mac: Mac,
}

impl Net {
    fn new() -> Self {
        ip(&[
            "link",
            "set",
            "lo",
            "address",
            &xcnf_tests::testrun::mac_str(CNF_MAC),
        ]);
        ip(&["link", "set", "lo", "up"]);
        let inside: Vec<(Ip4, Mac)> = [CLIENT, HOST_B, HOST_C, HOST_D]
            .into_iter()
            .chain(MORE_HOSTS.map(|h| [192, 168, 100, h]))
            .map(|a| (a, mac_of(a)))
            .collect();
        let (in0, in0_mac) = veth("in0", "in1", "192.168.100.1/24", &inside);
        let (out0, out0_mac) = veth(
            "out0",
            "out1",
            "80.80.80.100/24",
            &[(SERVER, mac_of(SERVER)), (ROUTER, mac_of(ROUTER))],
        );
        let (n0, n0_mac) = veth(
            "n0",
            "n1",
            "10.50.0.1/24",
            &[(PLAIN_HOST, mac_of(PLAIN_HOST))],
        );
        ip(&[
            "route",
            "add",
            "default",
            "via",
            &dotted(ROUTER),
            "dev",
            "out0",
        ]);
        ip(&["route", "add", "unreachable", "10.99.0.0/24"]);
        set_ip_forward(true);
        Net {
            in0,
            in0_mac,
            out0,
            out0_mac,
            n0,
            n0_mac,
        }
    }

    /// (next hop MAC, egress MAC) for a packet to `dst`, as the FIB answers.
    fn next_hop(&self, dst: Ip4) -> (Mac, Mac) {
        if on(INSIDE_NET, dst) {
            (mac_of(dst), self.in0_mac)
        } else if on(OUTSIDE_NET, dst) {
            (mac_of(dst), self.out0_mac)
        } else if on(PLAIN_NET, dst) {
            (mac_of(dst), self.n0_mac)
        } else {
            (mac_of(ROUTER), self.out0_mac)
        }
    }

    /// The frame a correct CNF sends for the (already translated) packet.
    fn routed(&self, p: &Pkt) -> Vec<u8> {
        let (dst, src) = self.next_hop(p.ip.dst);
        p.frame(dst, src)
    }
}

// ---------------------------------------------------------------- packets

#[derive(Clone, Debug)]
enum L4 {
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        /// false: the checksum field is zero ("no checksum").
        checksum: bool,
    },
    Tcp {
        tcp: Tcp,
        payload: Vec<u8>,
    },
    Echo {
        reply: bool,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    /// Anything else, kept as bytes (GRE, ICMP errors, fragments).
    Raw(Vec<u8>),
}

/// An IPv4 packet the fixtures can translate: the expected output of a
/// translation is the same packet built again with other addresses and
/// ports, every checksum computed from scratch.
#[derive(Clone, Debug)]
struct Pkt {
    ip: Ipv4,
    l4: L4,
}

impl Pkt {
    fn udp(src: Endpoint, dst: Endpoint) -> Self {
        Pkt {
            ip: Ipv4::new(src.0, dst.0).protocol(IPPROTO_UDP),
            l4: L4::Udp {
                sport: src.1,
                dport: dst.1,
                payload: payload(48),
                checksum: true,
            },
        }
    }

    fn tcp(src: Endpoint, dst: Endpoint, flags: u8) -> Self {
        Pkt {
            ip: Ipv4::new(src.0, dst.0).protocol(IPPROTO_TCP),
            l4: L4::Tcp {
                tcp: Tcp::new(src.1, dst.1, flags),
                payload: Vec::new(),
            },
        }
    }

    fn echo(src: Ip4, dst: Ip4, id: u16) -> Self {
        Pkt {
            ip: Ipv4::new(src, dst).protocol(IPPROTO_ICMP),
            l4: L4::Echo {
                reply: false,
                id,
                seq: 1,
                payload: payload(56),
            },
        }
    }

    fn raw(ip: Ipv4, bytes: Vec<u8>) -> Self {
        Pkt {
            ip,
            l4: L4::Raw(bytes),
        }
    }

    fn gre(src: Ip4, dst: Ip4) -> Self {
        Pkt::raw(
            Ipv4::new(src, dst).protocol(IPPROTO_GRE),
            gre(0x0800, &payload(40)),
        )
    }

    /// An ICMP error from `src` to `dst` quoting `quoted`.
    fn icmp_error(src: Ip4, dst: Ip4, message: Vec<u8>) -> Self {
        Pkt::raw(Ipv4::new(src, dst).protocol(IPPROTO_ICMP), message)
    }

    #[must_use]
    fn ttl(mut self, ttl: u8) -> Self {
        self.ip.ttl = ttl;
        self
    }

    #[must_use]
    fn payload(mut self, data: Vec<u8>) -> Self {
        match &mut self.l4 {
            L4::Udp { payload, .. } | L4::Tcp { payload, .. } | L4::Echo { payload, .. } => {
                *payload = data;
            }
            L4::Raw(b) => *b = data,
        }
        self
    }

    /// The same packet without DF, which a router may fragment.
    #[must_use]
    fn may_fragment(mut self) -> Self {
        self.ip = self.ip.fragment(0, false);
        self
    }

    #[must_use]
    fn no_udp_checksum(mut self) -> Self {
        if let L4::Udp { checksum, .. } = &mut self.l4 {
            *checksum = false;
        }
        self
    }

    /// The same TCP segment with other flags.
    #[must_use]
    fn flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { tcp, .. } = &mut self.l4 {
            tcp.flags = flags;
            if flags & tcp_flags::ACK != 0 && tcp.ack == 0 {
                tcp.ack = 0x5566_7788;
            }
        }
        self
    }

    /// The source endpoint; for ICMP echo the identifier is the request's
    /// source "port" and the reply's destination "port" (docs/nat44.md).
    fn src(&self) -> Endpoint {
        let port = match &self.l4 {
            L4::Udp { sport, .. } => *sport,
            L4::Tcp { tcp, .. } => tcp.sport,
            L4::Echo {
                reply: false, id, ..
            } => *id,
            L4::Echo { reply: true, .. } | L4::Raw(_) => 0,
        };
        (self.ip.src, port)
    }

    fn dst(&self) -> Endpoint {
        let port = match &self.l4 {
            L4::Udp { dport, .. } => *dport,
            L4::Tcp { tcp, .. } => tcp.dport,
            L4::Echo {
                reply: true, id, ..
            } => *id,
            L4::Echo { reply: false, .. } | L4::Raw(_) => 0,
        };
        (self.ip.dst, port)
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let (s, d) = (self.ip.src, self.ip.dst);
        match &self.l4 {
            L4::Udp {
                sport,
                dport,
                payload,
                checksum: true,
            } => udp(s, d, *sport, *dport, payload),
            L4::Udp {
                sport,
                dport,
                payload,
                checksum: false,
            } => udp_without_checksum(*sport, *dport, payload),
            L4::Tcp { tcp, payload } => tcp.encode(s, d, payload),
            L4::Echo {
                reply,
                id,
                seq,
                payload,
            } => icmp_echo(*reply, *id, *seq, payload),
            L4::Raw(b) => b.clone(),
        }
    }

    /// The whole IPv4 packet.
    fn bytes(&self) -> Vec<u8> {
        self.ip.encode(&self.l4_bytes())
    }

    fn frame(&self, dst: Mac, src: Mac) -> Vec<u8> {
        ethernet(dst, src, ETH_P_IP, &self.bytes())
    }

    /// The same packet between other endpoints (ports of protocols without
    /// them must be 0).
    fn with(&self, src: Endpoint, dst: Endpoint) -> Pkt {
        let mut p = self.clone();
        p.ip.src = src.0;
        p.ip.dst = dst.0;
        match &mut p.l4 {
            L4::Udp { sport, dport, .. } => (*sport, *dport) = (src.1, dst.1),
            L4::Tcp { tcp, .. } => (tcp.sport, tcp.dport) = (src.1, dst.1),
            L4::Echo {
                reply: false, id, ..
            } => {
                assert_eq!(dst.1, 0, "echo request has no destination port");
                *id = src.1;
            }
            L4::Echo {
                reply: true, id, ..
            } => {
                assert_eq!(src.1, 0, "echo reply has no source port");
                *id = dst.1;
            }
            L4::Raw(_) => assert_eq!((src.1, dst.1), (0, 0), "no ports to rewrite"),
        }
        p
    }

    /// The packet as a router sends it on after translating it to
    /// `src` → `dst`: TTL one less.
    fn hop(&self, src: Endpoint, dst: Endpoint) -> Pkt {
        let mut p = self.with(src, dst);
        p.ip.ttl -= 1;
        p
    }

    /// The packet forwarded untranslated.
    fn forwarded(&self) -> Pkt {
        self.hop(self.src(), self.dst())
    }

    /// The peer's answer: endpoints swapped, TTL 64; SYN is answered by
    /// SYN-ACK, other segments by ACK; echo requests by echo replies.
    fn reply(&self) -> Pkt {
        let mut p = self.clone();
        p.ip = Ipv4::new(self.ip.dst, self.ip.src)
            .protocol(self.ip.protocol)
            .id(0x2a2a);
        match &mut p.l4 {
            L4::Udp { sport, dport, .. } => std::mem::swap(sport, dport),
            L4::Tcp { tcp, .. } => {
                let syn = tcp.flags & tcp_flags::SYN;
                *tcp = Tcp {
                    sport: tcp.dport,
                    dport: tcp.sport,
                    seq: 0x0a0b_0c0d,
                    ack: tcp.seq.wrapping_add(1),
                    flags: syn | tcp_flags::ACK,
                    window: 65160,
                };
            }
            L4::Echo { reply, .. } => *reply = !*reply,
            L4::Raw(_) => {}
        }
        p
    }

    /// The datagram split into fragments of `chunk` data bytes, all with
    /// IP id `id`.
    fn fragments(&self, id: u16, chunk: usize) -> Vec<Pkt> {
        let whole = self.l4_bytes();
        whole
            .chunks(chunk)
            .enumerate()
            .map(|(i, data)| {
                let more = i * chunk + data.len() < whole.len();
                Pkt::raw(
                    self.ip.clone().id(id).fragment(i * chunk, more),
                    data.to_vec(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------- NAT state

/// A NAT statistic the fixture expects to move.
type Stat = fn(&mut NatStats) -> &mut u64;

/// Names for the statistics, so expectations read as a list.
mod st {
    use super::Stat;
    pub const SNAT: Stat = |s| &mut s.snat_sessions;
    pub const DNAT: Stat = |s| &mut s.dnat_sessions;
    pub const STATIC_SNAT: Stat = |s| &mut s.static_snat_sessions;
    pub const HAIRPIN: Stat = |s| &mut s.hairpin_sessions;
    pub const ADDR_ONLY: Stat = |s| &mut s.addr_only_sessions;
    pub const FROM_IN: Stat = |s| &mut s.translated_from_inside;
    pub const FROM_OUT: Stat = |s| &mut s.translated_from_outside;
    pub const ICMP_ERR: Stat = |s| &mut s.icmp_errors_translated;
    pub const FRAG: Stat = |s| &mut s.fragments_translated;
    pub const IDENTITY: Stat = |s| &mut s.identity;
    pub const ARP: Stat = |s| &mut s.arp_replies;
    pub const EXHAUSTED: Stat = |s| &mut s.pool_exhausted;
    pub const FULL: Stat = |s| &mut s.table_full;
    pub const NO_MAPPING: Stat = |s| &mut s.no_mapping;
    pub const UNTRACKED: Stat = |s| &mut s.fragment_untracked;
    pub const ICMP_UNMATCHED: Stat = |s| &mut s.icmp_error_unmatched;
}

/// How a fixture pins down a session's `kind`: exactly, or only the bit the
/// spec fixes when a session is several kinds at once (hairpin, 1:1,
/// address-only).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Exact(u8),
    Has(u8),
}

/// One session, as its first packet and that packet's translation define
/// it (docs/nat44.md, "Sessions").
struct Expect<'a> {
    /// The first packet, as it arrived, and the role it arrived on.
    first: &'a Pkt,
    dir: u8,
    /// Its translation, and the role of the side it leaves to (where the
    /// peer half's packets arrive).
    xlated: &'a Pkt,
    peer_dir: u8,
    kind: Kind,
    /// `tcp_seen` bits of [initiator half, peer half].
    flags: [u8; 2],
    /// Packets that hit [initiator half, peer half] so far.
    sent: [&'a [&'a Pkt]; 2],
}

/// An address and port (ICMP echo: identifier; other protocols: 0).
type Endpoint = (Ip4, u16);

fn key_of(p: &Pkt, dir: u8) -> SessionKey {
    let ((saddr, sport), (daddr, dport)) = (p.src(), p.dst());
    SessionKey {
        saddr,
        daddr,
        sport,
        dport,
        proto: p.ip.protocol,
        dir,
        _pad: [0; 2],
    }
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing into a local timespec.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
}

fn show(a: Ip4, port: u16) -> String {
    format!("{}:{port}", dotted(a))
}

fn show_sessions(all: &[(SessionKey, Session)]) -> String {
    all.iter()
        .map(|(k, v)| {
            format!(
                "  [{} {} → {} dir {}] → {} → {} peer_dir {} kind {:#x} flags {:#x} pkts {}",
                k.proto,
                show(k.saddr, k.sport),
                show(k.daddr, k.dport),
                k.dir,
                show(v.saddr, v.sport),
                show(v.daddr, v.dport),
                v.peer_dir,
                v.kind,
                v.flags,
                v.packets,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of session half `key`, or a failure listing every half.
fn session(dp: &Datapath, key: &SessionKey) -> Session {
    let all = dp.sessions();
    all.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| {
            panic!(
                "no session half {} {} → {} dir {}; the map holds:\n{}",
                key.proto,
                show(key.saddr, key.sport),
                show(key.daddr, key.dport),
                key.dir,
                show_sessions(&all)
            )
        })
}

/// What the fixtures configure, as the agent would write it.
struct Config {
    flags: u32,
    pools: Vec<PoolRange>,
    max_sessions: u32,
    /// The standard static and identity mappings (module docs).
    statics: bool,
}

fn range(first: Ip4, count: u32, base: u32, ports: (u16, u16)) -> PoolRange {
    PoolRange {
        first,
        count,
        base,
        port_min: ports.0,
        port_max: ports.1,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flags: config_flags::ENABLED,
            pools: vec![range(POOL_FIRST, POOL_COUNT, 0, (1024, 65535))],
            max_sessions: 1024,
            statics: true,
        }
    }
}

/// One fixture's datapath, namespace and expectations.
struct Nat {
    hook: Hook,
    net: Net,
    dp: Datapath,
    pools: Vec<PoolRange>,
    pool_addrs: u32,
    /// The spec's model of paired pooling: inside hosts in the order of
    /// their first translated flow; the n-th gets pool index n (mod size).
    paired: std::cell::RefCell<Vec<Ip4>>,
    /// CLOCK_MONOTONIC_COARSE before anything ran: no timestamp the
    /// datapath writes can be older.
    start_ns: u64,
}

impl Nat {
    fn new(hook: Hook, cfg: Config) -> Self {
        Self::with_load(hook, cfg, LoadOptions::default())
    }

    fn with_load(hook: Hook, cfg: Config, load: LoadOptions) -> Self {
        let net = Net::new();
        let mut dp = Datapath::load(load);
        dp.manage_role(LO, CNF_MAC, role::INSIDE);
        dp.manage_role(net.in0, net.in0_mac, role::INSIDE);
        dp.manage_role(net.out0, net.out0_mac, role::OUTSIDE);
        dp.manage(net.n0, net.n0_mac);
        dp.count(LO);
        for i in [net.in0, net.out0, net.n0] {
            dp.tx_port(i);
        }
        dp.set_pools(
            NatConfig {
                flags: cfg.flags,
                max_sessions: cfg.max_sessions,
                ..NatConfig::default()
            },
            &cfg.pools,
        );
        for r in &cfg.pools {
            for i in 0..r.count {
                dp.add_nat_addr(add(r.first, i), addr_flags::POOL);
            }
        }
        let pool_addrs = cfg.pools.iter().map(|r| r.count).sum();
        let mut nat = Nat {
            hook,
            net,
            dp,
            pools: cfg.pools,
            pool_addrs,
            paired: std::cell::RefCell::new(Vec::new()),
            start_ns: clock(libc::CLOCK_MONOTONIC_COARSE),
        };
        if cfg.statics {
            nat.static_map(proto::TCP, (FWD_EXT, 8080), (HOST_B, 80));
            nat.static_map(proto::UDP, (FWD_EXT, 5000), (HOST_B, 5001));
            nat.static_map(0, (ONE_TO_ONE_EXT, 0), (HOST_C, 0));
            nat.static_map(
                proto::TCP,
                (FWD_EXT, UNROUTABLE_EXT_PORT),
                (UNROUTABLE_LOCAL, 90),
            );
            nat.identity(0, (HOST_D, 0));
            nat.identity(proto::UDP, (OUTSIDE_ADDR, IDENTITY_PORT));
        }
        nat
    }

    /// A static mapping in both directions and its external address, as
    /// the agent writes it (address-only: `proto` and ports 0).
    fn static_map(&mut self, proto: u8, ext: Endpoint, local: Endpoint) {
        let entry = |dir, (addr, port): Endpoint| StaticKey {
            addr,
            port,
            proto,
            dir,
        };
        let to = |(addr, port): Endpoint| StaticMapping {
            addr,
            port,
            flags: 0,
            _pad: 0,
        };
        self.dp.add_static(entry(role::OUTSIDE, ext), to(local));
        self.dp.add_static(entry(role::INSIDE, local), to(ext));
        self.dp.add_nat_addr(ext.0, addr_flags::STATIC);
    }

    /// An identity mapping: the endpoint is its own external endpoint.
    fn identity(&mut self, proto: u8, (addr, port): Endpoint) {
        let v = StaticMapping {
            addr,
            port,
            flags: static_flags::IDENTITY,
            _pad: 0,
        };
        for dir in [role::INSIDE, role::OUTSIDE] {
            self.dp.add_static(
                StaticKey {
                    addr,
                    port,
                    proto,
                    dir,
                },
                v,
            );
        }
    }

    /// Packets from now on arrive on an interface with `role`.
    fn from(&mut self, role: u8) {
        self.dp.manage_role(LO, CNF_MAC, role);
    }

    /// Sets `route_ctl`, which governs both the route cache and the
    /// interface cache.
    fn cache_ctl(&mut self, generation: u32, max_age_ms: u32) {
        self.dp.set_route_ctl(RouteCtl {
            generation,
            max_age_ms,
        });
    }

    /// The pool address paired with `host` (RFC 4787 REQ-2): a host keeps
    /// the address its first translated flow got, and new hosts take the
    /// pool's addresses in turn. Call it for the flow being translated.
    fn pool_addr(&self, host: Ip4) -> Ip4 {
        let mut paired = self.paired.borrow_mut();
        let n = match paired.iter().position(|&h| h == host) {
            Some(n) => n,
            None => {
                paired.push(host);
                paired.len() - 1
            }
        };
        let i = u32::try_from(n).expect("few hosts") % self.pool_addrs.max(1);
        self.pools
            .iter()
            .find(|r| (r.base..r.base + r.count).contains(&i))
            .map(|r| add(r.first, i - r.base))
            .unwrap_or_else(|| panic!("pool index {i} in no range"))
    }

    /// `p` as it arrives at the CNF: from its sender's MAC (the router's for
    /// remote senders) to the CNF's.
    fn arriving(&self, p: &Pkt) -> Vec<u8> {
        let s = p.ip.src;
        let sender = if [INSIDE_NET, OUTSIDE_NET, PLAIN_NET]
            .iter()
            .any(|&n| on(n, s))
        {
            s
        } else {
            ROUTER
        };
        p.frame(CNF_MAC, mac_of(sender))
    }

    fn routed(&self, p: &Pkt) -> Vec<u8> {
        self.net.routed(p)
    }

    /// `p` arrives and leaves as `out`.
    fn fwd(&self, what: &str, p: &Pkt, out: &Pkt) -> Case {
        Case::forwarded(what, self.arriving(p), self.routed(out))
    }

    fn dropped(&self, what: &str, p: &Pkt, why: fn(&mut DropReasons) -> &mut u64) -> Case {
        Case::dropped(what, self.arriving(p), why)
    }

    fn passed(&self, what: &str, p: &Pkt, why: fn(&mut PassReasons) -> &mut u64) -> Case {
        Case::passed(what, self.arriving(p), why)
    }

    /// `p` goes to the kernel translated to `src` → `dst`, TTL and MACs as
    /// it arrived (the kernel forwards it), counted as passed for `why`.
    fn passed_translated(
        &self,
        what: &str,
        p: &Pkt,
        (src, dst): (Endpoint, Endpoint),
        why: fn(&mut PassReasons) -> &mut u64,
    ) -> Case {
        let input = self.arriving(p);
        let mut out = p.with(src, dst).frame(CNF_MAC, [0; 6]);
        out[6..12].copy_from_slice(&input[6..12]);
        Case {
            out: Out::Exact(out),
            ..Case::passed(what, input, why)
        }
    }

    /// `p` arrives on `dir` as the first packet of a flow whose source port
    /// the datapath picks: the output is `to(port)` with the port read back
    /// from the new session half.
    fn fwd_learned(&self, what: &str, p: &Pkt, dir: u8, to: impl Fn(u16) -> Pkt + 'static) -> Case {
        let key = key_of(p, dir);
        let net = self.net;
        Case {
            out: Out::Learned(Box::new(move |dp| net.routed(&to(session(dp, &key).sport)))),
            ..Case::forwarded(what, self.arriving(p), Vec::new())
        }
    }

    /// `p` arrives and leaves as `src` → `dst`, moving `bumps`; returns
    /// what left.
    fn xlate(&self, what: &str, p: &Pkt, src: Endpoint, dst: Endpoint, bumps: &[Stat]) -> Pkt {
        let out = p.hop(src, dst);
        self.run(&self.fwd(what, p, &out), bumps, &[]);
        out
    }

    /// The first packet of a new pool-translated flow leaves from `ext`.
    fn snat(&self, what: &str, p: &Pkt, ext: Endpoint) -> Pkt {
        self.xlate(what, p, ext, p.dst(), &[st::SNAT, st::FROM_IN])
    }

    /// A packet of an existing flow from inside leaves from `ext`.
    fn out(&self, what: &str, p: &Pkt, ext: Endpoint) -> Pkt {
        self.xlate(what, p, ext, p.dst(), &[st::FROM_IN])
    }

    /// A packet of an existing flow from outside goes on to `to`.
    fn back(&self, what: &str, p: &Pkt, to: Endpoint) -> Pkt {
        self.xlate(what, p, p.src(), to, &[st::FROM_OUT])
    }

    /// The first packet of a new flow from inside whose port on `addr` the
    /// datapath picks; returns that port.
    fn snat_learned(&self, what: &str, p: &Pkt, addr: Ip4) -> u16 {
        let (q, dst) = (p.clone(), p.dst());
        self.run(
            &self.fwd_learned(what, p, role::INSIDE, move |port| q.hop((addr, port), dst)),
            &[st::SNAT, st::FROM_IN],
            &[],
        );
        self.learned_port(p, role::INSIDE)
    }

    /// `p` is dropped for `why`, moving `bumps`.
    fn refused(&self, what: &str, p: &Pkt, why: fn(&mut DropReasons) -> &mut u64, bumps: &[Stat]) {
        self.run(&self.dropped(what, p, why), bumps, &[]);
    }

    /// Runs `case` and checks, besides verdict, frame and counters, that
    /// exactly the statistics in `bumps` moved (by one per mention), except
    /// those in `ignore`, which the spec leaves open for this case.
    fn run(&self, case: &Case, bumps: &[Stat], ignore: &[Stat]) {
        let before = self.dp.nat_stats();
        check(&self.dp, self.hook, case);
        let mut got = self.dp.nat_stats();
        let mut want = before;
        for b in bumps {
            *b(&mut want) += 1;
        }
        for i in ignore {
            *i(&mut want) = *i(&mut got);
        }
        assert_eq!(
            got, want,
            "{:?}: {}: nat_stats (left: got, right: expected)",
            self.hook, case.what
        );
    }

    /// The port the datapath gave the flow whose first packet was `p`.
    fn learned_port(&self, p: &Pkt, dir: u8) -> u16 {
        session(&self.dp, &key_of(p, dir)).sport
    }

    fn session_count(&self) -> usize {
        self.dp.sessions().len()
    }

    /// Checks both halves of the session `e` describes.
    fn expect(&self, e: &Expect) {
        let ctx = format!("{:?}: session of {:?}", self.hook, e.first.src());
        let now = clock(libc::CLOCK_MONOTONIC);
        let tuple = |p: &Pkt| {
            let ((sa, sp), (da, dp)) = (p.src(), p.dst());
            (sa, da, sp, dp)
        };
        let halves = [
            (key_of(e.first, e.dir), tuple(e.xlated), e.peer_dir, true),
            (
                key_of(&e.xlated.reply(), e.peer_dir),
                tuple(&e.first.reply()),
                e.dir,
                false,
            ),
        ];
        for (i, (key, (saddr, daddr, sport, dport), peer_dir, initiator)) in
            halves.into_iter().enumerate()
        {
            let which = if i == 0 { "initiator" } else { "peer" };
            let v = session(&self.dp, &key);
            assert_eq!(
                (v.saddr, v.daddr, v.sport, v.dport, v.peer_dir),
                (saddr, daddr, sport, dport, peer_dir),
                "{ctx}: {which} half rewrites to (src, dst, sport, dport, peer_dir)"
            );
            assert_eq!(
                v.flags & !INITIATOR,
                e.flags[i],
                "{ctx}: {which} half TCP flags seen"
            );
            match e.kind {
                Kind::Exact(k) => assert_eq!(v.kind, k, "{ctx}: {which} half kind"),
                Kind::Has(k) => assert_eq!(v.kind & k, k, "{ctx}: {which} half kind {:#x}", v.kind),
            }
            assert_eq!(v.is_initiator(), initiator, "{ctx}: {which} half initiator");
            let sent = e.sent[i];
            assert_eq!(v.packets, sent.len() as u64, "{ctx}: {which} half packets");
            // The spec does not say whether bytes are L2 or L3: either is
            // accepted, the sum must be exact.
            let l3: u64 = sent.iter().map(|p| p.bytes().len() as u64).sum();
            let l2 = l3 + ETH_HLEN as u64 * sent.len() as u64;
            assert!(
                v.bytes == l3 || v.bytes == l2,
                "{ctx}: {which} half bytes {} (want {l3} at L3 or {l2} at L2)",
                v.bytes
            );
            let secs = |ns: u64| (ns / 1_000_000_000) as u32;
            assert!(
                (secs(self.start_ns)..=secs(now)).contains(&v.created_s),
                "{ctx}: {which} half created_s {} outside [{}, {}]",
                v.created_s,
                secs(self.start_ns),
                secs(now)
            );
            if !sent.is_empty() {
                assert!(
                    (v.created_ns().max(self.start_ns)..=now).contains(&v.last_seen_ns),
                    "{ctx}: {which} half last_seen_ns {} outside [{}, {now}]",
                    v.last_seen_ns,
                    v.created_ns().max(self.start_ns)
                );
            }
        }
    }

    /// `nat_hosts` holds exactly the pairings of the model, and the cursor
    /// has moved once per paired host.
    fn expect_pairings(&self) {
        let paired = self.paired.borrow();
        let now = clock(libc::CLOCK_MONOTONIC);
        let secs = |ns: u64| (ns / 1_000_000_000) as u32;
        let used = secs(self.start_ns)..=secs(now);
        let mut got: Vec<(Ip4, u32, bool)> = self
            .dp
            .host_pairings()
            .into_iter()
            .map(|(h, v)| (h, v.index, used.contains(&v.used_s)))
            .collect();
        got.sort_unstable();
        let mut want: Vec<(Ip4, u32, bool)> = (0u32..)
            .zip(paired.iter())
            .map(|(n, &h)| (h, n % self.pool_addrs, true))
            .collect();
        want.sort_unstable();
        assert_eq!(
            got, want,
            "{:?}: nat_hosts (host, index, used_s within {used:?})",
            self.hook
        );
        assert_eq!(
            self.dp.next_pool_cursor(),
            paired.len() as u64,
            "{:?}: nat_active[NEXT_ADDR]",
            self.hook
        );
    }

    /// The endpoint-independent bindings are exactly `want`:
    /// (inside endpoint, external endpoint, protocol), two entries each.
    fn expect_bindings(&self, want: &[(Endpoint, Endpoint, u8)]) {
        let now = clock(libc::CLOCK_MONOTONIC);
        let mut got: Vec<_> = self
            .dp
            .bindings()
            .into_iter()
            .map(|(k, v)| {
                assert!(
                    (self.start_ns..=now).contains(&v.last_used_ns) && v._pad == [0; 2],
                    "{:?}: binding {k:?} → {v:?}: last_used_ns or padding",
                    self.hook
                );
                (k.dir, (k.addr, k.port), (v.addr, v.port), k.proto)
            })
            .collect();
        let mut expected: Vec<_> = want
            .iter()
            .flat_map(|&(inside, ext, proto)| {
                [
                    (role::INSIDE, inside, ext, proto),
                    (role::OUTSIDE, ext, inside, proto),
                ]
            })
            .collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            got, expected,
            "{:?}: nat_bindings (dir, key endpoint, value endpoint, proto)",
            self.hook
        );
    }

    /// Invariants every fixture ends with: sessions come in complete pairs
    /// (each half's peer key finds a half pointing back), one initiator and
    /// one kind per pair, `nat_active` counts the pairs, and loopback's
    /// outcomes add up to what it received.
    fn finish(&self) {
        let ctx = format!("{:?}: at the end", self.hook);
        let all = self.dp.sessions();
        for (k, v) in &all {
            let pk = k.peer(v);
            let pv = all
                .iter()
                .find(|(k2, _)| *k2 == pk)
                .map(|(_, v2)| *v2)
                .unwrap_or_else(|| {
                    panic!(
                        "{ctx}: half {k:?} has no peer half {pk:?}; sessions:\n{}",
                        show_sessions(&all)
                    )
                });
            assert_eq!(pk.peer(&pv), *k, "{ctx}: peer of the peer of {k:?}");
            assert_eq!(pv.kind, v.kind, "{ctx}: kinds of {k:?} and its peer");
            assert!(
                pv.is_initiator() != v.is_initiator(),
                "{ctx}: one initiator in the pair of {k:?}"
            );
        }
        assert_eq!(
            self.dp.sessions_created(),
            all.len() as u64 / 2,
            "{ctx}: nat_active[CREATED] vs session pairs in the map:\n{}",
            show_sessions(&all)
        );
        let c = self.dp.counters(LO);
        assert_eq!(
            c.rx.packets,
            c.forwarded.packets + c.passed.total() + c.dropped.total(),
            "{ctx}: outcomes do not add up to rx: {c:#?}"
        );
    }
}
// ---------------------------------------------------------------- fixtures

fn nat_fixture(hook: Hook, fixture: fn(Hook)) {
    isolated(move || fixture(hook));
}

xcnf_tests::on_both_hooks!(
    nat_fixture:
    snat_udp_first_packet_reply_and_established,
    snat_tcp_records_flags_both_ways,
    snat_icmp_echo_translates_identifier,
    endpoint_independent_mapping_and_filtering,
    endpoint_independent_port_collision,
    endpoint_dependent_mapping,
    pool_exhaustion_refuses_only_new_flows,
    static_and_identity_ports_never_allocated,
    paired_pooling_across_ranges,
    static_port_forward,
    static_snat_from_mapped_host,
    address_only_one_to_one,
    identity_mappings_pass_unchanged,
    hairpin_through_static_mapping,
    hairpin_through_static_mapping_endpoint_dependent,
    hairpin_through_binding,
    a_binding_to_a_removed_pool_address_is_replaced,
    icmp_errors_from_outside,
    icmp_errors_from_inside,
    icmp_error_quoting_no_session,
    udp_checksum_zero_and_edges,
    fragments_outbound,
    fragments_inbound,
    gre_address_translated,
    nat_addresses_without_mapping_drop,
    local_pool_address,
    arp_for_nat_addresses,
    table_full_refuses_new_flows,
    hosts_table_full_refuses_new_hosts,
    a_pairing_in_no_pool_range_drops,
    malformed_l4_drops,
    no_role_or_disabled_forwards_unchanged,
    ttl_and_ip_options_before_nat,
    inbound_unroutable_drops,
    outbound_unresolved_or_unroutable,
    icmp_static_mapping,
    reserved_ports_are_not_taken,
    route_cache_follows_generation_and_age,
    route_cache_takes_the_source_mac_from_ifaces,
    iface_cache_follows_generation_and_age,
);

const NO_MAPPING: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.nat_no_mapping;

fn snat_udp_first_packet_reply_and_established(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let first = Pkt::udp((CLIENT, 40000), (SERVER, 53));
    // The source port is free and in range, so it is kept.
    let xlated = nat.snat("first UDP packet from inside", &first, (p, 40000));
    let exp = Expect {
        first: &first,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Exact(kind::SNAT),
        flags: [0, 0],
        sent: [&[&first], &[]],
    };
    nat.expect(&exp);
    nat.expect_bindings(&[((CLIENT, 40000), (p, 40000), proto::UDP)]);

    nat.from(role::OUTSIDE);
    let back = xlated.reply();
    nat.back("reply from outside", &back, (CLIENT, 40000));
    nat.from(role::INSIDE);
    let second = first.clone().payload(payload(301));
    nat.out(
        "second packet from inside (established)",
        &second,
        (p, 40000),
    );
    nat.expect(&Expect {
        sent: [&[&first, &second], &[&back]],
        ..exp
    });
    assert_eq!(nat.session_count(), 2, "{hook:?}: one session");
    nat.expect_pairings();
    // A short datagram in a padded 60-byte frame: the padding is not part
    // of the packet and goes out as it came.
    let small = first.clone().payload(payload(4));
    let mut input = nat.arriving(&small);
    let mut output = nat.routed(&small.hop((p, 40000), (SERVER, 53)));
    for f in [&mut input, &mut output] {
        f.resize(60, 0x5a);
    }
    nat.run(
        &Case::forwarded("in a padded 60-byte frame", input, output),
        &[st::FROM_IN],
        &[],
    );
    nat.finish();
}

fn snat_tcp_records_flags_both_ways(hook: Hook) {
    use tcp_flags::{ACK, FIN, RST, SYN};
    let mut nat = Nat::new(hook, Config::default());
    let (p, c) = ((nat.pool_addr(CLIENT), 40001), (CLIENT, 40001));
    let syn = Pkt::tcp(c, (SERVER, 80), SYN);
    let xlated = nat.snat("SYN", &syn, p);
    let exp = Expect {
        first: &syn,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Exact(kind::SNAT),
        flags: [tcp_seen::SYN, 0],
        sent: [&[&syn], &[]],
    };
    nat.expect(&exp);

    nat.from(role::OUTSIDE);
    let synack = xlated.reply();
    nat.back("SYN-ACK", &synack, c);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN, tcp_seen::SYN],
        sent: [&[&syn], &[&synack]],
        ..exp
    });

    nat.from(role::INSIDE);
    let ack = syn.clone().flags(ACK).payload(payload(101));
    nat.out("ACK with data", &ack, p);
    let fin = syn.clone().flags(FIN | ACK);
    nat.out("FIN", &fin, p);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN | tcp_seen::FIN, tcp_seen::SYN],
        sent: [&[&syn, &ack, &fin], &[&synack]],
        ..exp
    });

    nat.from(role::OUTSIDE);
    let rst = synack.clone().flags(RST);
    nat.back("RST", &rst, c);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN | tcp_seen::FIN, tcp_seen::SYN | tcp_seen::RST],
        sent: [&[&syn, &ack, &fin], &[&synack, &rst]],
        ..exp
    });

    // The server's late ACK opens nothing: the state stays.
    let late = synack.clone().flags(ACK);
    nat.back("a late ACK", &late, c);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN | tcp_seen::FIN, tcp_seen::SYN | tcp_seen::RST],
        sent: [&[&syn, &ack, &fin], &[&synack, &rst, &late]],
        ..exp
    });

    // The client reconnects from the same port: the new SYN starts the
    // state over in both halves (VPP reopens the session), and the new
    // handshake makes the session established again.
    nat.from(role::INSIDE);
    nat.out("a new SYN on the closed connection's tuple", &syn, p);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN, 0],
        sent: [&[&syn, &ack, &fin, &syn], &[&synack, &rst, &late]],
        ..exp
    });
    nat.from(role::OUTSIDE);
    nat.back("its SYN-ACK", &synack, c);
    nat.expect(&Expect {
        flags: [tcp_seen::SYN, tcp_seen::SYN],
        sent: [&[&syn, &ack, &fin, &syn], &[&synack, &rst, &late, &synack]],
        ..exp
    });

    // A connection the server refuses: its RST is on the reply half only,
    // and the client's next SYN from the same port starts over too.
    nat.from(role::INSIDE);
    let (p2, c2) = ((nat.pool_addr(CLIENT), 40002), (CLIENT, 40002));
    let syn2 = Pkt::tcp(c2, (SERVER, 81), SYN);
    let x2 = nat.snat("SYN to a closed port", &syn2, p2);
    nat.from(role::OUTSIDE);
    let refused = x2.reply().flags(RST | ACK);
    nat.back("the server's RST", &refused, c2);
    nat.from(role::INSIDE);
    nat.out("the SYN again", &syn2, p2);
    nat.expect(&Expect {
        first: &syn2,
        xlated: &x2,
        flags: [tcp_seen::SYN, 0],
        sent: [&[&syn2, &syn2], &[&refused]],
        ..exp
    });
    nat.finish();
}

fn snat_icmp_echo_translates_identifier(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let req = Pkt::echo(CLIENT, SERVER, 0x1234);
    let xlated = nat.snat("echo request, identifier free", &req, (p, 0x1234));
    nat.from(role::OUTSIDE);
    let rep = xlated.reply();
    nat.back("echo reply", &rep, (CLIENT, 0x1234));
    nat.expect(&Expect {
        first: &req,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Exact(kind::SNAT),
        flags: [0, 0],
        sent: [&[&req], &[&rep]],
    });

    // An identifier below the pool's port range is replaced by one inside.
    nat.from(role::INSIDE);
    let low = Pkt::echo(CLIENT, SERVER, 7);
    let id = nat.snat_learned("echo request, identifier 7", &low, p);
    assert!(
        id >= 1024,
        "{hook:?}: identifier 7 became {id}, below the range"
    );
    nat.expect_bindings(&[
        ((CLIENT, 0x1234), (p, 0x1234), proto::ICMP),
        ((CLIENT, 7), (p, id), proto::ICMP),
    ]);
    nat.from(role::OUTSIDE);
    let rep = low.hop((p, id), (SERVER, 0)).reply();
    nat.back("reply to the new identifier", &rep, (CLIENT, 7));
    nat.finish();
}

/// RFC 4787 REQ-1: one external endpoint for every destination; filtering
/// stays address-and-port dependent (docs/nat44.md).
fn endpoint_independent_mapping_and_filtering(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let (p, c) = ((nat.pool_addr(CLIENT), 40000), (CLIENT, 40000));
    nat.snat("to the server", &Pkt::udp(c, (SERVER, 53)), p);
    nat.snat("to a remote host", &Pkt::udp(c, (REMOTE, 53)), p);
    nat.expect_bindings(&[(c, p, proto::UDP)]);
    assert_eq!(nat.session_count(), 4, "{hook:?}: two sessions");

    nat.from(role::OUTSIDE);
    nat.refused(
        "a third host to the bound endpoint (address-dependent filtering)",
        &Pkt::udp((REMOTE2, 53), p),
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    nat.refused(
        "a contacted host from another port (port-dependent filtering)",
        &Pkt::udp((REMOTE, 54), p),
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    nat.back("reply from the remote host", &Pkt::udp((REMOTE, 53), p), c);
    assert_eq!(
        nat.session_count(),
        4,
        "{hook:?}: filtered packets made sessions"
    );
    nat.finish();
}

/// One pool address, ports 20000-20099: collisions on it are certain.
fn collision_config(flags: u32) -> Config {
    Config {
        flags,
        pools: vec![range(POOL_FIRST, 1, 0, (20000, 20099))],
        ..Config::default()
    }
}

fn assert_in_range(hook: Hook, what: &str, port: u16, taken: &[u16]) {
    assert!(
        (20000..=20099).contains(&port) && !taken.contains(&port),
        "{hook:?}: {what}: port {port} not in 20000-20099 or already taken ({taken:?})"
    );
}

fn endpoint_independent_port_collision(hook: Hook) {
    let mut nat = Nat::new(hook, collision_config(config_flags::ENABLED));
    let p = POOL_FIRST;
    let (c, x) = ((CLIENT, 20050), (HOST_X, 20050));
    nat.snat(
        "first owner of port 20050",
        &Pkt::udp(c, (SERVER, 53)),
        (p, 20050),
    );
    // Another host, same source port, another destination: the client owns
    // 20050 for every destination.
    let xp = nat.snat_learned("same port from another host", &Pkt::udp(x, (REMOTE, 53)), p);
    assert_in_range(hook, "colliding port", xp, &[20050]);
    // The same inside endpoint keeps its external port for a new destination.
    nat.snat(
        "the other host to the server",
        &Pkt::udp(x, (SERVER, 53)),
        (p, xp),
    );
    // A source port outside the range is replaced by one inside it.
    let low = (CLIENT, 19000);
    let lp = nat.snat_learned(
        "source port below the range",
        &Pkt::udp(low, (SERVER, 53)),
        p,
    );
    assert_in_range(hook, "port for 19000", lp, &[20050, xp]);
    nat.expect_bindings(&[
        (c, (p, 20050), proto::UDP),
        (x, (p, xp), proto::UDP),
        (low, (p, lp), proto::UDP),
    ]);
    nat.from(role::OUTSIDE);
    nat.back(
        "reply to the chosen port",
        &Pkt::udp((REMOTE, 53), (p, xp)),
        x,
    );
    nat.finish();
}

/// `mapping: endpoint-dependent`: the external port is reserved per
/// destination, so one port serves different inside hosts for different
/// destinations.
fn endpoint_dependent_mapping(hook: Hook) {
    let flags = config_flags::ENABLED | config_flags::ENDPOINT_DEPENDENT;
    let mut nat = Nat::new(hook, collision_config(flags));
    let p = POOL_FIRST;
    let (c, x) = ((CLIENT, 20050), (HOST_X, 20050));
    nat.snat(
        "client to the server",
        &Pkt::udp(c, (SERVER, 53)),
        (p, 20050),
    );
    nat.snat(
        "another host, same port, another destination: port kept",
        &Pkt::udp(x, (REMOTE, 53)),
        (p, 20050),
    );
    let xp = nat.snat_learned(
        "that host to the client's destination: port taken there",
        &Pkt::udp(x, (SERVER, 53)),
        p,
    );
    assert_in_range(hook, "port for the second flow to the server", xp, &[20050]);
    nat.from(role::OUTSIDE);
    nat.back(
        "server to port 20050",
        &Pkt::udp((SERVER, 53), (p, 20050)),
        c,
    );
    nat.back(
        "remote to port 20050",
        &Pkt::udp((REMOTE, 53), (p, 20050)),
        x,
    );
    nat.back(
        "server to the other port",
        &Pkt::udp((SERVER, 53), (p, xp)),
        x,
    );
    nat.finish();
}

/// One address with 16 ports: the 17th flow is refused, everything else
/// keeps working (docs/nat44.md, "Pool allocation").
fn pool_exhaustion_refuses_only_new_flows(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            pools: vec![range(POOL_FIRST, 1, 0, (30000, 30015))],
            ..Config::default()
        },
    );
    let p = POOL_FIRST;
    let flow = |port| Pkt::udp((CLIENT, port), (SERVER, 53));
    for port in 30000..=30015 {
        nat.snat(&format!("flow from port {port}"), &flow(port), (p, port));
    }
    nat.refused(
        "17th flow",
        &Pkt::udp((HOST_X, 40000), (SERVER, 53)),
        |d| &mut d.nat_pool_exhausted,
        &[st::EXHAUSTED],
    );
    assert_eq!(
        nat.session_count(),
        32,
        "{hook:?}: the refused flow left state"
    );
    nat.out("an existing flow", &flow(30003), (p, 30003));
    // A bound endpoint needs no new port for a new destination.
    let bound = Pkt::udp((CLIENT, 30007), (REMOTE, 53));
    nat.snat("a bound endpoint to a new destination", &bound, (p, 30007));
    // Ports are per protocol: ICMP identifiers are not exhausted.
    let echo = Pkt::echo(HOST_X, SERVER, 30000);
    nat.snat("echo request", &echo, (p, 30000));
    nat.from(role::OUTSIDE);
    nat.back(
        "a reply",
        &Pkt::udp((SERVER, 53), (p, 30009)),
        (CLIENT, 30009),
    );
    nat.finish();
}

/// Ports of static and identity mappings on a pool address are never
/// handed out (docs/nat44.md, "Pool allocation").
fn static_and_identity_ports_never_allocated(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            pools: vec![range(POOL_FIRST, 1, 0, (3000, 3002))],
            statics: false,
            ..Config::default()
        },
    );
    let p = POOL_FIRST;
    nat.static_map(proto::UDP, (p, 3000), (HOST_B, 3000));
    nat.dp
        .add_nat_addr(p, addr_flags::POOL | addr_flags::STATIC);
    nat.identity(proto::UDP, (p, 3001));
    let a = Pkt::udp((CLIENT, 3000), (SERVER, 53));
    nat.snat("source port 3000 (static)", &a, (p, 3002));
    nat.refused(
        "source port 3001 (identity), no port left",
        &Pkt::udp((CLIENT, 3001), (SERVER, 53)),
        |d| &mut d.nat_pool_exhausted,
        &[st::EXHAUSTED],
    );
    nat.finish();
}

/// RFC 4787 REQ-2 over two ranges: every flow of a host, whatever its
/// protocol or destination, leaves from the host's paired address.
fn paired_pooling_across_ranges(hook: Hook) {
    let nat = Nat::new(
        hook,
        Config {
            pools: vec![
                range([80, 80, 80, 101], 3, 0, (1024, 65535)),
                range([80, 80, 80, 111], 3, 3, (1024, 65535)),
            ],
            statics: false,
            ..Config::default()
        },
    );
    let hosts: Vec<Ip4> = MORE_HOSTS.take(8).map(|h| [192, 168, 100, h]).collect();
    let mut used: Vec<Ip4> = hosts.iter().map(|&h| nat.pool_addr(h)).collect();
    used.sort_unstable();
    used.dedup();
    assert!(
        used.len() >= 3 && used.iter().any(|a| a[3] >= 111),
        "the hosts must spread over both ranges for this fixture to mean anything: {used:?}"
    );
    for (i, &h) in hosts.iter().enumerate() {
        let port = 41000 + u16::try_from(i).unwrap();
        let a = nat.pool_addr(h);
        for pkt in [
            Pkt::udp((h, port), (SERVER, 53)),
            Pkt::tcp((h, port), (REMOTE, 443), tcp_flags::SYN),
            Pkt::echo(h, REMOTE2, port),
        ] {
            let what = format!("protocol {} from {}", pkt.ip.protocol, show(h, port));
            nat.snat(&what, &pkt, (a, port));
        }
    }
    nat.expect_pairings();
    nat.finish();
}

fn static_port_forward(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    nat.from(role::OUTSIDE);
    let syn = Pkt::tcp((REMOTE, 40001), (FWD_EXT, 8080), tcp_flags::SYN);
    let xlated = nat.xlate(
        "SYN to the forwarded port",
        &syn,
        syn.src(),
        (HOST_B, 80),
        &[st::DNAT, st::FROM_OUT],
    );
    nat.from(role::INSIDE);
    let synack = xlated.reply();
    nat.out("SYN-ACK from the server", &synack, (FWD_EXT, 8080));
    nat.expect(&Expect {
        first: &syn,
        dir: role::OUTSIDE,
        xlated: &xlated,
        peer_dir: role::INSIDE,
        kind: Kind::Exact(kind::DNAT),
        flags: [tcp_seen::SYN, tcp_seen::SYN],
        sent: [&[&syn], &[&synack]],
    });

    nat.from(role::OUTSIDE);
    let u = Pkt::udp((REMOTE, 33333), (FWD_EXT, 5000));
    nat.xlate(
        "UDP to its own forward",
        &u,
        u.src(),
        (HOST_B, 5001),
        &[st::DNAT, st::FROM_OUT],
    );
    let to_tcp_port = Pkt::udp((REMOTE, 33333), (FWD_EXT, 8080));
    nat.refused(
        "UDP to the TCP-only port",
        &to_tcp_port,
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    let unmapped = Pkt::tcp((REMOTE, 40002), (FWD_EXT, 8081), tcp_flags::SYN);
    nat.refused(
        "TCP to an unmapped port",
        &unmapped,
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    assert_eq!(nat.session_count(), 4, "{hook:?}: two DNAT sessions");
    nat.finish();
}

/// A new flow from a port forward's local endpoint leaves from its external
/// endpoint; other ports of that host use the pool.
fn static_snat_from_mapped_host(hook: Hook) {
    let nat = Nat::new(hook, Config::default());
    let syn = Pkt::tcp((HOST_B, 80), (REMOTE, 7777), tcp_flags::SYN);
    let xlated = nat.xlate(
        "from the mapped endpoint",
        &syn,
        (FWD_EXT, 8080),
        syn.dst(),
        &[st::STATIC_SNAT, st::FROM_IN],
    );
    nat.expect(&Expect {
        first: &syn,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Exact(kind::STATIC_SNAT),
        flags: [tcp_seen::SYN, 0],
        sent: [&[&syn], &[]],
    });
    let other = Pkt::udp((HOST_B, 4444), (REMOTE, 53));
    nat.snat(
        "from an unmapped port of that host",
        &other,
        (nat.pool_addr(HOST_B), 4444),
    );
    nat.expect_pairings();
    nat.finish();
}

fn address_only_one_to_one(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let out = Pkt::udp((HOST_C, 6000), (SERVER, 53));
    let xlated = out.hop((ONE_TO_ONE_EXT, 6000), (SERVER, 53));
    // Whether a 1:1 session also counts as address-only is left open.
    nat.run(
        &nat.fwd("outbound from the 1:1 host", &out, &xlated),
        &[st::STATIC_SNAT, st::FROM_IN],
        &[st::ADDR_ONLY],
    );
    nat.expect(&Expect {
        first: &out,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Has(kind::STATIC_SNAT),
        flags: [0, 0],
        sent: [&[&out], &[]],
    });
    nat.from(role::OUTSIDE);
    nat.back("its reply", &xlated.reply(), (HOST_C, 6000));
    let syn = Pkt::tcp((REMOTE, 1234), (ONE_TO_ONE_EXT, 22), tcp_flags::SYN);
    let echo = Pkt::echo(REMOTE, ONE_TO_ONE_EXT, 0x77);
    let gre = Pkt::gre(REMOTE, ONE_TO_ONE_EXT);
    for (what, pkt) in [
        ("inbound TCP, any port", &syn),
        ("inbound echo request", &echo),
        ("inbound GRE", &gre),
    ] {
        let to = (HOST_C, pkt.dst().1);
        nat.run(
            &nat.fwd(what, pkt, &pkt.hop(pkt.src(), to)),
            &[st::DNAT, st::FROM_OUT],
            &[st::ADDR_ONLY],
        );
    }
    nat.expect(&Expect {
        first: &syn,
        dir: role::OUTSIDE,
        xlated: &syn.hop((REMOTE, 1234), (HOST_C, 22)),
        peer_dir: role::INSIDE,
        kind: Kind::Has(kind::DNAT),
        flags: [tcp_seen::SYN, 0],
        sent: [&[&syn], &[]],
    });
    nat.expect_pairings();
    nat.finish();
}

fn identity_mappings_pass_unchanged(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let out = Pkt::udp((HOST_D, 5555), (SERVER, 53));
    nat.xlate(
        "outbound from the exempt host",
        &out,
        out.src(),
        out.dst(),
        &[st::IDENTITY],
    );
    nat.from(role::OUTSIDE);
    let inbound = Pkt::udp((REMOTE, 5555), (HOST_D, 53));
    let (s, d) = (inbound.src(), inbound.dst());
    nat.xlate(
        "inbound to the exempt host",
        &inbound,
        s,
        d,
        &[st::IDENTITY],
    );
    let local = Pkt::udp((REMOTE, 5555), (OUTSIDE_ADDR, IDENTITY_PORT));
    nat.run(
        &nat.passed("to the exempt local port", &local, |p| &mut p.not_forwarded),
        &[st::IDENTITY],
        &[],
    );
    let other = Pkt::udp((REMOTE, 5555), (OUTSIDE_ADDR, IDENTITY_PORT + 1));
    nat.run(
        &nat.passed("to another local port (not a NAT address)", &other, |p| {
            &mut p.not_forwarded
        }),
        &[],
        &[],
    );
    assert_eq!(
        nat.session_count(),
        0,
        "{hook:?}: identity creates no session"
    );
    nat.expect_pairings();
    nat.finish();
}

/// Kinds a hairpin session may carry besides HAIRPIN: left open.
const HAIRPIN_OPEN: [Stat; 3] = [st::SNAT, st::DNAT, st::STATIC_SNAT];

/// RFC 4787 REQ-9: an inside host reaches another through its external
/// endpoint; both addresses are translated.
fn hairpin_through_static_mapping(hook: Hook) {
    hairpin_static(hook, config_flags::ENABLED);
}

/// Under endpoint-dependent mapping the pool allocator reserves the reply
/// half itself (`alloc::by_reply_half`), which for a hairpin must be keyed
/// by the local endpoint the flow is sent to, not the external one.
fn hairpin_through_static_mapping_endpoint_dependent(hook: Hook) {
    hairpin_static(
        hook,
        config_flags::ENABLED | config_flags::ENDPOINT_DEPENDENT,
    );
}

fn hairpin_static(hook: Hook, flags: u32) {
    let nat = Nat::new(
        hook,
        Config {
            flags,
            ..Config::default()
        },
    );
    let c = (CLIENT, 40000);
    let p = (nat.pool_addr(CLIENT), 40000);
    let syn = Pkt::tcp(c, (FWD_EXT, 8080), tcp_flags::SYN);
    let xlated = syn.hop(p, (HOST_B, 80));
    nat.run(
        &nat.fwd("client to the forwarded port", &syn, &xlated),
        &[st::HAIRPIN, st::FROM_IN],
        &HAIRPIN_OPEN,
    );
    let synack = xlated.reply();
    nat.xlate(
        "the server's answer",
        &synack,
        (FWD_EXT, 8080),
        c,
        &[st::FROM_IN],
    );
    nat.expect(&Expect {
        first: &syn,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::INSIDE,
        kind: Kind::Has(kind::HAIRPIN),
        flags: [tcp_seen::SYN, tcp_seen::SYN],
        sent: [&[&syn], &[&synack]],
    });
    nat.expect_pairings();
    nat.finish();
}

/// A config change takes the client's pool address out of the pool. Its
/// binding still names that address, which nothing answers for any more:
/// the next new flow of the endpoint gets a binding on the new pool, and
/// the old reservation goes.
fn a_binding_to_a_removed_pool_address_is_replaced(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let c = (CLIENT, 40000);
    let old = nat.pool_addr(CLIENT);
    nat.snat(
        "client creates its binding",
        &Pkt::udp(c, (SERVER, 53)),
        (old, 40000),
    );
    let index = u32::from_be_bytes(old) - u32::from_be_bytes(POOL_FIRST);

    let new_first = [80, 80, 80, 150];
    nat.dp.set_pools(
        NatConfig {
            flags: config_flags::ENABLED,
            max_sessions: 1024,
            ..NatConfig::default()
        },
        &[range(new_first, POOL_COUNT, 0, (1024, 65535))],
    );
    for i in 0..POOL_COUNT {
        nat.dp.add_nat_addr(add(new_first, i), addr_flags::POOL);
        nat.dp.remove_nat_addr(add(POOL_FIRST, i));
    }
    // The host keeps its pairing index, which now names a new address.
    let new = add(new_first, index);
    nat.snat(
        "the same endpoint to another server",
        &Pkt::udp(c, (REMOTE, 53)),
        (new, 40000),
    );
    let bindings = nat.dp.bindings();
    let has = |addr: Ip4, dir: u8| {
        bindings
            .iter()
            .any(|(k, _)| k.addr == addr && k.port == 40000 && k.dir == dir)
    };
    assert!(
        has(new, role::OUTSIDE),
        "{hook:?}: no reservation on {new:?}: {bindings:?}"
    );
    assert!(
        !has(old, role::OUTSIDE),
        "{hook:?}: the old reservation stayed: {bindings:?}"
    );
    let inside: Vec<_> = bindings
        .iter()
        .filter(|(k, _)| k.addr == CLIENT && k.dir == role::INSIDE)
        .map(|(_, v)| (v.addr, v.port))
        .collect();
    assert_eq!(
        inside,
        vec![(new, 40000)],
        "{hook:?}: the endpoint's binding"
    );
    nat.finish();
}

fn hairpin_through_binding(hook: Hook) {
    let nat = Nat::new(hook, Config::default());
    let (c, pc) = ((CLIENT, 40000), (nat.pool_addr(CLIENT), 40000));
    let (x, px) = ((HOST_X, 5555), (nat.pool_addr(HOST_X), 5555));
    nat.snat("client creates its binding", &Pkt::udp(c, (SERVER, 53)), pc);
    let first = Pkt::udp(x, pc);
    let xlated = first.hop(px, c);
    nat.run(
        &nat.fwd(
            "another host to the client's external endpoint",
            &first,
            &xlated,
        ),
        &[st::HAIRPIN, st::FROM_IN],
        &HAIRPIN_OPEN,
    );
    let back = xlated.reply();
    nat.xlate("the client answers", &back, pc, x, &[st::FROM_IN]);
    nat.expect(&Expect {
        first: &first,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::INSIDE,
        kind: Kind::Has(kind::HAIRPIN),
        flags: [0, 0],
        sent: [&[&first], &[&back]],
    });
    nat.expect_pairings();
    nat.finish();
}

/// An ICMP error of `kind`/`code` quoting `quoted`'s header and the `n`
/// bytes after it.
fn error_msg(kind: u8, code: u8, quoted: &Pkt, n: usize) -> Vec<u8> {
    let q = quote(&quoted.bytes(), n);
    if (kind, code) == (icmp::DEST_UNREACH, icmp::FRAG_NEEDED) {
        frag_needed(1400, &q)
    } else {
        icmp_error(kind, code, [0; 4], &q)
    }
}

/// `original` with the TTL `seen` had: what an error quotes once its
/// translation is undone.
fn as_quoted(original: &Pkt, seen: &Pkt) -> Pkt {
    original.clone().ttl(seen.ip.ttl)
}

/// RFC 5508 for errors arriving on an outside interface: traceroute's time
/// exceeded (UDP and ICMP probes), path-MTU discovery's fragmentation needed
/// (TCP), and port unreachable from the final destination.
fn icmp_errors_from_outside(hook: Hook) {
    use icmp::{DEST_UNREACH, FRAG_NEEDED, PORT_UNREACH, TIME_EXCEEDED, TTL_EXCEEDED};
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let probe = Pkt::udp((CLIENT, 33434), (REMOTE, 33435)).ttl(2);
    let ping = Pkt::echo(CLIENT, REMOTE, 0x4242).ttl(2);
    let tcp = Pkt::tcp((CLIENT, 40002), (REMOTE, 443), tcp_flags::ACK).payload(payload(1400));
    let dns = Pkt::udp((CLIENT, 40003), (SERVER, 53));
    let sent: Vec<(Pkt, Pkt)> = [probe, ping, tcp, dns]
        .into_iter()
        .map(|o| {
            let x = nat.snat("flow", &o, (p, o.src().1));
            (o, x)
        })
        .collect();
    nat.from(role::OUTSIDE);
    let [(probe, xprobe), (ping, xping), (tcp, xtcp), (dns, xdns)] = &sent[..] else {
        unreachable!("four flows")
    };
    let te = (TIME_EXCEEDED, TTL_EXCEEDED);
    // (what, error sender, (type, code), as the NAT sent it, as the client
    // sent it, bytes quoted after the IP header)
    let cases = [
        (
            "time exceeded for a UDP probe",
            ROUTER,
            te,
            xprobe,
            probe,
            8,
        ),
        (
            "time exceeded quoting the whole probe",
            ROUTER,
            te,
            xprobe,
            probe,
            56,
        ),
        (
            "time exceeded for an echo request",
            ROUTER,
            te,
            xping,
            ping,
            8,
        ),
        (
            "fragmentation needed for TCP",
            ROUTER,
            (DEST_UNREACH, FRAG_NEEDED),
            xtcp,
            tcp,
            8,
        ),
        (
            "port unreachable from the destination",
            SERVER,
            (DEST_UNREACH, PORT_UNREACH),
            xdns,
            dns,
            8,
        ),
        (
            "parameter problem",
            ROUTER,
            (icmp::PARAM_PROBLEM, 0),
            xdns,
            dns,
            8,
        ),
    ];
    for (what, from, (kind, code), quoted, original, n) in cases {
        let err = Pkt::icmp_error(from, p, error_msg(kind, code, quoted, n));
        let back = as_quoted(original, quoted);
        let want = Pkt::icmp_error(from, CLIENT, error_msg(kind, code, &back, n)).ttl(63);
        nat.run(
            &nat.fwd(what, &err, &want),
            &[st::ICMP_ERR, st::FROM_OUT],
            &[],
        );
    }

    // A router on the way back from a port forward's server.
    let syn = Pkt::tcp((REMOTE, 40001), (FWD_EXT, 8080), tcp_flags::SYN);
    nat.xlate(
        "SYN to the forward",
        &syn,
        syn.src(),
        (HOST_B, 80),
        &[st::DNAT, st::FROM_OUT],
    );
    nat.from(role::INSIDE);
    let synack = syn.hop(syn.src(), (HOST_B, 80)).reply();
    let xsynack = nat.out("the server's SYN-ACK", &synack, (FWD_EXT, 8080));
    nat.from(role::OUTSIDE);
    let (kind, code) = te;
    let err = Pkt::icmp_error(ROUTER, FWD_EXT, error_msg(kind, code, &xsynack, 8));
    let back = as_quoted(&synack, &xsynack);
    let want = Pkt::icmp_error(ROUTER, HOST_B, error_msg(kind, code, &back, 8)).ttl(63);
    nat.run(
        &nat.fwd("time exceeded for a port forward's answer", &err, &want),
        &[st::ICMP_ERR, st::FROM_OUT],
        &[],
    );
    nat.finish();
}

/// RFC 5508 for errors arriving on an inside interface: from the server
/// behind a port forward, and from a client about a reply it got.
fn icmp_errors_from_inside(hook: Hook) {
    use icmp::{DEST_UNREACH, PORT_UNREACH};
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    nat.from(role::OUTSIDE);
    let dnat = Pkt::udp((REMOTE, 33333), (FWD_EXT, 5000));
    let xdnat = nat.xlate(
        "to the forward",
        &dnat,
        dnat.src(),
        (HOST_B, 5001),
        &[st::DNAT, st::FROM_OUT],
    );
    nat.from(role::INSIDE);
    let xout = nat.snat(
        "client flow",
        &Pkt::udp((CLIENT, 40000), (SERVER, 53)),
        (p, 40000),
    );
    nat.from(role::OUTSIDE);
    let reply = xout.reply();
    let xreply = nat.back("its reply", &reply, (CLIENT, 40000));

    nat.from(role::INSIDE);
    let msg = |q: &Pkt| error_msg(DEST_UNREACH, PORT_UNREACH, q, 8);
    for (what, err, want) in [
        (
            "port unreachable from the forwarded server",
            Pkt::icmp_error(HOST_B, REMOTE, msg(&xdnat)),
            Pkt::icmp_error(FWD_EXT, REMOTE, msg(&as_quoted(&dnat, &xdnat))),
        ),
        (
            "port unreachable from the client about a reply",
            Pkt::icmp_error(CLIENT, SERVER, msg(&xreply)),
            Pkt::icmp_error(p, SERVER, msg(&as_quoted(&reply, &xreply))),
        ),
    ] {
        nat.run(
            &nat.fwd(what, &err, &want.ttl(63)),
            &[st::ICMP_ERR, st::FROM_IN],
            &[],
        );
    }
    nat.finish();
}

fn icmp_error_quoting_no_session(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    nat.from(role::OUTSIDE);
    let p = nat.pool_addr(CLIENT);
    let never_sent = Pkt::udp((p, 41000), (REMOTE, 53)).ttl(1);
    let msg = error_msg(icmp::TIME_EXCEEDED, icmp::TTL_EXCEEDED, &never_sent, 8);
    // Whether it also counts in no_mapping is left open; the drop reason
    // is not (counters.rs: nat_no_mapping covers unmatched ICMP errors).
    nat.run(
        &nat.dropped(
            "to a pool address",
            &Pkt::icmp_error(ROUTER, p, msg.clone()),
            NO_MAPPING,
        ),
        &[st::ICMP_UNMATCHED],
        &[st::NO_MAPPING],
    );
    // The ICMP message itself is well formed; a quote too short to name a
    // flow names no session.
    let short = icmp_error(icmp::TIME_EXCEEDED, 0, [0; 4], &never_sent.bytes()[..12]);
    nat.run(
        &nat.dropped(
            "quoting 12 bytes of an IP header",
            &Pkt::icmp_error(ROUTER, p, short),
            NO_MAPPING,
        ),
        &[st::ICMP_UNMATCHED],
        &[st::NO_MAPPING],
    );
    let plain = Pkt::icmp_error(ROUTER, [192, 168, 100, 21], msg);
    nat.xlate(
        "to an address the NAT does not own",
        &plain,
        plain.src(),
        plain.dst(),
        &[],
    );
    nat.finish();
}

/// A UDP datagram from `src` to `dst` whose checksum computes to zero (and
/// is sent as 0xffff): the last payload word is solved for it.
fn udp_summing_to_zero(src: Endpoint, dst: Endpoint) -> Pkt {
    let mut data = payload(48);
    data[46..].fill(0);
    let c = l4_checksum(
        src.0,
        dst.0,
        IPPROTO_UDP,
        &udp_without_checksum(src.1, dst.1, &data),
    );
    data[46..].copy_from_slice(&c.to_be_bytes());
    let p = Pkt::udp(src, dst).payload(data);
    assert_eq!(&p.l4_bytes()[6..8], &[0xff, 0xff], "solved checksum");
    p
}

/// RFC 768 and docs/nat44.md: a zero UDP checksum stays zero; a checksum
/// that computes to zero is sent as 0xffff; 0xffff in is handled as zero.
fn udp_checksum_zero_and_edges(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let none = Pkt::udp((CLIENT, 40000), (SERVER, 53)).no_udp_checksum();
    nat.snat("no checksum, outbound", &none, (p, 40000));
    let to_zero = udp_summing_to_zero((p, 40001), (SERVER, 53)).with((CLIENT, 40001), (SERVER, 53));
    nat.snat("translated checksum computes to zero", &to_zero, (p, 40001));
    let from_zero = udp_summing_to_zero((CLIENT, 40002), (SERVER, 53));
    nat.snat("checksum 0xffff in", &from_zero, (p, 40002));
    nat.from(role::OUTSIDE);
    let back = Pkt::udp((SERVER, 53), (p, 40000)).no_udp_checksum();
    nat.back("no checksum, inbound", &back, (CLIENT, 40000));
    nat.finish();
}

/// Fragments carry 80 bytes each: a 200-byte UDP payload (208-byte
/// datagram) is three of them.
const FRAG_CHUNK: usize = 80;

fn big_udp(src: Endpoint, dst: Endpoint) -> Pkt {
    Pkt::udp(src, dst).payload(payload(200))
}

/// `nat_frags` as (key fields, translated addresses).
fn frag_records(nat: &Nat) -> Vec<(Ip4, Ip4, u16, u8, u8, Ip4, Ip4)> {
    nat.dp
        .frags()
        .into_iter()
        .map(|(k, v)| (k.saddr, k.daddr, k.id, k.proto, k.dir, v.saddr, v.daddr))
        .collect()
}

/// The fragments of `dgram` (IP id `id`) arrive; the first is translated by
/// its ports and recorded, the later ones translated from the record.
fn translate_fragments(
    nat: &Nat,
    dgram: &Pkt,
    id: u16,
    dir: u8,
    to: (Endpoint, Endpoint),
    first: &[Stat],
) {
    let from_dir = if dir == role::OUTSIDE {
        st::FROM_OUT
    } else {
        st::FROM_IN
    };
    let frags = dgram.fragments(id, FRAG_CHUNK);
    let want = dgram.hop(to.0, to.1).fragments(id, FRAG_CHUNK);
    assert_eq!(frags.len(), 3);
    nat.run(&nat.fwd("first fragment", &frags[0], &want[0]), first, &[]);
    let (s, d) = (dgram.ip.src, dgram.ip.dst);
    assert_eq!(
        frag_records(nat),
        [(s, d, id, proto::UDP, dir, to.0.0, to.1.0)],
        "{:?}: nat_frags after the first fragment",
        nat.hook
    );
    for (i, (f, w)) in frags.iter().zip(&want).enumerate().skip(1) {
        nat.run(
            &nat.fwd(&format!("fragment {i}"), f, w),
            &[st::FRAG, from_dir],
            &[],
        );
    }
}

fn fragments_outbound(hook: Hook) {
    let nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let dgram = big_udp((CLIENT, 40000), (SERVER, 53));
    translate_fragments(
        &nat,
        &dgram,
        0x5151,
        role::INSIDE,
        ((p, 40000), (SERVER, 53)),
        &[st::SNAT, st::FROM_IN],
    );
    let orphan = &big_udp((CLIENT, 40001), (SERVER, 53)).fragments(0x5252, FRAG_CHUNK)[1];
    nat.refused(
        "later fragment without its first",
        orphan,
        |d| &mut d.nat_fragment_untracked,
        &[st::UNTRACKED],
    );
    let plain = &big_udp((CLIENT, 40001), (PLAIN_HOST, 53)).fragments(0x5353, FRAG_CHUNK)[1];
    nat.xlate(
        "later fragment without its first, not leaving outside",
        plain,
        plain.src(),
        plain.dst(),
        &[],
    );
    nat.finish();
}

fn fragments_inbound(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    nat.snat(
        "client flow",
        &Pkt::udp((CLIENT, 40000), (SERVER, 53)),
        (p, 40000),
    );
    nat.from(role::OUTSIDE);
    let dgram = big_udp((SERVER, 53), (p, 40000));
    translate_fragments(
        &nat,
        &dgram,
        0x6161,
        role::OUTSIDE,
        ((SERVER, 53), (CLIENT, 40000)),
        &[st::FROM_OUT],
    );
    let orphan = &big_udp((SERVER, 53), (p, 40000)).fragments(0x6262, FRAG_CHUNK)[2];
    nat.refused(
        "later fragment to a pool address without its first",
        orphan,
        |d| &mut d.nat_fragment_untracked,
        &[st::UNTRACKED],
    );
    nat.finish();
}

/// Protocols without ports are address-translated (docs/nat44.md).
fn gre_address_translated(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = nat.pool_addr(CLIENT);
    let out = Pkt::gre(CLIENT, SERVER);
    let xlated = out.hop((p, 0), (SERVER, 0));
    // Whether it also counts as a pool SNAT session is left open.
    nat.run(
        &nat.fwd("GRE from inside", &out, &xlated),
        &[st::ADDR_ONLY, st::FROM_IN],
        &[st::SNAT],
    );
    nat.from(role::OUTSIDE);
    let back = xlated.reply();
    nat.back("GRE reply", &back, (CLIENT, 0));
    nat.expect(&Expect {
        first: &out,
        dir: role::INSIDE,
        xlated: &xlated,
        peer_dir: role::OUTSIDE,
        kind: Kind::Has(kind::ADDR_ONLY),
        flags: [0, 0],
        sent: [&[&out], &[&back]],
    });
    nat.refused(
        "GRE from another host",
        &Pkt::gre(REMOTE, p),
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    nat.finish();
}

/// Traffic to a NAT address that is not local and matches nothing is
/// dropped, never routed back out or delivered (docs/nat44.md, step 5).
fn nat_addresses_without_mapping_drop(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    nat.from(role::OUTSIDE);
    let p = POOL_FIRST;
    for (what, pkt) in [
        ("UDP to a pool address", Pkt::udp((REMOTE, 5000), (p, 6000))),
        (
            "TCP SYN to a pool address",
            Pkt::tcp((REMOTE, 5000), (p, 80), tcp_flags::SYN),
        ),
        ("echo request to a pool address", Pkt::echo(REMOTE, p, 9)),
        (
            "echo reply to a pool address",
            Pkt::echo(p, REMOTE, 9).reply(),
        ),
        (
            "UDP to a static address's unmapped port",
            Pkt::udp((REMOTE, 5000), (FWD_EXT, 9999)),
        ),
    ] {
        nat.refused(what, &pkt, NO_MAPPING, &[st::NO_MAPPING]);
    }
    let local = Pkt::udp((REMOTE, 5000), (OUTSIDE_ADDR, 7777));
    nat.run(
        &nat.passed("to the CNF's own (non-NAT) address", &local, |p| {
            &mut p.not_forwarded
        }),
        &[],
        &[],
    );
    assert_eq!(nat.session_count(), 0, "{hook:?}: no session");
    nat.finish();
}

/// The chain's setup: the pool includes the outside interface's own
/// address. Sessions on it work; unmatched traffic to it and ARP for it go
/// to the kernel.
fn local_pool_address(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            pools: vec![range(OUTSIDE_ADDR, 2, 0, (1024, 65535))],
            statics: false,
            ..Config::default()
        },
    );
    let host = HOST_X;
    assert_eq!(
        nat.pool_addr(host),
        OUTSIDE_ADDR,
        "the first host takes the first address"
    );
    let h = (host, 40000);
    nat.snat(
        "SNAT to the local address",
        &Pkt::udp(h, (SERVER, 53)),
        (OUTSIDE_ADDR, 40000),
    );
    nat.from(role::OUTSIDE);
    nat.back(
        "its reply",
        &Pkt::udp((SERVER, 53), (OUTSIDE_ADDR, 40000)),
        h,
    );
    let unmatched = Pkt::udp((SERVER, 53), (OUTSIDE_ADDR, 40001));
    nat.run(
        &nat.passed("unmatched, to the local pool address", &unmatched, |p| {
            &mut p.not_forwarded
        }),
        &[],
        &[],
    );
    let arp = arp_request(mac_of(ROUTER), ROUTER, OUTSIDE_ADDR);
    nat.run(
        &Case::passed("ARP for the local pool address", arp, |p| &mut p.not_ipv4),
        &[],
        &[],
    );
    nat.finish();
}

/// The CNF answers ARP for the NAT addresses it does not own on outside
/// interfaces, turning the request into a reply in place (docs/nat44.md).
fn arp_for_nat_addresses(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    nat.from(role::OUTSIDE);
    let asker = mac_of(ROUTER);
    for (what, addr) in [
        ("a pool address", add(POOL_FIRST, 2)),
        ("a port-forward address", FWD_EXT),
        ("a 1:1 address", ONE_TO_ONE_EXT),
    ] {
        nat.run(
            &Case::returned(
                format!("ARP request for {what}"),
                arp_request(asker, ROUTER, addr),
                arp_reply(CNF_MAC, addr, asker, ROUTER),
            ),
            &[st::ARP],
            &[],
        );
    }
    // Real requests are padded to the 60-byte minimum; the padding stays.
    let mut padded = arp_request(asker, ROUTER, POOL_FIRST);
    padded.resize(60, 0x5a);
    let mut reply = arp_reply(CNF_MAC, POOL_FIRST, asker, ROUTER);
    reply.resize(60, 0x5a);
    nat.run(
        &Case::returned("padded ARP request", padded, reply),
        &[st::ARP],
        &[],
    );

    let passed = |what: &str, frame| Case::passed(what, frame, |p| &mut p.not_ipv4);
    let mut gratuitous = arp_reply(asker, POOL_FIRST, [0xff; 6], POOL_FIRST);
    gratuitous[0..6].fill(0xff);
    for case in [
        passed(
            "ARP request for the CNF's own address",
            arp_request(asker, ROUTER, OUTSIDE_ADDR),
        ),
        passed(
            "ARP request for an address the NAT does not own",
            arp_request(asker, ROUTER, [80, 80, 80, 200]),
        ),
        passed("ARP reply about a pool address", gratuitous),
    ] {
        nat.run(&case, &[], &[]);
    }
    nat.from(role::INSIDE);
    nat.run(
        &passed(
            "ARP request for a pool address on an inside interface",
            arp_request(mac_of(CLIENT), CLIENT, POOL_FIRST),
        ),
        &[],
        &[],
    );
    nat.finish();
}

fn table_full_refuses_new_flows(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            max_sessions: 1,
            ..Config::default()
        },
    );
    let (c, p) = ((CLIENT, 40000), (nat.pool_addr(CLIENT), 40000));
    let first = Pkt::udp(c, (SERVER, 53));
    nat.snat("the one session", &first, p);
    let full: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.nat_table_full;
    let udp = Pkt::udp((CLIENT, 40001), (SERVER, 53));
    nat.refused("a second UDP flow", &udp, full, &[st::FULL]);
    let echo = Pkt::echo(CLIENT, SERVER, 0x99);
    nat.refused("an echo request", &echo, full, &[st::FULL]);
    nat.from(role::OUTSIDE);
    let syn = Pkt::tcp((REMOTE, 40001), (FWD_EXT, 8080), tcp_flags::SYN);
    nat.refused("a port-forward SYN", &syn, full, &[st::FULL]);
    nat.back("the session's reply", &Pkt::udp((SERVER, 53), p), c);
    nat.from(role::INSIDE);
    nat.out("the session again", &first, p);
    assert_eq!(nat.session_count(), 2, "{hook:?}: still one session");
    nat.finish();
}

/// `nat_hosts` never evicts a pairing (a host with long-lived flows would be
/// paired again, to another address): a new host that finds it full is
/// refused as a flow that finds the session table full, and is never sent on
/// untranslated, while the hosts already paired open new flows as before.
fn hosts_table_full_refuses_new_hosts(hook: Hook) {
    let nat = Nat::with_load(
        hook,
        Config::default(),
        LoadOptions {
            max_hosts: Some(2),
            ..LoadOptions::default()
        },
    );
    let (a, x) = (nat.pool_addr(CLIENT), nat.pool_addr(HOST_X));
    nat.snat(
        "the first host",
        &Pkt::udp((CLIENT, 40000), (SERVER, 53)),
        (a, 40000),
    );
    nat.snat(
        "the second host",
        &Pkt::udp((HOST_X, 40000), (SERVER, 53)),
        (x, 40000),
    );
    let third: Ip4 = [192, 168, 100, 21];
    let full: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.nat_table_full;
    for what in ["a third host's UDP flow", "the third host again"] {
        nat.refused(
            what,
            &Pkt::udp((third, 40000), (SERVER, 53)),
            full,
            &[st::FULL],
        );
    }
    let echo = Pkt::echo(third, SERVER, 0x77);
    nat.refused("the third host's echo request", &echo, full, &[st::FULL]);
    nat.snat(
        "a new flow of the first host",
        &Pkt::udp((CLIENT, 40001), (SERVER, 53)),
        (a, 40001),
    );
    let mut hosts: Vec<Ip4> = nat.dp.host_pairings().iter().map(|(h, _)| *h).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, vec![CLIENT, HOST_X], "{hook:?}: nat_hosts");
    assert_eq!(
        nat.dp.next_pool_cursor(),
        2,
        "{hook:?}: refused hosts took no turn of the pool cursor"
    );
    assert_eq!(nat.session_count(), 6, "{hook:?}: three sessions");
    nat.finish();
}

/// While the agent rewrites the pool ranges (it writes `nat_pools` before
/// `nat_config`), a host can be paired to an index no range covers: its flow
/// is dropped as `nat_no_mapping`, never sent on untranslated.
fn a_pairing_in_no_pool_range_drops(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            pools: vec![range(POOL_FIRST, 2, 0, (1024, 65535))],
            ..Config::default()
        },
    );
    // nat_config already counts four addresses, nat_pools still two.
    nat.dp.set_nat_config(NatConfig {
        flags: config_flags::ENABLED,
        max_sessions: 1024,
        pool_ranges: 1,
        pool_addrs: 4,
    });
    let (a, x) = (nat.pool_addr(CLIENT), nat.pool_addr(HOST_X));
    nat.snat(
        "index 0",
        &Pkt::udp((CLIENT, 40000), (SERVER, 53)),
        (a, 40000),
    );
    nat.snat(
        "index 1",
        &Pkt::udp((HOST_X, 40000), (SERVER, 53)),
        (x, 40000),
    );
    let third = Pkt::udp(([192, 168, 100, 21], 40000), (SERVER, 53));
    nat.refused(
        "index 2, in no range",
        &third,
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    assert_eq!(nat.session_count(), 4, "{hook:?}: two sessions");
    nat.finish();
}

/// A packet whose IPv4 payload is cut to `n` bytes of its transport header.
fn truncated(p: &Pkt, n: usize) -> Pkt {
    let l4 = p.l4_bytes();
    Pkt::raw(p.ip.clone(), l4[..n].to_vec())
}

fn malformed_l4_drops(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let tcp = Pkt::tcp((CLIENT, 40000), (SERVER, 80), tcp_flags::SYN);
    let udp = Pkt::udp((CLIENT, 40000), (SERVER, 53));
    let echo = Pkt::echo(CLIENT, SERVER, 0x1234);
    let malformed: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.malformed;
    for (what, pkt) in [
        ("TCP header cut to 10 bytes", truncated(&tcp, 10)),
        ("TCP header cut to 19 bytes", truncated(&tcp, 19)),
        ("UDP header cut to 4 bytes", truncated(&udp, 4)),
        ("UDP header cut to 7 bytes", truncated(&udp, 7)),
        ("ICMP echo cut to 4 bytes", truncated(&echo, 4)),
    ] {
        nat.refused(&format!("outbound {what}"), &pkt, malformed, &[]);
        // On a wire the frame is padded to 60 bytes: the cut header must
        // not be completed from the padding.
        let mut padded = nat.arriving(&pkt);
        padded.resize(padded.len().max(60), 0);
        nat.run(
            &Case::dropped(format!("outbound {what}, padded"), padded, malformed),
            &[],
            &[],
        );
    }
    nat.from(role::OUTSIDE);
    let p = nat.pool_addr(CLIENT);
    let inbound = truncated(&Pkt::tcp((REMOTE, 80), (p, 40000), tcp_flags::ACK), 12);
    nat.refused(
        "inbound TCP header cut to 12 bytes",
        &inbound,
        malformed,
        &[],
    );
    assert_eq!(
        nat.session_count(),
        0,
        "{hook:?}: malformed packets made sessions"
    );
    nat.finish();
}

fn no_role_or_disabled_forwards_unchanged(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let unchanged = |nat: &Nat, what: &str, p: &Pkt| {
        nat.xlate(what, p, p.src(), p.dst(), &[]);
    };
    let out = Pkt::udp((CLIENT, 40000), (SERVER, 53));
    nat.from(role::NONE);
    unchanged(&nat, "no role: client to the server", &out);
    nat.from(role::INSIDE);
    unchanged(
        &nat,
        "inside to a role-less interface",
        &Pkt::udp((CLIENT, 40000), (PLAIN_HOST, 53)),
    );
    unchanged(
        &nat,
        "inside to inside",
        &Pkt::udp((CLIENT, 40000), (HOST_X, 53)),
    );
    nat.from(role::OUTSIDE);
    unchanged(
        &nat,
        "outside to outside",
        &Pkt::udp((REMOTE, 53), (SERVER, 53)),
    );
    assert_eq!(
        nat.session_count(),
        0,
        "{hook:?}: sessions without translation"
    );

    // NAT44 absent: roles are ignored.
    nat.dp.set_nat_config(NatConfig {
        flags: 0,
        pool_ranges: 1,
        pool_addrs: POOL_COUNT,
        max_sessions: 1024,
    });
    nat.from(role::INSIDE);
    unchanged(&nat, "NAT disabled: inside to outside", &out);
    nat.from(role::OUTSIDE);
    let to_static = Pkt::tcp((REMOTE, 1), (FWD_EXT, 8080), tcp_flags::SYN);
    let what = "NAT disabled: to a static address";
    let case = match hook {
        // On-link and never resolved: TC hands it to bpf_redirect_neigh
        // with the MACs left alone, XDP to the kernel, as without NAT.
        Hook::Tc => Case::forwarded(
            what,
            nat.arriving(&to_static),
            to_static.forwarded().frame(CNF_MAC, mac_of(ROUTER)),
        ),
        Hook::Xdp => nat.passed(what, &to_static, |p| &mut p.no_neigh),
    };
    nat.run(&case, &[], &[]);
    assert_eq!(
        nat.session_count(),
        0,
        "{hook:?}: sessions with NAT disabled"
    );
    assert_eq!(
        nat.dp.nat_stats(),
        NatStats::default(),
        "{hook:?}: NAT stats moved"
    );
    nat.finish();
}

/// Step 1 of docs/nat44.md: TTL ≤ 1 goes to the kernel before NAT,
/// untranslated; so does IPv4 with options, except where the kernel would
/// send it out with an inside address or deliver a NAT address's traffic to
/// the CNF's stack: that is dropped (`nat_ip_options`).
fn ttl_and_ip_options_before_nat(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let ttl1 = Pkt::udp((CLIENT, 40000), (SERVER, 53)).ttl(1);
    nat.run(
        &nat.passed("TTL 1", &ttl1, |p| &mut p.ttl_expired),
        &[],
        &[],
    );
    let with_options = |p: Pkt| Pkt {
        ip: p.ip.clone().options(&[0x94, 0x04, 0x00, 0x00]),
        ..p
    };
    let options: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.nat_ip_options;
    let passes = |nat: &Nat, what: &str, p: &Pkt| {
        nat.run(&nat.passed(what, p, |p| &mut p.ip_options), &[], &[]);
    };
    let out = with_options(Pkt::udp((CLIENT, 40000), (SERVER, 53)));
    nat.refused("IP options, inside to outside", &out, options, &[]);
    let plain = with_options(Pkt::udp((CLIENT, 40000), (PLAIN_HOST, 53)));
    passes(&nat, "IP options, inside to a role-less interface", &plain);
    nat.from(role::OUTSIDE);
    let p = nat.pool_addr(CLIENT);
    let to_pool = with_options(Pkt::udp((REMOTE, 53), (p, 40000)));
    nat.refused("IP options to a pool address", &to_pool, options, &[]);
    // The CNF's own address in the pool, as in the example chain: a NAT
    // address, but a local one, which the kernel may have.
    nat.dp.add_nat_addr(OUTSIDE_ADDR, addr_flags::POOL);
    let to_cnf = with_options(Pkt::udp((REMOTE, 53), (OUTSIDE_ADDR, 40000)));
    passes(&nat, "IP options to the CNF's own address", &to_cnf);
    nat.from(role::INSIDE);
    let udp = Pkt::udp((CLIENT, 40000), (SERVER, 53));
    nat.run(
        &Case::passed(
            "to another host's MAC",
            udp.frame([0x02, 0, 0, 0, 0, 0x99], mac_of(CLIENT)),
            |p| &mut p.not_for_us,
        ),
        &[],
        &[],
    );
    assert_eq!(
        nat.session_count(),
        0,
        "{hook:?}: sessions for passed packets"
    );
    nat.finish();
}

/// A translated inbound packet that cannot be routed inside is dropped
/// (`nat_unroutable`), never handed to the CNF's stack.
fn inbound_unroutable_drops(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let p = (nat.pool_addr(CLIENT), 40000);
    let unroutable: fn(&mut DropReasons) -> &mut u64 = |d| &mut d.nat_unroutable;
    nat.from(role::OUTSIDE);
    let syn = Pkt::tcp(
        (REMOTE, 40001),
        (FWD_EXT, UNROUTABLE_EXT_PORT),
        tcp_flags::SYN,
    );
    // Whether the session is created (and the packet counted as
    // translated) before the route lookup fails is left open.
    nat.run(
        &nat.dropped("port forward into an unreachable route", &syn, unroutable),
        &[],
        &[st::DNAT, st::FROM_OUT],
    );
    nat.from(role::INSIDE);
    nat.snat("client flow", &Pkt::udp((CLIENT, 40000), (SERVER, 53)), p);
    ip(&["link", "set", "dev", "in0", "mtu", "1280"]);
    nat.from(role::OUTSIDE);
    let big = Pkt::udp((SERVER, 53), p).payload(payload(1400 - 28));
    nat.run(
        &nat.dropped("1400-byte reply over the inside MTU", &big, unroutable),
        &[],
        &[st::FROM_OUT],
    );
    // Without DF the kernel fragments it: it gets it translated.
    let big = big.may_fragment();
    nat.run(
        &nat.passed_translated(
            "the same reply without DF",
            &big,
            (big.src(), (CLIENT, 40000)),
            |p| &mut p.frag_needed,
        ),
        &[st::FROM_OUT],
        &[],
    );
    nat.finish();
}

/// docs/nat44.md, forwarding after NAT: towards an unresolved next hop TC
/// redirects the translated packet through `bpf_redirect_neigh`, XDP hands
/// the translated packet (TTL untouched: the kernel forwards it) to the
/// kernel. A packet the kernel would answer with an ICMP error goes to it
/// untranslated, so the error quotes what the host sent.
fn outbound_unresolved_or_unroutable(hook: Hook) {
    let nat = Nat::new(hook, Config::default());
    let p = (nat.pool_addr(CLIENT), 40000);
    let unresolved = [80, 80, 80, 90];
    let first = Pkt::udp((CLIENT, 40000), (unresolved, 53));
    let input = nat.arriving(&first);
    let what = "to an unresolved neighbour on the outside";
    let case = match hook {
        Hook::Tc => Case::forwarded(
            what,
            input,
            first.hop(p, first.dst()).frame(CNF_MAC, mac_of(CLIENT)),
        ),
        Hook::Xdp => Case {
            out: Out::Exact(first.with(p, first.dst()).frame(CNF_MAC, mac_of(CLIENT))),
            ..Case::passed(what, input, |p| &mut p.no_neigh)
        },
    };
    nat.run(&case, &[st::SNAT, st::FROM_IN], &[]);
    nat.expect(&Expect {
        first: &first,
        dir: role::INSIDE,
        xlated: &first.with(p, first.dst()),
        peer_dir: role::OUTSIDE,
        kind: Kind::Exact(kind::SNAT),
        flags: [0, 0],
        sent: [&[&first], &[]],
    });

    // Whether a session is made before the route fails is left open; the
    // packet itself must go to the kernel as the host sent it.
    let open = [st::SNAT, st::FROM_IN];
    let no_route = Pkt::udp((CLIENT, 40001), (UNROUTABLE_LOCAL, 53));
    nat.run(
        &nat.passed("into an unreachable route", &no_route, |p| &mut p.no_route),
        &[],
        &open,
    );
    ip(&["link", "set", "dev", "out0", "mtu", "1280"]);
    let big = Pkt::udp((CLIENT, 40002), (SERVER, 53)).payload(payload(1400 - 28));
    nat.run(
        &nat.passed("1400 bytes over the outside MTU", &big, |p| {
            &mut p.frag_needed
        }),
        &[],
        &open,
    );
    // Without DF the kernel fragments it and forwards the fragments, so it
    // must get it translated: untranslated they would leave with the inside
    // address. A first fragment too: its record in `nat_frags` translates
    // the later ones, and it must leave translated like them.
    let whole = Pkt::udp((CLIENT, 40003), (SERVER, 53))
        .payload(payload(1400 - 28))
        .may_fragment();
    let first = Pkt::udp((CLIENT, 40004), (SERVER, 53)).payload(payload(1400 - 28));
    let first = Pkt {
        ip: first.ip.clone().fragment(0, true),
        ..first
    };
    for (what, pkt) in [
        ("1400 bytes over the outside MTU without DF", whole),
        ("a first fragment over the outside MTU", first),
    ] {
        let to = ((p.0, pkt.src().1), pkt.dst());
        nat.run(
            &nat.passed_translated(what, &pkt, to, |p| &mut p.frag_needed),
            &[st::SNAT, st::FROM_IN],
            &[],
        );
    }
    nat.finish();
}

/// `protocol: icmp` address-only mappings (the agent keys them with the
/// ICMP protocol and port 0): echo both ways, other protocols unmapped.
fn icmp_static_mapping(hook: Hook) {
    let mut nat = Nat::new(hook, Config::default());
    let (ext, local) = ([80, 80, 80, 130], [192, 168, 100, 30]);
    nat.static_map(proto::ICMP, (ext, 0), (local, 0));
    nat.from(role::OUTSIDE);
    let ping = Pkt::echo(REMOTE, ext, 0x3131);
    let xlated = nat.xlate(
        "echo request to the mapped address",
        &ping,
        ping.src(),
        (local, 0),
        &[st::DNAT, st::FROM_OUT],
    );
    nat.from(role::INSIDE);
    nat.out("its reply", &xlated.reply(), (ext, 0));
    let out = Pkt::echo(local, SERVER, 0x3232);
    nat.xlate(
        "echo request from the mapped host",
        &out,
        (ext, 0x3232),
        (SERVER, 0),
        &[st::STATIC_SNAT, st::FROM_IN],
    );
    nat.from(role::OUTSIDE);
    let tcp = Pkt::tcp((REMOTE, 1), (ext, 22), tcp_flags::SYN);
    nat.refused(
        "TCP to the mapped address",
        &tcp,
        NO_MAPPING,
        &[st::NO_MAPPING],
    );
    nat.finish();
}

/// A port whose `OUTSIDE` binding entry exists (another CPU's reservation,
/// written here directly) is never handed out again (docs/nat44.md: the
/// reservation is one `BPF_NOEXIST` insert).
fn reserved_ports_are_not_taken(hook: Hook) {
    let mut nat = Nat::new(
        hook,
        Config {
            pools: vec![range(POOL_FIRST, 1, 0, (20000, 20001))],
            ..Config::default()
        },
    );
    let p = POOL_FIRST;
    nat.dp.add_binding(
        BindingKey {
            addr: p,
            port: 20000,
            proto: proto::UDP,
            dir: role::OUTSIDE,
        },
        Binding {
            addr: HOST_X,
            port: 20000,
            _pad: [0; 2],
            last_used_ns: clock(libc::CLOCK_MONOTONIC_COARSE),
        },
    );
    let a = Pkt::udp((CLIENT, 20000), (SERVER, 53));
    nat.snat("source port reserved elsewhere", &a, (p, 20001));
    let b = Pkt::udp((CLIENT, 20002), (SERVER, 53));
    nat.refused(
        "no port left",
        &b,
        |d| &mut d.nat_pool_exhausted,
        &[st::EXHAUSTED],
    );
    // The same source port over TCP has its own port space.
    nat.snat(
        "TCP from the same port",
        &Pkt::tcp((CLIENT, 20000), (SERVER, 80), tcp_flags::SYN),
        (p, 20000),
    );
    nat.finish();
}

/// An hour: nothing a cache test does expires by age unless it says so.
const HOUR_MS: u32 = 3_600_000;

/// Both caches on (generation 7, [`HOUR_MS`]) and a UDP flow from the client
/// whose first packet went through the global function: the fixture, the
/// client's pool address and the flow's packet.
fn cached_flow(hook: Hook) -> (Nat, Ip4, Pkt) {
    let mut nat = Nat::new(hook, Config::default());
    nat.cache_ctl(7, HOUR_MS);
    let p = nat.pool_addr(CLIENT);
    let pkt = Pkt::udp((CLIENT, 40000), (SERVER, 53));
    nat.snat(
        "first packet (the global function, no cache)",
        &pkt,
        (p, 40000),
    );
    (nat, p, pkt)
}

/// An established session half reuses the FIB's answer (the server's MAC
/// changing unseen leaves its packets on the old MAC) until the agent's
/// generation moves or the answer outlives `max_age_ms`; with the cache
/// off, every packet asks the FIB.
fn route_cache_follows_generation_and_age(hook: Hook) {
    let (mut nat, p, pkt) = cached_flow(hook);
    nat.out("second packet: looked up, then cached", &pkt, (p, 40000));
    let key = key_of(&pkt, role::INSIDE);
    let s = session(&nat.dp, &key);
    assert_eq!(
        (s.route_oif, s.route_gen, s.route_islot, s.route_dmac),
        (nat.net.out0, 7, nat.dp.slot(LO) as u16, mac_of(SERVER)),
        "{hook:?}: the half caches the answer it was given"
    );

    let out = pkt.hop((p, 40000), pkt.dst());
    let on_mac = |nat: &Nat, what: &str, mac: Mac| {
        nat.run(
            &Case::forwarded(what, nat.arriving(&pkt), out.frame(mac, nat.net.out0_mac)),
            &[st::FROM_IN],
            &[],
        );
    };
    let set_server_mac = |mac: Mac| {
        ip(&[
            "neigh",
            "replace",
            &dotted(SERVER),
            "lladdr",
            &mac_str(mac),
            "dev",
            "out0",
            "nud",
            "permanent",
        ]);
    };
    let (mac2, mac3, mac4) = (
        [0x02, 0xee, 0, 0, 0, 2],
        [0x02, 0xee, 0, 0, 0, 3],
        [0x02, 0xee, 0, 0, 0, 4],
    );

    set_server_mac(mac2);
    on_mac(
        &nat,
        "neighbour changed unseen: the cached MAC",
        mac_of(SERVER),
    );
    nat.cache_ctl(8, HOUR_MS);
    on_mac(&nat, "a new generation: looked up again", mac2);
    assert_eq!(session(&nat.dp, &key).route_gen, 8, "{hook:?}: re-cached");

    // The age bound: 1 ms, and more than a coarse clock tick passes.
    nat.cache_ctl(8, 1);
    set_server_mac(mac3);
    std::thread::sleep(std::time::Duration::from_millis(50));
    on_mac(
        &nat,
        "an answer older than max_age_ms: looked up again",
        mac3,
    );

    // Off: every packet asks the FIB, whatever is cached.
    nat.cache_ctl(8, 0);
    set_server_mac(mac4);
    on_mac(&nat, "cache off: looked up", mac4);
    set_server_mac(mac_of(SERVER));
    on_mac(&nat, "cache off: looked up again", mac_of(SERVER));
    nat.finish();
}

/// A half caches no source MAC: a hit takes the egress's from `IFACES`, so
/// an answer is cached only when the FIB's source MAC is the registered one.
/// An egress registered with another MAC (changed behind the agent's back)
/// gets the FIB's MAC on every packet and nothing cached, until the agent
/// registers the real one.
fn route_cache_takes_the_source_mac_from_ifaces(hook: Hook) {
    let (mut nat, p, pkt) = cached_flow(hook);
    let key = key_of(&pkt, role::INSIDE);
    let out0 = nat.net.out0;
    let forwarded = |nat: &Nat, what: &str| {
        let out = pkt.hop((p, 40000), pkt.dst());
        nat.run(
            &Case::forwarded(
                what,
                nat.arriving(&pkt),
                out.frame(mac_of(SERVER), nat.net.out0_mac),
            ),
            &[st::FROM_IN],
            &[],
        );
        session(&nat.dp, &key).route_oif
    };

    nat.dp
        .manage_role(out0, [0x02, 0xdd, 0, 0, 0, 1], role::OUTSIDE);
    for what in [
        "another MAC registered: the FIB's source MAC, nothing cached",
        "and again: still looked up",
    ] {
        assert_eq!(forwarded(&nat, what), 0, "{hook:?}: {what}");
    }
    nat.dp.manage_role(out0, nat.net.out0_mac, role::OUTSIDE);
    assert_eq!(
        forwarded(&nat, "the real MAC registered: looked up and cached"),
        out0,
        "{hook:?}: cached once the FIB's MAC is the registered one"
    );
    forwarded(&nat, "a hit: the registered source MAC");
    nat.finish();
}

/// Each CPU caches the ingress interface's `IFACES` entry: a role changed
/// without the agent's generation bump keeps the cached role, a new
/// generation or an entry older than `max_age_ms` reads the map again, and
/// with the cache off every packet reads it.
fn iface_cache_follows_generation_and_age(hook: Hook) {
    let (mut nat, p, pkt) = cached_flow(hook);
    let translated = |nat: &Nat, what: &str| {
        nat.out(what, &pkt, (p, 40000));
    };
    let plain = |nat: &Nat, what: &str| {
        nat.xlate(what, &pkt, pkt.src(), pkt.dst(), &[]);
    };

    nat.dp.set_role_unannounced(LO, role::NONE);
    translated(&nat, "role removed unannounced: the cached inside role");
    nat.dp.bump_generation();
    plain(&nat, "a new generation: no role, forwarded unchanged");

    // The age bound: 1 ms, and more than a coarse clock tick passes.
    nat.cache_ctl(9, 1);
    plain(&nat, "generation moved: read again, still no role");
    nat.dp.set_role_unannounced(LO, role::INSIDE);
    std::thread::sleep(std::time::Duration::from_millis(50));
    translated(&nat, "an entry older than max_age_ms: read again, inside");

    // Off: every packet reads IFACES.
    nat.cache_ctl(9, 0);
    translated(&nat, "cache off: inside");
    nat.dp.set_role_unannounced(LO, role::NONE);
    plain(&nat, "cache off: the removed role at once");
    nat.finish();
}
