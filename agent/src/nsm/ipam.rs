//! Point-to-point IPAM of an NSM endpoint (NSM's point2pointipam): each
//! connection gets an address pair from the configured CIDR, one for the
//! endpoint side and one for the client side, /32 each. A connection keeps
//! its pair across refreshes; prefixes the request excludes are skipped.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use crate::config::Ipv4Prefix;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no free address pair left in {0}")]
    Exhausted(Ipv4Prefix),
}

/// The pair of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The endpoint's side (`dst_ip_addrs`).
    pub endpoint: Ipv4Addr,
    /// The client's side (`src_ip_addrs`).
    pub client: Ipv4Addr,
}

#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Prefix,
    by_conn: HashMap<String, Pair>,
    used: BTreeSet<u32>,
}

impl Ipam {
    pub fn new(cidr: Ipv4Prefix) -> Self {
        Self {
            cidr: cidr.network(),
            by_conn: HashMap::new(),
            used: BTreeSet::new(),
        }
    }

    /// The pair of `conn_id`: the one it has, or the first two free
    /// addresses outside `excluded` (network and broadcast addresses are
    /// never handed out, except in a /31).
    pub fn allocate(&mut self, conn_id: &str, excluded: &[Ipv4Prefix]) -> Result<Pair, IpamError> {
        if let Some(p) = self.by_conn.get(conn_id) {
            let clash = excluded
                .iter()
                .any(|x| x.contains(p.endpoint) || x.contains(p.client));
            if !clash {
                return Ok(*p);
            }
            self.release(conn_id);
        }
        let first = u32::from(self.cidr.addr);
        let last = u32::from(self.cidr.broadcast());
        let (lo, hi) = if self.cidr.len >= 31 {
            (first, last)
        } else {
            (first + 1, last - 1)
        };
        let mut free = (lo..=hi).filter(|a| {
            !self.used.contains(a) && !excluded.iter().any(|x| x.contains(Ipv4Addr::from(*a)))
        });
        let (Some(e), Some(c)) = (free.next(), free.next()) else {
            return Err(IpamError::Exhausted(self.cidr));
        };
        self.used.insert(e);
        self.used.insert(c);
        let pair = Pair {
            endpoint: Ipv4Addr::from(e),
            client: Ipv4Addr::from(c),
        };
        self.by_conn.insert(conn_id.to_owned(), pair);
        Ok(pair)
    }

    pub fn release(&mut self, conn_id: &str) {
        if let Some(p) = self.by_conn.remove(conn_id) {
            self.used.remove(&u32::from(p.endpoint));
            self.used.remove(&u32::from(p.client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Ipv4Prefix {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pairs_are_stable_per_connection_and_distinct_between_them() {
        let mut ipam = Ipam::new(prefix("10.60.0.0/29"));
        let a = ipam.allocate("a", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.endpoint, a.client),
            (
                "10.60.0.1".parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                "10.60.0.2".parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
            )
        );
        assert_eq!(ipam.allocate("a", &[]), Ok(a));
        let b = ipam.allocate("b", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.endpoint, Ipv4Addr::new(10, 60, 0, 3));
        assert_eq!(b.client, Ipv4Addr::new(10, 60, 0, 4));
        let c = ipam.allocate("c", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.client, Ipv4Addr::new(10, 60, 0, 6));
        // .7 is the broadcast address: nothing left.
        assert_eq!(
            ipam.allocate("d", &[]),
            Err(IpamError::Exhausted(prefix("10.60.0.0/29")))
        );
        ipam.release("b");
        assert_eq!(ipam.allocate("d", &[]), Ok(b));
    }

    #[test]
    fn excluded_prefixes_are_skipped_even_for_a_known_connection() {
        let mut ipam = Ipam::new(prefix("10.60.0.0/24"));
        let a = ipam
            .allocate("a", &[prefix("10.60.0.0/30")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.endpoint, Ipv4Addr::new(10, 60, 0, 4));
        let moved = ipam
            .allocate("a", &[prefix("10.60.0.4/32")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(moved.endpoint, Ipv4Addr::new(10, 60, 0, 1));
    }
}
