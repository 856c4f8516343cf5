//! IPv4 forwarding, shared by the XDP and TC programs: validating the header,
//! asking the FIB where the packet goes and, only once the packet will really
//! be redirected, decrementing the TTL and rewriting the MACs. Packets passed
//! to the kernel are never modified, so the kernel sees exactly what arrived
//! and can answer with the right ICMP error.

use xcnf_common::csum;

use crate::{
    counters::{Drop, Pass},
    fib::{self, Route},
    headers::{ETH_HLEN, EthHdr, IPV4_HLEN, Ipv4Hdr, ptr_at},
    iface,
    ipv4::Ingress,
};

/// What the hook should do with the frame.
#[derive(Clone, Copy)]
pub enum Action {
    /// Send it out of `ifindex` (after [`commit`] wrote TTL and MACs);
    /// `peer`: the egress's `PEER_REDIRECT` flag, read with the rest of its
    /// `IFACES` entry so the TC hook need not look it up again.
    Redirect {
        ifindex: u32,
        /// 1 or 0; a word, not a `bool`, so the variant stays word-shaped.
        peer: u32,
    },
    /// The kernel must resolve the next hop's MAC (TC only).
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

/// The IPv4 header fields routing needs, read once by [`validate`].
pub struct Hdr {
    pub tos: u8,
    pub protocol: u8,
    pub tot_len: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// Checks an Ethernet frame already known to carry IPv4: a malformed header
/// is dropped, one with options or an expiring TTL goes to the kernel.
///
/// `l3_len` is the number of bytes after the Ethernet header in the whole
/// packet (which for TC may extend past the linear `data_end`).
#[inline(always)]
pub fn validate(data: usize, data_end: usize, l3_len: usize) -> Result<Hdr, Action> {
    let Some(ip) = ptr_at::<Ipv4Hdr>(data, data_end, ETH_HLEN) else {
        return Err(Action::Drop(Drop::Malformed));
    };
    // SAFETY: bounds-checked against data_end above.
    let ip = unsafe { &*ip };
    let vihl = ip.version_ihl;
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(Action::Drop(Drop::Malformed));
    }
    if vihl & 0x0f != 5 {
        return Err(Action::Pass(Pass::IpOptions));
    }
    let tot_len = u16::from_be_bytes(ip.tot_len);
    if usize::from(tot_len) < IPV4_HLEN || usize::from(tot_len) > l3_len {
        return Err(Action::Drop(Drop::Malformed));
    }
    // SAFETY: Ipv4Hdr is 20 bytes of plain byte fields, bounds-checked above.
    if !csum::ipv4_header_valid(unsafe { &*(core::ptr::from_ref(ip).cast::<[u8; IPV4_HLEN]>()) }) {
        return Err(Action::Drop(Drop::Malformed));
    }
    if ip.ttl <= 1 {
        return Err(Action::Pass(Pass::TtlExpired));
    }
    Ok(Hdr {
        tos: ip.tos,
        protocol: ip.protocol,
        tot_len,
        src: ip.src,
        dst: ip.dst,
    })
}

/// A FIB answer: the action, and the MACs a resolved redirect writes. The
/// MACs live outside [`Action`] so every variant has the same plain layout:
/// moving a partly initialised enum makes LLVM copy undefined registers,
/// which the verifier rightly refuses.
#[derive(Clone, Copy)]
pub struct Routed {
    pub action: Action,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// `smac` is the egress's MAC as `IFACES` registers it, so a session's
    /// route cache may leave it out and take it from there (`nat/route.rs`).
    pub smac_registered: bool,
}

impl Routed {
    #[inline(always)]
    fn just(action: Action) -> Self {
        Routed {
            action,
            smac: [0; 6],
            dmac: [0; 6],
            smac_registered: false,
        }
    }
}

/// Asks the FIB where a packet from `src` to `dst` that arrived as `i`
/// describes goes, without touching the packet: only [`commit`] writes, once
/// the caller has decided. Whether the egress is managed comes from the
/// per-CPU interface cache (`iface.rs`).
#[inline(always)]
pub fn route(i: &Ingress, h: &Hdr, src: [u8; 4], dst: [u8; 4]) -> Routed {
    let (ctx, ifindex, neigh_redirect) = (i.ctx, i.ifindex, i.neigh_redirect);
    let egress = |out: u32| iface::egress(out, i.now.ms, i.ctl);
    let fib_len = match i.mtu {
        MtuCheck::TotLen => h.tot_len,
        MtuCheck::Skb => 0,
    };
    match fib::lookup_v4(ctx, ifindex, h.tos, h.protocol, fib_len, src, dst) {
        Route::Resolved {
            ifindex: out,
            smac,
            dmac,
        } => {
            let e = egress(out);
            if !e.managed {
                return Routed::just(Action::Pass(Pass::UnmanagedEgress));
            }
            Routed {
                action: Action::Redirect {
                    ifindex: out,
                    peer: e.peer,
                },
                smac,
                dmac,
                smac_registered: smac == e.mac,
            }
        }
        Route::NoNeigh {
            ifindex: out,
            nexthop,
        } => {
            if !neigh_redirect {
                return Routed::just(Action::Pass(Pass::NoNeigh));
            }
            if !egress(out).managed {
                return Routed::just(Action::Pass(Pass::UnmanagedEgress));
            }
            Routed::just(Action::RedirectNeigh {
                ifindex: out,
                nexthop,
            })
        }
        Route::Blackhole => Routed::just(Action::Drop(Drop::Blackhole)),
        Route::NoRoute => Routed::just(Action::Pass(Pass::NoRoute)),
        Route::NotForwarded => Routed::just(Action::Pass(Pass::NotForwarded)),
        Route::FwdDisabled => Routed::just(Action::Pass(Pass::FwdDisabled)),
        Route::FragNeeded => Routed::just(Action::Pass(Pass::FragNeeded)),
        Route::Other => Routed::just(Action::Pass(Pass::Other)),
    }
}

/// Makes a redirect real: decrements the TTL and, when the next hop is
/// resolved, rewrites the MACs. Other actions leave the packet alone.
#[inline(always)]
pub fn commit(data: usize, data_end: usize, r: &Routed) -> Action {
    let redirect = match r.action {
        Action::Redirect { .. } => true,
        Action::RedirectNeigh { .. } => false,
        other => return other,
    };
    let (Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, ETH_HLEN),
    ) else {
        return Action::Drop(Drop::Malformed);
    };
    // SAFETY: both pointers were bounds-checked against data_end above.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    decrement_ttl(ip);
    if redirect {
        eth.dst = r.dmac;
        eth.src = r.smac;
    }
    r.action
}

/// RFC 1624 incremental update of the header checksum for the TTL word, in
/// memory order (see `csum::replace16`).
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_ne_bytes([ip.ttl, ip.protocol]);
    ip.ttl -= 1;
    let new = u16::from_ne_bytes([ip.ttl, ip.protocol]);
    ip.check = csum::replace16(u16::from_ne_bytes(ip.check), old, new).to_ne_bytes();
}

/// Reads the ethertype, or `None` for a frame shorter than an Ethernet header.
#[inline(always)]
pub fn ether_type(data: usize, data_end: usize) -> Option<u16> {
    let eth = ptr_at::<EthHdr>(data, data_end, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    Some(u16::from_be_bytes(unsafe { (*eth).ether_type }))
}
