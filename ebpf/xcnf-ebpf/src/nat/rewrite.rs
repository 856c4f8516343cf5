//! Writing a translation into the packet with every checksum kept right.
//!
//! Which checksum helper is used where is decided in `pkt.rs`; this file
//! only knows which fields each protocol's checksums cover.

use crate::{
    headers::{INNER_IP_OFF, INNER_L4_OFF, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, L4_OFF},
    nat::parse::{Frag, L4, Parsed, Tuple},
    pkt::{Fault, Pkt, csum_fix16, csum_fix32, load, set16_plain, store},
};

const TCP_CSUM_OFF: usize = L4_OFF + 16;
const UDP_CSUM_OFF: usize = L4_OFF + 6;
const ICMP_CSUM_OFF: usize = L4_OFF + 2;
const ICMP_ID_OFF: usize = L4_OFF + 4;
const INNER_IP_CSUM_OFF: usize = INNER_IP_OFF + 10;

/// The raw (memory-order) value of an address, as the checksum helpers take it.
#[inline(always)]
fn raw32(a: [u8; 4]) -> u32 {
    u32::from_ne_bytes(a)
}

/// The raw (memory-order) value of a port written big-endian.
#[inline(always)]
fn raw16(port: u16) -> u32 {
    u32::from(u16::from_ne_bytes(port.to_be_bytes()))
}

/// Rewrites the packet described by `pk` to the tuple `to` (and, for an ICMP
/// error, its quoted packet to `inner`).
#[inline(always)]
pub fn apply<P: Pkt>(p: &P, pk: &Parsed, to: &Tuple, inner: Option<&Tuple>) -> Result<(), Fault> {
    let from = &pk.tuple;
    // The L4 checksum that covers the pseudo-header, if this packet has one.
    let l4 = if pk.frag == Frag::Later {
        L4::None
    } else {
        pk.l4
    };
    let (l4_csum, udp) = match l4 {
        L4::Tcp => (TCP_CSUM_OFF, false),
        L4::Udp => (UDP_CSUM_OFF, true),
        _ => (0, false),
    };

    if from.saddr != to.saddr {
        store(p, IP_SRC_OFF, to.saddr)?;
        csum_fix32(p, IP_CSUM_OFF, from.saddr, to.saddr)?;
        if l4_csum != 0 {
            p.l4_csum(l4_csum, raw32(from.saddr), raw32(to.saddr), true, udp)?;
        }
    }
    if from.daddr != to.daddr {
        store(p, IP_DST_OFF, to.daddr)?;
        csum_fix32(p, IP_CSUM_OFF, from.daddr, to.daddr)?;
        if l4_csum != 0 {
            p.l4_csum(l4_csum, raw32(from.daddr), raw32(to.daddr), true, udp)?;
        }
    }

    match l4 {
        L4::Tcp | L4::Udp => {
            if from.sport != to.sport {
                store(p, L4_OFF, to.sport.to_be_bytes())?;
                p.l4_csum(l4_csum, raw16(from.sport), raw16(to.sport), false, udp)?;
            }
            if from.dport != to.dport {
                store(p, L4_OFF + 2, to.dport.to_be_bytes())?;
                p.l4_csum(l4_csum, raw16(from.dport), raw16(to.dport), false, udp)?;
            }
        }
        // ICMP has no pseudo-header: only the identifier is covered.
        L4::EchoRequest => {
            set16_plain(p, ICMP_ID_OFF, to.sport, ICMP_CSUM_OFF, 0)?;
        }
        L4::EchoReply => {
            set16_plain(p, ICMP_ID_OFF, to.dport, ICMP_CSUM_OFF, 0)?;
        }
        L4::IcmpError => {
            if let (Some(q), Some(new)) = (pk.inner, inner) {
                quoted(p, &q.tuple, q.l4, new)?;
            }
        }
        L4::None => {}
    }
    Ok(())
}

/// Rewrites the packet quoted by an ICMP error (RFC 5508 section 4.1): its
/// addresses and ports, its IP header checksum, its UDP or ICMP checksum
/// where the quoted 8 bytes contain one, and the outer ICMP checksum, which
/// covers all of these bytes.
#[inline(always)]
fn quoted<P: Pkt>(p: &P, from: &Tuple, l4: L4, to: &Tuple) -> Result<(), Fault> {
    // The quoted L4 checksum: UDP's (0 = none, left alone) or ICMP's. A
    // quoted TCP checksum lies beyond the 8 quoted bytes.
    let inner_csum = match l4 {
        L4::Udp => {
            let off = INNER_L4_OFF + 6;
            if load::<P, 2>(p, off)? == [0, 0] {
                0
            } else {
                off
            }
        }
        L4::EchoRequest | L4::EchoReply => INNER_L4_OFF + 2,
        _ => 0,
    };
    let old_ip_csum = u16::from_be_bytes(load::<P, 2>(p, INNER_IP_CSUM_OFF)?);
    let old_l4_csum = if inner_csum != 0 {
        u16::from_be_bytes(load::<P, 2>(p, inner_csum)?)
    } else {
        0
    };
    // Only UDP's checksum covers the addresses (pseudo-header).
    let addr_l4 = if l4 == L4::Udp { inner_csum } else { 0 };

    let words = [
        (INNER_IP_OFF + 12, from.saddr, to.saddr),
        (INNER_IP_OFF + 16, from.daddr, to.daddr),
    ];
    for (off, old, new) in words {
        if old != new {
            set16_plain(
                p,
                off,
                u16::from_be_bytes([new[0], new[1]]),
                INNER_IP_CSUM_OFF,
                ICMP_CSUM_OFF,
            )?;
            set16_plain(
                p,
                off + 2,
                u16::from_be_bytes([new[2], new[3]]),
                INNER_IP_CSUM_OFF,
                ICMP_CSUM_OFF,
            )?;
            if addr_l4 != 0 {
                csum_fix32(p, addr_l4, old, new)?;
            }
        }
    }
    match l4 {
        L4::Tcp | L4::Udp => {
            set16_plain(p, INNER_L4_OFF, to.sport, ICMP_CSUM_OFF, inner_csum)?;
            set16_plain(p, INNER_L4_OFF + 2, to.dport, ICMP_CSUM_OFF, inner_csum)?;
        }
        L4::EchoRequest => {
            set16_plain(p, INNER_L4_OFF + 4, to.sport, ICMP_CSUM_OFF, inner_csum)?;
        }
        L4::EchoReply => {
            set16_plain(p, INNER_L4_OFF + 4, to.dport, ICMP_CSUM_OFF, inner_csum)?;
        }
        _ => {}
    }
    if l4 == L4::Udp && inner_csum != 0 && load::<P, 2>(p, inner_csum)? == [0, 0] {
        // A computed zero is sent as all ones (RFC 768).
        store(p, inner_csum, [0xff, 0xff])?;
    }

    // The quoted checksums themselves are ICMP payload too.
    let new_ip_csum = u16::from_be_bytes(load::<P, 2>(p, INNER_IP_CSUM_OFF)?);
    csum_fix16(p, ICMP_CSUM_OFF, old_ip_csum, new_ip_csum)?;
    if inner_csum != 0 {
        let new_l4_csum = u16::from_be_bytes(load::<P, 2>(p, inner_csum)?);
        csum_fix16(p, ICMP_CSUM_OFF, old_l4_csum, new_l4_csum)?;
    }
    Ok(())
}
