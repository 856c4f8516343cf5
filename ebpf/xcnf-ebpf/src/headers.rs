//! Wire layouts of the headers the datapath reads.
//!
//! All multi-byte fields are byte arrays: the IPv4 header starts at offset 14,
//! so it is never 4-byte aligned, and byte arrays keep every access defined
//! without `packed` structs.

pub use xcnf_common::wire::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, IPV4_HLEN};

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

/// ARP for IPv4 over Ethernet (RFC 826), the only kind the datapath answers.
#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub op: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<ArpHdr>() == 28);

/// Where the L4 header starts: the datapath hands IPv4 options to the kernel,
/// so every header it translates is exactly 20 bytes long.
pub const L4_OFF: usize = ETH_HLEN + IPV4_HLEN;
/// Offsets of the IPv4 header fields the translator rewrites.
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub const IP_DST_OFF: usize = ETH_HLEN + 16;
/// ICMP header: type, code, checksum, then identifier (queries) or unused
/// word (errors), then for errors the quoted IPv4 header.
pub const ICMP_HLEN: usize = 8;
/// The quoted packet of an ICMP error: its IPv4 header and the first 8 bytes
/// of its payload, all RFC 792 guarantees.
pub const INNER_IP_OFF: usize = L4_OFF + ICMP_HLEN;
pub const INNER_L4_OFF: usize = INNER_IP_OFF + IPV4_HLEN;
/// Bytes the NAT reads at most, which TC must have in the linear area.
pub const NAT_PULL_LEN: usize = INNER_L4_OFF + 8;
