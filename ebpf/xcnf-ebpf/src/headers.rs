//! Wire layouts of the headers the datapath reads.
//!
//! All multi-byte fields are byte arrays: the IPv4 header starts at offset 14,
//! so it is never 4-byte aligned, and byte arrays keep every access defined
//! without `packed` structs.

pub use xcnf_common::wire::{ETH_HLEN, ETH_P_IP, IPV4_HLEN};

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == ETH_HLEN);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == IPV4_HLEN);

/// Returns a pointer to a `T` at `off` in `[start, end)`, or `None` when it
/// does not fit. The explicit bound check is what the verifier needs to see
/// before any packet access.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*mut T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}
