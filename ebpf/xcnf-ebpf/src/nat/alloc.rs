//! Dynamic source translation: paired pool address and port allocation.
//!
//! The port is reserved by one `BPF_NOEXIST` insert, so two CPUs racing for
//! the same port cannot both win; the loser simply tries the next candidate.
//! Probing follows the pattern proven in Cilium's SNAT: keep the source port
//! if possible, then random ports, then a linear walk, with a fixed bound.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
};
use xcnf_common::nat::{
    Binding, BindingKey, HostPairing, MAX_POOL_RANGES, NatConfig, PORT_RANDOM_TRIES, PORT_TRIES,
    Session, SessionKey, StaticKey, active, addr_flags, role,
};

use crate::{
    clock::Now,
    maps::{
        NAT_ACTIVE, NAT_ADDRS, NAT_BINDINGS, NAT_HOSTS, NAT_POOLS, NAT_PROBE, NAT_SESSIONS,
        NAT_STATIC,
    },
    nat::{
        parse::Tuple,
        session::{self, NewSession},
    },
};

/// The paired pool address of an inside host and its port range.
pub struct PoolAddr {
    pub addr: [u8; 4],
    pub port_min: u16,
    pub port_max: u16,
}

/// Why an inside host has no pool address.
pub enum Unpaired {
    /// No pool is configured: dynamic translation is off.
    NoPool,
    /// A new host, and `nat_hosts` is full.
    Full,
    /// The pairing's index lies in no pool range: only while the agent
    /// rewrites the ranges (it writes them before `nat_config`).
    NoRange,
}

/// The pool address of an inside host: the one it was paired with, or for
/// its first flow the next one in turn (RFC 4787 REQ-2, paired pooling).
/// `now_s` records the use for the sweeper (see `HostPairing::used_s`).
#[inline(always)]
pub fn paired(cfg: &NatConfig, inside: [u8; 4], now_s: u32) -> Result<PoolAddr, Unpaired> {
    if cfg.pool_addrs == 0 {
        return Err(Unpaired::NoPool);
    }
    let idx = match NAT_HOSTS.get_ptr_mut(&inside) {
        // SAFETY: a live map value.
        Some(h) if unsafe { (*h).index } < cfg.pool_addrs => unsafe {
            if (*h).used_s != now_s {
                (*h).used_s = now_s;
            }
            (*h).index
        },
        _ => pair(cfg, inside, now_s).ok_or(Unpaired::Full)?,
    };
    for i in 0..MAX_POOL_RANGES {
        if i >= cfg.pool_ranges {
            break;
        }
        let Some(r) = NAT_POOLS.get(i) else {
            break;
        };
        if idx >= r.base && idx - r.base < r.count {
            let a = u32::from_be_bytes(r.first).wrapping_add(idx - r.base);
            return Ok(PoolAddr {
                addr: a.to_be_bytes(),
                port_min: r.port_min,
                port_max: r.port_max,
            });
        }
    }
    Err(Unpaired::NoRange)
}

/// Pairs a new host with the next pool address in turn.
#[inline(always)]
fn pair(cfg: &NatConfig, inside: [u8; 4], now_s: u32) -> Option<u32> {
    let cursor = NAT_ACTIVE.get_ptr_mut(active::NEXT_ADDR)?;
    // SAFETY: a live array value, read once. Two hosts arriving at the same
    // instant may read the same turn and get the same address, which
    // pairing allows; what it forbids, one host on two addresses, the
    // NOEXIST insert below prevents.
    let next = unsafe { *cursor };
    let index = (next % u64::from(cfg.pool_addrs.max(1))) as u32;
    let v = HostPairing {
        index,
        used_s: now_s,
    };
    // A full table refuses the insert (E2BIG): nothing is evicted. Only a
    // host actually paired takes its turn, so refused hosts do not skip
    // addresses meanwhile.
    if NAT_HOSTS
        .insert(&inside, &v, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        // SAFETY: as above; atomic, as other CPUs advance it too.
        unsafe {
            core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) cursor, in(reg) 1u64);
        }
        return Some(index);
    }
    // Another CPU paired this host first, or a stale pairing points past a
    // shrunken pool: take the stored one if valid, else replace it (a
    // replacement needs no room).
    match NAT_HOSTS.get_ptr(&inside) {
        // SAFETY: a live map value, read once.
        Some(h) if unsafe { (*h).index } < cfg.pool_addrs => Some(unsafe { (*h).index }),
        Some(_) => {
            NAT_HOSTS.insert(&inside, &v, 0).ok()?;
            Some(index)
        }
        None => None,
    }
}

/// Whether a static or identity mapping owns `addr:port` for `proto`, so the
/// allocator must not hand it out.
#[inline(always)]
fn static_owned(addr: [u8; 4], port: u16, proto: u8) -> bool {
    let k = StaticKey {
        addr,
        port,
        proto,
        dir: role::OUTSIDE,
    };
    NAT_STATIC.get_ptr(&k).is_some()
}

/// How a candidate port is reserved.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reserve {
    /// Endpoint-independent: the `OUTSIDE` binding entry of the port.
    Binding = 0,
    /// Endpoint-dependent or port-less: the session's reply half.
    ReplyHalf = 1,
}

/// State of one port walk, shared with [`probe_step`]. It lives in a
/// per-CPU scratch value (`NAT_PROBE`), not on the stack: the allocator runs
/// in the NAT global function, whose frame adds to the program's within the
/// verifier's 512-byte limit.
#[repr(C)]
pub struct Probe {
    addr: [u8; 4],
    min: u32,
    max: u32,
    span: u32,
    port: u32,
    proto: u8,
    mode: Reserve,
    keep: bool,
    found: bool,
    /// The value of the `OUTSIDE` binding (mode `Binding`).
    bind: Binding,
    /// Key (with `dport` filled in per candidate) and value of the reply
    /// half (mode `ReplyHalf`).
    rkey: SessionKey,
    rval: Session,
}

impl Probe {
    /// This CPU's walk state, reset for a walk over `pool` in `mode`; the
    /// caller fills in what the mode reserves (`bind`, or `rkey` and
    /// `rval`), and [`probe`] the range and start port. The reference must
    /// not be used after `probe`, which the walk changes behind it. Looked up before
    /// anything is computed, so values built for it go straight into it
    /// instead of being spilled around the lookup. `None` only if the
    /// scratch map is missing, which a loaded object never is.
    #[inline(always)]
    fn start(pool: &PoolAddr, proto: u8, mode: Reserve) -> Option<&'static mut Probe> {
        // SAFETY: this CPU's scratch value; no other run uses it meanwhile.
        let c = unsafe { &mut *NAT_PROBE.get_ptr_mut(0)? };
        c.addr = pool.addr;
        c.proto = proto;
        c.mode = mode;
        Some(c)
    }
}

/// One candidate of the port walk, called by `bpf_loop`. Returns 1 to stop.
///
/// `bpf_loop` is what lets the walk be long: the verifier checks this body
/// once, where an unrolled or bounded loop would multiply every path after
/// it by the number of tries (Cilium sizes its retries by the verifier for
/// the same reason).
#[inline(never)]
extern "C" fn probe_step(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(c) = NAT_PROBE.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's walk state, set up by `probe` before the loop.
    let c = unsafe { &mut *c };
    if !c.keep {
        c.port = if i <= u64::from(PORT_RANDOM_TRIES) {
            // SAFETY: helper without arguments.
            c.min + unsafe { bpf_get_prandom_u32() } % c.span.max(1)
        } else if c.port >= c.max {
            c.min
        } else {
            c.port + 1
        };
    }
    c.keep = false;
    let p = c.port as u16;
    if static_owned(c.addr, p, c.proto) {
        return 0;
    }
    let ok = match c.mode {
        Reserve::Binding => {
            let k = BindingKey {
                addr: c.addr,
                port: p,
                proto: c.proto,
                dir: role::OUTSIDE,
            };
            NAT_BINDINGS
                .insert(&k, &c.bind, u64::from(BPF_NOEXIST))
                .is_ok()
        }
        Reserve::ReplyHalf => {
            c.rkey.dport = p;
            NAT_SESSIONS
                .insert(&c.rkey, &c.rval, u64::from(BPF_NOEXIST))
                .is_ok()
        }
    };
    if ok {
        c.found = true;
        1
    } else {
        0
    }
}

/// Walks the candidate ports of `pool` for `want`, reserving the first free
/// one as `c.mode` says. Returns the reserved port.
#[inline(always)]
fn probe(pool: &PoolAddr, want: u16) -> Option<u16> {
    let min = u32::from(pool.port_min);
    let max = u32::from(pool.port_max);
    if max < min {
        return None;
    }
    // A raw pointer, not a `&mut`: `probe_step` writes the result through
    // its own lookup of the same value during `bpf_loop`, and a `&mut` held
    // across the call would let the compiler assume nothing changed it (it
    // did: `found` read back as the `false` written before the loop).
    let c = NAT_PROBE.get_ptr_mut(0)?;
    // SAFETY: this CPU's walk state; no reference to it is live here.
    unsafe {
        (*c).min = min;
        (*c).max = max;
        (*c).span = max - min + 1;
        (*c).port = u32::from(want);
        (*c).keep = (*c).port >= min && (*c).port <= max;
        (*c).found = false;
    }
    // SAFETY: `probe_step` matches bpf_loop's callback ABI and finds its
    // state in the per-CPU scratch value.
    unsafe {
        bpf_loop(
            PORT_TRIES,
            probe_step as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; volatile so the loop's writes are read back.
    let (found, port) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*c).found),
            core::ptr::read_volatile(&raw const (*c).port),
        )
    };
    if found { Some(port as u16) } else { None }
}

/// An allocation result. A struct rather than an enum on purpose: an enum
/// whose failure variant leaves the address undefined makes LLVM move
/// uninitialised registers, which the verifier refuses.
pub struct Snat {
    /// Whether a port was reserved; the rest is meaningful only then.
    pub ok: bool,
    pub addr: [u8; 4],
    pub port: u16,
    /// The reply half of the session was inserted as the reservation.
    pub reply_reserved: bool,
}

impl Snat {
    #[inline(always)]
    fn to(addr: [u8; 4], port: u16, reply_reserved: bool) -> Self {
        Snat {
            ok: true,
            addr,
            port,
            reply_reserved,
        }
    }

    #[inline(always)]
    fn exhausted() -> Self {
        Snat {
            ok: false,
            addr: [0; 4],
            port: 0,
            reply_reserved: false,
        }
    }
}

/// Whether `addr` is one of the pool's addresses now.
#[inline(always)]
fn is_pool_addr(addr: [u8; 4]) -> bool {
    // SAFETY: a live map value, read once.
    NAT_ADDRS
        .get_ptr(&addr)
        .is_some_and(|a| unsafe { (*a).flags } & addr_flags::POOL != 0)
}

/// Endpoint-independent mapping (RFC 4787 REQ-1): one external endpoint per
/// inside endpoint, kept in `nat_bindings`, whatever the destination.
#[inline(always)]
pub fn eim(pool: &PoolAddr, orig: &Tuple, now: u64) -> Snat {
    let out_key = BindingKey {
        addr: orig.saddr,
        port: orig.sport,
        proto: orig.proto,
        dir: role::INSIDE,
    };
    if let Some(b) = NAT_BINDINGS.get_ptr_mut(&out_key) {
        // SAFETY: a live map value.
        let b = unsafe { &mut *b };
        let (addr, port) = (b.addr, b.port);
        let reservation = BindingKey {
            addr,
            port,
            proto: orig.proto,
            dir: role::OUTSIDE,
        };
        if is_pool_addr(addr) {
            b.last_used_ns = now;
            // The outside entry, the external port's reservation, is
            // refreshed too: the sweeper deletes a binding only while
            // neither entry has moved since its snapshot
            // (`agent/src/nat/sweep.rs`).
            if let Some(r) = NAT_BINDINGS.get_ptr_mut(&reservation) {
                // SAFETY: a live map value.
                unsafe { (*r).last_used_ns = now };
            }
            // The sweeper deletes the inside entry first and checks the
            // reservation after: if the inside entry is gone now, the
            // refresh above may have come too late to keep the reservation,
            // so the endpoint is bound anew below instead.
            if NAT_BINDINGS.get_ptr(&out_key).is_some() {
                return Snat::to(addr, port, false);
            }
        } else {
            // Bound to an address a config change took out of the pool:
            // nothing answers for it any more, so the binding goes and the
            // endpoint is bound anew below. Its sessions keep their
            // translation until they expire. The inside entry goes only if
            // it still names that address: another CPU may have bound the
            // endpoint anew meanwhile.
            let _ = NAT_BINDINGS.remove(&reservation);
            // SAFETY: a live map value, read once.
            if NAT_BINDINGS
                .get_ptr(&out_key)
                .is_some_and(|b| unsafe { (*b).addr } == addr)
            {
                let _ = NAT_BINDINGS.remove(&out_key);
            }
        }
    }
    let Some(c) = Probe::start(pool, orig.proto, Reserve::Binding) else {
        return Snat::exhausted();
    };
    c.bind = Binding {
        addr: orig.saddr,
        port: orig.sport,
        _pad: [0; 2],
        last_used_ns: now,
    };
    let Some(port) = probe(pool, orig.sport) else {
        return Snat::exhausted();
    };
    let fwd = Binding {
        addr: pool.addr,
        port,
        _pad: [0; 2],
        last_used_ns: now,
    };
    if NAT_BINDINGS
        .insert(&out_key, &fwd, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU bound this inside endpoint meanwhile: release our port
        // and use its binding, so the endpoint keeps a single mapping.
        let _ = NAT_BINDINGS.remove(&BindingKey {
            addr: pool.addr,
            port,
            proto: orig.proto,
            dir: role::OUTSIDE,
        });
        return match NAT_BINDINGS.get_ptr(&out_key) {
            // SAFETY: a live map value.
            Some(b) => unsafe { Snat::to((*b).addr, (*b).port, false) },
            None => Snat::exhausted(),
        };
    }
    Snat::to(pool.addr, port, false)
}

/// An external endpoint for `orig` that is reachable from outside only
/// through the session itself: endpoint-dependent mapping, and protocols
/// without ports (`orig.sport == 0`, a single candidate). The reservation is
/// the session's reply half.
#[inline(always)]
pub fn by_reply_half(pool: &PoolAddr, n: &NewSession, now: Now, has_ports: bool) -> Snat {
    let Some(c) = Probe::start(pool, n.orig.proto, Reserve::ReplyHalf) else {
        return Snat::exhausted();
    };
    // The reply comes from where the flow is sent: `n.to`'s destination,
    // which a hairpin has already moved from the external endpoint to the
    // local one (`session::create` keys the reply half the same way).
    c.rkey = SessionKey {
        saddr: n.to.daddr,
        daddr: pool.addr,
        sport: n.to.dport,
        dport: 0,
        proto: n.orig.proto,
        dir: n.peer_dir,
        _pad: [0; 2],
    };
    session::reply_half(&mut c.rval, n, now);
    let port = if has_ports {
        probe(pool, n.orig.sport)
    } else if NAT_SESSIONS
        .insert(&c.rkey, &c.rval, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        Some(0)
    } else {
        None
    };
    match port {
        Some(port) => Snat::to(pool.addr, port, true),
        None => Snat::exhausted(),
    }
}
