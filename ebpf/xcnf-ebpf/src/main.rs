//! xcnf datapath programs: NAT44 and IPv4 forwarding between the CNF's
//! interfaces.
//!
//! Two attach forms share one pipeline (`ipv4.rs`: validate, translate,
//! route, rewrite): `xcnf_tc` for tcx/clsact ingress, the fast hook on veth,
//! and `xcnf_xdp` for drivers with real XDP support. Whatever the datapath does not handle goes to the
//! kernel unchanged, so the kernel stays the authority for ARP, local
//! delivery, ICMP errors and everything that is not plain IPv4.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod cache_ctl;
mod clock;
mod counters;
mod fib;
mod forward;
mod headers;
mod iface;
mod ipv4;
mod maps;
mod nat;
mod pkt;
mod tc;
mod xdp;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// XDP ingress forwarder.
#[xdp]
pub fn xcnf_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// TC (tcx or clsact) ingress forwarder.
#[classifier]
pub fn xcnf_tc(ctx: TcContext) -> i32 {
    tc::run(&ctx)
}

/// `bpf_fib_lookup` and `bpf_redirect_neigh` are GPL-only helpers, so the
/// object must carry a GPL-compatible license or the verifier refuses it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so this never runs.
    loop {}
}
