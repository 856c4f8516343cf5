//! The decisions a packet needs only when it matches no session: a new
//! flow's mapping and allocation, and an ICMP error's session. They run as a
//! BPF *global* function, one per hook.
//!
//! Why a global function: the verifier checks a global function once, on
//! its own, with unknown inputs, and the caller then sees one call that
//! returns an unknown scalar. Inlined, the same code was verified once per
//! distinct state reaching it (every protocol, fragment kind and MTU mode),
//! and every path out of it walked the rewrite again: the new-flow and
//! ICMP-error paths were three quarters of the TC program's ~460k verified
//! instructions, and the verifier is nearly all of the agent's cold start.
//!
//! A global function takes only the context and scalars and returns a
//! scalar, so the packet's facts go in, and the decision comes back,
//! through a per-CPU scratch value ([`NAT_SLOW`]): a program run is never
//! interrupted by another one on the same CPU, so the value is this run's.
//! Nothing here writes the packet: the kernel would then have to invalidate
//! the caller's packet pointers across the call.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    cty::c_void,
};
use xcnf_common::nat::role;

use crate::{
    counters::Drop,
    maps::NAT_SLOW,
    nat::{
        self, Decision, FibQuery,
        parse::{L4, Parsed, Tuple},
        route::RouteSlot,
    },
};

/// The scratch value shared by the caller and the global function.
///
/// The parsed packet goes in as the caller's own [`Parsed`], used in place:
/// a copy on the global function's stack would count against the 512 bytes
/// the program and the function share. Only this program writes it, always
/// with valid values. It is stored as words because a map value's BTF must
/// be what the kernel accepts, and Rust's data-carrying enums are not.
#[repr(C)]
pub struct SlowIo {
    // Inputs: the parsed packet and the FIB facts.
    pk: [u64; PARSED_WORDS],
    len: u64,
    ifindex: u32,
    tot_len: u16,
    tos: u8,
    dir: u8,
    // Outputs: the decision.
    verdict: u8,
    drop: u8,
    outbound: u8,
    to: Tuple,
    /// A translated ICMP error's quote, read only at rewrite time by
    /// [`quoted`] so the program does not hold it across the FIB lookup.
    quoted: Tuple,
}

const PARSED_WORDS: usize = core::mem::size_of::<Parsed>().div_ceil(8);
const _: () = assert!(core::mem::align_of::<Parsed>() <= 8);

impl SlowIo {
    /// The parsed packet and the quote's translation, borrowed apart.
    #[inline(always)]
    fn parsed_and_quoted(&mut self) -> (&Parsed, &mut Tuple) {
        // SAFETY: `pk` is 8-byte aligned, large enough, and holds the
        // `Parsed` that `set_parsed` wrote before the call.
        let pk = unsafe { &*self.pk.as_ptr().cast::<Parsed>() };
        (pk, &mut self.quoted)
    }

    #[inline(always)]
    fn set_parsed(&mut self, pk: &Parsed) {
        // SAFETY: as in `parsed_and_quoted`; `Parsed` is `Copy`, nothing is
        // dropped.
        unsafe { core::ptr::write(self.pk.as_mut_ptr().cast::<Parsed>(), *pk) }
    }
}

const VERDICT_PLAIN: u8 = 0;
const VERDICT_DROP: u8 = 1;
const VERDICT_TRANSLATE: u8 = 2;

#[inline(always)]
fn drop_code(d: Drop) -> u8 {
    match d {
        Drop::Malformed => 0,
        Drop::Blackhole => 1,
        Drop::RedirectFailed => 2,
        Drop::NatNoMapping => 3,
        Drop::NatPoolExhausted => 4,
        Drop::NatTableFull => 5,
        Drop::NatFragmentUntracked => 6,
        // Options packets are decided before NAT (`ipv4.rs`), never here.
        Drop::NatUnroutable | Drop::NatIpOptions => 7,
    }
}

/// Masked to the eight codes so the verifier sees a bounded value: LLVM
/// turns this match and the counter it selects into one computed offset.
#[inline(always)]
fn drop_of(code: u8) -> Drop {
    match code & 7 {
        0 => Drop::Malformed,
        1 => Drop::Blackhole,
        2 => Drop::RedirectFailed,
        3 => Drop::NatNoMapping,
        4 => Drop::NatPoolExhausted,
        5 => Drop::NatTableFull,
        6 => Drop::NatFragmentUntracked,
        _ => Drop::NatUnroutable,
    }
}

/// The hook's global function, chosen by the caller's `Pkt` type.
pub trait SlowCall {
    /// Runs the global function for this program's context.
    fn call_slow(&self) -> i32;
}

/// Decides a packet that matched no session (or is an ICMP error) through
/// the hook's global function. `None` if the scratch value is missing,
/// which cannot happen for a loaded object; the caller drops the packet.
#[inline(always)]
pub fn decide<S: SlowCall>(
    s: &S,
    dir: u8,
    pk: &Parsed,
    len: u64,
    fib: &FibQuery,
) -> Option<Decision> {
    let io = NAT_SLOW.get_ptr_mut(0)?;
    {
        // SAFETY: this CPU's scratch value; no other run uses it meanwhile.
        let io = unsafe { &mut *io };
        io.set_parsed(pk);
        io.len = len;
        io.ifindex = fib.ifindex;
        io.tot_len = fib.tot_len;
        io.tos = fib.tos;
        io.dir = dir;
        io.verdict = VERDICT_DROP;
        io.drop = drop_code(Drop::Malformed);
    }
    if s.call_slow() != 0 {
        return None;
    }
    // SAFETY: as above; the global function has written the outputs.
    let io = unsafe { &*io };
    Some(match io.verdict {
        VERDICT_PLAIN => Decision::Plain,
        VERDICT_TRANSLATE => Decision::Translate {
            to: io.to,
            outbound: io.outbound != 0,
            route: RouteSlot::none(),
            quoted: pk.l4 == L4::IcmpError,
        },
        _ => Decision::Drop(drop_of(io.drop)),
    })
}

/// The translation of the packet an ICMP error quotes, as the global
/// function decided it for this packet. Only meaningful for an ICMP error
/// it translated (which only the global function decides).
#[inline(always)]
pub fn quoted() -> Option<Tuple> {
    // SAFETY: this CPU's scratch value, copied out.
    NAT_SLOW.get_ptr(0).map(|io| unsafe { (*io).quoted })
}

/// The body of both global functions: decides the packet in the scratch
/// value and writes the decision there. Returns 0, or -1 without a scratch
/// value.
#[inline(always)]
fn run(ctx: *mut c_void) -> i32 {
    let Some(io) = NAT_SLOW.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: this CPU's scratch value, filled in by the caller.
    let io = unsafe { &mut *io };
    let d = match nat::config() {
        None => Decision::Plain,
        Some(cfg) => {
            let fib = FibQuery {
                ctx,
                ifindex: io.ifindex,
                tos: io.tos,
                tot_len: io.tot_len,
            };
            let dir = if io.dir == role::INSIDE {
                role::INSIDE
            } else {
                role::OUTSIDE
            };
            let len = io.len;
            let (pk, quoted) = io.parsed_and_quoted();
            nat::decide_slow(cfg, dir, pk, len, &fib, quoted)
        }
    };
    match d {
        Decision::Plain => io.verdict = VERDICT_PLAIN,
        Decision::Drop(why) => {
            io.verdict = VERDICT_DROP;
            io.drop = drop_code(why);
        }
        Decision::Translate { to, outbound, .. } => {
            io.verdict = VERDICT_TRANSLATE;
            io.to = to;
            io.outbound = u8::from(outbound);
        }
    }
    0
}

/// The TC program's global function. Its argument must be typed as the
/// program's context (`struct __sk_buff *`) for the verifier to accept it
/// as one.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xcnf_nat_slow_tc(ctx: *mut __sk_buff) -> i32 {
    run(ctx.cast())
}

/// The XDP program's global function (context `struct xdp_md *`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xcnf_nat_slow_xdp(ctx: *mut xdp_md) -> i32 {
    run(ctx.cast())
}
