//! Counting helpers: one `rx` increment per packet, then exactly one outcome.

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
}

/// The counters of one interface on this CPU, or `None` for an interface the
/// agent has not registered (the packet is then still handled, just not counted).
#[inline(always)]
pub fn slot(ifindex: u32) -> Option<*mut IfCounters> {
    COUNTERS.get_ptr_mut(ifindex)
}

#[inline(always)]
pub fn rx(c: Option<*mut IfCounters>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: per-CPU map value, valid for this program run, no other writer on this CPU.
        let c = unsafe { &mut *c };
        c.rx.packets += 1;
        c.rx.bytes += bytes;
    }
}

#[inline(always)]
pub fn forwarded(c: Option<*mut IfCounters>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let c = unsafe { &mut *c };
        c.forwarded.packets += 1;
        c.forwarded.bytes += bytes;
    }
}

#[inline(always)]
pub fn passed(c: Option<*mut IfCounters>, why: Pass) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let p: &mut PassReasons = unsafe { &mut (*c).passed };
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
pub fn dropped(c: Option<*mut IfCounters>, why: Drop) {
    if let Some(c) = c {
        // SAFETY: as in `rx`.
        let d: &mut DropReasons = unsafe { &mut (*c).dropped };
        let f = match why {
            Drop::Malformed => &mut d.malformed,
            Drop::Blackhole => &mut d.blackhole,
            Drop::RedirectFailed => &mut d.redirect_failed,
            Drop::NatNoMapping => &mut d.nat_no_mapping,
            Drop::NatPoolExhausted => &mut d.nat_pool_exhausted,
            Drop::NatTableFull => &mut d.nat_table_full,
            Drop::NatFragmentUntracked => &mut d.nat_fragment_untracked,
            Drop::NatUnroutable => &mut d.nat_unroutable,
        };
        *f += 1;
    }
}
