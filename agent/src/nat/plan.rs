//! Compiling `spec.nat44` into the contents of the NAT configuration maps.
//!
//! Pure functions from the resolved config to map entries, so what the
//! datapath will see can be tested without a kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use xcnf_common::nat::{
    NatAddr, NatConfig, PoolRange, StaticKey, StaticMapping, addr_flags, config_flags, proto, role,
    static_flags,
};

use crate::config::{
    Config, IdentitySpec, Nat44Spec, NatMapping, NatTimeouts, Origin, PoolSpec, Protocol,
    StaticSpec,
};

/// One `nat_static` entry and the mapping it was compiled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticEntry {
    pub key: StaticKey,
    pub value: StaticMapping,
    pub origin: Origin,
}

/// Everything the agent writes for NAT44, and what its sweeper needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatPlan {
    /// The `nat_config` entry; `flags == 0` when `nat44` is absent.
    pub config: NatConfig,
    /// `nat_pools[0..]`; the rest of the array is zeroed.
    pub pools: Vec<PoolRange>,
    pub statics: Vec<(StaticKey, StaticMapping)>,
    pub addrs: Vec<([u8; 4], NatAddr)>,
    /// Role of each interface by its host interface name; interfaces not
    /// listed have [`role::NONE`].
    pub roles: BTreeMap<String, u8>,
    pub timeouts: NatTimeouts,
}

impl NatPlan {
    /// NAT44 not configured: the datapath ignores roles and forwards as before.
    pub fn disabled() -> Self {
        Self {
            config: NatConfig::default(),
            pools: Vec::new(),
            statics: Vec::new(),
            addrs: Vec::new(),
            roles: BTreeMap::new(),
            timeouts: NatTimeouts::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.flags & config_flags::ENABLED != 0
    }

    /// The role the interface with this host name gets.
    pub fn role(&self, host_if_name: &str) -> u8 {
        self.roles.get(host_if_name).copied().unwrap_or(role::NONE)
    }

    /// Compiles a validated config. A config that does not validate yields
    /// its validation errors again, so this never writes half a plan.
    pub fn compile(cfg: &Config) -> Result<Self, Vec<crate::config::FieldError>> {
        let Some(nat) = &cfg.spec.nat44 else {
            return Ok(Self::disabled());
        };
        let spec = nat.resolve(&cfg.spec.interfaces)?;
        Ok(Self::from_spec(cfg, &spec))
    }

    /// The plan of an already resolved `nat44` section of `cfg`.
    pub fn from_spec(cfg: &Config, spec: &Nat44Spec) -> Self {
        let host_name = |i: &usize| {
            cfg.spec.interfaces[*i]
                .kernel
                .as_ref()
                .map(|k| k.host_if_name.clone())
        };
        let mut roles = BTreeMap::new();
        for (list, r) in [(&spec.inside, role::INSIDE), (&spec.outside, role::OUTSIDE)] {
            for name in list.iter().filter_map(host_name) {
                roles.insert(name, r);
            }
        }
        let pools = split_pools(&spec.pools, &spec.statics);
        let statics: Vec<(usize, StaticSpec)> = spec.statics.iter().copied().enumerate().collect();
        let identities: Vec<(usize, IdentitySpec)> =
            spec.identities.iter().copied().enumerate().collect();
        let entries = static_entries(&statics, &identities);
        let mut flags = config_flags::ENABLED;
        if spec.mapping == NatMapping::EndpointDependent {
            flags |= config_flags::ENDPOINT_DEPENDENT;
        }
        let config = NatConfig {
            flags,
            pool_ranges: pools.len() as u32,
            pool_addrs: pools.iter().map(|r| r.count).sum(),
            max_sessions: spec.max_sessions,
        };
        Self {
            config,
            addrs: nat_addrs(&pools, &spec.statics),
            pools,
            statics: entries.iter().map(|e| (e.key, e.value)).collect(),
            roles,
            timeouts: spec.timeouts,
        }
    }
}

/// Splits the pools around addresses that address-only static mappings own,
/// numbering the addresses that remain consecutively (`base`), so that the
/// paired-pooling index maps straight to an address.
pub fn split_pools(pools: &[PoolSpec], statics: &[StaticSpec]) -> Vec<PoolRange> {
    let owned: BTreeSet<u32> = statics
        .iter()
        .filter(|s| s.is_address_only())
        .map(|s| u32::from(s.external.addr))
        .collect();
    let mut out = Vec::new();
    let mut base = 0u32;
    for p in pools {
        let (first, last) = (u32::from(p.first), u32::from(p.last));
        let mut start = u64::from(first);
        let holes = owned.range(first..=last).map(|a| u64::from(*a));
        // The end of the pool acts as a final hole just past `last`.
        for hole in holes.chain(std::iter::once(u64::from(last) + 1)) {
            if hole > start {
                let count = (hole - start) as u32;
                out.push(PoolRange {
                    first: (start as u32).to_be_bytes(),
                    count,
                    base,
                    port_min: p.port_min,
                    port_max: p.port_max,
                });
                base = base.saturating_add(count);
            }
            start = hole + 1;
        }
    }
    out
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => proto::TCP,
        Protocol::Udp => proto::UDP,
        Protocol::Icmp => proto::ICMP,
        Protocol::Any => 0,
    }
}

fn key(addr: Ipv4Addr, port: Option<u16>, p: Protocol, dir: u8) -> StaticKey {
    StaticKey {
        addr: addr.octets(),
        port: port.unwrap_or(0),
        proto: proto_number(p),
        dir,
    }
}

fn mapping(addr: Ipv4Addr, port: Option<u16>, flags: u8) -> StaticMapping {
    StaticMapping {
        addr: addr.octets(),
        port: port.unwrap_or(0),
        flags,
        _pad: 0,
    }
}

/// The `nat_static` entries: every mapping in both directions. `OUTSIDE`
/// entries are keyed by the external endpoint (inbound DNAT), `INSIDE`
/// entries by the local one (outbound SNAT of a mapped host). Mappings
/// without ports are keyed with port 0: address-only ones (`any`) with
/// protocol 0, ICMP ones with protocol ICMP.
pub fn static_entries(
    statics: &[(usize, StaticSpec)],
    identities: &[(usize, IdentitySpec)],
) -> Vec<StaticEntry> {
    let mut out = Vec::with_capacity(2 * (statics.len() + identities.len()));
    for (index, s) in statics {
        let (ext, loc) = (s.external, s.local);
        out.push(StaticEntry {
            key: key(ext.addr, ext.port, s.protocol, role::OUTSIDE),
            value: mapping(loc.addr, loc.port, 0),
            origin: Origin::Static {
                index: *index,
                external: true,
            },
        });
        out.push(StaticEntry {
            key: key(loc.addr, loc.port, s.protocol, role::INSIDE),
            value: mapping(ext.addr, ext.port, 0),
            origin: Origin::Static {
                index: *index,
                external: false,
            },
        });
    }
    for (index, m) in identities {
        for dir in [role::OUTSIDE, role::INSIDE] {
            out.push(StaticEntry {
                key: key(m.addr, m.port, m.protocol, dir),
                value: mapping(m.addr, m.port, static_flags::IDENTITY),
                origin: Origin::Identity { index: *index },
            });
        }
    }
    out
}

/// Every address the NAT owns: pool addresses and static external addresses.
fn nat_addrs(pools: &[PoolRange], statics: &[StaticSpec]) -> Vec<([u8; 4], NatAddr)> {
    let mut flags: BTreeMap<u32, u8> = BTreeMap::new();
    for r in pools {
        let first = u32::from_be_bytes(r.first);
        for a in first..first.saturating_add(r.count) {
            *flags.entry(a).or_default() |= addr_flags::POOL;
        }
    }
    for s in statics {
        *flags.entry(u32::from(s.external.addr)).or_default() |= addr_flags::STATIC;
    }
    flags
        .into_iter()
        .map(|(a, f)| {
            (
                a.to_be_bytes(),
                NatAddr {
                    flags: f,
                    _pad: [0; 3],
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use std::collections::HashMap;

    use super::*;

    fn plan(nat44: &str) -> NatPlan {
        let cfg = Config::parse(&crate::config::test_doc(nat44)).unwrap();
        NatPlan::compile(&cfg).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn classic_chain_pool() {
        let p = plan("    pools: [{first: 80.80.80.100, last: 80.80.80.105}]\n");
        assert_eq!(
            p.config,
            NatConfig {
                flags: config_flags::ENABLED,
                pool_ranges: 1,
                pool_addrs: 6,
                max_sessions: 262_144,
            }
        );
        assert_eq!(
            p.pools,
            vec![PoolRange {
                first: [80, 80, 80, 100],
                count: 6,
                base: 0,
                port_min: 1024,
                port_max: 65535,
            }]
        );
        assert_eq!(p.addrs.len(), 6);
        assert!(
            p.addrs
                .iter()
                .all(|(a, f)| a[..3] == [80, 80, 80] && f.flags == addr_flags::POOL)
        );
        assert_eq!(p.role("c0"), role::INSIDE);
        assert_eq!(p.role("c1"), role::OUTSIDE);
        assert_eq!(p.role("c2"), role::NONE);
        assert!(p.statics.is_empty());
        assert_eq!(p.timeouts, NatTimeouts::default());
    }

    #[test]
    fn absent_nat44_is_disabled() {
        let cfg = Config::parse(
            "apiVersion: xcnf.io/v1alpha1\nkind: CNFConfiguration\nmetadata: {name: t}\nspec: {}\n",
        )
        .unwrap();
        let p = NatPlan::compile(&cfg).unwrap();
        assert_eq!(p.config.flags, 0);
        assert!(!p.enabled());
        assert_eq!(p.role("c0"), role::NONE);
    }

    #[test]
    fn pools_split_around_address_only_mappings_with_cumulative_base() {
        let p = plan(
            "    pools:
      - {first: 10.0.0.1, last: 10.0.0.6, ports: 2000-2999}
      - {first: 10.0.1.0}
    mapping: endpoint-dependent
    staticMappings:
      - {external: 10.0.0.1, local: 192.168.0.1}
      - {external: 10.0.0.3, local: 192.168.0.3}
      - {external: 10.0.0.6, local: 192.168.0.6}
      - {protocol: tcp, external: '10.0.0.4:80', local: '192.168.0.4:8080'}
",
        );
        let got: Vec<_> = p
            .pools
            .iter()
            .map(|r| (r.first, r.count, r.base, r.port_min, r.port_max))
            .collect();
        assert_eq!(
            got,
            vec![
                ([10, 0, 0, 2], 1, 0, 2000, 2999),
                ([10, 0, 0, 4], 2, 1, 2000, 2999),
                ([10, 0, 1, 0], 1, 3, 1024, 65535),
            ]
        );
        assert_eq!(
            p.config.flags,
            config_flags::ENABLED | config_flags::ENDPOINT_DEPENDENT
        );
        assert_eq!((p.config.pool_ranges, p.config.pool_addrs), (3, 4));
        let flags: BTreeMap<[u8; 4], u8> = p.addrs.iter().map(|(a, f)| (*a, f.flags)).collect();
        use addr_flags::{POOL, STATIC};
        assert_eq!(
            flags,
            BTreeMap::from([
                ([10, 0, 0, 1], STATIC),
                ([10, 0, 0, 2], POOL),
                ([10, 0, 0, 3], STATIC),
                ([10, 0, 0, 4], POOL | STATIC),
                ([10, 0, 0, 5], POOL),
                ([10, 0, 0, 6], STATIC),
                ([10, 0, 1, 0], POOL),
            ])
        );
    }

    #[test]
    fn static_and_identity_entries_in_both_directions() {
        let p = plan(
            "    staticMappings:
      - {protocol: tcp, external: '80.80.80.100:8080', local: '192.168.100.10:80'}
      - {protocol: any, external: 80.80.80.101, local: 192.168.100.11}
      - {protocol: icmp, external: 80.80.80.102, local: 192.168.100.12}
    identityMappings:
      - {protocol: udp, address: 80.80.80.100, port: 53}
      - {address: 80.80.80.110}
",
        );
        let got: HashMap<StaticKey, StaticMapping> = p.statics.iter().copied().collect();
        let k = |a: [u8; 4], port, proto, dir| StaticKey {
            addr: a,
            port,
            proto,
            dir,
        };
        let v = |a: [u8; 4], port, flags| StaticMapping {
            addr: a,
            port,
            flags,
            _pad: 0,
        };
        use role::{INSIDE, OUTSIDE};
        let id = static_flags::IDENTITY;
        let want = HashMap::from([
            (
                k([80, 80, 80, 100], 8080, proto::TCP, OUTSIDE),
                v([192, 168, 100, 10], 80, 0),
            ),
            (
                k([192, 168, 100, 10], 80, proto::TCP, INSIDE),
                v([80, 80, 80, 100], 8080, 0),
            ),
            (
                k([80, 80, 80, 101], 0, 0, OUTSIDE),
                v([192, 168, 100, 11], 0, 0),
            ),
            (
                k([192, 168, 100, 11], 0, 0, INSIDE),
                v([80, 80, 80, 101], 0, 0),
            ),
            (
                k([80, 80, 80, 102], 0, proto::ICMP, OUTSIDE),
                v([192, 168, 100, 12], 0, 0),
            ),
            (
                k([192, 168, 100, 12], 0, proto::ICMP, INSIDE),
                v([80, 80, 80, 102], 0, 0),
            ),
            (
                k([80, 80, 80, 100], 53, proto::UDP, OUTSIDE),
                v([80, 80, 80, 100], 53, id),
            ),
            (
                k([80, 80, 80, 100], 53, proto::UDP, INSIDE),
                v([80, 80, 80, 100], 53, id),
            ),
            (
                k([80, 80, 80, 110], 0, 0, OUTSIDE),
                v([80, 80, 80, 110], 0, id),
            ),
            (
                k([80, 80, 80, 110], 0, 0, INSIDE),
                v([80, 80, 80, 110], 0, id),
            ),
        ]);
        assert_eq!(got, want);
        assert_eq!(p.statics.len(), 10, "no entry lost to a duplicate key");
        // No pools: static external addresses are still owned.
        let flags: Vec<_> = p.addrs.iter().map(|(a, f)| (a[3], f.flags)).collect();
        assert_eq!(
            flags,
            vec![
                (100, addr_flags::STATIC),
                (101, addr_flags::STATIC),
                (102, addr_flags::STATIC)
            ]
        );
        assert_eq!(p.config.pool_addrs, 0);
    }

    #[test]
    fn timeouts_and_max_sessions_are_carried() {
        let p = plan(
            "    timeouts: {udp: 2s, icmp: 1500ms, tcpTransitory: 4m, tcpEstablished: 2h}\n    maxSessions: 16\n",
        );
        use std::time::Duration;
        assert_eq!(
            p.timeouts,
            NatTimeouts {
                tcp_established: Duration::from_secs(7200),
                tcp_transitory: Duration::from_secs(240),
                udp: Duration::from_secs(2),
                icmp: Duration::from_millis(1500),
            }
        );
        assert_eq!(p.config.max_sessions, 16);
    }
}
