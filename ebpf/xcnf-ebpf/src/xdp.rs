//! XDP attach form: forwards through a `DEVMAP_HASH` redirect.
//!
//! XDP has no neighbour-resolving redirect, so an unresolved next hop goes to
//! the kernel, whose ARP then makes the following packets fast.

use aya_ebpf::{EbpfContext as _, bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::debug;

use crate::{
    counters::{self, Drop, Pass},
    forward::{self, Action, MtuCheck},
    headers::{ETH_HLEN, ETH_P_IP, EthHdr, ptr_at},
    maps::{IFACES, TX_PORTS},
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    let data_end = ctx.data_end();
    // SAFETY: ctx.ctx is the xdp_md the kernel passed in.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let len = data_end - data;
    let c = counters::slot(ifindex);
    counters::rx(c, len as u64);

    let action = match forward::ether_type(data, data_end) {
        None => Action::Drop(Drop::Malformed),
        Some(ETH_P_IP) => {
            if addressed_to(ifindex, data, data_end) {
                forward::ipv4(
                    ctx.as_ptr(),
                    data,
                    data_end,
                    len - ETH_HLEN,
                    ifindex,
                    MtuCheck::TotLen,
                    false,
                )
            } else {
                Action::Pass(Pass::NotForUs)
            }
        }
        Some(_) => Action::Pass(Pass::NotIpv4),
    };

    match action {
        Action::Redirect { ifindex: out } => match TX_PORTS.redirect(out, 0) {
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
fn addressed_to(ifindex: u32, data: usize, data_end: usize) -> bool {
    let (Some(cfg), Some(eth)) = (IFACES.get_ptr(ifindex), ptr_at::<EthHdr>(data, data_end, 0))
    else {
        return false;
    };
    // SAFETY: cfg is a live map value, eth was bounds-checked.
    unsafe { (*cfg).mac == (*eth).dst }
}
