//! Config items: the units the reconciler applies, orders and reports on.
//!
//! A config is flattened into items keyed by what they are in the kernel or
//! the datapath, so two configs can be compared item by item and a change to
//! one static mapping touches only the NAT tables, never an interface.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use super::{bindings::Binding, vpp::VppNatPlan};
use crate::{
    config::{
        Backend, Config, DatapathSpec, FieldError, Interface, InterfaceL3, Ipv4Prefix, MacAddr,
        MemifMode, MemifRole, NsmInterface, NsmMechanism, NsmRole, Resolved,
    },
    nat::NatPlan,
};

/// What an item is, by identity. Its `Display` is the key the API and logs use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKey {
    /// A logical interface: its host interface exists, with the configured
    /// admin state and MTU.
    Link(String),
    /// An address on a logical interface.
    Address(String, Ipv4Prefix),
    /// A route in the main table, identified as the kernel does (dst, metric).
    Route { dst: Ipv4Prefix, metric: u32 },
    /// A permanent neighbour entry on a logical interface.
    Neighbor(String, Ipv4Addr),
    /// The NAT44 tables (pools, static and identity mappings, settings).
    Nat,
    /// The eBPF program attached to a logical interface, with its NAT role.
    Attach(String),
    /// A memif in VPP, with its admin state.
    VppInterface(String),
    /// An address on a VPP interface.
    VppAddress(String, Ipv4Prefix),
    /// A route in VPP's default FIB (VPP routes have no metric).
    VppRoute(Ipv4Prefix),
    /// VPP's NAT44 (nat44-ed): plugin, pools, roles, mappings, timeouts.
    VppNat,
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Link(n) => write!(f, "interface/{n}"),
            Self::Address(n, p) => write!(f, "address/{n}/{p}"),
            Self::Route { dst, metric } => write!(f, "route/{dst}/metric/{metric}"),
            Self::Neighbor(n, ip) => write!(f, "neighbor/{n}/{ip}"),
            Self::Nat => f.write_str("nat44"),
            Self::Attach(n) => write!(f, "datapath/{n}"),
            Self::VppInterface(n) => write!(f, "vpp/interface/{n}"),
            Self::VppAddress(n, p) => write!(f, "vpp/address/{n}/{p}"),
            Self::VppRoute(dst) => write!(f, "vpp/route/{dst}"),
            Self::VppNat => f.write_str("vpp/nat44"),
        }
    }
}

impl ItemKey {
    /// Apply order: an interface before its addresses, addresses before the
    /// routes and neighbours that need them, the NAT tables before any
    /// interface gets a NAT role. Removal runs in the reverse order.
    pub fn phase(&self) -> u8 {
        match self {
            Self::Link(_) | Self::VppInterface(_) => 0,
            Self::Address(..) | Self::VppAddress(..) => 1,
            Self::Route { .. } | Self::Neighbor(..) | Self::VppRoute(_) => 2,
            Self::Nat | Self::VppNat => 3,
            Self::Attach(_) => 4,
        }
    }

    /// Whether VPP holds this item (rather than the kernel or eBPF).
    pub fn is_vpp(&self) -> bool {
        matches!(
            self,
            Self::VppInterface(_) | Self::VppAddress(..) | Self::VppRoute(_) | Self::VppNat
        )
    }

    /// The logical interface this item lives on, if any.
    pub fn interface(&self) -> Option<&str> {
        match self {
            Self::Link(n)
            | Self::Address(n, _)
            | Self::Neighbor(n, _)
            | Self::Attach(n)
            | Self::VppInterface(n)
            | Self::VppAddress(n, _) => Some(n),
            Self::Route { .. } | Self::Nat | Self::VppRoute(_) | Self::VppNat => None,
        }
    }
}

/// The desired value of an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Link(LinkSpec),
    Address,
    Route(RouteVia),
    Neighbor { mac: MacAddr },
    Nat(Box<NatPlan>),
    Attach(AttachSpec),
    Memif(MemifSpec),
    VppNat(Box<VppNatPlan>),
}

/// A memif as VPP creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifSpec {
    pub socket: String,
    pub role: MemifRole,
    pub id: u32,
    pub mode: MemifMode,
    pub up: bool,
    /// Set while an NSM memif has no socket yet: the reason the memif (and
    /// everything on it) is Pending.
    pub waiting: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub host_if_name: String,
    /// `None` leaves the MTU as it is.
    pub mtu: Option<u32>,
    /// `enabled`: set the link up, or down (and then nothing attaches).
    pub up: bool,
    /// Set while an NSM interface has no host interface yet: the reason the
    /// link (and everything on it) is Pending.
    pub waiting: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteVia {
    pub interface: String,
    pub via: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachSpec {
    pub host_if_name: String,
    pub datapath: Option<DatapathSpec>,
    /// `xcnf_common::nat::role`.
    pub role: u8,
}

impl Item {
    /// Items that must be in place before this one can be applied.
    pub fn deps(&self, key: &ItemKey) -> Vec<ItemKey> {
        match (key, self) {
            (ItemKey::Address(n, _) | ItemKey::Neighbor(n, _) | ItemKey::Attach(n), _) => {
                vec![ItemKey::Link(n.clone())]
            }
            (ItemKey::VppAddress(n, _), _) => vec![ItemKey::VppInterface(n.clone())],
            (ItemKey::VppRoute(_), Item::Route(r)) => {
                vec![ItemKey::VppInterface(r.interface.clone())]
            }
            (_, Item::Route(r)) => vec![ItemKey::Link(r.interface.clone())],
            (_, Item::VppNat(p)) => p
                .inside
                .iter()
                .chain(&p.outside)
                .map(|n| ItemKey::VppInterface(n.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// One line for plans and status output.
    pub fn summary(&self) -> String {
        match self {
            Self::Link(l) if l.waiting.is_some() => "host not bound yet".to_owned(),
            Self::Link(l) => {
                let mut s = format!("host {}", l.host_if_name);
                if let Some(m) = l.mtu {
                    s.push_str(&format!(", mtu {m}"));
                }
                s.push_str(if l.up { ", up" } else { ", down" });
                s
            }
            Self::Address => String::new(),
            Self::Route(r) => match r.via {
                Some(v) => format!("via {v} dev {}", r.interface),
                None => format!("dev {}", r.interface),
            },
            Self::Neighbor { mac } => format!("lladdr {mac}"),
            Self::Nat(p) => format!(
                "{} pool addresses, {} static entries, max {} sessions",
                p.config.pool_addrs,
                p.statics.len(),
                p.config.max_sessions
            ),
            Self::Attach(a) => {
                let role = match a.role {
                    xcnf_common::nat::role::INSIDE => "nat inside",
                    xcnf_common::nat::role::OUTSIDE => "nat outside",
                    _ => "forward only",
                };
                format!("host {}, {role}", a.host_if_name)
            }
            Self::Memif(m) if m.waiting.is_some() => "memif not connected by NSM yet".to_owned(),
            Self::Memif(m) => format!(
                "memif {} id {} on {}, {}",
                match m.role {
                    MemifRole::Master => "master",
                    MemifRole::Slave => "slave",
                },
                m.id,
                m.socket,
                if m.up { "up" } else { "down" }
            ),
            Self::VppNat(p) => format!(
                "{} pool ranges, {} static and {} identity mappings, max {} sessions",
                p.ranges.len(),
                p.statics.len(),
                p.identities.len(),
                p.max_sessions
            ),
        }
    }
}

/// The desired items of a validated config.
pub type Items = BTreeMap<ItemKey, Item>;

/// Flattens a config into items, with the same typed view of the spec
/// that validation checks ([`crate::config::Spec::resolve_l3`] and the NAT
/// plan), so what validates is exactly what is applied. NSM interfaces are
/// taken as not connected yet.
pub fn items(cfg: &Config) -> Result<Items, Vec<FieldError>> {
    Ok(resolved_items(cfg, &cfg.resolve()?, &BTreeMap::new()))
}

/// [`items`] of a config [`Config::resolve`] has already checked, with the
/// host interfaces NSM has bound so far (`bound`, by logical name).
pub fn resolved_items(
    cfg: &Config,
    resolved: &Resolved,
    bound: &BTreeMap<String, Binding>,
) -> Items {
    let mut out = Items::new();
    let (nat, vpp_nat) = match &resolved.nat44 {
        Some(spec) if spec.backend == Backend::Vpp => (
            NatPlan::disabled(),
            Some(VppNatPlan::from_spec(&cfg.spec.interfaces, spec)),
        ),
        Some(spec) => (NatPlan::from_spec(cfg, spec), None),
        None => (NatPlan::disabled(), None),
    };
    // The NAT role by interface index, so an NSM interface gets its role
    // whatever host name it is bound to.
    let role_of = |i: usize| match &resolved.nat44 {
        Some(spec) if spec.inside.contains(&i) => xcnf_common::nat::role::INSIDE,
        Some(spec) if spec.outside.contains(&i) => xcnf_common::nat::role::OUTSIDE,
        _ => xcnf_common::nat::role::NONE,
    };
    let l3 = &resolved.l3;
    let ifs = &cfg.spec.interfaces;
    for (i, (itf, l3i)) in ifs.iter().zip(&l3.interfaces).enumerate() {
        if let Some(m) = &itf.memif {
            out.insert(
                ItemKey::VppInterface(itf.name.clone()),
                Item::Memif(MemifSpec {
                    socket: m.socket.clone(),
                    role: m.role,
                    id: m.id,
                    mode: m.mode.unwrap_or_default(),
                    up: itf.is_enabled(),
                    waiting: None,
                }),
            );
            for p in &l3i.addresses {
                out.insert(ItemKey::VppAddress(itf.name.clone(), *p), Item::Address);
            }
            continue;
        }
        if let Some(n) = itf
            .nsm
            .as_ref()
            .filter(|n| n.mechanism == NsmMechanism::Memif)
        {
            nsm_memif(&mut out, itf, n, l3i, bound.get(&itf.name));
            continue;
        }
        // Kernel and NSM (kernel mechanism) interfaces become kernel items.
        let (host, waiting, role) = match (&itf.kernel, &itf.nsm) {
            (Some(k), _) => (k.host_if_name.clone(), None, nat.role(&k.host_if_name)),
            (None, Some(n)) => match bound.get(&itf.name) {
                Some(Binding::Bound(h)) => (h.clone(), None, role_of(i)),
                Some(Binding::Waiting(r)) => (String::new(), Some(r.clone()), role_of(i)),
                // Validation keeps the memif mechanism off this path.
                Some(Binding::Memif(_)) => (
                    String::new(),
                    Some("NSM connected a memif, not a kernel interface".into()),
                    role_of(i),
                ),
                None => (
                    String::new(),
                    Some(format!(
                        "waiting for NSM connection to {}",
                        n.network_service
                    )),
                    role_of(i),
                ),
            },
            (None, None) => continue,
        };
        out.insert(
            ItemKey::Link(itf.name.clone()),
            Item::Link(LinkSpec {
                host_if_name: host.clone(),
                mtu: l3i.mtu,
                up: itf.is_enabled(),
                waiting,
            }),
        );
        for p in &l3i.addresses {
            out.insert(ItemKey::Address(itf.name.clone(), *p), Item::Address);
        }
        if itf.is_enabled() {
            out.insert(
                ItemKey::Attach(itf.name.clone()),
                Item::Attach(AttachSpec {
                    host_if_name: host,
                    datapath: itf.datapath,
                    role,
                }),
            );
        }
    }
    for r in &l3.routes {
        let (dst, metric) = r.key();
        let itf = &ifs[r.interface];
        if itf.backend() == Backend::Vpp {
            out.insert(
                ItemKey::VppRoute(dst),
                Item::Route(RouteVia {
                    interface: itf.name.clone(),
                    via: r.via,
                }),
            );
            continue;
        }
        out.insert(
            ItemKey::Route { dst, metric },
            Item::Route(RouteVia {
                interface: ifs[r.interface].name.clone(),
                via: r.via,
            }),
        );
    }
    for n in &l3.neighbors {
        out.insert(
            ItemKey::Neighbor(ifs[n.interface].name.clone(), n.ip),
            Item::Neighbor { mac: n.mac },
        );
    }
    if nat.enabled() {
        out.insert(ItemKey::Nat, Item::Nat(Box::new(nat)));
    }
    if let Some(p) = vpp_nat {
        out.insert(ItemKey::VppNat, Item::VppNat(Box::new(p)));
    }
    out
}

/// The VPP items of an NSM interface over the memif mechanism: the memif on
/// the socket NSM agreed on (Pending until then), the config's addresses and
/// the IP context's, and the IP context's routes. A config route to the
/// same destination replaces the context's (it is inserted later).
fn nsm_memif(
    out: &mut Items,
    itf: &Interface,
    n: &NsmInterface,
    l3i: &InterfaceL3,
    binding: Option<&Binding>,
) {
    let role = match n.role {
        NsmRole::Client => MemifRole::Slave,
        NsmRole::Endpoint => MemifRole::Master,
    };
    let waiting = |why: String| MemifSpec {
        socket: String::new(),
        role,
        id: 0,
        mode: MemifMode::default(),
        up: itf.is_enabled(),
        waiting: Some(why),
    };
    let (spec, addresses, routes) = match binding {
        Some(Binding::Memif(m)) => (
            MemifSpec {
                socket: m.socket.clone(),
                role: m.role,
                id: 0,
                mode: m.mode,
                up: itf.is_enabled(),
                waiting: None,
            },
            m.addresses.as_slice(),
            m.routes.as_slice(),
        ),
        Some(Binding::Waiting(r)) => (waiting(r.clone()), &[][..], &[][..]),
        Some(Binding::Bound(h)) => (
            waiting(format!("NSM connected kernel interface {h}, not a memif")),
            &[][..],
            &[][..],
        ),
        None => (
            waiting(format!(
                "waiting for NSM connection to {}",
                n.network_service
            )),
            &[][..],
            &[][..],
        ),
    };
    out.insert(ItemKey::VppInterface(itf.name.clone()), Item::Memif(spec));
    for p in l3i.addresses.iter().chain(addresses) {
        out.insert(ItemKey::VppAddress(itf.name.clone(), *p), Item::Address);
    }
    for &(dst, via) in routes {
        out.insert(
            ItemKey::VppRoute(dst),
            Item::Route(RouteVia {
                interface: itf.name.clone(),
                via,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::NsmMemif;

    const NSM_MEMIF: &str = r#"
apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: t}
spec:
  interfaces:
    - name: inside
      nsm: {networkService: nat, role: endpoint, mechanism: memif, ipam: {cidr: 10.60.0.0/24}}
      backend: vpp
      ipAddresses: [192.168.100.1/24]
    - name: outside
      nsm: {networkService: web, role: client, mechanism: memif}
      backend: vpp
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.100}
"#;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn nsm_memifs_wait_for_their_socket_then_carry_the_ip_context() {
        let cfg = Config::parse(NSM_MEMIF).unwrap_or_else(|e| panic!("{e}"));
        let resolved = cfg.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        let mut bound = BTreeMap::new();
        bound.insert(
            "inside".to_owned(),
            Binding::Waiting("waiting for an NSM client of nat".into()),
        );
        let items = resolved_items(&cfg, &resolved, &bound);
        let memif = |items: &Items, n: &str| match items.get(&ItemKey::VppInterface(n.into())) {
            Some(Item::Memif(m)) => m.clone(),
            other => panic!("{n}: {other:?}"),
        };
        let inside = memif(&items, "inside");
        assert_eq!(inside.role, MemifRole::Master);
        assert_eq!(
            inside.waiting.as_deref(),
            Some("waiting for an NSM client of nat")
        );
        assert_eq!(
            memif(&items, "outside").waiting.as_deref(),
            Some("waiting for NSM connection to web")
        );
        assert_eq!(memif(&items, "outside").role, MemifRole::Slave);
        // The NAT domain is VPP's, over both memifs.
        assert!(matches!(items.get(&ItemKey::VppNat), Some(Item::VppNat(_))));
        assert!(items.contains_key(&ItemKey::VppAddress("inside".into(), p("192.168.100.1/24"))));

        bound.insert(
            "outside".to_owned(),
            Binding::Memif(NsmMemif {
                socket: "abstract:fwd/1".into(),
                role: MemifRole::Slave,
                mode: MemifMode::Ip,
                addresses: vec![p("10.70.0.2/32")],
                routes: vec![(p("10.70.0.1/32"), None)],
            }),
        );
        let items = resolved_items(&cfg, &resolved, &bound);
        let outside = memif(&items, "outside");
        assert_eq!(
            (outside.socket.as_str(), outside.mode, outside.waiting),
            ("abstract:fwd/1", MemifMode::Ip, None)
        );
        assert!(items.contains_key(&ItemKey::VppAddress("outside".into(), p("10.70.0.2/32"))));
        assert_eq!(
            items.get(&ItemKey::VppRoute(p("10.70.0.1/32"))),
            Some(&Item::Route(RouteVia {
                interface: "outside".into(),
                via: None
            }))
        );
    }
}
