//! The route cache: a session half keeps the FIB's answer for its translated
//! packets, so an established flow skips `bpf_fib_lookup`, a quarter of a
//! translated packet's cost. When an answer may be reused is decided by
//! `xcnf_common::nat::RouteCtl` (the agent's generation and an age bound).
//!
//! Only a resolved redirect to a managed interface for a packet of known
//! length is cached: an unresolved neighbour must go through
//! `bpf_redirect_neigh` until it resolves, every other answer hands the
//! packet to the kernel, and a GSO skb (no length to check) asks the FIB.
//!
//! Two CPUs may refresh the same half at once; a reader then sees one
//! answer's fields or the other's. Both answers are current by then, so the
//! only mix that matters is the moment a route changes, which moves traffic
//! anyway. The generation is written last so a half-written entry is not
//! taken as current on strongly ordered CPUs.

use xcnf_common::nat::Session;

use crate::{
    cache_ctl::CacheCtl,
    forward::{Action, Routed},
    iface,
};

/// A session half whose route may be cached, and the time of the packet.
#[derive(Clone, Copy)]
pub struct RouteSlot {
    pub s: *mut Session,
    /// `clock::Now::ms`.
    pub now_ms: u32,
}

impl RouteSlot {
    /// No session half: the route is looked up and not cached.
    #[inline(always)]
    pub fn none() -> Self {
        RouteSlot {
            s: core::ptr::null_mut(),
            now_ms: 0,
        }
    }
}

/// What a cached answer must match: the lookup's inputs that are not fixed
/// by the session half itself.
pub struct RouteKey {
    /// The ingress interface's counter slot (`IfaceConfig::slot`), which
    /// names it as well as its ifindex does in half the bytes: a slot moves
    /// to another interface only with a generation bump.
    pub islot: u16,
    pub tos: u8,
    /// The IPv4 total length the FIB checks against the MTU; 0 for a GSO
    /// skb, which is never served from the cache.
    pub tot_len: u16,
}

/// The cached answer for this packet, if it may be used.
#[inline(always)]
pub fn cached(slot: &RouteSlot, k: &RouteKey, ctl: CacheCtl) -> Option<Routed> {
    if slot.s.is_null() || k.tot_len == 0 {
        return None;
    }
    // SAFETY: a live map value of the session this packet hit.
    let s = unsafe { &*slot.s };
    // One combined test rather than a chain of branches: every branch here
    // would be a path the verifier walks the whole rewrite for again.
    let age = slot.now_ms.wrapping_sub(s.route_at_ms);
    let stale = u32::from(s.route_gen ^ ctl.generation as u16)
        | u32::from(s.route_islot ^ k.islot)
        | u32::from(s.route_tos ^ k.tos)
        | u32::from(k.tot_len > s.route_mtu)
        | u32::from(age >= ctl.max_age_ms)
        | u32::from(s.route_oif == 0);
    if stale != 0 {
        return None;
    }
    // The source MAC is the egress's own, as registered when the answer was
    // cached (see `remember`); an egress no longer managed is looked up.
    let out = iface::egress(s.route_oif, slot.now_ms, ctl);
    if !out.managed {
        return None;
    }
    Some(Routed {
        action: Action::Redirect {
            ifindex: s.route_oif,
            peer: out.peer,
        },
        smac: out.mac,
        dmac: s.route_dmac,
        smac_registered: true,
    })
}

/// Caches a fresh answer in the session half, if it is one to cache, under
/// the generation read before the FIB was asked (`ctl`): an answer the
/// agent's next bump may already have replaced must not be recorded under
/// the bumped generation.
#[inline(always)]
pub fn remember(slot: &RouteSlot, k: &RouteKey, r: &Routed, ctl: CacheCtl) {
    let Action::Redirect { ifindex, .. } = r.action else {
        return;
    };
    // The half keeps no source MAC, so only an answer whose source MAC a
    // hit can take from `IFACES` is kept (a MAC changed behind the agent's
    // back is not, until the agent registers it).
    if slot.s.is_null() || k.tot_len == 0 || !r.smac_registered {
        return;
    }
    if ctl.max_age_ms == 0 {
        return;
    }
    // SAFETY: a live map value of the session this packet hit.
    let s = unsafe { &mut *slot.s };
    // 16 bits of the generation: taking 65 536 bumps for the same value
    // needs them within `max_age_ms`, after which the entry is stale anyway.
    let generation = ctl.generation as u16;
    // The same answer as cached keeps the largest length it accepted, so
    // a flow of mixed sizes settles on its largest packets.
    let same = s.route_oif == ifindex
        && s.route_gen == generation
        && s.route_islot == k.islot
        && s.route_tos == k.tos
        && s.route_dmac == r.dmac;
    s.route_gen = generation.wrapping_sub(1);
    s.route_oif = ifindex;
    s.route_islot = k.islot;
    s.route_tos = k.tos;
    s.route_dmac = r.dmac;
    s.route_mtu = if same && s.route_mtu > k.tot_len {
        s.route_mtu
    } else {
        k.tot_len
    };
    s.route_at_ms = slot.now_ms;
    s.route_gen = generation;
}
