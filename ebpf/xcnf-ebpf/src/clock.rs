//! The datapath's clock: `CLOCK_MONOTONIC_COARSE`, the clock session
//! timestamps and the agent's sweeper use, read through the kernel only once
//! per jiffy on each CPU.
//!
//! The coarse clock only moves on a timer tick, so every read between two
//! ticks returns the same value. `bpf_jiffies64` is inlined by the verifier
//! into a load of `jiffies`, while `bpf_ktime_get_coarse_ns` is a chain of
//! kernel calls whose returns are speculation-safe RETs on current CPUs: on
//! an established flow it was about a tenth of the packet's cost. The tick
//! increments `jiffies` just before it moves the coarse clock, so a read in
//! between keeps the previous tick's time for one jiffy: timestamps are at
//! most one tick (1–10 ms) behind, against timeouts of seconds.

use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::maps::CLOCK;

/// One CPU's last clock read.
#[repr(C)]
pub struct Clock {
    jiffies: u64,
    ns: u64,
    ms: u32,
    s: u32,
}

/// A clock reading in the units the datapath stores, each derived once per
/// tick rather than divided out on every packet.
#[derive(Clone, Copy)]
pub struct Now {
    pub ns: u64,
    /// `ns` in milliseconds, truncated to 32 bits (the route cache's ages).
    pub ms: u32,
    /// `ns` in seconds (a session's creation).
    pub s: u32,
}

#[inline(always)]
fn read() -> Now {
    // SAFETY: helper without arguments.
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    Now {
        ns,
        ms: (ns / 1_000_000) as u32,
        s: (ns / 1_000_000_000) as u32,
    }
}

/// The coarse monotonic time.
#[inline(always)]
pub fn now() -> Now {
    // SAFETY: helper without arguments.
    let j = unsafe { bpf_jiffies64() };
    let Some(c) = CLOCK.get_ptr_mut(0) else {
        return read();
    };
    // SAFETY: this CPU's value; no other run uses it meanwhile.
    let c = unsafe { &mut *c };
    if c.jiffies != j {
        let n = read();
        c.ns = n.ns;
        c.ms = n.ms;
        c.s = n.s;
        c.jiffies = j;
    }
    Now {
        ns: c.ns,
        ms: c.ms,
        s: c.s,
    }
}
