//! FIB lookup: the kernel's routing table and neighbour cache decide where a
//! packet goes, so the datapath never keeps a route copy that could go stale.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, bpf_fib_lookup, bpf_redir_neigh,
    },
    cty::c_void,
    helpers::generated::{bpf_fib_lookup as fib_lookup_helper, bpf_redirect_neigh},
};

use crate::maps::FIB_SCRATCH;

const AF_INET: u8 = 2;

/// The part of a lookup's answer the datapath acts on.
pub enum Route {
    /// Egress interface and the MACs to write.
    Resolved {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Route found, neighbour not resolved yet: egress and next-hop address
    /// (network byte order, as `bpf_redirect_neigh` wants it).
    NoNeigh {
        ifindex: u32,
        nexthop: u32,
    },
    Blackhole,
    NoRoute,
    /// Local, broadcast or multicast destination, or no route at all.
    NotForwarded,
    FwdDisabled,
    FragNeeded,
    Other,
}

/// Looks up the route for an IPv4 packet arriving on `ifindex`.
///
/// `tot_len` 0 asks the kernel to check the MTU against the skb itself, which
/// is what a GSO skb needs; XDP frames pass their real length.
#[inline(always)]
pub fn lookup_v4(
    ctx: *mut c_void,
    ifindex: u32,
    tos: u8,
    protocol: u8,
    tot_len: u16,
    src: [u8; 4],
    dst: [u8; 4],
) -> Route {
    // The parameter block lives in a per-CPU scratch map, not on the stack:
    // zeroing 64 stack bytes compiles to a call to the object's byte-loop
    // `memset`, which cost more than the lookup itself, and every inlined
    // caller would need its own block on the 512-byte stack. Every input
    // field the kernel reads without lookup flags is written below; the rest
    // are outputs or unused, so whatever the last lookup left there is
    // harmless.
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Route::Other;
    };
    // SAFETY: a per-CPU map value of exactly this size and alignment (see
    // maps.rs), used by this program run only.
    let p = unsafe { &mut *p.cast::<bpf_fib_lookup>() };
    p.family = AF_INET;
    p.sport = 0;
    p.dport = 0;
    p.l4_protocol = protocol;
    p.ifindex = ifindex;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: ctx is the program's context and p is a properly sized params struct.
    let rc = unsafe { fib_lookup_helper(ctx, p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    if rc < 0 {
        return Route::Other;
    }
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::Resolved {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        },
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::NoNeigh {
            ifindex: p.ifindex,
            // SAFETY: the kernel writes the next hop into ipv4_dst on output.
            nexthop: unsafe { p.__bindgen_anon_4.ipv4_dst },
        },
        BPF_FIB_LKUP_RET_BLACKHOLE => Route::Blackhole,
        BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => Route::NoRoute,
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::NotForwarded,
        BPF_FIB_LKUP_RET_FWD_DISABLED => Route::FwdDisabled,
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::FragNeeded,
        _ => Route::Other,
    }
}

/// Redirects the packet out of `ifindex` through `bpf_redirect_neigh`, which
/// resolves the MAC of `nexthop` (network byte order) itself (TC only).
///
/// The helper's parameter block is written into the FIB scratch value, whose
/// lookup answer has been read by then, rather than onto the stack: the TC
/// program's frame and the NAT global function's share 512 bytes.
#[inline(always)]
pub fn redirect_neigh(ifindex: u32, nexthop: u32) -> i64 {
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: the per-CPU scratch value is 64 bytes, 8-byte aligned, and
    // free once the lookup's answer was copied out (see `lookup_v4`).
    let nh = unsafe { &mut *p.cast::<bpf_redir_neigh>() };
    nh.nh_family = AF_INET_NEIGH;
    nh.__bindgen_anon_1.ipv4_nh = nexthop;
    // SAFETY: nh is a correctly sized bpf_redir_neigh.
    unsafe {
        bpf_redirect_neigh(
            ifindex,
            core::ptr::from_mut(nh),
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    }
}

/// `bpf_redir_neigh.nh_family` is a `u32`, unlike the lookup's `u8` family.
const AF_INET_NEIGH: u32 = 2;

const _: () = assert!(core::mem::size_of::<bpf_redir_neigh>() <= 64);
