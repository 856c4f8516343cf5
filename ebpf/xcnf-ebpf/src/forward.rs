//! The IPv4 forwarding decision shared by the XDP and TC programs.
//!
//! It validates the IPv4 header, asks the FIB where the packet goes and, only
//! once the packet will really be redirected, decrements the TTL and rewrites
//! the MACs. Packets passed to the kernel are never modified, so the kernel
//! sees exactly what arrived and can answer with the right ICMP error.

use aya_ebpf::cty::c_void;
use xcnf_common::csum;

use crate::{
    counters::{Drop, Pass},
    fib::{self, Route},
    headers::{ETH_HLEN, EthHdr, IPV4_HLEN, Ipv4Hdr, ptr_at},
    maps::IFACES,
};

/// What the hook should do with the frame.
pub enum Action {
    /// MACs and TTL already rewritten: send it out of `ifindex`.
    Redirect {
        ifindex: u32,
    },
    /// TTL rewritten; the kernel must resolve the next hop's MAC (TC only).
    RedirectNeigh {
        ifindex: u32,
        nexthop: u32,
    },
    Pass(Pass),
    Drop(Drop),
}

/// How the FIB should check the egress MTU.
#[derive(Clone, Copy)]
pub enum MtuCheck {
    /// Against the IPv4 total length: frames that are exactly one packet.
    TotLen,
    /// Against the skb itself: GSO skbs are larger than the MTU by design and
    /// are segmented on transmit, so the kernel must judge them as a whole.
    Skb,
}

#[inline(always)]
fn managed(ifindex: u32) -> bool {
    IFACES.get_ptr(ifindex).is_some()
}

/// Decides the fate of an Ethernet frame already known to carry IPv4 and to be
/// addressed to this interface.
///
/// `l3_len` is the number of bytes after the Ethernet header in the whole
/// packet (which for TC may extend past the linear `data_end`).
/// `neigh_redirect` says whether the hook can hand unresolved next hops to
/// `bpf_redirect_neigh`.
#[inline(always)]
pub fn ipv4(
    ctx: *mut c_void,
    data: usize,
    data_end: usize,
    l3_len: usize,
    ifindex: u32,
    mtu: MtuCheck,
    neigh_redirect: bool,
) -> Action {
    let (Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, ETH_HLEN),
    ) else {
        return Action::Drop(Drop::Malformed);
    };
    // SAFETY: both pointers were bounds-checked against data_end above.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };

    let vihl = ip.version_ihl;
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Action::Drop(Drop::Malformed);
    }
    if vihl & 0x0f != 5 {
        return Action::Pass(Pass::IpOptions);
    }
    let tot_len = u16::from_be_bytes(ip.tot_len);
    if usize::from(tot_len) < IPV4_HLEN || usize::from(tot_len) > l3_len {
        return Action::Drop(Drop::Malformed);
    }
    // SAFETY: Ipv4Hdr is 20 bytes of plain byte fields, bounds-checked above.
    if !csum::ipv4_header_valid(unsafe { &*(core::ptr::from_ref(ip).cast::<[u8; IPV4_HLEN]>()) }) {
        return Action::Drop(Drop::Malformed);
    }
    if ip.ttl <= 1 {
        return Action::Pass(Pass::TtlExpired);
    }

    let fib_len = match mtu {
        MtuCheck::TotLen => tot_len,
        MtuCheck::Skb => 0,
    };
    let route = fib::lookup_v4(ctx, ifindex, ip.tos, ip.protocol, fib_len, ip.src, ip.dst);
    match route {
        Route::Resolved {
            ifindex: out,
            smac,
            dmac,
        } => {
            if !managed(out) {
                return Action::Pass(Pass::UnmanagedEgress);
            }
            decrement_ttl(ip);
            eth.dst = dmac;
            eth.src = smac;
            Action::Redirect { ifindex: out }
        }
        Route::NoNeigh {
            ifindex: out,
            nexthop,
        } => {
            if !neigh_redirect {
                return Action::Pass(Pass::NoNeigh);
            }
            if !managed(out) {
                return Action::Pass(Pass::UnmanagedEgress);
            }
            decrement_ttl(ip);
            Action::RedirectNeigh {
                ifindex: out,
                nexthop,
            }
        }
        Route::Blackhole => Action::Drop(Drop::Blackhole),
        Route::NoRoute => Action::Pass(Pass::NoRoute),
        Route::NotForwarded => Action::Pass(Pass::NotForwarded),
        Route::FwdDisabled => Action::Pass(Pass::FwdDisabled),
        Route::FragNeeded => Action::Pass(Pass::FragNeeded),
        Route::Other => Action::Pass(Pass::Other),
    }
}

/// RFC 1624 incremental update of the header checksum for the TTL word.
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_be_bytes([ip.ttl, ip.protocol]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.protocol]);
    ip.check = csum::replace16(u16::from_be_bytes(ip.check), old, new).to_be_bytes();
}

/// Reads the ethertype, or `None` for a frame shorter than an Ethernet header.
#[inline(always)]
pub fn ether_type(data: usize, data_end: usize) -> Option<u16> {
    let eth = ptr_at::<EthHdr>(data, data_end, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    Some(u16::from_be_bytes(unsafe { (*eth).ether_type }))
}
