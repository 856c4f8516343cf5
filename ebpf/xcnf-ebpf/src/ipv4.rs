//! The IPv4 pipeline both hooks run: validate, translate (NAT44), route,
//! rewrite, redirect.

use aya_ebpf::cty::c_void;
use xcnf_common::nat::role;

use crate::{
    cache_ctl::CacheCtl,
    clock::Now,
    counters::{Drop, Pass},
    forward::{self, Action, MtuCheck},
    headers::{ETH_HLEN, IPV4_HLEN, Ipv4Hdr, ptr_at},
    nat::{
        self, Decision, FibQuery, parse, rewrite,
        route::{self, RouteKey},
        slow::{self, SlowCall},
    },
    pkt::Pkt,
};

/// IPv4 with options on a NAT interface. The translator does not handle
/// options (its headers are read at fixed offsets), so such a packet goes
/// to the kernel untranslated, as on any other interface, only where that
/// is harmless. It is dropped and counted (`nat_ip_options`) when it is
/// addressed to a NAT address that is not the CNF's own, which the CNF's
/// stack must never receive, or when it comes from inside and would leave
/// through an outside interface, with the inside address.
#[inline(always)]
fn with_options(i: &Ingress, data: usize, data_end: usize) -> Action {
    let Some(ip) = ptr_at::<Ipv4Hdr>(data, data_end, ETH_HLEN) else {
        return Action::Drop(Drop::Malformed);
    };
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    let t = parse::Tuple {
        saddr: ip.src,
        daddr: ip.dst,
        sport: 0,
        dport: 0,
        proto: ip.protocol,
    };
    let fib = FibQuery {
        ctx: i.ctx,
        ifindex: i.ifindex,
        tos: ip.tos,
        // Only where it goes matters here, not whether it fits.
        tot_len: IPV4_HLEN as u16,
    };
    // The tests a packet without a session gets (`nat::needs_nat`); one
    // from inside gets both, since a hairpin to a NAT address is NAT traffic
    // too.
    let to_nat_addr = nat::needs_nat(false, &t, &fib);
    let leaves_outside = i.role == role::INSIDE && nat::needs_nat(true, &t, &fib);
    if to_nat_addr || leaves_outside {
        Action::Drop(Drop::NatIpOptions)
    } else {
        Action::Pass(Pass::IpOptions)
    }
}

/// IPv4 "don't fragment", in the first byte of the fragment field.
const IP_DF_BYTE: u8 = 0x40;

/// Whether the packet forbids fragmentation. Read from the packet again on
/// the frag-needed path only, so the fast path carries no more fields.
#[inline(always)]
fn dont_fragment<P: Pkt>(p: &P) -> bool {
    let (data, data_end) = p.bounds();
    match ptr_at::<Ipv4Hdr>(data, data_end, ETH_HLEN) {
        // SAFETY: bounds-checked by ptr_at.
        Some(ip) => unsafe { (*ip).frag_off[0] & IP_DF_BYTE != 0 },
        None => true,
    }
}

/// The ingress facts the pipeline needs from the hook.
pub struct Ingress {
    pub ctx: *mut c_void,
    pub ifindex: u32,
    /// Its `IfaceConfig::slot`.
    pub slot: u16,
    /// NAT44 role of the ingress interface.
    pub role: u8,
    /// Bytes after the Ethernet header in the whole packet.
    pub l3_len: usize,
    /// Whole packet length, for the session byte counts.
    pub len: u64,
    pub mtu: MtuCheck,
    /// Whether unresolved next hops can go to `bpf_redirect_neigh` (TC).
    pub neigh_redirect: bool,
    /// When the packet arrived.
    pub now: Now,
    /// `route_ctl` as read when it arrived, for every cache it consults.
    pub ctl: CacheCtl,
}

#[inline(always)]
pub fn run<P: Pkt + SlowCall>(p: &P, i: &Ingress) -> Action {
    let (data, data_end) = p.bounds();
    let h = match forward::validate(data, data_end, i.l3_len) {
        Ok(h) => h,
        Err(Action::Pass(Pass::IpOptions)) if i.role != role::NONE && nat::config().is_some() => {
            return with_options(i, data, data_end);
        }
        Err(a) => return a,
    };

    if i.role == role::NONE || nat::config().is_none() {
        let r = forward::route(i, &h, h.src, h.dst);
        return forward::commit(data, data_end, &r);
    }
    let Ok(pk) = parse::parse(p) else {
        return Action::Drop(Drop::Malformed);
    };
    let fib = FibQuery {
        ctx: i.ctx,
        ifindex: i.ifindex,
        tos: h.tos,
        tot_len: match i.mtu {
            MtuCheck::TotLen => h.tot_len,
            MtuCheck::Skb => 0,
        },
    };
    let (to, outbound, slot, quoted) = match nat::decide(p, i.role, &pk, i.len, &fib, i.now) {
        Decision::Plain => {
            let r = forward::route(i, &h, h.src, h.dst);
            let (data, data_end) = p.bounds();
            return forward::commit(data, data_end, &r);
        }
        Decision::Drop(d) => return Action::Drop(d),
        Decision::Translate {
            to,
            outbound,
            route,
            quoted,
        } => (to, outbound, route, quoted),
    };

    let key = RouteKey {
        islot: i.slot,
        tos: h.tos,
        tot_len: fib.tot_len,
    };
    let r = match route::cached(&slot, &key, i.ctl) {
        Some(r) => r,
        None => {
            let r = forward::route(i, &h, to.saddr, to.daddr);
            route::remember(&slot, &key, &r, i.ctl);
            r
        }
    };
    let a = r.action;
    let rewrite_it = match a {
        Action::Redirect { .. } | Action::RedirectNeigh { .. } => true,
        // The kernel forwards or delivers the translated packet itself
        // (XDP's unresolved neighbour, a local or unmanaged destination).
        Action::Pass(Pass::NoNeigh | Pass::NotForwarded | Pass::UnmanagedEgress | Pass::Other) => {
            true
        }
        // Over the egress MTU without DF: the kernel fragments it and
        // forwards the fragments, so it must have it translated. Untranslated,
        // the fragments would leave with the inside address (and a first
        // fragment's record in `nat_frags` would translate the later ones
        // only).
        Action::Pass(Pass::FragNeeded) if !dont_fragment(p) => true,
        // The kernel must answer with an ICMP error (frag-needed, no route,
        // forwarding off). From inside it gets the packet as the host sent
        // it, so the error quotes what the host knows. From outside the
        // untranslated packet is addressed to a NAT address, which the CNF's
        // own stack must never receive, so it is dropped and counted.
        Action::Pass(_) => {
            return if outbound {
                a
            } else {
                Action::Drop(Drop::NatUnroutable)
            };
        }
        Action::Drop(_) => return a,
    };
    // An ICMP error's quote is read back only now (see `slow::quoted`),
    // and only for a decision of the global function that says so: on
    // every other path `quoted` is a constant the verifier prunes with.
    let inner = if quoted { slow::quoted() } else { None };
    if rewrite_it && rewrite::apply(p, &pk, &to, inner.as_ref()).is_err() {
        return Action::Drop(Drop::Malformed);
    }
    let (data, data_end) = p.bounds();
    forward::commit(data, data_end, &r)
}
