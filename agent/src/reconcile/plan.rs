//! Planning: the ordered steps that take the applied items to the desired ones.
//!
//! Pure functions, so ordering and dependency handling are unit-tested
//! without a kernel.

use std::{cmp::Reverse, collections::BTreeSet};

use super::{
    handle::OpKind,
    item::{Item, ItemKey, Items},
};

/// One step: `old` is what is applied, `new` what is wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub op: OpKind,
    pub key: ItemKey,
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// Deletes first, dependents before what they depend on; then creates and
/// updates, dependencies first. An interface whose host interface changes
/// takes everything on it along: those items are deleted before and created
/// again after it, because the kernel keeps them on the old host interface.
pub fn plan(applied: &Items, desired: &Items) -> Vec<Step> {
    let rehomed: BTreeSet<&str> = desired
        .iter()
        .filter_map(|(k, v)| match (k, v, applied.get(k)) {
            (ItemKey::Link(n), Item::Link(new), Some(Item::Link(old)))
                if new.host_if_name != old.host_if_name =>
            {
                Some(n.as_str())
            }
            _ => None,
        })
        .collect();
    let moves = |k: &ItemKey, v: &Item| -> bool {
        !matches!(k, ItemKey::Link(_))
            && k.interface()
                .or(match v {
                    Item::Route(r) => Some(r.interface.as_str()),
                    _ => None,
                })
                .is_some_and(|n| rehomed.contains(n))
    };

    let mut deletes: Vec<Step> = applied
        .iter()
        .filter(|(k, v)| !desired.contains_key(k) || moves(k, v))
        .map(|(k, v)| Step {
            op: OpKind::Delete,
            key: k.clone(),
            old: Some(v.clone()),
            new: None,
        })
        .collect();
    deletes.sort_by_key(|s| Reverse(s.key.phase()));

    let mut sets: Vec<Step> = desired
        .iter()
        .filter_map(|(k, v)| {
            let old = applied.get(k).filter(|o| !moves(k, o));
            match old {
                Some(o) if o == v => None,
                Some(o) => Some(Step {
                    op: OpKind::Update,
                    key: k.clone(),
                    old: Some(o.clone()),
                    new: Some(v.clone()),
                }),
                None => Some(Step {
                    op: OpKind::Create,
                    key: k.clone(),
                    old: None,
                    new: Some(v.clone()),
                }),
            }
        })
        .collect();
    sets.sort_by_key(|s| s.key.phase());
    deletes.extend(sets);
    deletes
}

/// The first dependency of `key` that is not applied as desired, if any.
pub fn unmet(key: &ItemKey, item: &Item, applied: &Items, desired: &Items) -> Option<ItemKey> {
    item.deps(key)
        .into_iter()
        .find(|d| desired.get(d).is_none() || applied.get(d) != desired.get(d))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        config::Ipv4Prefix,
        reconcile::item::{AttachSpec, LinkSpec, RouteVia},
    };

    fn link(host: &str) -> Item {
        Item::Link(LinkSpec {
            host_if_name: host.into(),
            mtu: None,
            up: true,
            waiting: None,
        })
    }

    fn attach(host: &str, role: u8) -> Item {
        Item::Attach(AttachSpec {
            host_if_name: host.into(),
            datapath: None,
            role,
        })
    }

    fn pfx(s: &str, len: u8) -> Ipv4Prefix {
        Ipv4Prefix {
            addr: s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            len,
        }
    }

    fn sample() -> Items {
        let mut i = Items::new();
        i.insert(ItemKey::Attach("in".into()), attach("c0", 1));
        i.insert(
            ItemKey::Route {
                dst: pfx("0.0.0.0", 0),
                metric: 0,
            },
            Item::Route(RouteVia {
                interface: "in".into(),
                via: Some(Ipv4Addr::new(10, 0, 0, 1)),
            }),
        );
        i.insert(
            ItemKey::Address("in".into(), pfx("10.0.0.2", 24)),
            Item::Address,
        );
        i.insert(ItemKey::Link("in".into()), link("c0"));
        i
    }

    fn keys(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{} {}", s.op.name(), s.key))
            .collect()
    }

    #[test]
    fn creates_follow_dependencies() {
        let steps = plan(&Items::new(), &sample());
        assert_eq!(
            keys(&steps),
            [
                "create interface/in",
                "create address/in/10.0.0.2/24",
                "create route/0.0.0.0/0/metric/0",
                "create datapath/in",
            ]
        );
    }

    #[test]
    fn deletes_run_dependents_first_and_before_creates() {
        let mut want = Items::new();
        want.insert(ItemKey::Link("out".into()), link("c1"));
        let steps = plan(&sample(), &want);
        assert_eq!(
            keys(&steps),
            [
                "delete datapath/in",
                "delete route/0.0.0.0/0/metric/0",
                "delete address/in/10.0.0.2/24",
                "delete interface/in",
                "create interface/out",
            ]
        );
    }

    #[test]
    fn unchanged_items_are_left_alone_and_changes_are_updates() {
        let mut want = sample();
        want.insert(ItemKey::Attach("in".into()), attach("c0", 2));
        let steps = plan(&sample(), &want);
        assert_eq!(keys(&steps), ["update datapath/in"]);
        assert_eq!(steps[0].old, Some(attach("c0", 1)));
        assert!(plan(&sample(), &sample()).is_empty());
    }

    #[test]
    fn a_new_host_interface_moves_everything_on_it() {
        let mut want = sample();
        want.insert(ItemKey::Link("in".into()), link("c9"));
        want.insert(ItemKey::Attach("in".into()), attach("c9", 1));
        let steps = plan(&sample(), &want);
        assert_eq!(
            keys(&steps),
            [
                "delete datapath/in",
                "delete route/0.0.0.0/0/metric/0",
                "delete address/in/10.0.0.2/24",
                "update interface/in",
                "create address/in/10.0.0.2/24",
                "create route/0.0.0.0/0/metric/0",
                "create datapath/in",
            ]
        );
    }

    #[test]
    fn unmet_names_the_missing_interface() {
        let want = sample();
        let k = ItemKey::Address("in".into(), pfx("10.0.0.2", 24));
        assert_eq!(
            unmet(&k, &Item::Address, &Items::new(), &want),
            Some(ItemKey::Link("in".into()))
        );
        assert_eq!(unmet(&k, &Item::Address, &want, &want), None);
    }
}
