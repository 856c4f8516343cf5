//! Session halves: lookup with bookkeeping, and creation of both halves.

use aya_ebpf::bindings::BPF_NOEXIST;
use xcnf_common::nat::{INITIATOR, Session, SessionKey, active, tcp_seen};

use crate::{
    clock,
    maps::{NAT_ACTIVE, NAT_FLOW, NAT_NEW, NAT_SESSIONS},
    nat::{
        parse::{L4, Tuple},
        route::RouteSlot,
        stats,
    },
};

#[inline(always)]
pub fn key(t: &Tuple, dir: u8) -> SessionKey {
    SessionKey {
        saddr: t.saddr,
        daddr: t.daddr,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        dir,
        _pad: [0; 2],
    }
}

/// The tuple a session half rewrites its packets to.
#[inline(always)]
pub fn target(k: &SessionKey, s: &Session) -> Tuple {
    Tuple {
        saddr: s.saddr,
        daddr: s.daddr,
        sport: s.sport,
        dport: s.dport,
        proto: k.proto,
    }
}

/// TCP flags that change a session's state, as [`tcp_seen`] bits.
#[inline(always)]
pub fn seen_bits(l4: L4, tcp_flags: u8) -> u8 {
    if l4 != L4::Tcp {
        return 0;
    }
    let mut b = 0;
    if tcp_flags & TCP_SYN != 0 {
        b |= tcp_seen::SYN;
    }
    if tcp_flags & TCP_FIN != 0 {
        b |= tcp_seen::FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        b |= tcp_seen::RST;
    }
    b
}

/// An established session half a packet hit.
pub struct Hit {
    /// What the packet is rewritten to.
    pub to: Tuple,
    /// The half itself, for its route cache.
    pub route: RouteSlot,
}

/// Whether a TCP segment opens a connection: SYN without ACK.
#[inline(always)]
pub fn opening(l4: L4, tcp_flags: u8) -> bool {
    l4 == L4::Tcp && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// TCP header flag bits.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Looks up the half for a packet and records it: time, counts, TCP flags.
/// A connection `opening` on the tuple of one that closed or was reset
/// starts the session's TCP state over ([`reopened`]).
#[inline(always)]
pub fn hit(k: &SessionKey, seen: u8, opening: bool, len: u64, now: clock::Now) -> Option<Hit> {
    let p = NAT_SESSIONS.get_ptr_mut(k)?;
    // SAFETY: a live map value; concurrent writers on other CPUs can only
    // make the counts approximate, never the memory invalid.
    let s = unsafe { &mut *p };
    let t = now.ns;
    // Only store the time when it moved, so a hot flow does not dirty the
    // cache line on every packet more than the counters already do.
    if s.last_seen_ns != t {
        s.last_seen_ns = t;
    }
    s.packets += 1;
    s.bytes += len;
    if !(opening && reopened(k, s)) && s.flags & seen != seen {
        s.flags |= seen;
    }
    Some(Hit {
        to: target(k, s),
        route: RouteSlot {
            s: p,
            now_ms: now.ms,
        },
    })
}

/// Starts the TCP state of a session over in both halves if either has seen
/// FIN or RST, as VPP reopens a closed session on a new SYN: this half has
/// seen the SYN, its peer nothing yet. Without it a client reconnecting from
/// the same port within the transitory timeout would keep the old
/// connection's FIN or RST (a server's RST is on the other half), and its
/// session the transitory timeout, for as long as it lives. Called for a SYN
/// without ACK only, so the peer's lookup stays off the fast path.
#[inline(always)]
fn reopened(k: &SessionKey, s: &mut Session) -> bool {
    const CLOSED: u8 = tcp_seen::FIN | tcp_seen::RST;
    let p = NAT_SESSIONS.get_ptr_mut(&k.peer(s));
    // SAFETY: a live map value.
    let peer_flags = p.map_or(0, |p| unsafe { (*p).flags });
    if (s.flags | peer_flags) & CLOSED == 0 {
        return false;
    }
    s.flags = (s.flags & INITIATOR) | tcp_seen::SYN;
    if let Some(p) = p {
        // SAFETY: a live map value.
        unsafe { (*p).flags &= INITIATOR };
    }
    true
}

/// The translation of a session half without recording a packet: ICMP
/// errors neither refresh nor count toward the flow they quote.
#[inline(always)]
pub fn hit_quiet(k: &SessionKey) -> Option<Tuple> {
    // SAFETY: a live map value, copied out.
    NAT_SESSIONS.get_ptr(k).map(|s| target(k, unsafe { &*s }))
}

/// Whether another session may be created (`maxSessions`).
#[inline(always)]
pub fn admit(max_sessions: u32) -> bool {
    let (Some(c), Some(b)) = (
        NAT_ACTIVE.get(active::CREATED),
        NAT_ACTIVE.get(active::BASE),
    ) else {
        return false;
    };
    // Read without a lock: concurrent creations on other CPUs can overshoot
    // by at most one each, which the LRU's slack absorbs.
    c.wrapping_add(*b) < u64::from(max_sessions)
}

/// Everything needed to create a session from its first packet. Built in a
/// per-CPU scratch value (`NAT_FLOW`) by [`flow`], for the reason given at
/// [`Halves`].
#[repr(C)]
pub struct NewSession {
    /// The first packet's tuple and the role it arrived on.
    pub orig: Tuple,
    pub dir: u8,
    /// Its translation and the role its replies will arrive on.
    pub to: Tuple,
    pub peer_dir: u8,
    pub kind: u8,
    pub seen: u8,
    pub len: u64,
}

/// This CPU's [`NewSession`], filled in. `None` only if the scratch map is
/// missing, which a loaded object never is.
#[inline(always)]
pub fn flow(
    orig: &Tuple,
    dir: u8,
    to: &Tuple,
    peer_dir: u8,
    kind: u8,
    seen: u8,
    len: u64,
) -> Option<&'static mut NewSession> {
    // SAFETY: this CPU's scratch value; no other run uses it meanwhile.
    let n = unsafe { &mut *NAT_FLOW.get_ptr_mut(0)? };
    n.orig = *orig;
    n.dir = dir;
    n.to = *to;
    n.peer_dir = peer_dir;
    n.kind = kind;
    n.seen = seen;
    n.len = len;
    Some(n)
}

pub enum Created {
    /// Both halves inserted.
    New,
    /// Another CPU created the same flow first: use its translation.
    Raced(Tuple),
    /// The reply half's key belongs to another flow.
    Conflict,
}

/// The keys and values of a new session's two halves. They are built in a
/// per-CPU scratch value (`NAT_NEW`), not on the stack: creation runs in the
/// NAT global function, whose frame adds to the program's within the
/// verifier's 512-byte limit.
#[repr(C)]
pub struct Halves {
    fwd_key: SessionKey,
    rev_key: SessionKey,
    fwd: Session,
    rev: Session,
}

/// Inserts both halves: the reply half first (unless `reply_reserved`, when
/// the allocator already inserted it as its port reservation), so that
/// whenever a forward half exists its reply half does too.
#[inline(always)]
pub fn create(n: &NewSession, reply_reserved: bool) -> Created {
    let Some(h) = NAT_NEW.get_ptr_mut(0) else {
        return Created::Conflict;
    };
    // SAFETY: this CPU's scratch value; no other run uses it meanwhile.
    let h = unsafe { &mut *h };
    // Coarse (jiffy) resolution is plenty for timeouts of seconds (see
    // `clock.rs`).
    let t = clock::now();
    h.fwd_key = key(&n.orig, n.dir);
    h.rev_key = SessionKey {
        saddr: n.to.daddr,
        daddr: n.to.saddr,
        sport: n.to.dport,
        dport: n.to.sport,
        proto: n.orig.proto,
        dir: n.peer_dir,
        _pad: [0; 2],
    };
    // Both halves are written out before the first insert, so nothing of
    // `n` is held in registers across the helper calls (the spills would
    // grow the frame this global function shares with the program). The
    // reply half is built even when the allocator already inserted it:
    // building it on one path only made LLVM read a register no
    // instruction wrote on the other, which the verifier refuses.
    clear(&mut h.fwd);
    let f = &mut h.fwd;
    f.saddr = n.to.saddr;
    f.daddr = n.to.daddr;
    f.sport = n.to.sport;
    f.dport = n.to.dport;
    f.peer_dir = n.peer_dir;
    f.flags = n.seen | INITIATOR;
    f.kind = n.kind;
    f.created_s = t.s;
    f.last_seen_ns = t.ns;
    f.packets = 1;
    f.bytes = n.len;
    reply_half(&mut h.rev, n, t);
    if !reply_reserved {
        if NAT_SESSIONS
            .insert(&h.rev_key, &h.rev, u64::from(BPF_NOEXIST))
            .is_err()
        {
            return match hit_quiet(&h.fwd_key) {
                Some(t) => {
                    stats::bump(|s| &mut s.create_races);
                    Created::Raced(t)
                }
                None => Created::Conflict,
            };
        }
    }
    if NAT_SESSIONS
        .insert(&h.fwd_key, &h.fwd, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Lost the race for this flow: our reply half is unused.
        let _ = NAT_SESSIONS.remove(&h.rev_key);
        stats::bump(|s| &mut s.create_races);
        return match hit_quiet(&h.fwd_key) {
            Some(t) => Created::Raced(t),
            None => Created::Conflict,
        };
    }
    if let Some(c) = NAT_ACTIVE.get_ptr_mut(active::CREATED) {
        // SAFETY: a live, 8-byte aligned array value. BPF's atomic add (the
        // one atomic every kernel has, no result fetched) is what makes
        // creations on several CPUs count correctly; core's atomics do not
        // lower to it on this target.
        unsafe {
            core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) c, in(reg) 1u64);
        }
    }
    Created::New
}

/// Writes the reply half of a new session into `r`: it rewrites replies
/// back to the original tuple, swapped.
#[inline(always)]
pub fn reply_half(r: &mut Session, n: &NewSession, t: clock::Now) {
    clear(r);
    r.saddr = n.orig.daddr;
    r.daddr = n.orig.saddr;
    r.sport = n.orig.dport;
    r.dport = n.orig.sport;
    r.peer_dir = n.dir;
    r.kind = n.kind;
    r.created_s = t.s;
    r.last_seen_ns = t.ns;
}

/// Zeroes a session value in place, a word at a time. A struct literal's
/// `..Session::default()` compiled to calls of the object's byte-at-a-time
/// `memset`, a few hundred instructions per new session; volatile stores
/// keep LLVM from merging these back into such a call.
#[inline(always)]
fn clear(s: &mut Session) {
    const WORDS: usize = core::mem::size_of::<Session>() / 8;
    let p = core::ptr::from_mut(s).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: `Session` is 8-byte aligned, a multiple of 8 bytes long
        // (asserted below) and plain integers, so every word is in bounds
        // and all-zero bits are a valid value.
        unsafe { p.add(i).write_volatile(0) };
    }
}

const _: () =
    assert!(core::mem::size_of::<Session>() % 8 == 0 && core::mem::align_of::<Session>() == 8);
