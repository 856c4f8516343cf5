//! Answering ARP for NAT addresses that no interface carries.
//!
//! Pool and static external addresses are usually not configured on the
//! outside interface, yet the outside network must resolve them. Kernel proxy
//! ARP does not help: it only answers when the route to the address leaves
//! through a *different* interface, and these addresses sit on the outside
//! subnet itself. So the datapath turns the request into a reply in place and
//! sends it back out of the interface it came in on. Addresses that are local
//! to the CNF are left to the kernel, which answers for them anyway.

use aya_ebpf::cty::c_void;

use crate::{
    fib::{self, Route},
    headers::{ArpHdr, ETH_HLEN, EthHdr, ptr_at},
    maps::NAT_ADDRS,
    nat::stats,
};

/// Rewrites an ARP request for a non-local NAT address into the reply, in
/// place. Returns whether the frame is now a reply to send back out.
#[inline(always)]
pub fn answer(
    ctx: *mut c_void,
    ifindex: u32,
    our_mac: [u8; 6],
    data: usize,
    data_end: usize,
) -> bool {
    let (Some(eth), Some(arp)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<ArpHdr>(data, data_end, ETH_HLEN),
    ) else {
        return false;
    };
    // SAFETY: both bounds-checked by ptr_at.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if arp.htype != [0, 1]
        || arp.ptype != [8, 0]
        || arp.hlen != 6
        || arp.plen != 4
        || arp.op != [0, 1]
    {
        return false;
    }
    let target = arp.tpa;
    if NAT_ADDRS.get_ptr(&target).is_none() {
        return false;
    }
    // The kernel answers for its own addresses; the FIB calls those local.
    if let Route::NotForwarded = fib::lookup_v4(ctx, ifindex, 0, 0, 0, arp.spa, target) {
        return false;
    }
    let (sha, spa) = (arp.sha, arp.spa);
    arp.op = [0, 2];
    arp.tha = sha;
    arp.tpa = spa;
    arp.sha = our_mac;
    arp.spa = target;
    eth.dst = sha;
    eth.src = our_mac;
    stats::bump(|s| &mut s.arp_replies);
    true
}
