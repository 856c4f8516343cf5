//! Packet rewriting for the translator, one implementation per hook.
//!
//! Why two: TC runs on an skb that may carry `CHECKSUM_PARTIAL` (a local
//! sender on veth leaves the TCP/UDP checksum to be finished on transmit, and
//! the field then holds only the pseudo-header sum) or `CHECKSUM_COMPLETE`.
//! Only the kernel's `bpf_l4_csum_replace` knows which, so on TC every change
//! that a TCP/UDP checksum covers goes through it. XDP has bytes and nothing
//! else, so it updates checksums arithmetically (RFC 1624), which is correct
//! for frames carrying complete checksums: those from NICs and from senders
//! that checksum in software. That is why `hook: auto` picks TC on veth.
//!
//! Checksums that cover only bytes inside the packet (the IPv4 header's, and
//! ICMP's, which has no pseudo-header) are updated arithmetically on both
//! hooks: the bytes and the checksum change together, so the skb's own
//! checksum state stays valid.
//!
//! Every access re-derives the packet pointers and bounds-checks them,
//! because on TC each helper call invalidates the previous ones.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_l4_csum_replace,
    programs::{TcContext, XdpContext},
};
use xcnf_common::csum;

use crate::nat::slow::{self, SlowCall};

/// Failure to touch the packet: out of bounds, or a helper refused.
pub struct Fault;

pub trait Pkt {
    /// Current `(data, data_end)`.
    fn bounds(&self) -> (usize, usize);

    /// Fixes the TCP (`udp == false`) or UDP checksum at `csum_off` for a
    /// change of `old` to `new` in a field it covers: a 4-byte address in the
    /// pseudo-header (`pseudo`) or a 2-byte port in the L4 header.
    fn l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        pseudo: bool,
        udp: bool,
    ) -> Result<(), Fault>;
}

/// Reads `N` bytes at `off`.
#[inline(always)]
pub fn load<P: Pkt, const N: usize>(p: &P, off: usize) -> Result<[u8; N], Fault> {
    let (data, end) = p.bounds();
    if data + off + N > end {
        return Err(Fault);
    }
    // SAFETY: bounds-checked above; byte arrays have no alignment needs.
    Ok(unsafe { *((data + off) as *const [u8; N]) })
}

/// Writes `N` bytes at `off`.
#[inline(always)]
pub fn store<P: Pkt, const N: usize>(p: &P, off: usize, v: [u8; N]) -> Result<(), Fault> {
    let (data, end) = p.bounds();
    if data + off + N > end {
        return Err(Fault);
    }
    // SAFETY: bounds-checked above; the hook made the data writable.
    unsafe { *((data + off) as *mut [u8; N]) = v };
    Ok(())
}

/// Applies the change of one 16-bit word (`old` → `new`, big-endian values)
/// to the plain Internet checksum at `csum_off`.
#[inline(always)]
pub fn csum_fix16<P: Pkt>(p: &P, csum_off: usize, old: u16, new: u16) -> Result<(), Fault> {
    if old == new {
        return Ok(());
    }
    // In memory order throughout (see `csum::replace16`).
    let (old, new) = (
        u16::from_ne_bytes(old.to_be_bytes()),
        u16::from_ne_bytes(new.to_be_bytes()),
    );
    let c = u16::from_ne_bytes(load::<P, 2>(p, csum_off)?);
    store(p, csum_off, csum::replace16(c, old, new).to_ne_bytes())
}

/// As [`csum_fix16`] for a 4-byte field (an address), in one update.
#[inline(always)]
pub fn csum_fix32<P: Pkt>(p: &P, csum_off: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), Fault> {
    if old == new {
        return Ok(());
    }
    let c = u16::from_ne_bytes(load::<P, 2>(p, csum_off)?);
    let c = csum::replace32(c, u32::from_ne_bytes(old), u32::from_ne_bytes(new));
    store(p, csum_off, c.to_ne_bytes())
}

/// Writes a 16-bit word and keeps every plain checksum in `csums` (offsets,
/// 0 = none) consistent with it. Returns the old value.
#[inline(always)]
pub fn set16_plain<P: Pkt>(
    p: &P,
    off: usize,
    new: u16,
    csum_a: usize,
    csum_b: usize,
) -> Result<u16, Fault> {
    let old = u16::from_be_bytes(load::<P, 2>(p, off)?);
    if old == new {
        return Ok(old);
    }
    store(p, off, new.to_be_bytes())?;
    if csum_a != 0 {
        csum_fix16(p, csum_a, old, new)?;
    }
    if csum_b != 0 {
        csum_fix16(p, csum_b, old, new)?;
    }
    Ok(old)
}

/// TC: checksums TCP/UDP covers are fixed by the kernel, which knows the
/// skb's checksum state (see the module docs).
pub struct Tc<'a>(pub &'a TcContext);

impl Pkt for Tc<'_> {
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.0.data(), self.0.data_end())
    }

    #[inline(always)]
    fn l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        pseudo: bool,
        udp: bool,
    ) -> Result<(), Fault> {
        if old == new {
            return Ok(());
        }
        let mut flags = if pseudo {
            4 | u64::from(BPF_F_PSEUDO_HDR)
        } else {
            2
        };
        if udp {
            // A zero UDP checksum means "none" and must stay zero; a computed
            // zero is written as 0xffff.
            flags |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        // SAFETY: the skb is this program's context; `old`/`new` are the raw
        // (network-order) field values as the helper expects them.
        let rc = unsafe {
            bpf_l4_csum_replace(
                self.0.skb.skb,
                csum_off as u32,
                u64::from(old),
                u64::from(new),
                flags,
            )
        };
        if rc == 0 { Ok(()) } else { Err(Fault) }
    }
}

/// XDP: arithmetic updates on the bytes (see the module docs for when that
/// is right).
pub struct Xdp<'a>(pub &'a XdpContext);

impl Pkt for Xdp<'_> {
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.0.data(), self.0.data_end())
    }

    #[inline(always)]
    fn l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        pseudo: bool,
        udp: bool,
    ) -> Result<(), Fault> {
        if old == new {
            return Ok(());
        }
        // Memory order throughout (see `csum::replace16`); 0 and 0xffff
        // read the same in both orders.
        let c = u16::from_ne_bytes(load::<Self, 2>(self, csum_off)?);
        if udp && c == 0 {
            return Ok(());
        }
        // `old`/`new` hold the field's bytes in memory order.
        let mut c = if pseudo {
            csum::replace32(c, old, new)
        } else {
            csum::replace16(c, old as u16, new as u16)
        };
        if udp && c == 0 {
            c = 0xffff;
        }
        store(self, csum_off, c.to_ne_bytes())
    }
}

impl SlowCall for Tc<'_> {
    #[inline(always)]
    fn call_slow(&self) -> i32 {
        slow::xcnf_nat_slow_tc(self.0.skb.skb)
    }
}

impl SlowCall for Xdp<'_> {
    #[inline(always)]
    fn call_slow(&self) -> i32 {
        slow::xcnf_nat_slow_xdp(self.0.ctx)
    }
}
