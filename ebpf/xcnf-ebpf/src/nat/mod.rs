//! NAT44: deciding the translation of a packet. The behaviour is specified in
//! `docs/nat44.md`; map layouts are in `xcnf_common::nat`.
//!
//! The decision is made before anything is written: [`decide`] returns the
//! tuple to translate to, the hook asks the FIB where the translated packet
//! goes, and only then is the packet rewritten (`rewrite.rs`). So a packet
//! the kernel has to see (TTL, MTU, no route) can still be handed over as it
//! arrived, and the kernel's ICMP error quotes what the sender sent.

pub mod alloc;
pub mod arp;
pub mod parse;
pub mod rewrite;
pub mod route;
pub mod session;
pub mod slow;
pub mod stats;

use aya_ebpf::cty::c_void;
use xcnf_common::nat::{
    BindingKey, FragKey, FragXlate, NatConfig, StaticKey, StaticMapping, config_flags, kind, role,
    static_flags,
};

use crate::{
    clock::Now,
    counters::Drop,
    fib::{self, Route},
    headers::IPV4_HLEN,
    maps::{IFACES, NAT_ADDRS, NAT_BINDINGS, NAT_CONFIG, NAT_FRAGS, NAT_STATIC},
    nat::{
        parse::{Frag, L4, Parsed, Tuple},
        route::RouteSlot,
        session::{Created, NewSession},
        slow::SlowCall,
    },
};

/// What the translator decided.
pub enum Decision {
    /// Not NAT traffic (or exempt): forward as plain IPv4.
    Plain,
    /// Rewrite to `to` (and an ICMP error's quote to what [`slow::quoted`]
    /// returns). `outbound` says the packet came from inside, which decides
    /// what happens when the translated packet cannot be redirected.
    Translate {
        to: Tuple,
        outbound: bool,
        /// The established session half, whose route cache applies.
        route: RouteSlot,
        /// An ICMP error whose quote the global function translated: only
        /// then is the quote's translation read back at rewrite time. A
        /// constant `false` everywhere else, so the verifier does not walk
        /// the quote's rewrite for established packets, and they skip the
        /// scratch map's lookup.
        quoted: bool,
    },
    Drop(Drop),
}

/// The FIB facts a new flow needs: the route's egress, for its role.
pub struct FibQuery {
    pub ctx: *mut c_void,
    pub ifindex: u32,
    pub tos: u8,
    pub tot_len: u16,
}

impl FibQuery {
    /// The FIB's answer for `t` as it stands, before any translation, for a
    /// packet of `tot_len` bytes.
    #[inline(always)]
    fn route(&self, t: &Tuple, tot_len: u16) -> Route {
        fib::lookup_v4(
            self.ctx,
            self.ifindex,
            self.tos,
            t.proto,
            tot_len,
            t.saddr,
            t.daddr,
        )
    }

    /// Role of the interface the FIB sends `t` out of, if it is forwarded.
    ///
    /// Asked with the length of a bare header: only the egress matters here,
    /// and a packet over its MTU has one too (the FIB reports frag-needed
    /// without it). Whether the translated packet fits is decided when it
    /// is routed, where one without DF is translated and left to the kernel
    /// to fragment (`ipv4.rs`).
    #[inline(always)]
    pub fn egress_role(&self, t: &Tuple) -> Option<u8> {
        let out = match self.route(t, IPV4_HLEN as u16) {
            Route::Resolved { ifindex, .. } | Route::NoNeigh { ifindex, .. } => ifindex,
            _ => return None,
        };
        // SAFETY: a live map value, read once.
        IFACES.get_ptr(out).map(|c| unsafe { (*c).role })
    }

    #[inline(always)]
    pub fn is_local(&self, t: &Tuple) -> bool {
        matches!(self.route(t, self.tot_len), Route::NotForwarded)
    }
}

/// The NAT configuration if NAT44 is on.
#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    let c = NAT_CONFIG.get(0)?;
    if c.flags & config_flags::ENABLED == 0 {
        None
    } else {
        Some(c)
    }
}

/// Decides the translation of a validated IPv4 packet that arrived on an
/// interface of role `dir` (inside or outside). The common case, a packet of
/// an established session, is decided here; the rest goes to the hook's
/// global function (`slow.rs`).
#[inline(always)]
pub fn decide<S: SlowCall>(
    s: &S,
    dir: u8,
    pk: &Parsed,
    len: u64,
    fib: &FibQuery,
    now: Now,
) -> Decision {
    if pk.frag == Frag::Later {
        return later_fragment(dir, pk, fib);
    }
    if pk.l4 != L4::IcmpError {
        let seen = session::seen_bits(pk.l4, pk.tcp_flags);
        let opening = session::opening(pk.l4, pk.tcp_flags);
        if let Some(h) = session::hit(&session::key(&pk.tuple, dir), seen, opening, len, now) {
            let outbound = dir == role::INSIDE;
            count_translated(outbound);
            return translated(pk, dir, h.to, outbound, h.route);
        }
    }
    slow::decide(s, dir, pk, len, fib).unwrap_or(Decision::Drop(Drop::Malformed))
}

/// The decisions behind the global function: an ICMP error's session, or a
/// packet without a session, which may open one. A translated ICMP error's
/// quote goes to `quoted`.
#[inline(always)]
pub fn decide_slow(
    cfg: &NatConfig,
    dir: u8,
    pk: &Parsed,
    len: u64,
    fib: &FibQuery,
    quoted: &mut Tuple,
) -> Decision {
    if pk.l4 == L4::IcmpError {
        return icmp_error(dir, pk, fib, quoted);
    }
    let seen = session::seen_bits(pk.l4, pk.tcp_flags);
    if dir == role::INSIDE {
        new_outbound(cfg, pk, seen, len, fib)
    } else {
        new_inbound(cfg, pk, seen, len, fib)
    }
}

#[inline(always)]
fn count_translated(outbound: bool) {
    if outbound {
        stats::bump(|s| &mut s.translated_from_inside);
    } else {
        stats::bump(|s| &mut s.translated_from_outside);
    }
}

/// A translation decision; a first fragment also leaves a record for the
/// datagram's later fragments, which carry no ports.
#[inline(always)]
fn translated(pk: &Parsed, dir: u8, to: Tuple, outbound: bool, route: RouteSlot) -> Decision {
    if pk.frag == Frag::First {
        let k = frag_key(pk, dir);
        let v = FragXlate {
            saddr: to.saddr,
            daddr: to.daddr,
        };
        // Best effort: without the record the later fragments are dropped
        // and counted, never forwarded untranslated.
        let _ = NAT_FRAGS.insert(&k, &v, 0);
    }
    Decision::Translate {
        to,
        outbound,
        route,
        quoted: false,
    }
}

#[inline(always)]
fn frag_key(pk: &Parsed, dir: u8) -> FragKey {
    FragKey {
        saddr: pk.tuple.saddr,
        daddr: pk.tuple.daddr,
        id: pk.ip_id,
        proto: pk.tuple.proto,
        dir,
    }
}

/// Whether a packet that matched no session is NAT traffic, which must not
/// pass untranslated: from inside, it would leave through an outside
/// interface; from outside, it is for a NAT address the CNF does not own.
#[inline(always)]
pub fn needs_nat(outbound: bool, t: &Tuple, fib: &FibQuery) -> bool {
    if outbound {
        fib.egress_role(t) == Some(role::OUTSIDE)
    } else {
        NAT_ADDRS.get_ptr(&t.daddr).is_some() && !fib.is_local(t)
    }
}

#[inline(always)]
fn later_fragment(dir: u8, pk: &Parsed, fib: &FibQuery) -> Decision {
    let outbound = dir == role::INSIDE;
    if let Some(x) = NAT_FRAGS.get_ptr(&frag_key(pk, dir)) {
        // SAFETY: a live map value.
        let x = unsafe { *x };
        stats::bump(|s| &mut s.fragments_translated);
        count_translated(outbound);
        let mut to = pk.tuple;
        to.saddr = x.saddr;
        to.daddr = x.daddr;
        return Decision::Translate {
            to,
            outbound,
            route: RouteSlot::none(),
            quoted: false,
        };
    }
    if needs_nat(outbound, &pk.tuple, fib) {
        stats::bump(|s| &mut s.fragment_untracked);
        Decision::Drop(Drop::NatFragmentUntracked)
    } else {
        Decision::Plain
    }
}

/// RFC 5508: an ICMP error belongs to the session a reply to the packet it
/// quotes would hit, on the interface the error arrived on.
#[inline(always)]
fn icmp_error(dir: u8, pk: &Parsed, fib: &FibQuery, quoted: &mut Tuple) -> Decision {
    let outbound = dir == role::INSIDE;
    // Early returns rather than `Option` combinators: a combined `Option`
    // carries an undefined payload on its `None` path, which LLVM may copy
    // from a register a helper call clobbered; the verifier refuses that.
    let Some(q) = pk.inner else {
        return icmp_error_unmatched(outbound, pk, fib);
    };
    let qt = &q.tuple;
    let reply = Tuple {
        saddr: qt.daddr,
        daddr: qt.saddr,
        sport: qt.dport,
        dport: qt.sport,
        proto: qt.proto,
    };
    let Some(r) = session::hit_quiet(&session::key(&reply, dir)) else {
        return icmp_error_unmatched(outbound, pk, fib);
    };
    // `r` is what a reply would become; the quote is that reply's
    // counterpart, so it becomes `r` swapped.
    let inner = Tuple {
        saddr: r.daddr,
        daddr: r.saddr,
        sport: r.dport,
        dport: r.sport,
        proto: qt.proto,
    };
    let mut to = pk.tuple;
    if to.daddr == qt.saddr {
        to.daddr = inner.saddr;
    }
    if to.saddr == qt.daddr {
        to.saddr = inner.daddr;
    }
    stats::bump(|s| &mut s.icmp_errors_translated);
    count_translated(outbound);
    *quoted = inner;
    Decision::Translate {
        to,
        outbound,
        route: RouteSlot::none(),
        // Read back by the caller through `slow::decide`, which sets it
        // from the packet again.
        quoted: true,
    }
}

/// A static-mapping lookup result. A struct rather than an `Option`: LLVM
/// moves an absent `Option`'s undefined payload around in registers a helper
/// call has clobbered, which the verifier rightly refuses.
#[derive(Clone, Copy)]
struct StaticHit {
    found: bool,
    m: StaticMapping,
}

/// An ICMP error that belongs to no session: like any packet to its
/// destination, unless it would pass untranslated where NAT applies.
#[inline(always)]
fn icmp_error_unmatched(outbound: bool, pk: &Parsed, fib: &FibQuery) -> Decision {
    if needs_nat(outbound, &pk.tuple, fib) {
        stats::bump(|s| &mut s.icmp_error_unmatched);
        return Decision::Drop(Drop::NatNoMapping);
    }
    Decision::Plain
}

/// Looks up a static mapping: port-specific first, then the protocol's
/// address-only mapping (how ICMP mappings are keyed), then address-only
/// for any protocol.
#[inline(always)]
fn static_lookup(addr: [u8; 4], port: u16, proto: u8, dir: u8) -> StaticHit {
    let hit = static_get(addr, port, proto, dir);
    if hit.found {
        return hit;
    }
    let hit = static_get(addr, 0, proto, dir);
    if hit.found {
        return hit;
    }
    static_get(addr, 0, 0, dir)
}

/// One key of [`static_lookup`]'s order.
#[inline(always)]
fn static_get(addr: [u8; 4], port: u16, proto: u8, dir: u8) -> StaticHit {
    let k = StaticKey {
        addr,
        port,
        proto,
        dir,
    };
    match NAT_STATIC.get_ptr(&k) {
        Some(m) => StaticHit {
            found: true,
            // SAFETY: a live map value, copied out.
            m: unsafe { *m },
        },
        None => StaticHit {
            found: false,
            m: StaticMapping::default(),
        },
    }
}

/// Whether `t` has ports (TCP, UDP, ICMP echo) as opposed to address-only.
#[inline(always)]
fn has_ports(l4: L4) -> bool {
    matches!(l4, L4::Tcp | L4::Udp | L4::EchoRequest | L4::EchoReply)
}

/// Applies a mapping's endpoint to one side of a tuple: address-only
/// mappings keep the port.
#[inline(always)]
fn mapped(m: &StaticMapping, port: u16) -> ([u8; 4], u16) {
    (m.addr, if m.port == 0 { port } else { m.port })
}

#[inline(always)]
fn new_outbound(cfg: &NatConfig, pk: &Parsed, seen: u8, len: u64, fib: &FibQuery) -> Decision {
    let t = &pk.tuple;
    let ports = has_ports(pk.l4);
    // The inside endpoint's own port: an echo request's identifier is its
    // source "port"; other ICMP and port-less protocols have none.
    let src_port = if ports { t.sport } else { 0 };

    if pk.l4 == L4::EchoReply {
        // A reply without a session answers nothing this NAT sent in.
        if fib.egress_role(t) == Some(role::OUTSIDE) {
            stats::bump(|s| &mut s.no_mapping);
            return Decision::Drop(Drop::NatNoMapping);
        }
        return Decision::Plain;
    }

    let local = static_lookup(t.saddr, src_port, t.proto, role::INSIDE);
    if local.found && local.m.flags & static_flags::IDENTITY != 0 {
        stats::bump(|s| &mut s.identity);
        return Decision::Plain;
    }

    // The flow is described in place (see `session::flow`); its peer and
    // kind are settled below.
    let Some(n) = session::flow(t, role::INSIDE, t, role::OUTSIDE, 0, seen, len) else {
        return Decision::Drop(Drop::NatTableFull);
    };
    // Hairpinning (RFC 4787 REQ-9): the destination is the external
    // endpoint of another inside host. Every such endpoint's address is in
    // `nat_addrs`, a small map, so ordinary traffic skips the static and
    // binding lookups (the binding table is as large as the session table,
    // and a lookup there is cache misses when it is).
    let mut hairpin = false;
    let ours = NAT_ADDRS.get_ptr(&t.daddr).is_some();
    let ext = if ours {
        static_lookup(t.daddr, t.dport, t.proto, role::OUTSIDE)
    } else {
        StaticHit {
            found: false,
            m: StaticMapping::default(),
        }
    };
    if ext.found {
        let m = ext.m;
        if m.flags & static_flags::IDENTITY == 0 {
            (n.to.daddr, n.to.dport) = mapped(&m, t.dport);
            hairpin = true;
        }
    } else if ours && ports && cfg.flags & config_flags::ENDPOINT_DEPENDENT == 0 {
        let k = BindingKey {
            addr: t.daddr,
            port: t.dport,
            proto: t.proto,
            dir: role::OUTSIDE,
        };
        if let Some(b) = NAT_BINDINGS.get_ptr(&k) {
            // SAFETY: a live map value.
            let b = unsafe { *b };
            n.to.daddr = b.addr;
            n.to.dport = b.port;
            hairpin = true;
        }
    }
    if !hairpin && fib.egress_role(t) != Some(role::OUTSIDE) {
        return Decision::Plain;
    }
    if !session::admit(cfg.max_sessions) {
        stats::bump(|s| &mut s.table_full);
        return Decision::Drop(Drop::NatTableFull);
    }

    if hairpin {
        n.peer_dir = role::INSIDE;
    }
    let mut kind_bits = if hairpin { kind::HAIRPIN } else { 0 };
    let now = crate::clock::now();
    let reply_reserved = if local.found {
        (n.to.saddr, n.to.sport) = mapped(&local.m, t.sport);
        kind_bits |= kind::STATIC_SNAT;
        false
    } else {
        let pool = match alloc::paired(cfg, t.saddr, now.s) {
            Ok(p) => p,
            // No pool: dynamic translation is not configured.
            Err(alloc::Unpaired::NoPool) => {
                return if hairpin {
                    Decision::Drop(Drop::NatNoMapping)
                } else {
                    Decision::Plain
                };
            }
            // A new host and `nat_hosts` full: refused like a full session
            // table, never sent on untranslated.
            Err(alloc::Unpaired::Full) => {
                stats::bump(|s| &mut s.table_full);
                return Decision::Drop(Drop::NatTableFull);
            }
            Err(alloc::Unpaired::NoRange) => {
                stats::bump(|s| &mut s.no_mapping);
                return Decision::Drop(Drop::NatNoMapping);
            }
        };
        kind_bits |= if ports { kind::SNAT } else { kind::ADDR_ONLY };
        n.kind = kind_bits;
        let snat = if ports && cfg.flags & config_flags::ENDPOINT_DEPENDENT == 0 {
            alloc::eim(&pool, t, now.ns)
        } else {
            alloc::by_reply_half(&pool, n, now, ports)
        };
        if !snat.ok {
            stats::bump(|s| &mut s.pool_exhausted);
            return Decision::Drop(Drop::NatPoolExhausted);
        }
        n.to.saddr = snat.addr;
        if ports {
            n.to.sport = snat.port;
        }
        snat.reply_reserved
    };
    n.kind = kind_bits;
    finish(pk, n, reply_reserved)
}

#[inline(always)]
fn new_inbound(cfg: &NatConfig, pk: &Parsed, seen: u8, len: u64, fib: &FibQuery) -> Decision {
    let t = &pk.tuple;
    let ports = has_ports(pk.l4);
    let dst_port = if ports { t.dport } else { 0 };
    // Only a packet that can open a flow is mapped: an echo reply or error
    // without a session is not a new flow.
    let ext = if pk.l4 == L4::EchoReply {
        StaticHit {
            found: false,
            m: StaticMapping::default(),
        }
    } else {
        static_lookup(t.daddr, dst_port, t.proto, role::OUTSIDE)
    };
    if ext.found {
        let m = ext.m;
        if m.flags & static_flags::IDENTITY != 0 {
            stats::bump(|s| &mut s.identity);
            return Decision::Plain;
        }
        if !session::admit(cfg.max_sessions) {
            stats::bump(|s| &mut s.table_full);
            return Decision::Drop(Drop::NatTableFull);
        }
        let mut to = *t;
        (to.daddr, to.dport) = mapped(&m, t.dport);
        let Some(n) = session::flow(t, role::OUTSIDE, &to, role::INSIDE, kind::DNAT, seen, len)
        else {
            return Decision::Drop(Drop::NatTableFull);
        };
        return finish(pk, n, false);
    }
    if needs_nat(false, t, fib) {
        stats::bump(|s| &mut s.no_mapping);
        return Decision::Drop(Drop::NatNoMapping);
    }
    Decision::Plain
}

#[inline(always)]
fn finish(pk: &Parsed, n: &NewSession, reply_reserved: bool) -> Decision {
    let outbound = n.dir == role::INSIDE;
    match session::create(n, reply_reserved) {
        Created::New => {
            let k = n.kind;
            if k & kind::HAIRPIN != 0 {
                stats::bump(|s| &mut s.hairpin_sessions);
            } else if k & kind::DNAT != 0 {
                stats::bump(|s| &mut s.dnat_sessions);
            } else if k & kind::STATIC_SNAT != 0 {
                stats::bump(|s| &mut s.static_snat_sessions);
            } else if k & kind::ADDR_ONLY != 0 {
                stats::bump(|s| &mut s.addr_only_sessions);
            } else {
                stats::bump(|s| &mut s.snat_sessions);
            }
            count_translated(outbound);
            translated(pk, n.dir, n.to, outbound, RouteSlot::none())
        }
        Created::Raced(to) => {
            count_translated(outbound);
            translated(pk, n.dir, to, outbound, RouteSlot::none())
        }
        Created::Conflict => {
            if n.kind & (kind::SNAT | kind::ADDR_ONLY) != 0 {
                stats::bump(|s| &mut s.pool_exhausted);
                Decision::Drop(Drop::NatPoolExhausted)
            } else {
                stats::bump(|s| &mut s.no_mapping);
                Decision::Drop(Drop::NatNoMapping)
            }
        }
    }
}
