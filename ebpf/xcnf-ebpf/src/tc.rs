//! TC attach form (tcx, or clsact on older kernels): forwards with
//! `bpf_redirect`, or `bpf_redirect_neigh` while the next hop's MAC is unknown,
//! or `bpf_redirect_peer` when the egress is a veth whose peer is in another
//! namespace (`IfaceConfig` flag `PEER_REDIRECT`, set by the agent).
//!
//! On veth this is the fast hook: the skb is forwarded as is, while native XDP
//! on veth would first copy it into an XDP buffer. It is also where NAT is
//! right for veth: see `pkt.rs` on checksums.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use xcnf_common::nat::role;

use crate::{
    cache_ctl, clock,
    counters::{self, Drop, Pass},
    fib,
    forward::{self, Action, MtuCheck},
    headers::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, IPV4_HLEN, NAT_PULL_LEN},
    iface,
    ipv4::{self, Ingress},
    nat, pkt,
};

const PACKET_HOST: u32 = 0;
/// Headers plain forwarding reads, which must be in the linear area.
const PULL_LEN: usize = ETH_HLEN + IPV4_HLEN;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: skb is the __sk_buff the kernel passed in.
    let (len, ifindex, pkt_type, gso_segs) =
        unsafe { ((*skb).len, (*skb).ifindex, (*skb).pkt_type, (*skb).gso_segs) };
    let len = len as usize;
    let now = clock::now();
    let ctl = cache_ctl::read();
    let iface::IngressIf {
        role,
        mac,
        slot,
        counters: c,
        ..
    } = iface::ingress(ifindex, now.ms, ctl);
    counters::rx(c, len as u64);

    // Frames built from pages (GRO, trafgen, many drivers) carry only the
    // Ethernet header in the linear area; every header read needs it pulled.
    // NAT reads up to an ICMP error's quoted ports.
    let need = if role == role::NONE {
        PULL_LEN
    } else {
        NAT_PULL_LEN
    };
    // A frame shorter than `need` (a 60-byte UDP frame is shorter than an
    // ICMP error's quote) is pulled only if it is not all linear already:
    // the helper call is a measurable part of a small packet's cost.
    let want = if len < need { len } else { need };
    if ctx.data() + want > ctx.data_end() {
        // A failed pull leaves the skb as it was; the bounds checks below
        // then classify it as short.
        let _ = ctx.pull_data(want as u32);
    }
    let data = ctx.data();
    let data_end = ctx.data_end();

    let action = match forward::ether_type(data, data_end) {
        None => Action::Drop(Drop::Malformed),
        Some(ETH_P_IP) if pkt_type != PACKET_HOST => Action::Pass(Pass::NotForUs),
        Some(ETH_P_IP) => {
            let mtu = if gso_segs > 1 {
                MtuCheck::Skb
            } else {
                MtuCheck::TotLen
            };
            ipv4::run(
                &pkt::Tc(ctx),
                &Ingress {
                    ctx: ctx.as_ptr(),
                    ifindex,
                    slot,
                    role,
                    l3_len: len.saturating_sub(ETH_HLEN),
                    len: len as u64,
                    mtu,
                    neigh_redirect: true,
                    now,
                    ctl,
                },
            )
        }
        Some(ETH_P_ARP)
            if role == role::OUTSIDE
                && nat::config().is_some()
                && nat::arp::answer(ctx.as_ptr(), ifindex, mac, data, data_end) =>
        {
            // The request became the reply: back out of the same interface.
            // bpf_redirect fills in no MACs, the reply carries its own.
            Action::Redirect {
                ifindex,
                peer: u32::from(iface::peer_redirect(ifindex, now.ms, ctl)),
            }
        }
        Some(_) => Action::Pass(Pass::NotIpv4),
    };

    match action {
        Action::Redirect { ifindex: out, peer } => {
            let rc = if peer != 0 {
                // SAFETY: plain helper call; this program runs at TC
                // ingress, where a peer redirect is allowed.
                unsafe { bpf_redirect_peer(out, 0) }
            } else {
                // SAFETY: plain helper call; flags 0 means egress redirect.
                unsafe { bpf_redirect(out, 0) }
            };
            finish_redirect(ctx, c, rc, out, len)
        }
        Action::RedirectNeigh {
            ifindex: out,
            nexthop,
        } => {
            let rc = fib::redirect_neigh(out, nexthop);
            finish_redirect(ctx, c, rc, out, len)
        }
        Action::Pass(why) => {
            counters::passed(c, why);
            TC_ACT_OK as i32
        }
        Action::Drop(why) => {
            counters::dropped(c, why);
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn finish_redirect(
    ctx: &TcContext,
    c: Option<core::ptr::NonNull<xcnf_common::IfCounters>>,
    rc: i64,
    out: u32,
    len: usize,
) -> i32 {
    if rc == i64::from(TC_ACT_REDIRECT) {
        counters::forwarded(c, len as u64);
        TC_ACT_REDIRECT as i32
    } else {
        debug!(ctx, "tc: redirect to ifindex {} failed: {}", out, rc);
        counters::dropped(c, Drop::RedirectFailed);
        TC_ACT_SHOT as i32
    }
}
