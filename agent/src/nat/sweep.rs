//! The session sweeper: expires idle sessions (both halves together),
//! removes orphan halves, unused bindings and the address pairings of hosts
//! with neither, and keeps the active-session count the datapath's
//! admission check reads.
//!
//! The sweeper lives in the agent rather than in `bpf_timer` callbacks so
//! that the state machine and its timeouts stay in one place, testable
//! without a kernel; the datapath only records what it saw. The decision is
//! [`decide`], a pure function over a snapshot; [`sweep_once`] applies it,
//! re-reading every entry just before deleting it so that a packet that
//! arrived since the snapshot keeps its session.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use tracing::{debug, warn};
use xcnf_common::{
    maps,
    nat::{Binding, BindingKey, HostPairing, Session, SessionKey, active, role},
};

use super::{
    NatError,
    session::{State, idle_ns, pair},
    tables::{SessionMaps, get_present, monotonic_ns},
};
use crate::{config::NatTimeouts, datapath::remove_if_present};

/// How long a half without its peer, or a binding without sessions, is kept:
/// the datapath inserts the two halves (and a binding before its session)
/// one after the other, so a snapshot can catch one without the other.
pub const GRACE: Duration = Duration::from_secs(2);

/// Sweep often enough that a session outlives its timeout by at most a
/// quarter of the shortest one, but not more than 4 times a second.
pub fn interval(t: &NatTimeouts) -> Duration {
    (t.min() / 4).clamp(Duration::from_millis(250), Duration::from_secs(10))
}

/// What one sweep should do, computed from a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Expired sessions: both halves, deleted together.
    pub expired: Vec<[(SessionKey, u64); 2]>,
    /// Halves whose peer is missing, idle longer than [`GRACE`].
    pub orphans: Vec<(SessionKey, u64)>,
    /// Bindings no live session uses, idle longer than [`GRACE`]: each one's
    /// entries (both directions, or the one left), the inside one first,
    /// with the `last_used_ns` seen.
    pub bindings: Vec<Vec<(BindingKey, u64)>>,
    /// Live sessions: pairs kept, plus young orphans (a session whose
    /// second half is being inserted right now).
    pub live: u64,
}

/// A binding as a session uses it: inside address and port, protocol,
/// external address and port.
type BindingUse = ([u8; 4], u16, u8, [u8; 4], u16);

fn older_than(now_ns: u64, t_ns: u64, limit: Duration) -> bool {
    u128::from(now_ns.saturating_sub(t_ns)) > limit.as_nanos()
}

/// Decides what to delete. `(sessions, bindings)` is one snapshot of the
/// maps; entries carry the time they were last seen or used so that the
/// caller can skip any that changed before it got to delete them.
pub fn decide(
    sessions: &[(SessionKey, Session)],
    bindings: &[(BindingKey, Binding)],
    now_ns: u64,
    timeouts: &NatTimeouts,
) -> Decision {
    let mut d = Decision::default();
    let pairing = pair(sessions);
    // (inside addr, inside port, proto, external addr, external port) of
    // every session that stays: the bindings they use stay too.
    let mut used: HashSet<BindingUse> = HashSet::new();
    let mut uses = |k: &SessionKey, v: &Session| {
        if k.dir == role::INSIDE {
            used.insert((k.saddr, k.sport, k.proto, v.saddr, v.sport));
        }
    };
    for &(i, j) in &pairing.pairs {
        let ((ka, va), (kb, vb)) = (&sessions[i], &sessions[j]);
        let state = State::of(ka.proto, va, vb);
        let idle = idle_ns(now_ns, va, vb);
        if u128::from(idle) > state.timeout(timeouts).as_nanos() {
            d.expired
                .push([(*ka, va.last_seen_ns), (*kb, vb.last_seen_ns)]);
        } else {
            d.live += 1;
            uses(ka, va);
            uses(kb, vb);
        }
    }
    for &i in &pairing.orphans {
        let (k, v) = &sessions[i];
        if older_than(now_ns, v.last_seen_ns, GRACE) {
            d.orphans.push((*k, v.last_seen_ns));
        } else {
            d.live += 1;
            uses(k, v);
        }
    }

    let by_key: HashMap<BindingKey, &Binding> = bindings.iter().map(|(k, v)| (*k, v)).collect();
    let mut doomed: HashSet<BindingKey> = HashSet::new();
    for (k, v) in bindings {
        // The other direction of this binding, if it points back at `k`.
        let other_key = BindingKey {
            addr: v.addr,
            port: v.port,
            proto: k.proto,
            dir: if k.dir == role::INSIDE {
                role::OUTSIDE
            } else {
                role::INSIDE
            },
        };
        let other = by_key
            .get(&other_key)
            .filter(|o| o.addr == k.addr && o.port == k.port);
        let (inside, external) = if k.dir == role::INSIDE {
            ((k.addr, k.port), (v.addr, v.port))
        } else {
            ((v.addr, v.port), (k.addr, k.port))
        };
        let in_use = used.contains(&(inside.0, inside.1, k.proto, external.0, external.1));
        let last_used = other.map_or(v.last_used_ns, |o| o.last_used_ns.max(v.last_used_ns));
        if !in_use && older_than(now_ns, last_used, GRACE) && doomed.insert(*k) {
            let mut entries = vec![(*k, v.last_used_ns)];
            if let Some(o) = other
                && doomed.insert(other_key)
            {
                entries.push((other_key, o.last_used_ns));
            }
            entries.sort_by_key(|(k, _)| k.dir != role::INSIDE);
            d.bindings.push(entries);
        }
    }
    d
}

/// What one sweep did, for the debug log and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub halves: usize,
    pub live: u64,
    pub expired: usize,
    pub orphans: usize,
    pub bindings: usize,
    /// Pairings of hosts with no session or binding left.
    pub hosts: usize,
    /// Entries seen again since the snapshot, so not deleted.
    pub revived: usize,
}

fn delete_if_unchanged(
    maps: &mut SessionMaps,
    key: &SessionKey,
    seen_ns: u64,
) -> Result<bool, NatError> {
    match get_present(&maps.sessions, key, || maps.path(maps::NAT_SESSIONS))? {
        Some(v) if v.last_seen_ns == seen_ns => remove_session(maps, key).map(|()| true),
        Some(_) => Ok(false),
        None => Ok(true),
    }
}

fn remove_session(maps: &mut SessionMaps, key: &SessionKey) -> Result<(), NatError> {
    remove_if_present(&mut maps.sessions, key).map_err(|source| NatError::Map {
        path: maps.path(maps::NAT_SESSIONS),
        source,
    })
}

/// The binding entries as the sweeper needs them, so that the order of its
/// checks and deletes can be tested without a kernel.
pub trait BindingStore {
    /// `last_used_ns` of the entry, `None` if it is gone.
    fn last_used(&self, k: &BindingKey) -> Result<Option<u64>, NatError>;
    /// Deletes the entry; one already gone is not an error.
    fn remove(&mut self, k: &BindingKey) -> Result<(), NatError>;
}

impl BindingStore for SessionMaps {
    fn last_used(&self, k: &BindingKey) -> Result<Option<u64>, NatError> {
        Ok(
            get_present(&self.bindings, k, || self.path(maps::NAT_BINDINGS))?
                .map(|v| v.last_used_ns),
        )
    }

    fn remove(&mut self, k: &BindingKey) -> Result<(), NatError> {
        remove_if_present(&mut self.bindings, k).map_err(|source| NatError::Map {
            path: self.path(maps::NAT_BINDINGS),
            source,
        })
    }
}

/// Deletes the doomed bindings whose entries are all as the snapshot saw
/// them; returns (bindings deleted, bindings revived).
///
/// Both directions go or stay together: the outside entry is the external
/// port's reservation, and deleting it under a binding a new flow has just
/// reused would let another inside host take the same port. The datapath
/// refreshes both entries when it reuses a binding. The inside entry goes
/// first, so no new flow finds the binding afterwards, and the outside one
/// is checked once more before it goes: a flow that reused the binding in
/// between has refreshed it, and keeps its reservation.
pub fn apply_bindings<S: BindingStore>(
    store: &mut S,
    doomed: &[Vec<(BindingKey, u64)>],
) -> Result<(usize, usize), NatError> {
    let (mut deleted, mut revived) = (0, 0);
    let unchanged = |store: &S, (k, used): &(BindingKey, u64)| -> Result<bool, NatError> {
        Ok(store.last_used(k)?.is_none_or(|u| u == *used))
    };
    'binding: for entries in doomed {
        for e in entries {
            if !unchanged(store, e)? {
                revived += 1;
                continue 'binding;
            }
        }
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && !unchanged(store, e)? {
                revived += 1;
                continue 'binding;
            }
            store.remove(&e.0)?;
        }
        deleted += 1;
    }
    Ok((deleted, revived))
}

/// The pairings (`nat_hosts`) to delete: hosts that no session half and no
/// binding in the snapshot names as the inside address, and that no new
/// flow used since `GRACE` before the snapshot began (`since_ns`), since a
/// flow opened while the snapshot was read may be missing from it.
///
/// Sessions and bindings this sweep deletes still count: a session revived
/// meanwhile keeps its host's pairing, which goes one sweep later. A
/// pairing removed while the host still had a flow would pair its next flow
/// again, possibly to another address (RFC 4787 REQ-2).
pub fn idle_hosts(
    sessions: &[(SessionKey, Session)],
    bindings: &[(BindingKey, Binding)],
    hosts: &[([u8; 4], HostPairing)],
    since_ns: u64,
) -> Vec<([u8; 4], HostPairing)> {
    let mut named: HashSet<[u8; 4]> = sessions
        .iter()
        .filter(|(k, _)| k.dir == role::INSIDE)
        .map(|(k, _)| k.saddr)
        .collect();
    named.extend(bindings.iter().map(|(k, v)| {
        if k.dir == role::INSIDE {
            k.addr
        } else {
            v.addr
        }
    }));
    hosts
        .iter()
        .filter(|(h, p)| {
            // `used_s` is truncated: the use may have been up to a second later.
            let used_ns = (u64::from(p.used_s) + 1).saturating_mul(1_000_000_000);
            !named.contains(h) && older_than(since_ns, used_ns, GRACE)
        })
        .copied()
        .collect()
}

/// The pairings as the sweeper needs them, so that its re-check can be
/// tested without a kernel.
pub trait HostStore {
    /// The host's pairing, `None` if it is gone.
    fn pairing(&self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError>;
    /// Removes the host's pairing and returns it, atomically; `None` if it
    /// is gone.
    fn take(&mut self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError>;
    /// Puts a pairing back, unless the host has one again by now.
    fn restore(&mut self, host: &[u8; 4], p: HostPairing) -> Result<(), NatError>;
}

impl HostStore for SessionMaps {
    fn pairing(&self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError> {
        get_present(&self.hosts, host, || self.path(maps::NAT_HOSTS))
    }

    fn take(&mut self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError> {
        self.take_host(host)
    }

    fn restore(&mut self, host: &[u8; 4], p: HostPairing) -> Result<(), NatError> {
        self.restore_host(host, p)
    }
}

/// Deletes the idle pairings that are still as the snapshot saw them;
/// returns (deleted, revived).
///
/// A pairing a new flow used since the snapshot has a newer `used_s` and is
/// left alone. One that looks unchanged is taken out in one step and
/// compared again: a flow that used it between the look and the take makes
/// it go back (unless the host was paired again in between, which then
/// stands). A plain delete after the look would leave a syscall's time in
/// which a flow could use the pairing the delete then removes, and the
/// host's next flow would be paired again, possibly to another address.
/// What is left is two new flows of a host idle for seconds landing within
/// microseconds of the sweeper's look, and the datapath's own moment
/// between finding the pairing and stamping it.
pub fn apply_hosts<S: HostStore>(
    store: &mut S,
    idle: &[([u8; 4], HostPairing)],
) -> Result<(usize, usize), NatError> {
    let (mut deleted, mut revived) = (0, 0);
    for (host, seen) in idle {
        match store.pairing(host)? {
            None => continue,
            Some(p) if p != *seen => {
                revived += 1;
                continue;
            }
            Some(_) => {}
        }
        match store.take(host)? {
            Some(p) if p == *seen => deleted += 1,
            Some(p) => {
                store.restore(host, p)?;
                revived += 1;
            }
            None => {}
        }
    }
    Ok((deleted, revived))
}

/// Runs one sweep against the pinned maps.
pub fn sweep_once(maps: &mut SessionMaps, timeouts: &NatTimeouts) -> Result<SweepStats, NatError> {
    // Read before the scan: every session created after this point is
    // counted by the datapath in `created - snapshot`, and possibly also by
    // the scan, which errs towards refusing a flow, never towards overflow.
    let created = maps.active(active::CREATED)?;
    let since = monotonic_ns()?;
    let sessions = maps.read_sessions()?;
    let bindings = maps.read_bindings()?;
    let now = monotonic_ns()?;
    let d = decide(&sessions, &bindings, now, timeouts);
    let mut stats = SweepStats {
        halves: sessions.len(),
        live: d.live,
        ..SweepStats::default()
    };

    for [(a, seen_a), (b, seen_b)] in &d.expired {
        let (va, vb) = (maps.sessions.get(a, 0), maps.sessions.get(b, 0));
        let unchanged =
            |v: &Result<Session, _>, seen| v.as_ref().is_ok_and(|v| v.last_seen_ns == seen);
        if unchanged(&va, *seen_a) && unchanged(&vb, *seen_b) {
            remove_session(maps, a)?;
            remove_session(maps, b)?;
            stats.expired += 1;
        } else {
            stats.revived += 1;
            stats.live += 1;
        }
    }
    for (k, seen) in &d.orphans {
        if delete_if_unchanged(maps, k, *seen)? {
            stats.orphans += 1;
        } else {
            stats.revived += 1;
        }
    }
    let (deleted, revived) = apply_bindings(maps, &d.bindings)?;
    stats.bindings += deleted;
    stats.revived += revived;
    maps.set_active(active::BASE, stats.live.wrapping_sub(created))?;
    // Last, and on its own: sessions expire and the count stays right even
    // if the pairings cannot be read or deleted this time. Read after the
    // sessions, so a pairing made meanwhile is young.
    let hosts = maps
        .read_hosts()
        .and_then(|h| apply_hosts(maps, &idle_hosts(&sessions, &bindings, &h, since)));
    match hosts {
        Ok((deleted, revived)) => {
            stats.hosts += deleted;
            stats.revived += revived;
        }
        Err(e) => warn!(error = %e, "NAT sweep: address pairings not reclaimed this time"),
    }
    Ok(stats)
}

/// Sweeps until `stop` fires. Each sweep runs on a blocking thread: walking
/// a large session map is hundreds of thousands of syscalls.
///
/// `previous` is the sweeper this one replaces (new timeouts, or new session
/// tables sharing `nat_active`), already told to stop: its sweep in progress
/// finishes before this one's first, so it can neither expire sessions by
/// timeouts no longer in force nor write its active count after this one's.
pub async fn run(
    mut maps: SessionMaps,
    timeouts: NatTimeouts,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    previous: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(p) = previous {
        let _ = p.await;
    }
    let mut tick = tokio::time::interval(interval(&timeouts));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let r = sweep_once(&mut maps, &timeouts);
            (maps, r)
        })
        .await;
        let r;
        (maps, r) = match joined {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "NAT sweeper task failed; sessions are no longer expired");
                return;
            }
        };
        match r {
            Ok(s) => debug!(
                halves = s.halves,
                live = s.live,
                expired = s.expired,
                orphans = s.orphans,
                bindings = s.bindings,
                hosts = s.hosts,
                revived = s.revived,
                took_ms = started.elapsed().as_millis() as u64,
                "NAT sweep"
            ),
            Err(e) => warn!(error = %e, "NAT sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use xcnf_common::nat::{proto, tcp_seen};

    use super::*;
    use crate::nat::session::tests::snat_pair;

    const S: u64 = 1_000_000_000;

    fn timeouts() -> NatTimeouts {
        NatTimeouts {
            tcp_established: Duration::from_secs(100),
            tcp_transitory: Duration::from_secs(10),
            udp: Duration::from_secs(20),
            icmp: Duration::from_secs(5),
        }
    }

    /// A session of `p` whose halves were last seen at `a` and `b` seconds,
    /// with TCP flags `fa` and `fb`; `n` makes its endpoints unique.
    fn session(n: u8, p: u8, a: u64, b: u64, fa: u8, fb: u8) -> [(SessionKey, Session); 2] {
        let mut s = snat_pair(
            ([192, 168, 0, n], 1000 + u16::from(n)),
            ([80, 80, 80, 100], 2000 + u16::from(n)),
            ([80, 80, 80, 80], 80),
            p,
        );
        s[0].1.last_seen_ns = a * S;
        s[1].1.last_seen_ns = b * S;
        s[0].1.flags = fa;
        s[1].1.flags = fb;
        s
    }

    fn binding(n: u8, p: u8, used: u64) -> [(BindingKey, Binding); 2] {
        let inside = BindingKey {
            addr: [192, 168, 0, n],
            port: 1000 + u16::from(n),
            proto: p,
            dir: role::INSIDE,
        };
        let outside = BindingKey {
            addr: [80, 80, 80, 100],
            port: 2000 + u16::from(n),
            proto: p,
            dir: role::OUTSIDE,
        };
        let to = |k: &BindingKey| Binding {
            addr: k.addr,
            port: k.port,
            _pad: [0; 2],
            last_used_ns: used * S,
        };
        [(inside, to(&outside)), (outside, to(&inside))]
    }

    /// Binding entries in memory; `on_remove` runs after each delete, as a
    /// datapath reusing the binding concurrently would.
    struct FakeBindings {
        entries: HashMap<BindingKey, u64>,
        on_remove: fn(&mut HashMap<BindingKey, u64>, &BindingKey),
    }

    impl BindingStore for FakeBindings {
        fn last_used(&self, k: &BindingKey) -> Result<Option<u64>, NatError> {
            Ok(self.entries.get(k).copied())
        }

        fn remove(&mut self, k: &BindingKey) -> Result<(), NatError> {
            self.entries.remove(k);
            (self.on_remove)(&mut self.entries, k);
            Ok(())
        }
    }

    fn fake(
        entries: &[(BindingKey, Binding)],
        on_remove: fn(&mut HashMap<BindingKey, u64>, &BindingKey),
    ) -> FakeBindings {
        FakeBindings {
            entries: entries.iter().map(|(k, v)| (*k, v.last_used_ns)).collect(),
            on_remove,
        }
    }

    /// The sweep's decision for one unused binding, taken on `entries`.
    fn doomed(entries: &[(BindingKey, Binding)]) -> Vec<Vec<(BindingKey, u64)>> {
        let d = decide(&[], entries, 1000 * S, &timeouts());
        assert_eq!(d.bindings.len(), 1, "{d:?}");
        d.bindings
    }

    #[test]
    fn a_binding_is_deleted_whole_or_not_at_all() {
        let [inside, outside] = binding(1, proto::UDP, 990);
        let plan = doomed(&[inside, outside]);

        let mut untouched = fake(&[inside, outside], |_, _| {});
        assert_eq!(apply_bindings(&mut untouched, &plan).unwrap(), (1, 0));
        assert!(untouched.entries.is_empty());

        // Reused after the snapshot: either entry moved, both stay.
        for moved in [inside.0, outside.0] {
            let mut reused = fake(&[inside, outside], |_, _| {});
            reused.entries.insert(moved, 999 * S);
            assert_eq!(apply_bindings(&mut reused, &plan).unwrap(), (0, 1));
            assert_eq!(reused.entries.len(), 2, "{moved:?} moved");
        }

        // Reused between the two deletes: the flow refreshed the outside
        // entry, the reservation of its external port, which must stay.
        let mut raced = fake(&[inside, outside], |m, k| {
            if k.dir == role::INSIDE
                && let Some(u) = m.values_mut().next()
            {
                *u = 999 * S;
            }
        });
        assert_eq!(apply_bindings(&mut raced, &plan).unwrap(), (0, 1));
        assert_eq!(raced.entries.keys().collect::<Vec<_>>(), vec![&outside.0]);

        // An entry already gone (the other sweeper, the LRU) is no error.
        let mut half_gone = fake(&[outside], |_, _| {});
        assert_eq!(apply_bindings(&mut half_gone, &plan).unwrap(), (1, 0));
        assert!(half_gone.entries.is_empty());
    }

    fn pairing(n: u8, used_s: u64) -> ([u8; 4], HostPairing) {
        (
            [192, 168, 0, n],
            HostPairing {
                index: u32::from(n),
                used_s: used_s as u32,
            },
        )
    }

    #[test]
    fn a_pairing_goes_once_no_session_or_binding_names_its_host() {
        let since = 1000;
        let mut sessions = Vec::new();
        sessions.extend(session(1, proto::UDP, since - 1, since - 1, 0, 0)); // live
        sessions.extend(session(2, proto::UDP, since - 50, since - 50, 0, 0)); // expiring now
        let [inside_half, _] = session(3, proto::TCP, since - 1, 0, tcp_seen::SYN, 0); // one half
        let [_, outside_half] = session(4, proto::TCP, 0, since - 1, 0, 0);
        sessions.extend([inside_half, outside_half]);
        let mut bindings = vec![binding(5, proto::UDP, since - 500)[0]]; // inside entry
        bindings.push(binding(6, proto::UDP, since - 500)[1]); // outside entry
        let hosts = [
            pairing(1, since - 900),
            pairing(2, since - 900),
            pairing(3, since - 900),
            pairing(4, since - 900), // only the outside half names it (as daddr)
            pairing(5, since - 900),
            pairing(6, since - 900),
            pairing(7, since - 900), // nothing left
            pairing(8, since - 2),   // nothing, but used within the grace
            pairing(9, since - 4),   // nothing, used before it
        ];
        let idle = idle_hosts(&sessions, &bindings, &hosts, since * S);
        let mut gone: Vec<u8> = idle.iter().map(|(h, _)| h[3]).collect();
        gone.sort_unstable();
        assert_eq!(gone, vec![4, 7, 9]);
        assert_eq!(idle[0].1.index, u32::from(idle[0].0[3]), "the value seen");
    }

    /// Pairings in memory; `on_look` runs after each look and `on_take`
    /// after each take, as a datapath using or pairing the host concurrently
    /// would.
    struct FakeHosts {
        entries: HashMap<[u8; 4], HostPairing>,
        on_look: fn(&mut HashMap<[u8; 4], HostPairing>, &[u8; 4]),
        on_take: fn(&mut HashMap<[u8; 4], HostPairing>, &[u8; 4]),
    }

    impl FakeHosts {
        fn new(entries: &[([u8; 4], HostPairing)]) -> Self {
            FakeHosts {
                entries: entries.iter().copied().collect(),
                on_look: |_, _| {},
                on_take: |_, _| {},
            }
        }
    }

    impl HostStore for FakeHosts {
        fn pairing(&self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError> {
            Ok(self.entries.get(host).copied())
        }

        fn take(&mut self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError> {
            // The look happened just before: what changed since lands now.
            (self.on_look)(&mut self.entries, host);
            let p = self.entries.remove(host);
            (self.on_take)(&mut self.entries, host);
            Ok(p)
        }

        fn restore(&mut self, host: &[u8; 4], p: HostPairing) -> Result<(), NatError> {
            self.entries.entry(*host).or_insert(p);
            Ok(())
        }
    }

    #[test]
    fn a_pairing_used_since_the_snapshot_stays() {
        let idle = [pairing(1, 10), pairing(2, 10), pairing(3, 10)];
        // Host 1 untouched; host 2 used after the snapshot; host 3 gone.
        let mut store = FakeHosts::new(&[idle[0], pairing(2, 99)]);
        assert_eq!(apply_hosts(&mut store, &idle).unwrap(), (1, 1));
        assert_eq!(
            store.entries.into_iter().collect::<Vec<_>>(),
            vec![pairing(2, 99)],
            "host 2 keeps the pairing it used, stamp and all"
        );

        // Used between the look and the take: it goes back.
        let mut late = FakeHosts::new(&idle[..1]);
        late.on_look = |m, h| {
            m.insert(*h, pairing(1, 99).1);
        };
        assert_eq!(apply_hosts(&mut late, &idle[..1]).unwrap(), (0, 1));
        assert_eq!(late.entries[&idle[0].0], pairing(1, 99).1);

        // ... and paired again between the take and the restore: the
        // datapath's new pairing stands.
        let mut raced = FakeHosts::new(&idle[..1]);
        raced.on_look = late.on_look;
        raced.on_take = |m, h| {
            m.insert(*h, pairing(7, 100).1);
        };
        assert_eq!(apply_hosts(&mut raced, &idle[..1]).unwrap(), (0, 1));
        assert_eq!(raced.entries[&idle[0].0], pairing(7, 100).1);
    }

    fn expired_keys(d: &Decision) -> Vec<u8> {
        d.expired.iter().map(|[(k, _), _]| k.saddr[3]).collect()
    }

    #[test]
    fn each_state_expires_after_its_own_timeout() {
        use tcp_seen::{FIN, SYN};
        let now = 1000;
        let mut all = Vec::new();
        // Established: 100 s. Idle 99 s stays (1), idle 101 s goes (2).
        all.extend(session(1, proto::TCP, now - 99, now - 150, SYN, SYN));
        all.extend(session(2, proto::TCP, now - 101, now - 150, SYN, SYN));
        // Transitory (handshake, FIN): 10 s.
        all.extend(session(3, proto::TCP, now - 9, now - 9, SYN, 0));
        all.extend(session(4, proto::TCP, now - 11, now - 11, SYN, 0));
        all.extend(session(5, proto::TCP, now - 11, now - 11, SYN | FIN, SYN));
        // UDP: 20 s; ICMP: 5 s; another protocol counts as UDP.
        all.extend(session(6, proto::UDP, now - 19, now - 30, 0, 0));
        all.extend(session(7, proto::UDP, now - 21, now - 30, 0, 0));
        all.extend(session(8, proto::ICMP, now - 4, now - 4, 0, 0));
        all.extend(session(9, proto::ICMP, now - 6, now - 6, 0, 0));
        all.extend(session(10, 47, now - 19, now - 19, 0, 0));
        let d = decide(&all, &[], now * S, &timeouts());
        let mut got = expired_keys(&d);
        got.sort_unstable();
        assert_eq!(got, vec![2, 4, 5, 7, 9]);
        assert_eq!(d.live, 5);
        assert!(d.orphans.is_empty());
        // Both halves, with the last-seen times the re-check compares.
        let [(a, ta), (b, tb)] = d.expired[0];
        assert_eq!(b, a.peer(&all.iter().find(|(k, _)| *k == a).unwrap().1));
        assert!(ta > 0 && tb > 0);
    }

    #[test]
    fn orphans_are_kept_for_the_grace_period_and_counted_meanwhile() {
        let now = 1000;
        let [young, _] = session(1, proto::UDP, now - 1, 0, 0, 0);
        let [_, old] = session(2, proto::UDP, 0, now - 3, 0, 0);
        let d = decide(&[young, old], &[], now * S, &timeouts());
        assert_eq!(d.orphans, vec![(old.0, (now - 3) * S)]);
        assert_eq!(d.live, 1);
        assert!(d.expired.is_empty());
    }

    #[test]
    fn bindings_go_with_their_last_session_after_the_grace() {
        let now = 1000;
        let mut sessions = Vec::new();
        sessions.extend(session(1, proto::UDP, now - 1, now - 1, 0, 0)); // live
        sessions.extend(session(2, proto::UDP, now - 50, now - 50, 0, 0)); // expired
        let mut bindings = Vec::new();
        bindings.extend(binding(1, proto::UDP, now - 500)); // used by a live session
        bindings.extend(binding(2, proto::UDP, now - 500)); // its session expires now
        bindings.extend(binding(3, proto::UDP, now - 1)); // new, no session yet
        bindings.extend(binding(4, proto::TCP, now - 3)); // unused, past the grace
        let d = decide(&sessions, &bindings, now * S, &timeouts());
        assert!(
            d.bindings
                .iter()
                .all(|b| b.len() == 2 && b[0].0.dir == role::INSIDE),
            "both entries of each, inside first: {d:?}"
        );
        let mut gone: Vec<(u8, u8)> = d
            .bindings
            .iter()
            .flatten()
            .map(|(k, _)| {
                let n = if k.dir == role::INSIDE {
                    k.addr[3]
                } else {
                    (k.port - 2000) as u8
                };
                (n, k.dir)
            })
            .collect();
        gone.sort_unstable();
        assert_eq!(
            gone,
            vec![
                (2, role::INSIDE),
                (2, role::OUTSIDE),
                (4, role::INSIDE),
                (4, role::OUTSIDE)
            ]
        );
        assert_eq!(expired_keys(&d), vec![2]);
        assert_eq!(d.live, 1);
    }

    #[test]
    fn a_half_binding_is_reclaimed_alone() {
        let now = 1000;
        let [inside, outside] = binding(1, proto::UDP, now - 10);
        let d = decide(&[], &[outside], now * S, &timeouts());
        assert_eq!(d.bindings, vec![vec![(outside.0, (now - 10) * S)]]);
        let d = decide(&[], &[inside], now * S, &timeouts());
        assert_eq!(d.bindings, vec![vec![(inside.0, (now - 10) * S)]]);
    }

    #[test]
    fn a_fresh_use_of_either_direction_keeps_the_binding() {
        let now = 1000;
        let [inside, mut outside] = binding(1, proto::UDP, now - 10);
        outside.1.last_used_ns = (now - 1) * S;
        let d = decide(&[], &[inside, outside], now * S, &timeouts());
        assert!(d.bindings.is_empty(), "{d:?}");
    }

    #[test]
    fn live_count_is_pairs() {
        let now = 1000;
        let mut all = Vec::new();
        for n in 0..50 {
            all.extend(session(n, proto::UDP, now - 1, now - 2, 0, 0));
        }
        let d = decide(&all, &[], now * S, &timeouts());
        assert_eq!((d.live, d.expired.len()), (50, 0));
        let d = decide(&all, &[], (now + 30) * S, &timeouts());
        assert_eq!((d.live, d.expired.len()), (0, 50));
    }

    #[test]
    fn interval_is_a_quarter_of_the_shortest_timeout_clamped() {
        let mut t = NatTimeouts::default();
        assert_eq!(interval(&t), Duration::from_secs(10));
        t.udp = Duration::from_secs(2);
        assert_eq!(interval(&t), Duration::from_millis(500));
        t.icmp = Duration::from_millis(200);
        assert_eq!(interval(&t), Duration::from_millis(250));
    }
}
