//! Config items: the units the reconciler applies, orders and reports on.
//!
//! A config is flattened into items keyed by what they are in the kernel or
//! the datapath, so two configs can be compared item by item and a change to
//! one static mapping touches only the NAT tables, never an interface.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use crate::{
    config::{Config, DatapathSpec, FieldError, Ipv4Prefix},
    nat::NatPlan,
};

/// An IPv4 prefix as a plain ordered key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Self {
            addr: p.addr,
            len: p.len,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Prefix {
    /// Whether `a` is inside this prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = mask(self.len);
        u32::from(a) & mask == u32::from(self.addr) & mask
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// What an item is, by identity. Its `Display` is the key the API and logs use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKey {
    /// A logical interface: its host interface exists, with the configured
    /// admin state and MTU.
    Link(String),
    /// An address on a logical interface.
    Address(String, Prefix),
    /// A route in the main table, identified as the kernel does (dst, metric).
    Route { dst: Prefix, metric: u32 },
    /// A permanent neighbour entry on a logical interface.
    Neighbor(String, Ipv4Addr),
    /// The NAT44 tables (pools, static and identity mappings, settings).
    Nat,
    /// The eBPF program attached to a logical interface, with its NAT role.
    Attach(String),
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
        }
    }
}

impl ItemKey {
    /// Apply order: an interface before its addresses, addresses before the
    /// routes and neighbours that need them, the NAT tables before any
    /// interface gets a NAT role. Removal runs in the reverse order.
    pub fn phase(&self) -> u8 {
        match self {
            Self::Link(_) => 0,
            Self::Address(..) => 1,
            Self::Route { .. } | Self::Neighbor(..) => 2,
            Self::Nat => 3,
            Self::Attach(_) => 4,
        }
    }

    /// The logical interface this item lives on, if any.
    pub fn interface(&self) -> Option<&str> {
        match self {
            Self::Link(n) | Self::Address(n, _) | Self::Neighbor(n, _) | Self::Attach(n) => Some(n),
            Self::Route { .. } | Self::Nat => None,
        }
    }
}

/// The desired value of an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Link(LinkSpec),
    Address,
    Route(RouteSpec),
    Neighbor { mac: [u8; 6] },
    Nat(Box<NatPlan>),
    Attach(AttachSpec),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub host_if_name: String,
    /// `None` leaves the MTU as it is.
    pub mtu: Option<u32>,
    /// `enabled`: set the link up, or down (and then nothing attaches).
    pub up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
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
            (_, Item::Route(r)) => vec![ItemKey::Link(r.interface.clone())],
            _ => Vec::new(),
        }
    }

    /// One line for plans and status output.
    pub fn summary(&self) -> String {
        match self {
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
            Self::Neighbor { mac } => format!(
                "lladdr {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
            ),
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
        }
    }
}

/// The desired items of a validated config.
pub type Items = BTreeMap<ItemKey, Item>;

/// Flattens a config into items. The config must have passed validation;
/// anything that still does not parse is reported, never skipped.
pub fn items(cfg: &Config) -> Result<Items, Vec<FieldError>> {
    let mut out = Items::new();
    let mut errors = Vec::new();
    let nat = NatPlan::compile(cfg)?;
    let mut hosts = BTreeMap::new();
    for (i, itf) in cfg.spec.interfaces.iter().enumerate() {
        // nsm and memif interfaces are refused by validation until the NSM
        // and VPP backends exist; only kernel interfaces become items.
        let Some(k) = &itf.kernel else { continue };
        hosts.insert(itf.name.as_str(), k.host_if_name.as_str());
        out.insert(
            ItemKey::Link(itf.name.clone()),
            Item::Link(LinkSpec {
                host_if_name: k.host_if_name.clone(),
                mtu: itf.mtu,
                up: itf.is_enabled(),
            }),
        );
        for (j, a) in itf.ip_addresses.iter().enumerate() {
            match a.parse::<Ipv4Prefix>() {
                Ok(p) => {
                    out.insert(ItemKey::Address(itf.name.clone(), p.into()), Item::Address);
                }
                Err(message) => errors.push(FieldError {
                    path: format!("spec.interfaces[{i}].ipAddresses[{j}]"),
                    message,
                }),
            }
        }
        if itf.is_enabled() {
            out.insert(
                ItemKey::Attach(itf.name.clone()),
                Item::Attach(AttachSpec {
                    host_if_name: k.host_if_name.clone(),
                    datapath: itf.datapath,
                    role: nat.role(&k.host_if_name),
                }),
            );
        }
    }
    for (i, r) in cfg.spec.routes.iter().enumerate() {
        let p = format!("spec.routes[{i}]");
        let dst = r.dst.parse::<Ipv4Prefix>().map_err(|message| FieldError {
            path: format!("{p}.dst"),
            message,
        });
        let via = r
            .via
            .as_deref()
            .map(|v| {
                v.parse::<Ipv4Addr>().map_err(|_| FieldError {
                    path: format!("{p}.via"),
                    message: format!("{v:?} is not an IPv4 address"),
                })
            })
            .transpose();
        match (dst, via) {
            (Ok(dst), Ok(via)) => {
                out.insert(
                    ItemKey::Route {
                        dst: dst.into(),
                        metric: r.metric.unwrap_or(0),
                    },
                    Item::Route(RouteSpec {
                        interface: r.interface.clone(),
                        via,
                    }),
                );
            }
            (dst, via) => errors.extend(dst.err().into_iter().chain(via.err())),
        }
    }
    for (i, n) in cfg.spec.neighbors.iter().enumerate() {
        let p = format!("spec.neighbors[{i}]");
        let ip = n.ip.parse::<Ipv4Addr>().map_err(|_| FieldError {
            path: format!("{p}.ip"),
            message: format!("{:?} is not an IPv4 address", n.ip),
        });
        let mac = parse_mac(&n.mac).map_err(|message| FieldError {
            path: format!("{p}.mac"),
            message,
        });
        match (ip, mac) {
            (Ok(ip), Ok(mac)) => {
                out.insert(
                    ItemKey::Neighbor(n.interface.clone(), ip),
                    Item::Neighbor { mac },
                );
            }
            (ip, mac) => errors.extend(ip.err().into_iter().chain(mac.err())),
        }
    }
    if nat.enabled() {
        out.insert(ItemKey::Nat, Item::Nat(Box::new(nat)));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
        ));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() == 2)
            .ok_or_else(|| format!("{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}
