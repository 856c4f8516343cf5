//! The L3 state of the spec: interface addresses and MTUs, static routes and
//! static neighbours, parsed into typed values and checked against each other.
//!
//! Validation and the reconciler share [`Spec::resolve_l3`], as they share
//! `Nat44::resolve`: a config that validates is exactly one the reconciler
//! can apply, and there is no second parser that could disagree.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{
    FieldError,
    net::{Ipv4Prefix, MacAddr, not_unicast, parse_unicast},
    types::*,
    validate::Errors,
};

/// Interface MTU bounds: IPv4's minimum (RFC 791) and the netlink field's maximum.
pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 65535;

/// The L3 settings of one `spec.interfaces` entry, by the same index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceL3 {
    /// In config order, host bits kept (`192.168.100.1/24`).
    pub addresses: Vec<Ipv4Prefix>,
    pub mtu: Option<u32>,
}

/// One `spec.routes` entry, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Host bits are zero.
    pub dst: Ipv4Prefix,
    pub via: Option<Ipv4Addr>,
    /// Index into `spec.interfaces`.
    pub interface: usize,
    pub metric: Option<u32>,
}

impl RouteSpec {
    /// What identifies a route in the main table. A missing metric is the
    /// kernel's priority 0, so `metric: 0` and no metric are the same route.
    pub fn key(&self) -> (Ipv4Prefix, u32) {
        (self.dst, self.metric.unwrap_or(0))
    }
}

/// One `spec.neighbors` entry, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeighborSpec {
    /// Index into `spec.interfaces`.
    pub interface: usize,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// Addresses, MTUs, routes and neighbours with every string parsed and every
/// interface reference resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L3Spec {
    /// One entry per `spec.interfaces` entry, same order.
    pub interfaces: Vec<InterfaceL3>,
    pub routes: Vec<RouteSpec>,
    pub neighbors: Vec<NeighborSpec>,
}

impl Spec {
    /// Parses and cross-checks the L3 parts of the spec; returns every problem found.
    pub fn resolve_l3(&self) -> Result<L3Spec, Vec<FieldError>> {
        let mut e = Errors(Vec::new());
        let interfaces = addresses(&mut e, &self.interfaces);
        let routes = routes(&mut e, &self.routes, &self.interfaces);
        let neighbors = neighbors(&mut e, &self.neighbors, &self.interfaces);
        if e.0.is_empty() {
            Ok(L3Spec {
                interfaces,
                routes,
                neighbors,
            })
        } else {
            Err(e.0)
        }
    }
}

fn addresses(e: &mut Errors, interfaces: &[Interface]) -> Vec<InterfaceL3> {
    // Address -> (interface index, address index) of its first use.
    let mut owners: HashMap<Ipv4Addr, (usize, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(interfaces.len());
    for (i, itf) in interfaces.iter().enumerate() {
        let mut l3 = InterfaceL3::default();
        for (j, s) in itf.ip_addresses.iter().enumerate() {
            let path = format!("spec.interfaces[{i}].ipAddresses[{j}]");
            let p = match s.parse::<Ipv4Prefix>().and_then(check_host_prefix) {
                Ok(p) => p,
                Err(m) => {
                    e.push(path, m);
                    continue;
                }
            };
            match owners.get(&p.addr) {
                Some(&(oi, oj)) if oi == i => e.push(
                    path,
                    format!(
                        "{} is already listed as spec.interfaces[{i}].ipAddresses[{oj}]",
                        p.addr
                    ),
                ),
                Some(&(oi, oj)) => e.push(
                    path,
                    format!(
                        "{} is already assigned to interface {:?} (spec.interfaces[{oi}].ipAddresses[{oj}])",
                        p.addr, interfaces[oi].name
                    ),
                ),
                None => {
                    owners.insert(p.addr, (i, j));
                    l3.addresses.push(p);
                }
            }
        }
        if let Some(mtu) = itf.mtu {
            if (MTU_MIN..=MTU_MAX).contains(&mtu) {
                l3.mtu = Some(mtu);
            } else {
                e.push(
                    format!("spec.interfaces[{i}].mtu"),
                    format!("{mtu} is out of range {MTU_MIN}-{MTU_MAX}"),
                );
            }
        }
        out.push(l3);
    }
    out
}

/// An address one interface can own: unicast, and (below /31, where the
/// prefix has them) neither the network nor the broadcast address.
fn check_host_prefix(p: Ipv4Prefix) -> Result<Ipv4Prefix, String> {
    if let Some(why) = not_unicast(p.addr) {
        return Err(format!("{} {why}", p.addr));
    }
    if p.len <= 30 {
        let net = p.network();
        if p.addr == net.addr {
            return Err(format!("{} is the network address of {net}", p.addr));
        }
        if p.addr == p.broadcast() {
            return Err(format!("{} is the broadcast address of {net}", p.addr));
        }
    }
    Ok(p)
}

/// Resolves a logical interface name to its index; the first entry wins when
/// a name is duplicated (that is reported at the interface itself).
fn interface(e: &mut Errors, path: String, name: &str, interfaces: &[Interface]) -> Option<usize> {
    let found = interfaces.iter().position(|i| i.name == name);
    if found.is_none() {
        e.push(path, format!("unknown interface {name:?}"));
    }
    found
}

fn routes(e: &mut Errors, routes: &[Route], interfaces: &[Interface]) -> Vec<RouteSpec> {
    let mut seen: HashMap<(Ipv4Prefix, u32), usize> = HashMap::new();
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let p = format!("spec.routes[{i}]");
        let dst = match r.dst.parse::<Ipv4Prefix>() {
            Ok(d) if !d.is_network() => {
                e.push(
                    format!("{p}.dst"),
                    format!(
                        "{:?} has host bits set; did you mean {}?",
                        r.dst,
                        d.network()
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                e.push(format!("{p}.dst"), m);
                None
            }
        };
        let via = match r.via.as_deref().map(parse_unicast) {
            None => Some(None),
            Some(Ok(a)) => Some(Some(a)),
            Some(Err(m)) => {
                e.push(format!("{p}.via"), m);
                None
            }
        };
        let itf = interface(e, format!("{p}.interface"), &r.interface, interfaces);
        if let Some(x) = itf
            && !interfaces[x].is_enabled()
        {
            e.push(
                format!("{p}.interface"),
                format!(
                    "{:?} (spec.interfaces[{x}]) is disabled (enabled: false), so a route over it cannot be installed",
                    r.interface
                ),
            );
            continue;
        }
        let (Some(dst), Some(via), Some(interface)) = (dst, via, itf) else {
            continue;
        };
        let route = RouteSpec {
            dst,
            via,
            interface,
            metric: r.metric,
        };
        if let Some(first) = seen.get(&route.key()) {
            e.push(
                format!("{p}.dst"),
                format!(
                    "{dst} with metric {} is already routed by spec.routes[{first}]",
                    route.key().1
                ),
            );
            continue;
        }
        seen.insert(route.key(), i);
        out.push(route);
    }
    out
}

fn neighbors(
    e: &mut Errors,
    neighbors: &[Neighbor],
    interfaces: &[Interface],
) -> Vec<NeighborSpec> {
    let mut seen: HashMap<(usize, Ipv4Addr), usize> = HashMap::new();
    let mut out = Vec::with_capacity(neighbors.len());
    for (i, n) in neighbors.iter().enumerate() {
        let p = format!("spec.neighbors[{i}]");
        let itf = interface(e, format!("{p}.interface"), &n.interface, interfaces);
        let ip = match parse_unicast(&n.ip) {
            Ok(a) => Some(a),
            Err(m) => {
                e.push(format!("{p}.ip"), m);
                None
            }
        };
        let mac = match n.mac.parse::<MacAddr>() {
            Ok(m) if m.is_zero() => {
                e.push(format!("{p}.mac"), format!("{m} is the all-zero address"));
                None
            }
            Ok(m) if m.is_multicast() => {
                e.push(
                    format!("{p}.mac"),
                    format!(
                        "{m} is a multicast or broadcast address; a neighbour has a unicast one"
                    ),
                );
                None
            }
            Ok(m) => Some(m),
            Err(m) => {
                e.push(format!("{p}.mac"), m);
                None
            }
        };
        let (Some(interface), Some(ip), Some(mac)) = (itf, ip, mac) else {
            continue;
        };
        if let Some(first) = seen.get(&(interface, ip)) {
            e.push(
                format!("{p}.ip"),
                format!(
                    "{ip} on {:?} is already given by spec.neighbors[{first}]",
                    n.interface
                ),
            );
            continue;
        }
        seen.insert((interface, ip), i);
        out.push(NeighborSpec { interface, ip, mac });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_l3_resolves() {
        let c = Config::parse(
            "apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: t}
spec:
  interfaces:
    - {name: inside, kernel: {hostIfName: c0}, ipAddresses: [192.168.100.1/24, 10.0.0.1/31], mtu: 9000}
    - {name: outside, kernel: {hostIfName: c1}, ipAddresses: [80.80.80.100/24, 1.1.1.1/32]}
  routes:
    - {dst: 0.0.0.0/0, via: 80.80.80.1, interface: outside}
    - {dst: 0.0.0.0/0, via: 80.80.80.2, interface: outside, metric: 100}
    - {dst: 10.0.0.0/8, interface: inside}
  neighbors:
    - {interface: outside, ip: 80.80.80.1, mac: '02:00:00:00:00:0A'}
    - {interface: inside, ip: 80.80.80.1, mac: '02:00:00:00:00:0b'}
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let l3 = c.spec.resolve_l3().unwrap_or_else(|e| panic!("{e:?}"));
        let pfx = |s: &str| s.parse::<Ipv4Prefix>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l3.interfaces,
            vec![
                InterfaceL3 {
                    addresses: vec![pfx("192.168.100.1/24"), pfx("10.0.0.1/31")],
                    mtu: Some(9000)
                },
                InterfaceL3 {
                    addresses: vec![pfx("80.80.80.100/24"), pfx("1.1.1.1/32")],
                    mtu: None
                },
            ]
        );
        assert_eq!(
            l3.routes[1],
            RouteSpec {
                dst: pfx("0.0.0.0/0"),
                via: Some(Ipv4Addr::new(80, 80, 80, 2)),
                interface: 1,
                metric: Some(100)
            }
        );
        assert_eq!((l3.routes[2].via, l3.routes[2].interface), (None, 0));
        assert_eq!(l3.neighbors[0].mac.to_string(), "02:00:00:00:00:0a");
        assert_eq!(l3.neighbors[1].interface, 0);
    }
}
