//! `route_ctl` as a packet sees it: read once, when the packet arrives, and
//! used by every cache the packet consults or fills (the per-CPU interface
//! cache in `iface.rs`, the session's route cache in `nat/route.rs`).
//!
//! Reading it before any lookup is what makes the caches safe against the
//! agent's changes: an answer looked up while the agent changes a route or
//! an interface map is recorded under the generation the agent's bump then
//! replaces, so it is never taken as current afterwards. One read per packet
//! also keeps all its decisions on one snapshot.

use crate::maps::ROUTE_CTL;

/// The snapshot (see `xcnf_common::nat::RouteCtl`).
#[derive(Clone, Copy)]
pub struct CacheCtl {
    pub generation: u32,
    /// 0: the caches are off.
    pub max_age_ms: u32,
}

/// Reads `route_ctl`; without its entry the caches are off.
#[inline(always)]
pub fn read() -> CacheCtl {
    match ROUTE_CTL.get_ptr(0) {
        // SAFETY: a live map value. Volatile, so the reads stay here, before
        // the lookups whose answers are recorded under this generation.
        Some(c) => unsafe {
            CacheCtl {
                generation: core::ptr::read_volatile(&raw const (*c).generation),
                max_age_ms: core::ptr::read_volatile(&raw const (*c).max_age_ms),
            }
        },
        None => CacheCtl {
            generation: 0,
            max_age_ms: 0,
        },
    }
}
