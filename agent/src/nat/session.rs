//! Sessions as pairs of halves, and the state the sweeper derives for them.
//!
//! The datapath stores a session as two independent map entries and only
//! records per-half facts (last seen, TCP flags). Pairing and state are
//! derived here, once, for both the sweeper and `xcnfctl`.

use std::{collections::HashMap, fmt, time::Duration};

use xcnf_common::nat::{Session, SessionKey, proto, tcp_seen};

use crate::config::NatTimeouts;

/// The state that selects a session's timeout (docs/nat44.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// TCP with SYN seen both ways and neither FIN nor RST.
    Established,
    /// Any other TCP session: handshake, closing, reset.
    Transitory,
    /// UDP and protocols other than TCP and ICMP.
    Udp,
    Icmp,
}

impl State {
    pub fn of(proto_nr: u8, a: &Session, b: &Session) -> Self {
        match proto_nr {
            proto::TCP => {
                let both_syn = a.flags & b.flags & tcp_seen::SYN != 0;
                let closing = (a.flags | b.flags) & (tcp_seen::FIN | tcp_seen::RST) != 0;
                if both_syn && !closing {
                    Self::Established
                } else {
                    Self::Transitory
                }
            }
            proto::ICMP => Self::Icmp,
            _ => Self::Udp,
        }
    }

    pub fn timeout(self, t: &NatTimeouts) -> Duration {
        match self {
            Self::Established => t.tcp_established,
            Self::Transitory => t.tcp_transitory,
            Self::Udp => t.udp,
            Self::Icmp => t.icmp,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Established => "established",
            Self::Transitory => "transitory",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        })
    }
}

/// Halves grouped into sessions, by index into the slice they came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// Both halves present and pointing at each other; each pair once.
    pub pairs: Vec<(usize, usize)>,
    /// Halves whose peer is missing (or does not point back).
    pub orphans: Vec<usize>,
}

/// Pairs each half with the half its value names as peer.
pub fn pair(halves: &[(SessionKey, Session)]) -> Pairing {
    let index: HashMap<SessionKey, usize> = halves
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (*k, i))
        .collect();
    let mut out = Pairing::default();
    for (i, (k, v)) in halves.iter().enumerate() {
        let peer = index.get(&k.peer(v)).copied().filter(|&j| {
            let (pk, pv) = &halves[j];
            j != i && pk.peer(pv) == *k
        });
        match peer {
            Some(j) if i < j => out.pairs.push((i, j)),
            Some(_) => {}
            None => out.orphans.push(i),
        }
    }
    out
}

/// Nanoseconds since the later of the two halves was last seen.
pub fn idle_ns(now_ns: u64, a: &Session, b: &Session) -> u64 {
    now_ns.saturating_sub(a.last_seen_ns.max(b.last_seen_ns))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use xcnf_common::nat::{INITIATOR, kind, role};

    use super::*;

    /// The two halves of a session from `(src, sport)` to `(dst, dport)`
    /// arriving inside, translated to `(xsrc, xport)`.
    pub(crate) fn snat_pair(
        src: ([u8; 4], u16),
        xsrc: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        p: u8,
    ) -> [(SessionKey, Session); 2] {
        let out_key = SessionKey {
            saddr: src.0,
            daddr: dst.0,
            sport: src.1,
            dport: dst.1,
            proto: p,
            dir: role::INSIDE,
            _pad: [0; 2],
        };
        let out_val = Session {
            saddr: xsrc.0,
            daddr: dst.0,
            sport: xsrc.1,
            dport: dst.1,
            peer_dir: role::OUTSIDE,
            kind: kind::SNAT,
            flags: INITIATOR,
            ..Default::default()
        };
        let in_key = out_key.peer(&out_val);
        let in_val = Session {
            saddr: dst.0,
            daddr: src.0,
            sport: dst.1,
            dport: src.1,
            peer_dir: role::INSIDE,
            kind: kind::SNAT,
            ..Default::default()
        };
        [(out_key, out_val), (in_key, in_val)]
    }

    fn tcp(a: u8, b: u8) -> State {
        let s = |flags| Session {
            flags,
            ..Default::default()
        };
        State::of(proto::TCP, &s(a), &s(b))
    }

    #[test]
    fn state_follows_the_table_in_the_docs() {
        use tcp_seen::{FIN, RST, SYN};
        assert_eq!(tcp(SYN, SYN), State::Established);
        assert_eq!(tcp(SYN, 0), State::Transitory);
        assert_eq!(tcp(0, 0), State::Transitory);
        assert_eq!(tcp(SYN | FIN, SYN), State::Transitory);
        assert_eq!(tcp(SYN, SYN | RST), State::Transitory);
        let d = Session::default();
        assert_eq!(State::of(proto::UDP, &d, &d), State::Udp);
        assert_eq!(State::of(47, &d, &d), State::Udp);
        assert_eq!(State::of(proto::ICMP, &d, &d), State::Icmp);
        let t = NatTimeouts::default();
        assert_eq!(State::Established.timeout(&t), Duration::from_secs(7440));
        assert_eq!(State::Transitory.timeout(&t), Duration::from_secs(240));
        assert_eq!(State::Udp.timeout(&t), Duration::from_secs(300));
        assert_eq!(State::Icmp.timeout(&t), Duration::from_secs(60));
    }

    #[test]
    fn pairs_each_session_once_and_finds_orphans() {
        let [a, b] = snat_pair(
            ([192, 168, 100, 10], 40000),
            ([80, 80, 80, 100], 1024),
            ([80, 80, 80, 80], 80),
            proto::TCP,
        );
        let [c, d] = snat_pair(
            ([192, 168, 100, 11], 5000),
            ([80, 80, 80, 101], 5000),
            ([80, 80, 80, 80], 53),
            proto::UDP,
        );
        let [e, _] = snat_pair(
            ([192, 168, 100, 12], 7),
            ([80, 80, 80, 102], 7),
            ([80, 80, 80, 80], 0),
            proto::ICMP,
        );
        let halves = vec![b, c, e, a, d];
        let p = pair(&halves);
        assert_eq!(p.pairs, vec![(0, 3), (1, 4)]);
        assert_eq!(p.orphans, vec![2]);
    }

    #[test]
    fn a_peer_that_does_not_point_back_is_no_peer() {
        let [a, mut b] = snat_pair(
            ([10, 0, 0, 1], 1),
            ([20, 0, 0, 1], 2),
            ([30, 0, 0, 1], 3),
            proto::UDP,
        );
        b.1.dport = 9; // b's peer is no longer a
        let p = pair(&[a, b]);
        assert!(p.pairs.is_empty());
        assert_eq!(p.orphans, vec![0, 1]);
    }
}
