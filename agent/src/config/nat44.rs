//! The `spec.nat44` section: parsing its strings into typed values and
//! checking them against each other and against the datapath's capacities.
//!
//! Validation and the datapath plan share [`Nat44::resolve`], so a config
//! that validates is exactly one the plan can be compiled from; there is no
//! second parser that could disagree.

use std::{collections::HashMap, fmt, net::Ipv4Addr, time::Duration};

use xcnf_common::nat::{
    DEFAULT_MAX_SESSIONS, DEFAULT_PORT_MAX, DEFAULT_PORT_MIN, MAX_MAPPINGS, MAX_NAT_ADDRS,
    MAX_POOL_RANGES,
};

use super::{FieldError, types::*, validate::Errors};
use crate::nat::plan::{StaticEntry, split_pools, static_entries};

/// Upper bound of `maxSessions`: 2^24 sessions already need an LRU map of
/// about 37M entries (several GiB of locked kernel memory).
pub const MAX_SESSIONS_LIMIT: u32 = 1 << 24;

/// Default timeouts (VPP nat44-ed's, see docs/nat44.md).
pub const DEFAULT_TCP_ESTABLISHED: Duration = Duration::from_secs(7440);
pub const DEFAULT_TCP_TRANSITORY: Duration = Duration::from_secs(240);
pub const DEFAULT_UDP: Duration = Duration::from_secs(300);
pub const DEFAULT_ICMP: Duration = Duration::from_secs(60);

/// An address with an optional port, as in `80.80.80.100` or `80.80.80.100:8080`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// One pool, parsed: `first..=last`, ports `port_min..=port_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub port_min: u16,
    pub port_max: u16,
}

impl PoolSpec {
    /// Number of addresses (a pool is never empty: `first <= last`).
    pub fn addresses(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&a)
    }
}

/// A static mapping, parsed. Both endpoints have a port, or neither does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticSpec {
    pub protocol: Protocol,
    pub external: Endpoint,
    pub local: Endpoint,
}

impl StaticSpec {
    /// Address-only (1:1) mappings own their external address entirely.
    pub fn is_address_only(&self) -> bool {
        self.external.port.is_none()
    }
}

/// An identity mapping, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentitySpec {
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

/// Session timeouts per state (docs/nat44.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    pub tcp_established: Duration,
    pub tcp_transitory: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        Self {
            tcp_established: DEFAULT_TCP_ESTABLISHED,
            tcp_transitory: DEFAULT_TCP_TRANSITORY,
            udp: DEFAULT_UDP,
            icmp: DEFAULT_ICMP,
        }
    }
}

impl NatTimeouts {
    pub fn min(&self) -> Duration {
        self.tcp_established
            .min(self.tcp_transitory)
            .min(self.udp)
            .min(self.icmp)
    }
}

/// `spec.nat44` with every string parsed and every reference resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat44Spec {
    /// Where the domain lives: every inside and outside interface is in it.
    pub backend: Backend,
    /// Indexes into `spec.interfaces`.
    pub inside: Vec<usize>,
    pub outside: Vec<usize>,
    pub pools: Vec<PoolSpec>,
    pub mapping: NatMapping,
    pub statics: Vec<StaticSpec>,
    pub identities: Vec<IdentitySpec>,
    pub timeouts: NatTimeouts,
    pub max_sessions: u32,
}

const P: &str = "spec.nat44";

impl Nat44 {
    /// Parses and cross-checks the section; returns every problem found.
    pub fn resolve(&self, interfaces: &[Interface]) -> Result<Nat44Spec, Vec<FieldError>> {
        let mut e = Errors(Vec::new());
        let inside = roles(&mut e, "inside", &self.inside, interfaces);
        let outside = roles(&mut e, "outside", &self.outside, interfaces);
        for (j, name) in self.outside.iter().enumerate() {
            if self.inside.contains(name) {
                e.push(
                    format!("{P}.outside[{j}]"),
                    format!("{name:?} is also listed in {P}.inside: an interface has one role"),
                );
            }
        }

        let backend = domain_backend(&mut e, &inside, &outside, interfaces);
        if backend == Backend::Vpp {
            vpp_limits(&mut e, self);
        }

        let pools: Vec<(usize, PoolSpec)> = self
            .pools
            .iter()
            .enumerate()
            .filter_map(|(i, p)| pool(&mut e, i, p).map(|s| (i, s)))
            .collect();
        for (n, (i, a)) in pools.iter().enumerate() {
            for (j, b) in &pools[..n] {
                if a.first <= b.last && b.first <= a.last {
                    e.push(
                        format!("{P}.pools[{i}]"),
                        format!(
                            "{}-{} overlaps {P}.pools[{j}] ({}-{})",
                            a.first, a.last, b.first, b.last
                        ),
                    );
                }
            }
        }

        let statics: Vec<(usize, StaticSpec)> = self
            .static_mappings
            .iter()
            .enumerate()
            .filter_map(|(i, m)| static_mapping(&mut e, i, m).map(|s| (i, s)))
            .collect();
        let identities: Vec<(usize, IdentitySpec)> = self
            .identity_mappings
            .iter()
            .enumerate()
            .filter_map(|(i, m)| identity_mapping(&mut e, i, m).map(|s| (i, s)))
            .collect();
        check_mapping_conflicts(&mut e, &statics, &identities);

        let timeouts = timeouts(&mut e, self.timeouts.as_ref());
        let max_sessions = self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        if !(1..=MAX_SESSIONS_LIMIT).contains(&max_sessions) {
            e.push(
                format!("{P}.maxSessions"),
                format!("{max_sessions} is out of range 1-{MAX_SESSIONS_LIMIT}"),
            );
        }

        // nat44-ed, VPP's NAT, is endpoint-dependent only.
        let mapping = match backend {
            Backend::Ebpf => self.mapping.unwrap_or_default(),
            Backend::Vpp => NatMapping::EndpointDependent,
        };
        let spec = Nat44Spec {
            backend,
            inside,
            outside,
            pools: pools.into_iter().map(|(_, p)| p).collect(),
            mapping,
            statics: statics.into_iter().map(|(_, s)| s).collect(),
            identities: identities.into_iter().map(|(_, s)| s).collect(),
            timeouts,
            max_sessions,
        };
        if backend == Backend::Ebpf {
            check_capacity(&mut e, &spec);
        }
        if e.0.is_empty() { Ok(spec) } else { Err(e.0) }
    }
}

/// The one backend all of the domain's interfaces are in. A NAT44 domain
/// cannot span eBPF and VPP: their session tables are separate, so a flow
/// entering one and leaving through the other would never be translated
/// back.
fn domain_backend(
    e: &mut Errors,
    inside: &[usize],
    outside: &[usize],
    interfaces: &[Interface],
) -> Backend {
    let members: Vec<(&str, usize, usize)> = inside
        .iter()
        .enumerate()
        .map(|(j, &i)| ("inside", j, i))
        .chain(outside.iter().enumerate().map(|(j, &i)| ("outside", j, i)))
        .collect();
    let Some(&(_, _, first)) = members.first() else {
        return Backend::default();
    };
    let backend = interfaces[first].backend();
    for &(field, j, i) in &members {
        let b = interfaces[i].backend();
        if b != backend {
            e.push(
                format!("{P}.{field}[{j}]"),
                format!(
                    "{:?} uses backend {} but {:?} uses backend {}: a NAT44 domain lives in one backend",
                    interfaces[i].name,
                    backend_name(b),
                    interfaces[first].name,
                    backend_name(backend)
                ),
            );
        }
    }
    backend
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Ebpf => "ebpf",
        Backend::Vpp => "vpp",
    }
}

/// What VPP's nat44-ed cannot express, refused by name instead of being
/// approximated.
fn vpp_limits(e: &mut Errors, nat: &Nat44) {
    if nat.mapping == Some(NatMapping::EndpointIndependent) {
        e.push(
            format!("{P}.mapping"),
            "the vpp backend (nat44-ed) is endpoint-dependent only: set endpoint-dependent or leave it unset",
        );
    }
    for (i, p) in nat.pools.iter().enumerate() {
        if p.ports.is_some() {
            e.push(
                format!("{P}.pools[{i}].ports"),
                "the vpp backend allocates ports itself (1024-65535): leave ports unset",
            );
        }
    }
    for (i, m) in nat.static_mappings.iter().enumerate() {
        if m.protocol == Protocol::Icmp {
            e.push(
                format!("{P}.staticMappings[{i}].protocol"),
                "vpp address-only mappings translate every protocol: use protocol any",
            );
        }
    }
    for (i, m) in nat.identity_mappings.iter().enumerate() {
        if m.protocol == Protocol::Icmp {
            e.push(
                format!("{P}.identityMappings[{i}].protocol"),
                "vpp identity mappings without a port exempt every protocol: use protocol any",
            );
        }
    }
}

/// Resolves `inside` or `outside` to interface indexes.
fn roles(e: &mut Errors, field: &str, names: &[String], interfaces: &[Interface]) -> Vec<usize> {
    if names.is_empty() {
        e.push(
            format!("{P}.{field}"),
            "must name at least one interface of spec.interfaces",
        );
    }
    let mut out = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let path = format!("{P}.{field}[{j}]");
        if names[..j].contains(name) {
            e.push(path, format!("{name:?} is listed twice"));
            continue;
        }
        match interfaces.iter().position(|i| &i.name == name) {
            None => e.push(
                path,
                format!("{name:?} is not the name of any spec.interfaces entry"),
            ),
            Some(i) => out.push(i),
        }
    }
    out
}

fn pool(e: &mut Errors, i: usize, p: &Pool) -> Option<PoolSpec> {
    let path = format!("{P}.pools[{i}]");
    let first = addr(e, &format!("{path}.first"), &p.first);
    let last = match &p.last {
        Some(l) => addr(e, &format!("{path}.last"), l),
        None => first,
    };
    let ports = match &p.ports {
        Some(s) => match parse_port_range(s) {
            Ok(r) => Some(r),
            Err(m) => {
                e.push(format!("{path}.ports"), m);
                None
            }
        },
        None => Some((DEFAULT_PORT_MIN, DEFAULT_PORT_MAX)),
    };
    let (first, last, (port_min, port_max)) = (first?, last?, ports?);
    if last < first {
        e.push(
            format!("{path}.last"),
            format!("{last} is below first ({first})"),
        );
        return None;
    }
    Some(PoolSpec {
        first,
        last,
        port_min,
        port_max,
    })
}

fn static_mapping(e: &mut Errors, i: usize, m: &StaticMapping) -> Option<StaticSpec> {
    let path = format!("{P}.staticMappings[{i}]");
    let external = endpoint(e, &format!("{path}.external"), &m.external);
    let local = endpoint(e, &format!("{path}.local"), &m.local);
    let (external, local) = (external?, local?);
    let ports = external.port.is_some();
    if ports != local.port.is_some() {
        e.push(
            path,
            "external and local must both have a port (port forwarding) or neither (address-only)",
        );
        return None;
    }
    let protocol_err = match (m.protocol, ports) {
        (Protocol::Any, true) => {
            Some("any applies to address-only mappings: remove the ports, or name tcp or udp")
        }
        (Protocol::Icmp, true) => Some("icmp mappings are address-only: remove the ports"),
        (Protocol::Tcp | Protocol::Udp, false) => Some(
            "an address-only mapping translates every protocol: use protocol any, or give both ports",
        ),
        _ => None,
    };
    if let Some(msg) = protocol_err {
        e.push(format!("{path}.protocol"), msg);
        return None;
    }
    Some(StaticSpec {
        protocol: m.protocol,
        external,
        local,
    })
}

fn identity_mapping(e: &mut Errors, i: usize, m: &IdentityMapping) -> Option<IdentitySpec> {
    let path = format!("{P}.identityMappings[{i}]");
    let a = addr(e, &format!("{path}.address"), &m.address);
    let port = match (m.protocol, m.port) {
        (Protocol::Tcp | Protocol::Udp, Some(p)) => match u16::try_from(p) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                e.push(
                    format!("{path}.port"),
                    format!("port {p} is out of range 1-65535"),
                );
                return None;
            }
        },
        (Protocol::Tcp | Protocol::Udp, None) => {
            e.push(
                format!("{path}.port"),
                "a tcp or udp identity mapping needs a port; use protocol any to exempt the whole address",
            );
            return None;
        }
        (Protocol::Any | Protocol::Icmp, Some(_)) => {
            e.push(
                format!("{path}.port"),
                "only tcp and udp identity mappings have a port",
            );
            return None;
        }
        (Protocol::Any | Protocol::Icmp, None) => None,
    };
    Some(IdentitySpec {
        protocol: m.protocol,
        addr: a?,
        port,
    })
}

/// Where a `nat_static` entry comes from, for messages naming both sides of a clash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Static { index: usize, external: bool },
    Identity { index: usize },
}

impl Origin {
    fn field(self) -> String {
        match self {
            Self::Static {
                index,
                external: true,
            } => format!("{P}.staticMappings[{index}].external"),
            Self::Static {
                index,
                external: false,
            } => format!("{P}.staticMappings[{index}].local"),
            Self::Identity { index } => format!("{P}.identityMappings[{index}]"),
        }
    }
}

fn describe(s: &StaticEntry) -> String {
    let a = Ipv4Addr::from(s.key.addr);
    let proto = match s.key.proto {
        0 => "any protocol".to_owned(),
        p => proto_name(p).to_owned(),
    };
    if s.key.port == 0 {
        format!("{a} ({proto})")
    } else {
        format!("{a}:{} ({proto})", s.key.port)
    }
}

/// The datapath looks mappings up by `nat_static` key, so two mappings with
/// the same key would silently shadow each other: refuse them, naming both.
/// An address-only external address is owned outright, so port mappings
/// cannot share it either.
fn check_mapping_conflicts(
    e: &mut Errors,
    statics: &[(usize, StaticSpec)],
    identities: &[(usize, IdentitySpec)],
) {
    let entries = static_entries(statics, identities);
    let mut seen: HashMap<_, Origin> = HashMap::new();
    for s in &entries {
        if let Some(first) = seen.get(&s.key) {
            let what = match first {
                Origin::Static { external: true, .. } => "external endpoint",
                Origin::Static {
                    external: false, ..
                } => "local endpoint",
                Origin::Identity { .. } => "identity endpoint",
            };
            e.push(
                s.origin.field(),
                format!("{} is already the {what} of {}", describe(s), first.field()),
            );
        } else {
            seen.insert(s.key, s.origin);
        }
    }
    let owned: HashMap<Ipv4Addr, usize> = statics
        .iter()
        .filter(|(_, s)| s.is_address_only())
        .map(|(i, s)| (s.external.addr, *i))
        .collect();
    for (i, s) in statics.iter().filter(|(_, s)| !s.is_address_only()) {
        if let Some(j) = owned.get(&s.external.addr) {
            e.push(
                format!("{P}.staticMappings[{i}].external"),
                format!(
                    "{} is mapped address-only by {P}.staticMappings[{j}], so no port mapping can use it",
                    s.external.addr
                ),
            );
        }
    }
}

/// The configuration maps have fixed sizes; say which limit a config exceeds
/// instead of failing half-way through writing them.
fn check_capacity(e: &mut Errors, spec: &Nat44Spec) {
    let mappings = (spec.statics.len() + spec.identities.len()) as u64;
    if mappings > u64::from(MAX_MAPPINGS) {
        e.push(
            P.to_owned(),
            format!(
                "{} static and {} identity mappings are more than the {MAX_MAPPINGS} the datapath holds",
                spec.statics.len(),
                spec.identities.len()
            ),
        );
    }
    let pool_addrs: u64 = spec.pools.iter().map(PoolSpec::addresses).sum();
    let extra_static = spec
        .statics
        .iter()
        .map(|s| s.external.addr)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|a| !spec.pools.iter().any(|p| p.contains(*a)))
        .count() as u64;
    if pool_addrs + extra_static > u64::from(MAX_NAT_ADDRS) {
        e.push(
            format!("{P}.pools"),
            format!(
                "the pools and static mappings own {} addresses, more than the {MAX_NAT_ADDRS} the datapath holds",
                pool_addrs + extra_static
            ),
        );
        // Splitting a pool of millions of addresses is pointless work.
        return;
    }
    let ranges = split_pools(&spec.pools, &spec.statics);
    if ranges.len() > MAX_POOL_RANGES as usize {
        e.push(
            format!("{P}.pools"),
            format!(
                "the pools split into {} ranges around address-only static mappings, more than the {MAX_POOL_RANGES} the datapath holds",
                ranges.len()
            ),
        );
    }
    if !spec.pools.is_empty() && ranges.is_empty() {
        e.push(
            format!("{P}.pools"),
            "every pool address is owned by an address-only static mapping, so none is left for dynamic translation",
        );
    }
}

fn timeouts(e: &mut Errors, t: Option<&Timeouts>) -> NatTimeouts {
    let mut out = NatTimeouts::default();
    let Some(t) = t else { return out };
    let fields = [
        (
            "tcpEstablished",
            &t.tcp_established,
            &mut out.tcp_established,
        ),
        ("tcpTransitory", &t.tcp_transitory, &mut out.tcp_transitory),
        ("udp", &t.udp, &mut out.udp),
        ("icmp", &t.icmp, &mut out.icmp),
    ];
    for (name, given, slot) in fields {
        if let Some(s) = given {
            match parse_duration(s) {
                Ok(d) => *slot = d,
                Err(m) => e.push(format!("{P}.timeouts.{name}"), m),
            }
        }
    }
    out
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        xcnf_common::nat::proto::TCP => "tcp",
        xcnf_common::nat::proto::UDP => "udp",
        xcnf_common::nat::proto::ICMP => "icmp",
        0 => "any",
        _ => "other",
    }
}

fn addr(e: &mut Errors, path: &str, s: &str) -> Option<Ipv4Addr> {
    match parse_addr(s) {
        Ok(a) => Some(a),
        Err(m) => {
            e.push(path, m);
            None
        }
    }
}

fn endpoint(e: &mut Errors, path: &str, s: &str) -> Option<Endpoint> {
    match parse_endpoint(s) {
        Ok(ep) => Some(ep),
        Err(m) => {
            e.push(path, m);
            None
        }
    }
}

fn parse_addr(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {n} is out of range 1-65535"))
}

/// `a.b.c.d` or `a.b.c.d:port`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    match s.split_once(':') {
        None => Ok(Endpoint {
            addr: parse_addr(s)?,
            port: None,
        }),
        Some((a, p)) => Ok(Endpoint {
            addr: parse_addr(a)?,
            port: Some(parse_port(p)?),
        }),
    }
}

/// `first-last` (or a single port), each 1-65535, first ≤ last.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() || b.is_empty() {
        return Err(format!(
            "{s:?} is not a port range (want first-last, e.g. \"1024-65535\")"
        ));
    }
    // Both ends are checked before returning, so "0-70000" names both.
    let (lo, hi) = match (parse_port(a), parse_port(b)) {
        (Ok(lo), Ok(hi)) => (lo, hi),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(lo), Err(hi)) => return Err(format!("{lo}; {hi}")),
    };
    if lo > hi {
        return Err(format!("{s:?}: first port {lo} is above last port {hi}"));
    }
    Ok((lo, hi))
}

/// Durations such as `7440s`, `4m`, `2h`, `1500ms` or `1h30m`, greater than 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (want e.g. 300s, 4m, 2h or 1500ms)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            _ => return Err(bad()),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("{s:?} must be greater than 0"));
    }
    Ok(total)
}

/// A valid classic-chain document whose `nat44` section (after `inside` and
/// `outside`) is `nat44`; tests of validation and of the plan edit it.
#[cfg(test)]
pub(crate) fn test_doc(nat44: &str) -> String {
    format!(
        "apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {{name: t}}
spec:
  interfaces:
    - {{name: inside, kernel: {{hostIfName: c0}}}}
    - {{name: outside, kernel: {{hostIfName: c1}}}}
    - {{name: dmz, kernel: {{hostIfName: c2}}}}
    - {{name: mesh, nsm: {{networkService: ns, role: client}}}}
  nat44:
    inside: [inside]
    outside: [outside]
{nat44}"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    use super::test_doc as doc;

    fn errors(nat44: &str) -> Vec<String> {
        let c = Config::parse(&doc(nat44)).unwrap_or_else(|e| panic!("parse: {e}"));
        match c.spec.nat44.as_ref().unwrap().resolve(&c.spec.interfaces) {
            Ok(_) => vec![],
            Err(es) => es.iter().map(ToString::to_string).collect(),
        }
    }

    /// Each case is a `nat44` fragment and the one error it must produce.
    #[test]
    fn every_bad_nat44_is_named_with_its_path() {
        let cases: &[(&str, &str)] = &[
            (
                "    pools: [{first: 80.80.80.100, last: 80.80.80.300}]\n",
                "spec.nat44.pools[0].last: \"80.80.80.300\" is not an IPv4 address",
            ),
            (
                "    pools: [{first: eighty}]\n",
                "spec.nat44.pools[0].first: \"eighty\" is not an IPv4 address",
            ),
            (
                "    pools: [{first: 80.80.80.105, last: 80.80.80.100}]\n",
                "spec.nat44.pools[0].last: 80.80.80.100 is below first (80.80.80.105)",
            ),
            (
                "    pools: [{first: 80.80.80.100, ports: 1024-70000}]\n",
                "spec.nat44.pools[0].ports: port 70000 is out of range 1-65535",
            ),
            (
                "    pools: [{first: 80.80.80.100, ports: 0-70000}]\n",
                "spec.nat44.pools[0].ports: port 0 is out of range 1-65535; port 70000 is out of range 1-65535",
            ),
            (
                "    pools: [{first: 80.80.80.100, ports: 2000-1024}]\n",
                "spec.nat44.pools[0].ports: \"2000-1024\": first port 2000 is above last port 1024",
            ),
            (
                "    pools: [{first: 80.80.80.100, ports: '0-100'}]\n",
                "spec.nat44.pools[0].ports: port 0 is out of range 1-65535",
            ),
            (
                "    pools: [{first: 80.80.80.100, ports: 'low-high'}]\n",
                "spec.nat44.pools[0].ports: \"low\" is not a port number; \"high\" is not a port number",
            ),
            (
                "    pools:\n      - {first: 80.80.80.100, last: 80.80.80.105}\n      - {first: 80.80.80.105, last: 80.80.80.110}\n",
                "spec.nat44.pools[1]: 80.80.80.105-80.80.80.110 overlaps spec.nat44.pools[0] (80.80.80.100-80.80.80.105)",
            ),
            (
                "    pools: [{first: 10.0.0.0, last: 10.1.0.0}]\n",
                "spec.nat44.pools: the pools and static mappings own 65537 addresses, more than the 65536 the datapath holds",
            ),
            (
                "    pools: [{first: 80.80.80.100}]\n    staticMappings: [{external: 80.80.80.100, local: 192.168.100.10}]\n",
                "spec.nat44.pools: every pool address is owned by an address-only static mapping, so none is left for dynamic translation",
            ),
            (
                "    staticMappings: [{protocol: tcp, external: '80.80.80.100:70000', local: '192.168.100.10:80'}]\n",
                "spec.nat44.staticMappings[0].external: port 70000 is out of range 1-65535",
            ),
            (
                "    staticMappings: [{protocol: tcp, external: '80.80.80.100:80', local: '192.168.100:80'}]\n",
                "spec.nat44.staticMappings[0].local: \"192.168.100\" is not an IPv4 address",
            ),
            (
                "    staticMappings: [{protocol: tcp, external: '80.80.80.100:8080', local: 192.168.100.10}]\n",
                "spec.nat44.staticMappings[0]: external and local must both have a port (port forwarding) or neither (address-only)",
            ),
            (
                "    staticMappings: [{protocol: any, external: '80.80.80.100:8080', local: '192.168.100.10:80'}]\n",
                "spec.nat44.staticMappings[0].protocol: any applies to address-only mappings: remove the ports, or name tcp or udp",
            ),
            (
                "    staticMappings: [{protocol: icmp, external: '80.80.80.100:1', local: '192.168.100.10:1'}]\n",
                "spec.nat44.staticMappings[0].protocol: icmp mappings are address-only: remove the ports",
            ),
            (
                "    staticMappings: [{protocol: udp, external: 80.80.80.100, local: 192.168.100.10}]\n",
                "spec.nat44.staticMappings[0].protocol: an address-only mapping translates every protocol: use protocol any, or give both ports",
            ),
            (
                "    staticMappings:\n      - {protocol: tcp, external: '80.80.80.100:8080', local: '192.168.100.10:80'}\n      - {protocol: tcp, external: '80.80.80.100:8080', local: '192.168.100.11:80'}\n",
                "spec.nat44.staticMappings[1].external: 80.80.80.100:8080 (tcp) is already the external endpoint of spec.nat44.staticMappings[0].external",
            ),
            (
                "    staticMappings:\n      - {protocol: udp, external: '80.80.80.100:53', local: '192.168.100.10:53'}\n      - {protocol: udp, external: '80.80.80.101:53', local: '192.168.100.10:53'}\n",
                "spec.nat44.staticMappings[1].local: 192.168.100.10:53 (udp) is already the local endpoint of spec.nat44.staticMappings[0].local",
            ),
            (
                "    staticMappings:\n      - {external: 80.80.80.101, local: 192.168.100.11}\n      - {protocol: tcp, external: '80.80.80.101:22', local: '192.168.100.12:22'}\n",
                "spec.nat44.staticMappings[1].external: 80.80.80.101 is mapped address-only by spec.nat44.staticMappings[0], so no port mapping can use it",
            ),
            (
                "    identityMappings: [{protocol: udp, address: 80.80.80.100, port: 70000}]\n",
                "spec.nat44.identityMappings[0].port: port 70000 is out of range 1-65535",
            ),
            (
                "    identityMappings: [{protocol: icmp, address: 80.80.80.100, port: 7}]\n",
                "spec.nat44.identityMappings[0].port: only tcp and udp identity mappings have a port",
            ),
            (
                "    identityMappings: [{protocol: tcp, address: 80.80.80.100}]\n",
                "spec.nat44.identityMappings[0].port: a tcp or udp identity mapping needs a port; use protocol any to exempt the whole address",
            ),
            (
                "    identityMappings: [{address: 80.80.80.1000}]\n",
                "spec.nat44.identityMappings[0].address: \"80.80.80.1000\" is not an IPv4 address",
            ),
            (
                "    staticMappings: [{protocol: udp, external: '80.80.80.100:53', local: '192.168.100.10:53'}]\n    identityMappings: [{protocol: udp, address: 80.80.80.100, port: 53}]\n",
                "spec.nat44.identityMappings[0]: 80.80.80.100:53 (udp) is already the external endpoint of spec.nat44.staticMappings[0].external",
            ),
            (
                "    timeouts: {udp: 5x}\n",
                "spec.nat44.timeouts.udp: \"5x\" is not a duration (want e.g. 300s, 4m, 2h or 1500ms)",
            ),
            (
                "    timeouts: {tcpEstablished: 0s}\n",
                "spec.nat44.timeouts.tcpEstablished: \"0s\" must be greater than 0",
            ),
            (
                "    timeouts: {icmp: '60'}\n",
                "spec.nat44.timeouts.icmp: \"60\" is not a duration (want e.g. 300s, 4m, 2h or 1500ms)",
            ),
            (
                "    maxSessions: 0\n",
                "spec.nat44.maxSessions: 0 is out of range 1-16777216",
            ),
            (
                "    maxSessions: 16777217\n",
                "spec.nat44.maxSessions: 16777217 is out of range 1-16777216",
            ),
        ];
        for (nat44, want) in cases {
            assert_eq!(
                errors(nat44),
                vec![want.to_string()],
                "for fragment:\n{nat44}"
            );
        }
    }

    #[test]
    fn interface_roles_are_checked() {
        let replace = |from: &str, to: &str| {
            let yaml = doc("").replace(from, to);
            let c = Config::parse(&yaml).unwrap();
            match c.spec.nat44.as_ref().unwrap().resolve(&c.spec.interfaces) {
                Ok(_) => vec![],
                Err(es) => es.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }
        };
        assert_eq!(
            replace("inside: [inside]", "inside: []"),
            ["spec.nat44.inside: must name at least one interface of spec.interfaces"]
        );
        assert_eq!(
            replace("inside: [inside]", "inside: [inside, nope]"),
            ["spec.nat44.inside[1]: \"nope\" is not the name of any spec.interfaces entry"]
        );
        // An NSM interface over the kernel mechanism is a kernel interface
        // once NSM has made it; over memif it is not.
        assert_eq!(
            replace("outside: [outside]", "outside: [outside, mesh]"),
            Vec::<String>::new()
        );
        let memif = doc("")
            .replace("role: client}", "role: client, mechanism: memif}")
            .replace("outside: [outside]", "outside: [outside, mesh]");
        let c = Config::parse(&memif).unwrap();
        let got: Vec<String> = match c.spec.nat44.as_ref().unwrap().resolve(&c.spec.interfaces) {
            Ok(_) => vec![],
            Err(es) => es.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            got,
            [
                "spec.nat44.outside[1]: \"mesh\" uses backend vpp but \"inside\" uses backend ebpf: a NAT44 domain lives in one backend"
            ]
        );
        assert_eq!(
            replace("outside: [outside]", "outside: [outside, inside]"),
            [
                "spec.nat44.outside[1]: \"inside\" is also listed in spec.nat44.inside: an interface has one role"
            ]
        );
        assert_eq!(
            replace("inside: [inside]", "inside: [inside, dmz, inside]"),
            ["spec.nat44.inside[2]: \"inside\" is listed twice"]
        );
    }

    #[test]
    fn many_holes_exceed_the_pool_ranges() {
        let mut nat =
            "    pools: [{first: 10.0.0.0, last: 10.0.0.255}]\n    staticMappings:\n".to_owned();
        for i in 0..64 {
            nat += &format!(
                "      - {{external: 10.0.0.{}, local: 192.168.0.{i}}}\n",
                2 * i + 1
            );
        }
        assert_eq!(
            errors(&nat),
            [
                "spec.nat44.pools: the pools split into 65 ranges around address-only static mappings, more than the 64 the datapath holds"
            ]
        );
    }

    #[test]
    fn mappings_up_to_the_datapath_limit_are_accepted() {
        let statics = |n: u32| {
            let mut nat = "    staticMappings:\n".to_owned();
            for i in 0..n {
                let (hi, lo) = (i / 250, i % 250 + 1);
                nat += &format!(
                    "      - {{protocol: udp, external: \"80.80.{hi}.{lo}:53\", local: \"10.1.{hi}.{lo}:53\"}}\n"
                );
            }
            nat + "    identityMappings: [{protocol: tcp, address: 80.80.200.1, port: 22}]\n"
        };
        assert_eq!(errors(&statics(MAX_MAPPINGS - 1)), Vec::<String>::new());
        assert_eq!(
            errors(&statics(MAX_MAPPINGS)),
            [format!(
                "spec.nat44: {MAX_MAPPINGS} static and 1 identity mappings are more than the {MAX_MAPPINGS} the datapath holds"
            )]
        );
    }

    #[test]
    fn unknown_mapping_mode_is_a_parse_error_naming_the_field() {
        let e = Config::parse(&doc("    mapping: full-cone\n")).unwrap_err();
        assert!(
            e.contains("spec.nat44.mapping: unknown variant `full-cone`"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_at_once() {
        let got = errors(
            "    pools: [{first: x}, {first: 1.1.1.1, ports: '9-8'}]\n    maxSessions: 0\n    timeouts: {udp: never}\n",
        );
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn good_nat44_resolves() {
        let c = Config::parse(&doc(
            "    pools: [{first: 80.80.80.100, last: 80.80.80.105, ports: \"1024-65535\"}]
    mapping: endpoint-dependent
    staticMappings:
      - {protocol: tcp, external: \"80.80.80.100:8080\", local: \"192.168.100.10:80\"}
      - {protocol: any, external: \"80.80.80.101\", local: \"192.168.100.11\"}
      - {protocol: icmp, external: \"80.80.80.120\", local: \"192.168.100.12\"}
    identityMappings:
      - {protocol: udp, address: 80.80.80.100, port: 53}
      - {address: 80.80.80.1}
    timeouts: {tcpEstablished: 2h4m, tcpTransitory: 240s, udp: 300s, icmp: 1500ms}
    maxSessions: 16777216
",
        ))
        .unwrap();
        let s = c.spec.nat44.unwrap().resolve(&c.spec.interfaces).unwrap();
        assert_eq!((s.inside, s.outside), (vec![0], vec![1]));
        assert_eq!(
            s.pools,
            vec![PoolSpec {
                first: Ipv4Addr::new(80, 80, 80, 100),
                last: Ipv4Addr::new(80, 80, 80, 105),
                port_min: 1024,
                port_max: 65535
            }]
        );
        assert_eq!(s.mapping, NatMapping::EndpointDependent);
        assert_eq!(s.statics.len(), 3);
        assert!(s.statics[1].is_address_only() && !s.statics[0].is_address_only());
        assert_eq!(
            s.identities[0],
            IdentitySpec {
                protocol: Protocol::Udp,
                addr: Ipv4Addr::new(80, 80, 80, 100),
                port: Some(53)
            }
        );
        assert_eq!(s.timeouts.tcp_established, Duration::from_secs(7440));
        assert_eq!(s.timeouts.icmp, Duration::from_millis(1500));
        assert_eq!(s.timeouts.min(), Duration::from_millis(1500));
        assert_eq!(s.max_sessions, MAX_SESSIONS_LIMIT);
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(&doc("    pools: [{first: 80.80.80.100}]\n")).unwrap();
        let s = c.spec.nat44.unwrap().resolve(&c.spec.interfaces).unwrap();
        assert_eq!((s.pools[0].port_min, s.pools[0].port_max), (1024, 65535));
        assert_eq!(s.pools[0].last, s.pools[0].first);
        assert_eq!(s.timeouts, NatTimeouts::default());
        assert_eq!(s.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(s.mapping, NatMapping::EndpointIndependent);
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(parse_port_range("53"), Ok((53, 53)));
        assert!(parse_port_range("-5").is_err());
        assert_eq!(
            parse_endpoint("1.2.3.4:80"),
            Ok(Endpoint {
                addr: Ipv4Addr::new(1, 2, 3, 4),
                port: Some(80)
            })
        );
        assert!(parse_endpoint("1.2.3.4:").is_err());
        assert!(parse_endpoint("1.2.3.4:80:1").is_err());
    }
}
