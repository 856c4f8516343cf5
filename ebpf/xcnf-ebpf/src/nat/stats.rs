//! The global per-CPU NAT event counters (`nat_stats`).

use xcnf_common::nat::NatStats;

use crate::maps::NAT_STATS;

/// Adds one to the field `f` selects, on this CPU.
#[inline(always)]
pub fn bump(f: impl FnOnce(&mut NatStats) -> &mut u64) {
    if let Some(s) = NAT_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no other writer on this CPU during the run.
        *f(unsafe { &mut *s }) += 1;
    }
}
