//! Typed forms of the address strings of the config: prefixes and MAC
//! addresses. The config keeps the strings (so every bad one can be reported
//! with its path); validation and the reconciler parse them with these, so
//! both read a string the same way.

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 address with prefix length, as in `192.168.100.1/24`. Host bits
/// may be set (an interface address); [`Ipv4Prefix::network`] clears them
/// (a route destination must already be in that form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Prefix {
    /// The netmask as a host-order integer (`/24` -> `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        match self.len {
            0 => 0,
            l => u32::MAX << (32 - u32::from(l.min(32))),
        }
    }

    /// The prefix with its host bits cleared: `10.1.2.3/8` -> `10.0.0.0/8`.
    pub fn network(&self) -> Self {
        Self {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            len: self.len,
        }
    }

    /// The all-ones host address of the prefix (`10.0.0.255` for `10.0.0.0/24`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `a` lies inside the prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// True when no host bit is set, as a route destination must be.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 prefix (want a.b.c.d/len)"))?;
        let addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        // u8::from_str takes a leading '+'; a prefix length is plain digits.
        let len = Some(l)
            .filter(|l| !l.is_empty() && l.len() <= 2 && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u8>().ok())
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("prefix length {l:?} is out of range 0-32"))?;
        Ok(Self { addr, len })
    }
}

/// A MAC address. Shown in the lower-case colon form the kernel prints, so a
/// configured and an observed neighbour compare equal as text too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Group addresses (the I/G bit of the first octet), broadcast included.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Usable as the address of one neighbour.
    pub fn is_unicast(&self) -> bool {
        !self.is_zero() && !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

/// Why `a` cannot be the address of one host (an interface, a gateway or a
/// neighbour); `None` when it can.
pub fn not_unicast(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("is the unspecified address")
    } else if a.is_broadcast() {
        Some("is the limited broadcast address")
    } else if a.is_multicast() {
        Some("is a multicast address")
    } else if a.is_loopback() {
        Some("is a loopback address")
    } else {
        None
    }
}

/// A unicast host address.
pub fn parse_unicast(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    match not_unicast(a) {
        Some(why) => Err(format!("{a} {why}")),
        None => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Ipv4Prefix {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn prefix_arithmetic() {
        let p = prefix("10.1.2.3/8");
        assert_eq!(p.network(), prefix("10.0.0.0/8"));
        assert_eq!(p.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
        assert!(p.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!p.contains(Ipv4Addr::new(11, 0, 0, 0)));
        assert!(!p.is_network() && p.network().is_network());
        assert_eq!(p.to_string(), "10.1.2.3/8");
        let all = prefix("0.0.0.0/0");
        assert!(all.contains(Ipv4Addr::BROADCAST) && all.is_network());
        assert_eq!(all.broadcast(), Ipv4Addr::BROADCAST);
        let host = prefix("1.2.3.4/32");
        assert!(host.contains(Ipv4Addr::new(1, 2, 3, 4)) && host.is_network());
        assert!(!host.contains(Ipv4Addr::new(1, 2, 3, 5)));
        assert!(prefix("10.0.0.0/8") < prefix("10.0.0.0/9"));
    }

    #[test]
    fn prefix_parse_errors() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/33",
            "10.0.0.1/+8",
            "10.0.0.1/ 8",
            "10.0.0/8",
            "010.0.0.1/8",
        ] {
            assert!(bad.parse::<Ipv4Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_parse_and_show() {
        let m: MacAddr = "02:AB:cd:00:00:01"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.0, [2, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
        assert!(m.is_unicast());
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "+2:00:00:00:00:01",
            "0200.0000.0001",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let parse = |s: &str| s.parse::<MacAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert!(parse("00:00:00:00:00:00").is_zero());
        assert!(parse("01:00:5e:00:00:01").is_multicast());
        assert!(!parse("ff:ff:ff:ff:ff:ff").is_unicast());
    }

    #[test]
    fn unicast_addresses() {
        assert_eq!(
            parse_unicast("80.80.80.1"),
            Ok(Ipv4Addr::new(80, 80, 80, 1))
        );
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "1.2.3",
        ] {
            assert!(parse_unicast(bad).is_err(), "{bad}");
        }
    }
}
