//! The interface a packet arrived on, as both hooks see it first.
//!
//! Every packet needs its ingress interface's `IFACES` entry (role, MAC,
//! counter slot). `IFACES` is a hash keyed by ifindex, and a hash lookup is
//! a chain of kernel calls, so each CPU keeps the entries it used last in a
//! small direct-mapped cache (`IF_CACHE`, indexed by the low bits of the
//! ifindex), whose lookup the verifier inlines. An entry is used only while
//! `route_ctl`'s generation is the one it was read under and it is younger
//! than `route_ctl.max_age_ms` (the packet's snapshot, `cache_ctl.rs`): the
//! agent moves the generation after every change to its interface maps, as
//! it does for routes. With the cache off (`max_age_ms` 0, a fresh map
//! without an agent) every packet reads `IFACES`.

use core::ptr::NonNull;

use xcnf_common::{IfCounters, IfaceConfig, iface::flags};

use crate::{
    cache_ctl::CacheCtl,
    counters,
    maps::{IF_CACHE, IFACES},
};

/// Entries per CPU; a power of two (the index is a mask of the ifindex).
pub const IF_CACHE_ENTRIES: u32 = 16;

/// One cached `IFACES` entry.
#[repr(C)]
pub struct CachedIf {
    ifindex: u32,
    /// `route_ctl.generation` before the entry was read.
    generation: u32,
    /// `clock::Now::ms` when it was read.
    at_ms: u32,
    cfg: IfaceConfig,
}

/// What the agent registered for the ingress interface.
pub struct IngressIf {
    /// Whether the interface is in `IFACES` at all.
    pub managed: bool,
    /// Its NAT44 role (`role::NONE` when unmanaged).
    pub role: u8,
    pub mac: [u8; 6],
    /// Its `IfaceConfig::slot` (0 when unmanaged): below
    /// `xcnf_common::maps::MAX_IFACES`, so it fits the route cache's 16 bits.
    pub slot: u16,
    /// This CPU's counters of the interface; `None` when unmanaged.
    pub counters: Option<NonNull<IfCounters>>,
}

#[inline(always)]
fn registered(cfg: &IfaceConfig) -> IngressIf {
    IngressIf {
        managed: true,
        role: cfg.role,
        mac: cfg.mac,
        slot: cfg.slot as u16,
        counters: counters::slot(cfg.slot),
    }
}

/// An `IFACES` lookup's result. A struct rather than an `Option`, whose
/// undefined payload on `None` LLVM would move through clobbered registers.
#[derive(Clone, Copy)]
struct Found {
    found: bool,
    cfg: IfaceConfig,
}

/// `ifindex`'s `IFACES` entry, from this CPU's cache when it is current
/// under `ctl` (read before this lookup, see `cache_ctl.rs`).
#[inline(always)]
fn get(ifindex: u32, now_ms: u32, ctl: CacheCtl) -> Found {
    let CacheCtl {
        generation,
        max_age_ms,
    } = ctl;
    let e = IF_CACHE.get_ptr_mut(ifindex & (IF_CACHE_ENTRIES - 1));
    if let Some(e) = e {
        // SAFETY: this CPU's cache entry; no other run uses it meanwhile.
        let e = unsafe { &*e };
        if e.ifindex == ifindex
            && e.generation == generation
            && now_ms.wrapping_sub(e.at_ms) < max_age_ms
        {
            return Found {
                found: true,
                cfg: e.cfg,
            };
        }
    }
    match IFACES.get_ptr(ifindex) {
        Some(cfg) => {
            // SAFETY: a live map value, copied out.
            let cfg = unsafe { *cfg };
            if let Some(e) = e {
                // SAFETY: as above.
                let e = unsafe { &mut *e };
                e.ifindex = ifindex;
                e.generation = generation;
                e.at_ms = now_ms;
                e.cfg = cfg;
            }
            Found { found: true, cfg }
        }
        None => Found {
            found: false,
            cfg: IfaceConfig::default(),
        },
    }
}

/// The ingress interface's entry.
#[inline(always)]
pub fn ingress(ifindex: u32, now_ms: u32, ctl: CacheCtl) -> IngressIf {
    let f = get(ifindex, now_ms, ctl);
    if f.found {
        registered(&f.cfg)
    } else {
        IngressIf {
            managed: false,
            role: xcnf_common::nat::role::NONE,
            mac: [0; 6],
            slot: 0,
            counters: None,
        }
    }
}

/// An egress as `IFACES` has it. A struct rather than an `Option`, as
/// [`Found`] is.
#[derive(Clone, Copy)]
pub struct Egress {
    /// Whether it is managed: a valid egress.
    pub managed: bool,
    /// Its registered MAC, the source of what is redirected out of it.
    pub mac: [u8; 6],
    /// Its `PEER_REDIRECT` flag (see [`peer_redirect`]).
    pub peer: u32,
}

#[inline(always)]
pub fn egress(ifindex: u32, now_ms: u32, ctl: CacheCtl) -> Egress {
    let f = get(ifindex, now_ms, ctl);
    Egress {
        managed: f.found,
        mac: f.cfg.mac,
        peer: u32::from(f.cfg.flags & flags::PEER_REDIRECT != 0),
    }
}

/// Whether a redirect to `ifindex` goes to its peer (TC ingress only; see
/// `xcnf_common::iface::flags::PEER_REDIRECT`).
#[inline(always)]
pub fn peer_redirect(ifindex: u32, now_ms: u32, ctl: CacheCtl) -> bool {
    let e = egress(ifindex, now_ms, ctl);
    e.managed && e.peer != 0
}
