//! The programs alone: nanoseconds per packet in `BPF_PROG_TEST_RUN`, with
//! session tables of different sizes.
//!
//! Each table size gets a fresh object whose LRU maps are sized as the agent
//! sizes them ([`LoadOptions::max_sessions`]), filled from userspace with
//! synthetic but valid sessions: both halves of each session, both entries
//! of its endpoint-independent binding, paired pool addresses, source ports
//! kept where free, and `nat_active` counting them all.
//!
//! A repeated test run hands the program the packet it rewrote in the
//! previous repetition, so the measured flows are chosen to stay on their
//! path under repetition:
//! - the established flows are each paired with a mirror session that
//!   translates the rewritten tuple back, so every repetition is an
//!   established-session hit, rewrite and redirect;
//! - frames start with TTL 255 and are repeated fewer than 254 times, so
//!   forwarding never reaches TTL 1;
//! - XDP checks the destination MAC itself, so loopback's configured MAC is
//!   the next hop's, which is what the forwarded frame carries; TC keeps the
//!   skb's `pkt_type` from the first repetition.
//!
//! A first packet cannot be repeated (the second one is established), so new
//! flows are many distinct frames run once each; see [`new_flow`].

use std::{fmt::Write as _, time::Instant};

use aya::{
    Pod,
    maps::{Array, HashMap, MapData},
    programs::{Xdp, XdpMode},
};
use xcnf_common::{
    IfCounters, maps,
    nat::{
        Binding, BindingKey, DEFAULT_PORT_MAX, DEFAULT_PORT_MIN, HostPairing, INITIATOR, NatConfig,
        NatStats, PoolRange, Session, SessionKey, StaticKey, StaticMapping, active, addr_flags,
        config_flags, kind, proto, role,
    },
};

use super::{
    BenchError, check_interrupt, failed, guarded,
    report::{Align, Table, count, mean, median, ns, or_dash, ratio, verdict},
};
use crate::{
    packet::{ETH_HLEN, ETH_P_IP, Ip4, Ipv4, Mac, ethernet, payload, udp},
    testrun::{
        Datapath, Hook, LO, LoadOptions, Verdict, chain, ip, isolated, set_ip_forward, veth,
    },
};

/// The next hop on v0, resolved by a permanent neighbour entry.
const NEXT_HOP: Ip4 = [10, 9, 0, 2];
const NEXT_HOP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// Loopback's own address: TC frames must be sent to it to count as for us.
const LO_MAC: Mac = [0; 6];
/// Routed via NEXT_HOP: servers, DNAT local hosts, the static external address.
const ROUTES: [&str; 3] = ["10.20.0.0/16", "10.30.0.0/16", "100.64.1.0/24"];

/// The pool: 64 addresses from 100.64.0.1, default ports.
const POOL_FIRST: Ip4 = [100, 64, 0, 1];
const POOL_ADDRS: u32 = 64;

/// The measured established SNAT flow (UDP).
const SNAT_CLIENT: (Ip4, u16) = ([10, 99, 0, 1], 5000);
const SNAT_SERVER: (Ip4, u16) = ([10, 20, 0, 5], 53);
/// The measured DNAT flow: remote → static external → local.
const DNAT_REMOTE: (Ip4, u16) = ([10, 20, 1, 9], 40000);
const DNAT_EXTERNAL: (Ip4, u16) = ([100, 64, 1, 1], 8080);
const DNAT_LOCAL: (Ip4, u16) = ([10, 30, 0, 10], 80);
/// The measured pass-through flow, arriving on an interface without role.
const PASS_FROM: (Ip4, u16) = ([10, 8, 0, 10], 40000);
const PASS_TO: (Ip4, u16) = ([10, 20, 0, 7], 4789);
/// New flows: one inside host each, from these /16s (TC, XDP), with source
/// ports from these bases, so each keeps its source port on its pool address
/// (the common path): the synthetic sessions use ports below 21000 and
/// the two ranges never meet.
const NEW_FLOW_NETS: [(u8, u16); 2] = [(98, 45000), (97, 25000)];
/// At most this many new flows per hook, so the port ranges above never meet.
pub const MAX_NEW_FLOWS: u32 = 16384;
/// Payload that makes the frame 60 bytes, the minimum Ethernet frame.
const PAYLOAD: usize = 60 - 14 - 20 - 8;

#[derive(Clone, Debug)]
pub struct Options {
    /// Session table sizes (the first is the reference of the ratio column).
    pub sizes: Vec<u32>,
    /// Test-run calls per measurement, each repeating the packet `repeat` times.
    pub calls: u32,
    pub repeat: u32,
    /// Distinct first packets per hook.
    pub new_flows: u32,
    /// [`Case::SpreadSnat`]: sessions in its cycle (at most the synthetic
    /// sessions there are), and packets measured per hook and table size.
    pub spread: u32,
    /// Times every table size is measured, sizes alternating; each number
    /// reported is the median over rounds.
    pub rounds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sizes: vec![1000, 1_000_000],
            calls: 4000,
            repeat: 200,
            new_flows: 10_000,
            spread: 200_000,
            rounds: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    EstablishedSnat,
    Floor,
    SpreadSnat,
    NewFlow,
    EstablishedDnat,
    PassThrough,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::EstablishedSnat,
        Case::Floor,
        Case::SpreadSnat,
        Case::NewFlow,
        Case::EstablishedDnat,
        Case::PassThrough,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::EstablishedSnat => "established SNAT + forwarding",
            Case::Floor => {
                "kernel floor: that session's lookup, checksum helper (TC only) and redirect alone"
            }
            Case::SpreadSnat => "established SNAT + forwarding, a different session each packet",
            Case::NewFlow => "first packet of a new flow (SNAT) + forwarding",
            Case::EstablishedDnat => "established DNAT + forwarding",
            Case::PassThrough => "pass-through (no NAT role) + forwarding",
        }
    }
}

fn hook_label(h: Hook) -> &'static str {
    match h {
        Hook::Tc => "TC",
        Hook::Xdp => "XDP",
    }
}

const HOOKS: [Hook; 2] = [Hook::Tc, Hook::Xdp];

/// One number and how it was obtained, when that needs saying.
#[derive(Clone, Debug, PartialEq)]
struct Measure {
    ns: f64,
    note: Option<String>,
    /// Each round's number, of which `ns` is the median.
    rounds: Vec<f64>,
}

type Cell = ((Case, Hook), Result<Measure, String>);

/// Per table size: each (case, hook)'s measure, plus how long filling took.
#[derive(Debug)]
struct SizeResult {
    size: u32,
    fill_secs: f64,
    cells: Vec<Cell>,
}

pub struct Results {
    opts: Options,
    sizes: Vec<Result<SizeResult, String>>,
}

/// Measures every size `opts.rounds` times, alternating sizes, so that the
/// machine's drift over minutes (30–40 % on a shared VM) weighs on every
/// size alike instead of on whichever came last, which the ratio between
/// sizes would otherwise take for an effect of the table's size.
pub fn run(opts: &Options) -> Result<Results, BenchError> {
    let mut rounds: Vec<Vec<Result<SizeResult, String>>> = Vec::new();
    for r in 1..=opts.rounds {
        let mut sizes = Vec::new();
        for &n in &opts.sizes {
            check_interrupt()?;
            crate::progress!(
                "test-run with {} sessions, round {r} of {} ...",
                count(n),
                opts.rounds
            );
            let o = opts.clone();
            match guarded(move || isolated(move || measure_size(n, &o))) {
                Ok(r) => sizes.push(Ok(r)),
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(BenchError::Failed(why)) => {
                    crate::progress!("  failed: {why}");
                    sizes.push(Err(why));
                }
            }
        }
        rounds.push(sizes);
    }
    Ok(Results {
        opts: opts.clone(),
        sizes: combine(rounds, opts.sizes.len()),
    })
}

/// Folds rounds (`rounds[r][size]`) into one result per size: each cell's
/// median over rounds, its notes from the last round. A size or cell that
/// failed in any round is failed, with the first reason: a number made of
/// fewer rounds than the others would not be comparable to them.
fn combine(
    rounds: Vec<Vec<Result<SizeResult, String>>>,
    sizes: usize,
) -> Vec<Result<SizeResult, String>> {
    let mut by_size: Vec<Vec<Result<SizeResult, String>>> =
        (0..sizes).map(|_| Vec::new()).collect();
    for round in rounds {
        for (i, r) in round.into_iter().enumerate() {
            if let Some(v) = by_size.get_mut(i) {
                v.push(r);
            }
        }
    }
    by_size
        .into_iter()
        .map(|runs| {
            let runs: Vec<SizeResult> = runs.into_iter().collect::<Result<_, _>>()?;
            let first = runs.first().ok_or_else(|| "not measured".to_owned())?;
            let (size, keys) = (
                first.size,
                first.cells.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            );
            let fill: Vec<f64> = runs.iter().map(|r| r.fill_secs).collect();
            let cells = keys
                .into_iter()
                .map(|key| {
                    let mut ns = Vec::new();
                    let mut note = None;
                    for r in &runs {
                        match r.cells.iter().find(|(k, _)| *k == key).map(|(_, m)| m) {
                            Some(Ok(m)) => {
                                ns.push(m.ns);
                                note.clone_from(&m.note);
                            }
                            Some(Err(why)) => return (key, Err(why.clone())),
                            None => return (key, Err("not measured in every round".to_owned())),
                        }
                    }
                    let m = median(&ns).ok_or_else(|| "no finite measurement".to_owned());
                    (
                        key,
                        m.map(|v| Measure {
                            ns: v,
                            note,
                            rounds: ns,
                        }),
                    )
                })
                .collect();
            Ok(SizeResult {
                size,
                fill_secs: median(&fill).unwrap_or(0.0),
                cells,
            })
        })
        .collect()
}

// ------------------------------------------------------------------ setup

/// Loopback plus v0 (10.9.0.1/24) with the next hop resolved, the routes,
/// forwarding on. Returns v0's ifindex and MAC.
fn network() -> (u32, Mac) {
    ip(&["link", "set", "lo", "up"]);
    let v0 = veth("v0", "v1", "10.9.0.1/24", &[(NEXT_HOP, NEXT_HOP_MAC)]);
    for dst in ROUTES {
        ip(&["route", "add", dst, "via", "10.9.0.2", "dev", "v0"]);
    }
    set_ip_forward(true);
    v0
}

fn pool_addr(i: u32) -> Ip4 {
    (u32::from_be_bytes(POOL_FIRST) + i).to_be_bytes()
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The pool as the datapath would have handed it out: paired pooling (each
/// new inside host takes the next address in turn, remembered per host) and
/// per-address ports (the source port when free, else another free one).
struct Pool {
    /// Inside host → pool index: the `nat_hosts` entries.
    hosts: std::collections::HashMap<Ip4, u32>,
    /// Hosts paired so far: `nat_active[NEXT_ADDR]`.
    next: u64,
    used: Vec<Vec<u64>>,
    /// Where the search for a free port continues, per address.
    cursor: Vec<u16>,
}

impl Pool {
    fn new() -> Self {
        Self {
            hosts: std::collections::HashMap::new(),
            next: 0,
            used: vec![vec![0; 65536 / 64]; POOL_ADDRS as usize],
            cursor: vec![DEFAULT_PORT_MIN; POOL_ADDRS as usize],
        }
    }

    fn take(&mut self, addr: usize, port: u16) -> bool {
        let (w, b) = (usize::from(port) / 64, port % 64);
        let free = self.used[addr][w] & (1 << b) == 0;
        self.used[addr][w] |= 1 << b;
        free
    }

    /// The external endpoint for inside endpoint `(host, want)`.
    fn alloc(&mut self, host: Ip4, want: u16) -> Option<(Ip4, u16)> {
        let next = &mut self.next;
        let index = *self.hosts.entry(host).or_insert_with(|| {
            let i = u32::try_from(*next % u64::from(POOL_ADDRS)).unwrap_or(0);
            *next += 1;
            i
        });
        let addr = index as usize;
        if (DEFAULT_PORT_MIN..=DEFAULT_PORT_MAX).contains(&want) && self.take(addr, want) {
            return Some((pool_addr(index), want));
        }
        for _ in DEFAULT_PORT_MIN..=DEFAULT_PORT_MAX {
            let p = self.cursor[addr];
            self.cursor[addr] = if p == DEFAULT_PORT_MAX {
                DEFAULT_PORT_MIN
            } else {
                p + 1
            };
            if self.take(addr, p) {
                return Some((pool_addr(index), p));
            }
        }
        None
    }
}

/// An established session: the arrival-side key of its initiating half and
/// what that half rewrites it to.
#[derive(Clone, Copy)]
struct Flow {
    key: SessionKey,
    to: Session,
}

fn key(s: (Ip4, u16), d: (Ip4, u16), dir: u8) -> SessionKey {
    SessionKey {
        saddr: s.0,
        daddr: d.0,
        sport: s.1,
        dport: d.1,
        proto: proto::UDP,
        dir,
        _pad: [0; 2],
    }
}

fn flow(k: SessionKey, s: (Ip4, u16), d: (Ip4, u16), peer_dir: u8, kind: u8, now: u64) -> Flow {
    Flow {
        key: k,
        to: Session {
            saddr: s.0,
            daddr: d.0,
            sport: s.1,
            dport: d.1,
            peer_dir,
            flags: INITIATOR,
            kind,
            created_s: (now / 1_000_000_000) as u32,
            last_seen_ns: now,
            packets: 1,
            bytes: 60,
            ..Session::default()
        },
    }
}

impl Flow {
    /// Both halves: the peer is keyed by the rewritten tuple swapped and
    /// rewrites back to the original one swapped.
    fn halves(&self) -> [(SessionKey, Session); 2] {
        let k = self.key;
        let peer = Session {
            saddr: k.daddr,
            daddr: k.saddr,
            sport: k.dport,
            dport: k.sport,
            peer_dir: k.dir,
            flags: 0,
            ..self.to
        };
        [(k, self.to), (k.peer(&self.to), peer)]
    }

    /// The endpoint-independent binding of an SNAT flow: inside endpoint ↔
    /// external endpoint.
    fn bindings(&self, now: u64) -> [(BindingKey, Binding); 2] {
        let b = |addr, port, dir, to: Ip4, to_port| {
            (
                BindingKey {
                    addr,
                    port,
                    proto: self.key.proto,
                    dir,
                },
                Binding {
                    addr: to,
                    port: to_port,
                    _pad: [0; 2],
                    last_used_ns: now,
                },
            )
        };
        [
            b(
                self.key.saddr,
                self.key.sport,
                role::INSIDE,
                self.to.saddr,
                self.to.sport,
            ),
            b(
                self.to.saddr,
                self.to.sport,
                role::OUTSIDE,
                self.key.saddr,
                self.key.sport,
            ),
        ]
    }
}

/// The measured SNAT flow and its mirror (the rewritten tuple, arriving on
/// the inside again, translated back), so repetitions alternate between two
/// established sessions.
fn snat_pair(pool: &mut Pool, now: u64) -> [Flow; 2] {
    let ext = pool
        .alloc(SNAT_CLIENT.0, SNAT_CLIENT.1)
        .unwrap_or((POOL_FIRST, SNAT_CLIENT.1));
    let there = key(SNAT_CLIENT, SNAT_SERVER, role::INSIDE);
    let back = key(ext, SNAT_SERVER, role::INSIDE);
    [
        flow(there, ext, SNAT_SERVER, role::OUTSIDE, kind::SNAT, now),
        flow(
            back,
            SNAT_CLIENT,
            SNAT_SERVER,
            role::OUTSIDE,
            kind::SNAT,
            now,
        ),
    ]
}

/// The measured DNAT flow and its mirror.
fn dnat_pair(now: u64) -> [Flow; 2] {
    let there = key(DNAT_REMOTE, DNAT_EXTERNAL, role::OUTSIDE);
    let back = key(DNAT_REMOTE, DNAT_LOCAL, role::OUTSIDE);
    [
        flow(
            there,
            DNAT_REMOTE,
            DNAT_LOCAL,
            role::INSIDE,
            kind::DNAT,
            now,
        ),
        flow(
            back,
            DNAT_REMOTE,
            DNAT_EXTERNAL,
            role::INSIDE,
            kind::DNAT,
            now,
        ),
    ]
}

/// The inside and server endpoints of synthetic SNAT session `i`: 64 flows
/// per inside host from 10.100.0.0 on, to 4096 servers.
fn synthetic_ends(i: u32) -> ((Ip4, u16), (Ip4, u16)) {
    let host = (u32::from_be_bytes([10, 100, 0, 0]) + i / 64).to_be_bytes();
    let sport = 20000 + u16::try_from(i % 64).unwrap_or(0);
    let server = (u32::from_be_bytes([10, 20, 0, 0]) + 256 + i % 4096).to_be_bytes();
    ((host, sport), (server, 443))
}

fn synthetic(i: u32, pool: &mut Pool, now: u64) -> Option<Flow> {
    let (inside, server) = synthetic_ends(i);
    let ext = pool.alloc(inside.0, inside.1)?;
    Some(flow(
        key(inside, server, role::INSIDE),
        ext,
        server,
        role::OUTSIDE,
        kind::SNAT,
        now,
    ))
}

/// Synthetic sessions written by [`fill`] for a table of `n`.
fn synthetic_count(n: u32) -> u32 {
    n.saturating_sub(4)
}

/// The server and the inside port every member of the [`Cycle`] shares, so
/// a hop rewrites only the source address, as established SNAT does when
/// the source port was kept.
const CYCLE_SERVER: (Ip4, u16) = ([10, 20, 0, 9], 443);
const CYCLE_PORT: u16 = 30000;

/// The sessions of [`Case::SpreadSnat`]: one cycle in which member `m`, from
/// inside host [`Cycle::host`]`(m)`, is translated to the next member's
/// host. A repeated test run walks the cycle, so every repetition is a hit
/// on a different session, and the test run's per-call work (an skb's or
/// XDP buffer's allocation, the clock reads) is spread over the repetitions
/// as in every other repeated case, not estimated and subtracted.
///
/// Member `m` takes the table slot `m * stride` of the synthetic sessions,
/// so the members lie evenly through the table, and the cycle visits them
/// in a shuffled order that no prefetcher can follow.
struct Cycle {
    stride: u32,
    /// Member ids in the order the cycle visits them.
    order: Vec<u32>,
    /// `next[m]`: the member after `m`.
    next: Vec<u32>,
}

impl Cycle {
    fn new(n: u32, spread: u32) -> Self {
        let slots = synthetic_count(n);
        let len = spread.min(slots);
        let stride = slots.checked_div(len).unwrap_or(1);
        let mut order: Vec<u32> = (0..len).collect();
        // Fisher–Yates with a fixed LCG: the same order every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for j in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(j, (x >> 33) as usize % (j + 1));
        }
        let mut next = vec![0; order.len()];
        for (t, &m) in order.iter().enumerate() {
            next[m as usize] = order[(t + 1) % order.len()];
        }
        Self {
            stride,
            order,
            next,
        }
    }

    fn len(&self) -> u32 {
        self.order.len() as u32
    }

    /// Inside host of member `m`: from 10.101.0.0 on, clear of the
    /// synthetic hosts (10.100/16) and the new flows' (10.97/16, 10.98/16).
    fn host(m: u32) -> Ip4 {
        (u32::from_be_bytes([10, 101, 0, 0]) + m).to_be_bytes()
    }

    /// The member that takes synthetic slot `i`, as an established SNAT
    /// flow to the next member's host.
    fn member_at(&self, i: u32, now: u64) -> Option<Flow> {
        let m = i / self.stride;
        if !i.is_multiple_of(self.stride) || m >= self.len() {
            return None;
        }
        let to = Self::host(*self.next.get(m as usize)?);
        Some(flow(
            key((Self::host(m), CYCLE_PORT), CYCLE_SERVER, role::INSIDE),
            (to, CYCLE_PORT),
            CYCLE_SERVER,
            role::OUTSIDE,
            kind::SNAT,
            now,
        ))
    }

    /// The frame from the member at position `t` of the visiting order.
    fn frame(&self, hook: Hook, t: usize) -> Vec<u8> {
        let m = self.order[t % self.order.len()];
        frame(hook, (Self::host(m), CYCLE_PORT), CYCLE_SERVER)
    }
}

/// Loads the object for `n` sessions and programs NAT44: pool, static
/// mapping, NAT addresses, then `n` sessions (the measured ones included).
fn prepare(n: u32, opts: &Options) -> Result<(Datapath, u32, Mac, f64), BenchError> {
    let (v0, v0_mac) = network();
    let max_sessions = n + 2 * opts.new_flows + 1024;
    let mut dp = Datapath::load(LoadOptions {
        log_level: 0,
        max_sessions: Some(max_sessions),
        max_hosts: None,
    });
    keep_in_xdp_dispatcher(&mut dp)?;
    dp.manage_role(LO, NEXT_HOP_MAC, role::INSIDE);
    dp.manage_role(v0, v0_mac, role::OUTSIDE);
    dp.count(LO);
    dp.tx_port(v0);
    dp.set_pools(
        NatConfig {
            flags: config_flags::ENABLED,
            max_sessions,
            ..Default::default()
        },
        &[PoolRange {
            first: POOL_FIRST,
            count: POOL_ADDRS,
            base: 0,
            port_min: DEFAULT_PORT_MIN,
            port_max: DEFAULT_PORT_MAX,
        }],
    );
    for i in 0..POOL_ADDRS {
        dp.add_nat_addr(pool_addr(i), addr_flags::POOL);
    }
    dp.add_nat_addr(DNAT_EXTERNAL.0, addr_flags::STATIC);
    let mapping = |(a, p): (Ip4, u16), dir| StaticKey {
        addr: a,
        port: p,
        proto: proto::UDP,
        dir,
    };
    let to = |(a, p): (Ip4, u16)| StaticMapping {
        addr: a,
        port: p,
        flags: 0,
        _pad: 0,
    };
    dp.add_static(mapping(DNAT_EXTERNAL, role::OUTSIDE), to(DNAT_LOCAL));
    dp.add_static(mapping(DNAT_LOCAL, role::INSIDE), to(DNAT_EXTERNAL));

    let started = Instant::now();
    fill(&mut dp, n, &Cycle::new(n, opts.spread))?;
    Ok((dp, v0, v0_mac, started.elapsed().as_secs_f64()))
}

/// Attaches the XDP program to v1, v0's peer, which sees no traffic.
///
/// A repeated XDP test run puts the program into the kernel's XDP
/// dispatcher for the timed loop (so it is called as an attached program
/// is) and takes it out again afterwards, patching the dispatcher twice per
/// call, milliseconds each: thousands of calls would take minutes. While
/// the program is attached somewhere it stays in the dispatcher, and the
/// test runs skip the patching; the timed loop is the same either way.
fn keep_in_xdp_dispatcher(dp: &mut Datapath) -> Result<(), BenchError> {
    let prog: &mut Xdp = dp
        .ebpf
        .program_mut(Hook::Xdp.program())
        .ok_or_else(|| failed("no XDP program"))?
        .try_into()
        .map_err(|e| failed(format!("XDP program: {}", chain(&e))))?;
    prog.attach("v1", XdpMode::Driver)
        .map_err(|e| failed(format!("attaching XDP to v1: {}", chain(&e))))?;
    Ok(())
}

/// Writes `n` sessions: the measured pairs, the cycle's members in their
/// slots, and synthetic ones in the rest.
fn fill(dp: &mut Datapath, n: u32, cycle: &Cycle) -> Result<(), BenchError> {
    let now = now_ns();
    let mut pool = Pool::new();
    let snat = snat_pair(&mut pool, now);
    let dnat = dnat_pair(now);
    let mut flows: Vec<(Flow, bool)> = snat.iter().map(|f| (*f, true)).collect();
    flows.extend(dnat.iter().map(|f| (*f, false)));
    let synth = synthetic_count(n);
    flows.reserve(synth as usize);
    for i in 0..synth {
        if let Some(f) = cycle.member_at(i, now) {
            // Its "external" endpoint is another inside host: it has no
            // pool address, so no binding either.
            flows.push((f, false));
            continue;
        }
        let f = synthetic(i, &mut pool, now)
            .ok_or_else(|| failed(format!("pool exhausted at synthetic session {i}")))?;
        flows.push((f, true));
    }
    let entries = flows.iter().flat_map(|(f, _)| f.halves());
    insert_all(dp, maps::NAT_SESSIONS.object, entries, 2000)?;
    let entries = flows
        .iter()
        .filter(|(_, snat)| *snat)
        .flat_map(|(f, _)| f.bindings(now));
    insert_all(dp, maps::NAT_BINDINGS.object, entries, 2000)?;
    let hosts = pool.hosts.iter().map(|(h, &index)| {
        let used_s = (now / 1_000_000_000) as u32;
        (*h, HostPairing { index, used_s })
    });
    insert_all(dp, maps::NAT_HOSTS.object, hosts, 0)?;
    let map_err = |what: &str, e: &dyn std::error::Error| failed(format!("{what}: {}", chain(e)));
    let map = dp
        .ebpf
        .map_mut(maps::NAT_ACTIVE.object)
        .ok_or_else(|| failed("no NAT_ACTIVE map"))?;
    let mut active_map: Array<&mut MapData, u64> =
        Array::try_from(map).map_err(|e| map_err("NAT_ACTIVE", &e))?;
    active_map
        .set(active::CREATED, u64::from(n), 0)
        .map_err(|e| map_err("NAT_ACTIVE[CREATED]", &e))?;
    active_map
        .set(active::BASE, 0, 0)
        .map_err(|e| map_err("NAT_ACTIVE[BASE]", &e))?;
    active_map
        .set(active::NEXT_ADDR, pool.next, 0)
        .map_err(|e| map_err("NAT_ACTIVE[NEXT_ADDR]", &e))?;
    Ok(())
}

/// Inserts `entries` into the hash-like map `name`, then checks that the
/// first `check` of them are still there: an LRU evicts its oldest entries
/// first, so this shows whether filling it evicted anything.
fn insert_all<K: Pod + std::fmt::Debug, V: Pod>(
    dp: &mut Datapath,
    name: &str,
    entries: impl Iterator<Item = (K, V)> + Clone,
    check: usize,
) -> Result<(), BenchError> {
    let map_err =
        |what: &str, e: &dyn std::error::Error| failed(format!("{name}: {what}: {}", chain(e)));
    let map = dp
        .ebpf
        .map_mut(name)
        .ok_or_else(|| failed(format!("no map {name}")))?;
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map).map_err(|e| map_err("opening", &e))?;
    for (i, (k, v)) in entries.clone().enumerate() {
        if i % 65536 == 0 {
            check_interrupt()?;
        }
        m.insert(k, v, 0).map_err(|e| map_err("inserting", &e))?;
    }
    for (k, _) in entries.take(check) {
        m.get(&k, 0)
            .map_err(|e| map_err(&format!("{k:?} after filling"), &e))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ frames

/// A 60-byte UDP frame with TTL 255, to loopback's MAC for TC and to the
/// next hop's (loopback's configured MAC) for XDP.
fn frame(hook: Hook, s: (Ip4, u16), d: (Ip4, u16)) -> Vec<u8> {
    let dst = match hook {
        Hook::Tc => LO_MAC,
        Hook::Xdp => NEXT_HOP_MAC,
    };
    let ip = Ipv4::new(s.0, d.0).ttl(255);
    ethernet(
        dst,
        [0x02, 0, 0, 0, 0, 0xaa],
        ETH_P_IP,
        &ip.encode(&udp(s.0, d.0, s.1, d.1, &payload(PAYLOAD))),
    )
}

/// Source and destination endpoints of an IPv4/UDP frame.
fn endpoints(f: &[u8]) -> Option<((Ip4, u16), (Ip4, u16))> {
    let ip = f.get(ETH_HLEN..ETH_HLEN + 24)?;
    let a = |o: usize| -> Option<Ip4> { ip.get(o..o + 4)?.try_into().ok() };
    let port = |o: usize| Some(u16::from_be_bytes(ip.get(o..o + 2)?.try_into().ok()?));
    Some(((a(12)?, port(20)?), (a(16)?, port(22)?)))
}

/// Which `nat_stats` counter each packet of a case advances.
#[derive(Clone, Copy)]
enum Xlate {
    FromInside,
    FromOutside,
    None,
}

fn translated(s: &NatStats, x: Xlate) -> u64 {
    match x {
        Xlate::FromInside => s.translated_from_inside,
        Xlate::FromOutside => s.translated_from_outside,
        Xlate::None => s.translated_from_inside + s.translated_from_outside,
    }
}

/// What one run of a frame must do: be redirected with these endpoints.
struct Expect {
    src: (Ip4, u16),
    dst: (Ip4, u16),
    xlate: Xlate,
}

fn fmt_ep(e: (Ip4, u16)) -> String {
    format!("{}.{}.{}.{}:{}", e.0[0], e.0[1], e.0[2], e.0[3], e.1)
}

/// One run of `f` must redirect and rewrite as `want` says.
fn check_once(dp: &Datapath, hook: Hook, f: &[u8], want: &Expect) -> Result<(), String> {
    let (code, out, _) = dp
        .try_run_repeat(hook, f, 1)
        .map_err(|e| format!("test run: {}", chain(&e)))?;
    check_code(hook, code)?;
    match endpoints(&out) {
        Some((s, d)) if s == want.src && d == want.dst => Ok(()),
        Some((s, d)) => Err(format!(
            "rewritten to {} → {}, expected {} → {}",
            fmt_ep(s),
            fmt_ep(d),
            fmt_ep(want.src),
            fmt_ep(want.dst)
        )),
        None => Err(format!(
            "output frame of {} bytes has no IPv4/UDP headers",
            out.len()
        )),
    }
}

fn check_code(hook: Hook, code: u32) -> Result<(), String> {
    if code == hook.code(Verdict::Redirect) {
        Ok(())
    } else {
        Err(format!(
            "verdict {}, expected a redirect",
            hook.name_code(code)
        ))
    }
}

/// Every one of `packets` runs must have been forwarded and (per `xlate`)
/// translated; anything else means the numbers belong to another path.
fn check_counted(
    before: (&IfCounters, &NatStats),
    after: (&IfCounters, &NatStats),
    packets: u64,
    xlate: Xlate,
) -> Result<(), String> {
    let fwd = after.0.forwarded.packets - before.0.forwarded.packets;
    let rx = after.0.rx.packets - before.0.rx.packets;
    if rx != packets || fwd != packets {
        return Err(format!(
            "{packets} runs, but the program counted rx {rx}, forwarded {fwd} \
             (passed {}, dropped {})",
            after.0.passed.total() - before.0.passed.total(),
            after.0.dropped.total() - before.0.dropped.total()
        ));
    }
    let t = translated(after.1, xlate) - translated(before.1, xlate);
    let want = match xlate {
        Xlate::None => 0,
        Xlate::FromInside | Xlate::FromOutside => packets,
    };
    if t != want {
        return Err(format!(
            "{packets} runs, {t} counted as translated, expected {want}"
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ measuring

/// Median kernel-reported ns per packet over `calls` runs of `repeat`
/// repetitions each, after checking one run's rewrite and verifying from
/// the counters that every repetition took the intended path.
fn repeated(
    dp: &Datapath,
    hook: Hook,
    f: &[u8],
    want: &Expect,
    opts: &Options,
) -> Result<f64, String> {
    repeated_alongside(dp, hook, f, want, opts, Err("not run".to_owned())).map(|(ns, _)| ns)
}

/// As [`repeated`], with each call followed by one of `floor` on the same
/// frame, so that both medians come from the same minutes of a machine whose
/// speed drifts: (xcnf's, the floor's). A floor that fails stops being run
/// and is reported failed; xcnf's measurement goes on without it.
fn repeated_alongside(
    dp: &Datapath,
    hook: Hook,
    f: &[u8],
    want: &Expect,
    opts: &Options,
    floor: Result<&super::floor::Floor, String>,
) -> Result<(f64, Result<f64, String>), String> {
    check_once(dp, hook, f, want)?;
    let before = (dp.counters(LO), dp.nat_stats());
    let mut per_packet = Vec::new();
    let mut floor_per_packet = Vec::new();
    let mut floor = floor;
    for _ in 0..opts.calls {
        per_packet.extend(timed_runs(dp, hook, [f], opts.repeat)?);
        if let Ok(fl) = floor {
            match fl.run(f, opts.repeat) {
                Ok(ns) => floor_per_packet.push(ns),
                Err(why) => floor = Err(why),
            }
        }
    }
    let after = (dp.counters(LO), dp.nat_stats());
    check_counted(
        (&before.0, &before.1),
        (&after.0, &after.1),
        u64::from(opts.calls) * u64::from(opts.repeat),
        want.xlate,
    )?;
    let floor = floor.and_then(|_| median(&floor_per_packet).ok_or_else(|| "no runs".to_owned()));
    Ok((
        median(&per_packet).ok_or_else(|| "no runs".to_owned())?,
        floor,
    ))
}

/// The kernel-reported ns per packet of one test run of each frame, each
/// repeated `repeat` times and required to redirect.
fn timed_runs<'a>(
    dp: &Datapath,
    hook: Hook,
    frames: impl IntoIterator<Item = &'a [u8]>,
    repeat: u32,
) -> Result<Vec<f64>, String> {
    let mut v = Vec::new();
    for f in frames {
        let (code, _, d) = dp
            .try_run_repeat(hook, f, repeat)
            .map_err(|e| format!("test run: {}", chain(&e)))?;
        check_code(hook, code)?;
        v.push(d.as_nanos() as f64);
    }
    Ok(v)
}

/// Kernel-reported durations of single runs of `frames`.
fn single_runs(dp: &Datapath, hook: Hook, frames: &[Vec<u8>]) -> Result<Vec<f64>, String> {
    timed_runs(dp, hook, frames.iter().map(Vec::as_slice), 1)
}

/// First packets: `new_flows` distinct flows, each from its own inside host,
/// run once each (repeat = 1).
///
/// A single run's kernel-reported time also holds one clock read and the
/// loop around the program, which repetition otherwise spreads thin. That
/// overhead is measured on the pass-through frame (median of single runs
/// minus its repeated per-packet cost) and subtracted from the new flows'
/// median; the raw median and mean are reported with it.
fn new_flow(dp: &Datapath, hook: Hook, overhead: f64, opts: &Options) -> Result<Measure, String> {
    let (net, port_base) = match hook {
        Hook::Tc => NEW_FLOW_NETS[0],
        Hook::Xdp => NEW_FLOW_NETS[1],
    };
    let flows: Vec<((Ip4, u16), Vec<u8>)> = (0..opts.new_flows)
        .map(|k| {
            let host = (u32::from_be_bytes([10, net, 0, 1]) + k).to_be_bytes();
            let port = port_base + u16::try_from(k).unwrap_or(0);
            ((host, port), frame(hook, (host, port), SNAT_SERVER))
        })
        .collect();

    // The first new flow is checked on its own: paired pool address, and
    // the source port kept (it is free).
    let ((_host, port), first) = &flows[0];
    // A new host is paired with the pool address the round-robin cursor
    // points at.
    let p = pool_addr((dp.next_pool_cursor() % u64::from(POOL_ADDRS)) as u32);
    let before = (dp.counters(LO), dp.nat_stats());
    check_once(
        dp,
        hook,
        first,
        &Expect {
            src: (p, *port),
            dst: SNAT_SERVER,
            xlate: Xlate::FromInside,
        },
    )?;
    let rest: Vec<Vec<u8>> = flows[1..].iter().map(|(_, f)| f.clone()).collect();
    let raw = single_runs(dp, hook, &rest)?;
    let after = (dp.counters(LO), dp.nat_stats());
    check_counted(
        (&before.0, &before.1),
        (&after.0, &after.1),
        u64::from(opts.new_flows),
        Xlate::FromInside,
    )?;
    let created = after.1.snat_sessions - before.1.snat_sessions;
    if created != u64::from(opts.new_flows) {
        return Err(format!(
            "{} first packets created {created} SNAT sessions",
            opts.new_flows
        ));
    }
    Ok(single_run_measure(
        &raw,
        overhead,
        &format!("{} flows", raw.len() + 1),
    ))
}

/// A single-run case's number: the median of `raw` minus the single-run
/// overhead, with both in its note, which starts with `what`.
fn single_run_measure(raw: &[f64], overhead: f64, what: &str) -> Measure {
    let raw_median = median(raw).unwrap_or(0.0);
    Measure {
        ns: raw_median - overhead,
        rounds: vec![raw_median - overhead],
        note: Some(format!(
            "{what}: raw median {}, mean {}, single-run overhead {} subtracted",
            ns(raw_median),
            or_dash(mean(raw), ns),
            ns(overhead)
        )),
    }
}

/// Established SNAT with a different session for every packet: the
/// [`Cycle`], walked by `ceil(spread / repeat)` calls of `repeat`
/// repetitions each, which start where the previous call stopped, after one
/// unmeasured walk that caches the members' routes as earlier packets would
/// have. At 1M sessions, with the default `spread`, that is every member
/// once; a smaller table is walked round its cycle repeatedly.
///
/// The repeated established case keeps its one session in the CPU's caches
/// whatever the table's size. Traffic of many flows does not: this case
/// pays for reaching a session in a table larger than the caches, which is
/// what the session's size in cache lines decides.
fn spread_snat(dp: &Datapath, hook: Hook, n: u32, opts: &Options) -> Result<Measure, String> {
    let cycle = Cycle::new(n, opts.spread);
    if cycle.len() < 2 {
        return Err(format!(
            "a cycle needs 2 sessions, the table has room for {}",
            cycle.len()
        ));
    }
    let repeat = opts.repeat;
    let calls = opts.spread.div_ceil(repeat);
    let frames: Vec<Vec<u8>> = (0..calls)
        .map(|c| cycle.frame(hook, (c as usize) * repeat as usize))
        .collect();
    check_once(
        dp,
        hook,
        &frames[0],
        &Expect {
            src: (Cycle::host(cycle.order[1]), CYCLE_PORT),
            dst: CYCLE_SERVER,
            xlate: Xlate::FromInside,
        },
    )?;
    let walk = |dp: &Datapath| timed_runs(dp, hook, frames.iter().map(Vec::as_slice), repeat);
    walk(dp)?;
    let before = (dp.counters(LO), dp.nat_stats());
    let per_packet = walk(dp)?;
    let after = (dp.counters(LO), dp.nat_stats());
    check_counted(
        (&before.0, &before.1),
        (&after.0, &after.1),
        u64::from(calls) * u64::from(repeat),
        Xlate::FromInside,
    )?;
    if after.1.snat_sessions != before.1.snat_sessions {
        return Err(format!(
            "established sessions created {} new ones",
            after.1.snat_sessions - before.1.snat_sessions
        ));
    }
    let v = median(&per_packet).ok_or_else(|| "no runs".to_owned())?;
    Ok(Measure {
        ns: v,
        rounds: vec![v],
        note: Some(format!(
            "a cycle of {} of {} sessions, {} apart: {calls} calls × {repeat}, mean {}",
            count(cycle.len()),
            count(synthetic_count(n)),
            cycle.stride,
            or_dash(mean(&per_packet), ns)
        )),
    })
}

fn measure_size(n: u32, opts: &Options) -> Result<SizeResult, BenchError> {
    let cpus = super::online_cpus();
    // Off CPU 0, where interrupts and most other work land.
    super::pin_to_cpu(cpus.saturating_sub(1))?;
    let (mut dp, v0, v0_mac, fill_secs) = prepare(n, opts)?;
    crate::progress!("  filled {} sessions in {fill_secs:.1} s", count(n));
    let [snat, _] = snat_pair(&mut Pool::new(), 0);
    let mut cells = Vec::new();
    let mut record = |case: Case, hook: Hook, r: Result<Measure, String>| {
        match &r {
            Ok(m) => crate::progress!("  {} {}: {} ns", hook_label(hook), case.label(), ns(m.ns)),
            Err(why) => crate::progress!("  {} {}: failed: {why}", hook_label(hook), case.label()),
        }
        cells.push(((case, hook), r));
    };
    let set_roles = |dp: &mut Datapath, lo: u8, v: u8| {
        dp.manage_role(LO, NEXT_HOP_MAC, lo);
        dp.manage_role(v0, v0_mac, v);
    };
    for hook in HOOKS {
        // An established flow from `from` to `to`, rewritten to `src → dst`.
        let established = |dp: &Datapath, from, to, src, dst, xlate| {
            let want = Expect { src, dst, xlate };
            repeated(dp, hook, &frame(hook, from, to), &want, opts)
        };
        let measure = |r: Result<f64, String>| {
            r.map(|ns| Measure {
                ns,
                note: None,
                rounds: vec![ns],
            })
        };

        check_interrupt()?;
        set_roles(&mut dp, role::NONE, role::OUTSIDE);
        let pass = established(&dp, PASS_FROM, PASS_TO, PASS_FROM, PASS_TO, Xlate::None);
        // The single-run overhead for the new flows, measured while this
        // frame still passes through untranslated.
        let overhead = pass.clone().and_then(|pass_ns| {
            let singles = vec![frame(hook, PASS_FROM, PASS_TO); opts.new_flows as usize];
            Ok(median(&single_runs(&dp, hook, &singles)?).unwrap_or(pass_ns) - pass_ns)
        });
        record(Case::PassThrough, hook, measure(pass));

        check_interrupt()?;
        set_roles(&mut dp, role::INSIDE, role::OUTSIDE);
        // Measured call by call alongside the kernel's floor (`floor.rs`):
        // the same frame, table, session and egress.
        let ext = (snat.to.saddr, snat.to.sport);
        let want = Expect {
            src: ext,
            dst: SNAT_SERVER,
            xlate: Xlate::FromInside,
        };
        let fl =
            super::floor::Floor::load(&dp, hook, &snat.key, (snat.key.saddr, snat.to.saddr), v0);
        let f = frame(hook, SNAT_CLIENT, SNAT_SERVER);
        let (est, floor) = match repeated_alongside(
            &dp,
            hook,
            &f,
            &want,
            opts,
            fl.as_ref().map_err(Clone::clone),
        ) {
            Ok((est, floor)) => (Ok(est), floor),
            Err(why) => (
                Err(why.clone()),
                Err(format!("xcnf's own runs failed: {why}")),
            ),
        };
        record(Case::EstablishedSnat, hook, measure(est));
        record(Case::Floor, hook, measure(floor));

        check_interrupt()?;
        record(Case::SpreadSnat, hook, spread_snat(&dp, hook, n, opts));

        check_interrupt()?;
        let nf = match overhead {
            Ok(o) => new_flow(&dp, hook, o, opts),
            Err(why) => Err(format!(
                "needs the pass-through measurement, which failed: {why}"
            )),
        };
        record(Case::NewFlow, hook, nf);

        check_interrupt()?;
        set_roles(&mut dp, role::OUTSIDE, role::INSIDE);
        let dnat = established(
            &dp,
            DNAT_REMOTE,
            DNAT_EXTERNAL,
            DNAT_REMOTE,
            DNAT_LOCAL,
            Xlate::FromOutside,
        );
        record(Case::EstablishedDnat, hook, measure(dnat));
    }
    Ok(SizeResult {
        size: n,
        fill_secs,
        cells,
    })
}

// ------------------------------------------------------------------ report

/// Target: established SNAT plus forwarding, TC, at most this many ns.
const TARGET_SNAT_NS: f64 = 150.0;
/// Target: the largest table's cost within this factor of the smallest's.
const TARGET_SCALING: f64 = 1.5;

impl Results {
    /// Whether any measurement has no number.
    pub fn any_failed(&self) -> bool {
        self.sizes.iter().any(|s| {
            s.as_ref()
                .map_or(true, |s| s.cells.iter().any(|(_, r)| r.is_err()))
        })
    }

    fn cell(&self, size: usize, case: Case, hook: Hook) -> Result<&Measure, String> {
        match self.sizes.get(size) {
            Some(Ok(s)) => s
                .cells
                .iter()
                .find(|((c, h), _)| *c == case && *h == hook)
                .map_or_else(
                    || Err("not measured".to_owned()),
                    |(_, r)| r.as_ref().map_err(Clone::clone),
                ),
            Some(Err(why)) => Err(why.clone()),
            None => Err("not measured".to_owned()),
        }
    }

    pub fn markdown(&self) -> String {
        let o = &self.opts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### BPF_PROG_TEST_RUN: ns per packet\n\n\
             60-byte UDP frames; repeated cases: median of {} calls × {} repetitions; \
             a different session each packet: a cycle of up to {} established sessions, {} packets \
             in calls of the same repetitions; \
             new flows: {} distinct first packets per hook and table size (see method). \
             Every number is the median of {} rounds, table sizes alternating.\n",
            o.calls,
            o.repeat,
            count(o.spread),
            count(o.spread.div_ceil(o.repeat.max(1)) * o.repeat),
            o.new_flows,
            o.rounds
        );
        let labels: Vec<String> = o
            .sizes
            .iter()
            .map(|&n| format!("{} sessions", count(n)))
            .collect();
        let mut head: Vec<(&str, Align)> = vec![("case", Align::Left), ("hook", Align::Left)];
        head.extend(labels.iter().map(|l| (l.as_str(), Align::Right)));
        let (first, last) = (0, o.sizes.len().saturating_sub(1));
        let scaling_head = format!(
            "{} ÷ {}",
            count(o.sizes.get(last).copied().unwrap_or(0)),
            count(o.sizes.first().copied().unwrap_or(0))
        );
        head.push((&scaling_head, Align::Right));
        head.push(("≤ 1.5×", Align::Left));
        let mut t = Table::new(&head);
        let mut scaling_misses = Vec::new();
        let mut failures = Vec::new();
        let mut notes = Vec::new();
        for case in Case::ALL {
            for hook in HOOKS {
                let mut row = vec![case.label().to_owned(), hook_label(hook).to_owned()];
                for (i, &n) in o.sizes.iter().enumerate() {
                    match self.cell(i, case, hook) {
                        Ok(m) => {
                            row.push(ns(m.ns));
                            if let Some(note) = &m.note {
                                notes.push(format!(
                                    "{} {}, {} sessions: {note}",
                                    hook_label(hook),
                                    case.label(),
                                    count(n)
                                ));
                            }
                        }
                        Err(why) => {
                            row.push("failed".to_owned());
                            failures.push(format!(
                                "{} {}, {} sessions: {why}",
                                hook_label(hook),
                                case.label(),
                                count(n)
                            ));
                        }
                    }
                }
                let scale = match (self.cell(first, case, hook), self.cell(last, case, hook)) {
                    (Ok(a), Ok(b)) if first != last && a.ns > 0.0 => Some(b.ns / a.ns),
                    _ => None,
                };
                row.push(or_dash(scale, ratio));
                // The floor is the kernel's, not a target of xcnf's.
                let targeted = case != Case::Floor;
                row.push(
                    scale
                        .filter(|_| targeted)
                        .map_or("—", |r| verdict(r <= TARGET_SCALING))
                        .to_owned(),
                );
                if targeted && scale.is_some_and(|r| r > TARGET_SCALING) {
                    scaling_misses.push(format!("{} {}", hook_label(hook), case.label()));
                }
                t.row(row);
            }
        }
        let _ = writeln!(s, "{t}");

        let _ = writeln!(s, "Targets:\n");
        for hook in HOOKS {
            let at = |case: Case| -> Vec<Option<f64>> {
                (0..o.sizes.len())
                    .map(|i| self.cell(i, case, hook).ok().map(|m| m.ns))
                    .collect()
            };
            let (snat, floor) = (at(Case::EstablishedSnat), at(Case::Floor));
            let worst = snat.iter().flatten().copied().reduce(f64::max);
            let _ = writeln!(
                s,
                "- established SNAT + forwarding ({}) ≤ {} ns/packet: {} — {}",
                hook_label(hook),
                ns(TARGET_SNAT_NS),
                o.sizes
                    .iter()
                    .zip(&snat)
                    .map(|(n, v)| format!("{} at {} sessions", or_dash(*v, ns), count(*n)))
                    .collect::<Vec<_>>()
                    .join(", "),
                match worst {
                    Some(w) if snat.iter().all(Option::is_some) => verdict(w <= TARGET_SNAT_NS),
                    _ => "n/a",
                }
            );
            let own: Vec<String> = o
                .sizes
                .iter()
                .zip(snat.iter().zip(&floor))
                .map(|(n, (a, b))| {
                    let d = a.zip(*b).map(|(a, b)| a - b);
                    format!("{} at {} sessions", or_dash(d, ns), count(*n))
                })
                .collect();
            let _ = writeln!(
                s,
                "  - of which the kernel floor (same frame, table and session: lookup{}, redirect) \
                 is {}; xcnf's own work is {}",
                if hook == Hook::Tc {
                    ", checksum helper"
                } else {
                    ""
                },
                floor
                    .iter()
                    .map(|v| or_dash(*v, ns))
                    .collect::<Vec<_>>()
                    .join(" / "),
                own.join(", ")
            );
        }
        let all_scaled = Case::ALL.iter().filter(|&&c| c != Case::Floor).all(|&c| {
            HOOKS
                .iter()
                .all(|&h| self.cell(first, c, h).is_ok() && self.cell(last, c, h).is_ok())
        });
        let _ = writeln!(
            s,
            "- {} sessions within {TARGET_SCALING}× of {} sessions, every case: {}",
            count(o.sizes.get(last).copied().unwrap_or(0)),
            count(o.sizes.first().copied().unwrap_or(0)),
            if !scaling_misses.is_empty() {
                format!("MISS ({})", scaling_misses.join("; "))
            } else if all_scaled && first != last {
                "PASS".to_owned()
            } else {
                "n/a (not every case measured at both sizes)".to_owned()
            }
        );
        if o.rounds > 1 {
            let _ = writeln!(s, "\nBy round:\n");
            let labels: Vec<String> = (1..=o.rounds).map(|r| format!("round {r}")).collect();
            let mut head: Vec<(&str, Align)> = vec![
                ("case", Align::Left),
                ("hook", Align::Left),
                ("sessions", Align::Right),
            ];
            head.extend(labels.iter().map(|l| (l.as_str(), Align::Right)));
            let mut t = Table::new(&head);
            for case in Case::ALL {
                for hook in HOOKS {
                    for (i, &n) in o.sizes.iter().enumerate() {
                        if let Ok(m) = self.cell(i, case, hook) {
                            let mut row = vec![
                                case.label().to_owned(),
                                hook_label(hook).to_owned(),
                                count(n),
                            ];
                            row.extend(m.rounds.iter().map(|&v| ns(v)));
                            t.row(row);
                        }
                    }
                }
            }
            let _ = writeln!(s, "{t}");
        }
        if !notes.is_empty() {
            let _ = writeln!(
                s,
                "\nHow the cycle and single-run cases were measured (last round):\n"
            );
        }
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        if !failures.is_empty() {
            let _ = writeln!(s, "\nFailed:\n");
        }
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
        let fills: Vec<String> = self
            .sizes
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| format!("{} sessions in {:.1} s", count(r.size), r.fill_secs))
            .collect();
        let _ = writeln!(
            s,
            "\nMethod: one object per table size, LRU maps sized as the agent sizes them, filled from \
             userspace with synthetic SNAT sessions (both halves, both binding entries, paired pool \
             address, `nat_active` set) over a 64-address pool ({}). The measured established flows \
             are each paired with a mirror session that translates their rewritten tuple back, so \
             every repetition is an established-session hit, rewrite, route (from the session's cached FIB answer after the first repetition, as the agent runs the datapath) and redirect \
             (TTL 255, {} repetitions per call). Every measurement is checked: one run's rewritten \
             addresses and ports, a redirect verdict for every call, and the program's own counters \
             (every repetition forwarded and translated as intended). A repeated established case keeps its one \
             session in the CPU's caches whatever the table's size; a different session each packet does not: \
             sessions evenly spaced through the table form one cycle, in a shuffled order, in which each \
             translates its source address to the next one's, so a repeated run walks the cycle, one session \
             per repetition (at 1M sessions every member once), after an unmeasured walk that caches their \
             routes, checked by the counters (every packet translated, no session created). New flows cannot be repeated: \
             each is a distinct inside host run once, keeping its source port on its paired pool \
             address. Single-run cases report the median of the kernel-reported single-run times, minus the single-run \
             overhead measured on the pass-through frame. The kernel floor is a program of a few instructions \
             (`tests/src/bench/floor.rs`) run on the established SNAT case's frame, one call after each of xcnf's: it \
             looks the same session up in the same table, calls `bpf_l4_csum_replace` once on TC (the only way to fix \
             a TCP/UDP checksum on an skb that may carry `CHECKSUM_PARTIAL`) and redirects as xcnf does; that is what \
             any translator on these hooks pays, and the rest of the established case is xcnf's own work.",
            fills.join(", "),
            o.repeat
        );
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// The cycle must be one cycle through every member (a shorter one
    /// would revisit sessions and leave the rest cold), with each member's
    /// session rewriting to the next member's host and sitting in its own
    /// evenly spaced slot.
    #[test]
    fn the_cycle_visits_every_member_once_and_its_sessions_chain() {
        let c = Cycle::new(1004, 100);
        assert_eq!((c.len(), c.stride), (100, 10));
        let mut seen = std::collections::HashSet::new();
        let mut m = c.order[0];
        for t in 0..100 {
            assert_eq!(m, c.order[t], "step {t}");
            assert!(seen.insert(m), "member {m} visited twice");
            let f = c.member_at(m * c.stride, 0).unwrap();
            assert_eq!(f.key.saddr, Cycle::host(m));
            m = c.next[m as usize];
            assert_eq!(f.to.saddr, Cycle::host(m));
            assert_eq!(
                (f.key.sport, f.to.sport, f.key.daddr, f.to.daddr),
                (CYCLE_PORT, CYCLE_PORT, CYCLE_SERVER.0, CYCLE_SERVER.0)
            );
        }
        assert_eq!(m, c.order[0], "the walk must close after every member");
        let members = (0..1000).filter(|&i| c.member_at(i, 0).is_some()).count();
        assert_eq!(members, 100);
        assert!(
            c.order.iter().copied().take(10).ne(0..10),
            "the order must be shuffled"
        );
    }

    fn size(n: u32, snat: Result<f64, &str>, new: f64) -> Result<SizeResult, String> {
        let m = |ns: f64| Measure {
            ns,
            note: Some(format!("{ns}")),
            rounds: vec![ns],
        };
        Ok(SizeResult {
            size: n,
            fill_secs: 1.0,
            cells: vec![
                (
                    (Case::EstablishedSnat, Hook::Tc),
                    snat.map(m).map_err(str::to_owned),
                ),
                ((Case::NewFlow, Hook::Tc), Ok(m(new))),
            ],
        })
    }

    #[test]
    fn rounds_fold_into_medians_and_any_failed_round_fails_the_cell() {
        let rounds = vec![
            vec![
                size(1000, Ok(200.0), 3000.0),
                size(1_000_000, Ok(210.0), 5000.0),
            ],
            vec![
                size(1000, Ok(150.0), 2000.0),
                size(1_000_000, Err("boom"), 4000.0),
            ],
            vec![
                size(1000, Ok(170.0), 2500.0),
                size(1_000_000, Ok(190.0), 4500.0),
            ],
        ];
        let sizes = combine(rounds, 2);
        let cell = |i: usize, c: Case| {
            let s = sizes[i].as_ref().unwrap();
            s.cells.iter().find(|(k, _)| k.0 == c).unwrap().1.clone()
        };
        let snat = cell(0, Case::EstablishedSnat).unwrap();
        assert_eq!(snat.ns, 170.0);
        assert_eq!(snat.rounds, vec![200.0, 150.0, 170.0]);
        assert_eq!(snat.note.as_deref(), Some("170"), "the last round's note");
        assert_eq!(cell(1, Case::EstablishedSnat).unwrap_err(), "boom");
        assert_eq!(cell(1, Case::NewFlow).unwrap().ns, 4500.0);
        assert_eq!(sizes[1].as_ref().unwrap().size, 1_000_000);

        let failed = combine(
            vec![
                vec![size(1000, Ok(1.0), 1.0)],
                vec![Err("no netns".to_owned())],
            ],
            1,
        );
        assert_eq!(failed[0].as_ref().unwrap_err(), "no netns");
    }
}
