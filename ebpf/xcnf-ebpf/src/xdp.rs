//! XDP attach form: forwards through a `DEVMAP_HASH` redirect.
//!
//! XDP has no neighbour-resolving redirect, so an unresolved next hop goes to
//! the kernel (translated, when NAT applies), whose ARP then makes the
//! following packets fast. NAT here rewrites checksums arithmetically: see
//! `pkt.rs` for when that is right and why veth defaults to TC.

use aya_ebpf::{EbpfContext as _, bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::debug;
use xcnf_common::nat::role;

use crate::{
    cache_ctl, clock,
    counters::{self, Drop, Pass},
    forward::{self, Action, MtuCheck},
    headers::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, EthHdr, ptr_at},
    iface,
    ipv4::{self, Ingress},
    maps::TX_PORTS,
    nat, pkt,
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    let data_end = ctx.data_end();
    // SAFETY: ctx.ctx is the xdp_md the kernel passed in.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let len = data_end - data;
    let now = clock::now();
    let ctl = cache_ctl::read();
    let i = iface::ingress(ifindex, now.ms, ctl);
    let c = i.counters;
    counters::rx(c, len as u64);
    let (role, mac) = (i.managed.then_some(i.role), i.mac);

    let action = match forward::ether_type(data, data_end) {
        None => Action::Drop(Drop::Malformed),
        Some(ETH_P_IP) => match role {
            Some(role) if addressed_to(mac, data, data_end) => ipv4::run(
                &pkt::Xdp(ctx),
                &Ingress {
                    ctx: ctx.as_ptr(),
                    ifindex,
                    slot: i.slot,
                    role,
                    l3_len: len - ETH_HLEN,
                    len: len as u64,
                    mtu: MtuCheck::TotLen,
                    neigh_redirect: false,
                    now,
                    ctl,
                },
            ),
            _ => Action::Pass(Pass::NotForUs),
        },
        Some(ETH_P_ARP)
            if role == Some(role::OUTSIDE)
                && nat::config().is_some()
                && nat::arp::answer(ctx.as_ptr(), ifindex, mac, data, data_end) =>
        {
            counters::forwarded(c, len as u64);
            return xdp_action::XDP_TX;
        }
        Some(_) => Action::Pass(Pass::NotIpv4),
    };

    match action {
        // XDP redirects through the devmap; a peer redirect is TC's.
        Action::Redirect { ifindex: out, .. } => match TX_PORTS.redirect(out, 0) {
            Ok(verdict) => {
                counters::forwarded(c, len as u64);
                verdict
            }
            Err(_) => {
                debug!(ctx, "xdp: no devmap entry for egress ifindex {}", out);
                counters::dropped(c, Drop::RedirectFailed);
                xdp_action::XDP_DROP
            }
        },
        // Not produced for XDP (neigh_redirect is false); kept total for safety.
        Action::RedirectNeigh { .. } => {
            counters::passed(c, Pass::NoNeigh);
            xdp_action::XDP_PASS
        }
        Action::Pass(why) => {
            counters::passed(c, why);
            xdp_action::XDP_PASS
        }
        Action::Drop(why) => {
            counters::dropped(c, why);
            xdp_action::XDP_DROP
        }
    }
}

/// XDP sees frames before the stack classifies them, so without a `pkt_type`
/// it compares the destination MAC with the interface's own address.
#[inline(always)]
fn addressed_to(mac: [u8; 6], data: usize, data_end: usize) -> bool {
    let Some(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return false;
    };
    // SAFETY: bounds-checked by ptr_at.
    unsafe { (*eth).dst == mac }
}
