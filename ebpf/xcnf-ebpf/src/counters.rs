//! Counting helpers: one `rx` increment per packet, then exactly one outcome.

use core::ptr::NonNull;

use xcnf_common::{DropReasons, IfCounters, PassReasons};

use crate::maps::COUNTERS;

/// Why a packet went to the kernel.
#[derive(Clone, Copy)]
pub enum Pass {
    NotIpv4,
    NotForUs,
    IpOptions,
    TtlExpired,
    NotForwarded,
    NoRoute,
    FwdDisabled,
    FragNeeded,
    NoNeigh,
    UnmanagedEgress,
    Other,
}

/// Why a packet was dropped.
#[derive(Clone, Copy)]
pub enum Drop {
    Malformed,
    Blackhole,
    RedirectFailed,
    NatNoMapping,
    NatPoolExhausted,
    NatTableFull,
    NatFragmentUntracked,
    NatUnroutable,
    NatIpOptions,
}

/// The counters at `slot` (an interface's `IfaceConfig::slot`) on this CPU;
/// `None` only for a slot past the array, which the agent never assigns.
///
/// `NonNull`, not `*mut`: `Option<*mut T>` carries a separate tag and an
/// undefined payload when `None`, which LLVM spills from a register a
/// helper call clobbered, and the verifier refuses.
#[inline(always)]
pub fn slot(slot: u32) -> Option<NonNull<IfCounters>> {
    COUNTERS.get_ptr_mut(slot).and_then(NonNull::new)
}

#[inline(always)]
pub fn rx(c: Option<NonNull<IfCounters>>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: per-CPU map value, valid for this program run, no other writer on this CPU.
        let c = unsafe { &mut *c.as_ptr() };
        c.rx.packets += 1;
        c.rx.bytes += bytes;
    }
}

#[inline(always)]
pub fn forwarded(c: Option<NonNull<IfCounters>>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let c = unsafe { &mut *c.as_ptr() };
        c.forwarded.packets += 1;
        c.forwarded.bytes += bytes;
    }
}

#[inline(always)]
pub fn passed(c: Option<NonNull<IfCounters>>, why: Pass) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let p: &mut PassReasons = unsafe { &mut (*c.as_ptr()).passed };
        let f = match why {
            Pass::NotIpv4 => &mut p.not_ipv4,
            Pass::NotForUs => &mut p.not_for_us,
            Pass::IpOptions => &mut p.ip_options,
            Pass::TtlExpired => &mut p.ttl_expired,
            Pass::NotForwarded => &mut p.not_forwarded,
            Pass::NoRoute => &mut p.no_route,
            Pass::FwdDisabled => &mut p.fwd_disabled,
            Pass::FragNeeded => &mut p.frag_needed,
            Pass::NoNeigh => &mut p.no_neigh,
            Pass::UnmanagedEgress => &mut p.unmanaged_egress,
            Pass::Other => &mut p.other,
        };
        *f += 1;
    }
}

#[inline(always)]
pub fn dropped(c: Option<NonNull<IfCounters>>, why: Drop) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let d: &mut DropReasons = unsafe { &mut (*c.as_ptr()).dropped };
        let f = match why {
            Drop::Malformed => &mut d.malformed,
            Drop::Blackhole => &mut d.blackhole,
            Drop::RedirectFailed => &mut d.redirect_failed,
            Drop::NatNoMapping => &mut d.nat_no_mapping,
            Drop::NatPoolExhausted => &mut d.nat_pool_exhausted,
            Drop::NatTableFull => &mut d.nat_table_full,
            Drop::NatFragmentUntracked => &mut d.nat_fragment_untracked,
            Drop::NatUnroutable => &mut d.nat_unroutable,
            Drop::NatIpOptions => &mut d.nat_ip_options,
        };
        *f += 1;
    }
}
