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
pub mod session;
pub mod stats;

use aya_ebpf::cty::c_void;
use xcnf_common::nat::{
    BindingKey, FragKey, FragXlate, NatConfig, StaticKey, StaticMapping, config_flags, kind, role,
    static_flags,
};

use crate::{
    counters::Drop,
    fib::{self, Route},
    maps::{IFACES, NAT_ADDRS, NAT_BINDINGS, NAT_CONFIG, NAT_FRAGS, NAT_STATIC},
    nat::{
        parse::{Frag, L4, Parsed, Tuple},
        session::{Created, NewSession},
    },
};

/// What the translator decided.
pub enum Decision {
    /// Not NAT traffic (or exempt): forward as plain IPv4.
    Plain,
    /// Rewrite to `to` (and an ICMP error's quote to `inner`). `outbound`
    /// says the packet came from inside, which decides what happens when the
    /// translated packet cannot be redirected.
    Translate {
        to: Tuple,
        inner: Option<Tuple>,
        outbound: bool,
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
    /// The FIB's answer for `t` as it stands, before any translation.
    #[inline(always)]
    fn route(&self, t: &Tuple) -> Route {
        fib::lookup_v4(
            self.ctx,
            self.ifindex,
            self.tos,
            t.proto,
            self.tot_len,
            t.saddr,
            t.daddr,
        )
    }

    /// Role of the interface the FIB sends `t` out of, if it is forwarded.
    #[inline(always)]
    fn egress_role(&self, t: &Tuple) -> Option<u8> {
        let out = match self.route(t) {
            Route::Resolved { ifindex, .. } | Route::NoNeigh { ifindex, .. } => ifindex,
            _ => return None,
        };
        // SAFETY: a live map value, read once.
        IFACES.get_ptr(out).map(|c| unsafe { (*c).role })
    }

    #[inline(always)]
    fn is_local(&self, t: &Tuple) -> bool {
        matches!(self.route(t), Route::NotForwarded)
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
/// interface of role `dir` (inside or outside).
#[inline(always)]
pub fn decide(cfg: &NatConfig, dir: u8, pk: &Parsed, len: u64, fib: &FibQuery) -> Decision {
    let outbound = dir == role::INSIDE;
    let t = &pk.tuple;
    let seen = session::seen_bits(pk.l4, pk.tcp_flags);

    if pk.frag == Frag::Later {
        return later_fragment(dir, pk, fib);
    }
    if pk.l4 == L4::IcmpError {
        return icmp_error(dir, pk, fib);
    }

    if let Some(to) = session::hit(&session::key(t, dir), seen, len) {
        count_translated(outbound);
        return translated(pk, dir, to, None, outbound);
    }

    if outbound {
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
fn translated(pk: &Parsed, dir: u8, to: Tuple, inner: Option<Tuple>, outbound: bool) -> Decision {
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
        inner,
        outbound,
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
fn needs_nat(outbound: bool, t: &Tuple, fib: &FibQuery) -> bool {
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
            inner: None,
            outbound,
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
fn icmp_error(dir: u8, pk: &Parsed, fib: &FibQuery) -> Decision {
    let outbound = dir == role::INSIDE;
    let found = pk.inner.and_then(|q| {
        let qt = &q.tuple;
        let reply = Tuple {
            saddr: qt.daddr,
            daddr: qt.saddr,
            sport: qt.dport,
            dport: qt.sport,
            proto: qt.proto,
        };
        session::hit_quiet(&session::key(&reply, dir)).map(|r| (q, r))
    });
    let Some((q, r)) = found else {
        // Not ours to translate: like any packet to its destination.
        if needs_nat(outbound, &pk.tuple, fib) {
            stats::bump(|s| &mut s.icmp_error_unmatched);
            return Decision::Drop(Drop::NatNoMapping);
        }
        return Decision::Plain;
    };
    let qt = &q.tuple;
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
    Decision::Translate {
        to,
        inner: Some(inner),
        outbound,
    }
}

/// Looks up a static mapping: port-specific first, then the protocol's
/// address-only mapping (how ICMP mappings are keyed), then address-only
/// for any protocol.
#[inline(always)]
fn static_lookup(addr: [u8; 4], port: u16, proto: u8, dir: u8) -> Option<StaticMapping> {
    let keys = [(port, proto), (0, proto), (0, 0)];
    for (port, proto) in keys {
        let k = StaticKey {
            addr,
            port,
            proto,
            dir,
        };
        if let Some(m) = NAT_STATIC.get_ptr(&k) {
            // SAFETY: a live map value, copied out.
            return Some(unsafe { *m });
        }
    }
    None
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
    if let Some(m) = local
        && m.flags & static_flags::IDENTITY != 0
    {
        stats::bump(|s| &mut s.identity);
        return Decision::Plain;
    }

    // Hairpinning (RFC 4787 REQ-9): the destination is the external
    // endpoint of another inside host.
    let mut to = *t;
    let mut hairpin = false;
    if let Some(m) = static_lookup(t.daddr, t.dport, t.proto, role::OUTSIDE) {
        if m.flags & static_flags::IDENTITY == 0 {
            (to.daddr, to.dport) = mapped(&m, t.dport);
            hairpin = true;
        }
    } else if ports && cfg.flags & config_flags::ENDPOINT_DEPENDENT == 0 {
        let k = BindingKey {
            addr: t.daddr,
            port: t.dport,
            proto: t.proto,
            dir: role::OUTSIDE,
        };
        if let Some(b) = NAT_BINDINGS.get_ptr(&k) {
            // SAFETY: a live map value.
            let b = unsafe { *b };
            to.daddr = b.addr;
            to.dport = b.port;
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

    let peer_dir = if hairpin { role::INSIDE } else { role::OUTSIDE };
    let mut kind_bits = if hairpin { kind::HAIRPIN } else { 0 };
    let mut n = NewSession {
        orig: *t,
        dir: role::INSIDE,
        to,
        peer_dir,
        kind: 0,
        seen,
        len,
    };
    let now = session::now();
    let reply_reserved = if let Some(m) = local {
        (n.to.saddr, n.to.sport) = mapped(&m, t.sport);
        kind_bits |= kind::STATIC_SNAT;
        false
    } else {
        let Some(pool) = alloc::paired(cfg, t.saddr) else {
            // No pool: dynamic translation is not configured.
            return if hairpin {
                Decision::Drop(Drop::NatNoMapping)
            } else {
                Decision::Plain
            };
        };
        kind_bits |= if ports { kind::SNAT } else { kind::ADDR_ONLY };
        n.kind = kind_bits;
        let snat = if ports && cfg.flags & config_flags::ENDPOINT_DEPENDENT == 0 {
            alloc::eim(&pool, t, now)
        } else {
            alloc::by_reply_half(&pool, &n, now, ports)
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
    finish(pk, &n, reply_reserved)
}

#[inline(always)]
fn new_inbound(cfg: &NatConfig, pk: &Parsed, seen: u8, len: u64, fib: &FibQuery) -> Decision {
    let t = &pk.tuple;
    let ports = has_ports(pk.l4);
    let dst_port = if ports { t.dport } else { 0 };
    // Only a packet that can open a flow is mapped: an echo reply or error
    // without a session is not a new flow.
    if pk.l4 != L4::EchoReply
        && let Some(m) = static_lookup(t.daddr, dst_port, t.proto, role::OUTSIDE)
    {
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
        let n = NewSession {
            orig: *t,
            dir: role::OUTSIDE,
            to,
            peer_dir: role::INSIDE,
            kind: kind::DNAT,
            seen,
            len,
        };
        return finish(pk, &n, false);
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
            translated(pk, n.dir, n.to, None, outbound)
        }
        Created::Raced(to) => {
            count_translated(outbound);
            translated(pk, n.dir, to, None, outbound)
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
