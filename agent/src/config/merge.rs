//! Merging a partial config into the running one, and removing the items a
//! partial config names: the gRPC `Apply` (merge) and `Delete` requests.
//!
//! Lists are keyed so that a patch can name one entry without repeating the
//! rest: interfaces by `name`, routes by (`dst`, `metric`), neighbours by
//! (`interface`, `ip`), pools by `first`, static mappings by (`protocol`,
//! `external`) and identity mappings by (`protocol`, `address`, `port`).
//! Addresses in keys are compared parsed where they parse, so `10.0.0.0/8`
//! and a differently written but equal value name the same entry.
//!
//! Neither function validates: the caller validates the result as a whole,
//! which also catches a removed interface that a route still uses.

use std::{collections::HashMap, hash::Hash, net::Ipv4Addr};

use super::{FieldError, Ipv4Prefix, parse_endpoint, types::*};

fn err(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

/// An address as the datapath sees it; the text itself when it does not parse.
fn addr_key(s: &str) -> String {
    s.parse::<Ipv4Addr>()
        .map_or_else(|_| s.to_owned(), |a| a.to_string())
}

fn route_key(r: &Route) -> (String, u32) {
    let dst = r
        .dst
        .parse::<Ipv4Prefix>()
        .map_or_else(|_| r.dst.clone(), |p| p.to_string());
    // No metric is the kernel's priority 0 (as in RouteSpec::key).
    (dst, r.metric.unwrap_or(0))
}

fn neighbor_key(n: &Neighbor) -> (String, String) {
    (n.interface.clone(), addr_key(&n.ip))
}

fn pool_key(p: &Pool) -> String {
    addr_key(&p.first)
}

fn static_key(m: &StaticMapping) -> (Protocol, String) {
    let ext = parse_endpoint(&m.external).map_or_else(|_| m.external.clone(), |e| e.to_string());
    (m.protocol, ext)
}

fn identity_key(m: &IdentityMapping) -> (Protocol, String, Option<u32>) {
    (m.protocol, addr_key(&m.address), m.port)
}

fn interface_key(i: &Interface) -> String {
    i.name.clone()
}

/// `base` with every entry of `patch` replacing the entry of the same key in
/// place, or appended (in patch order) when there is none.
fn merge_list<T: Clone, K: Eq + Hash>(base: &[T], patch: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out = base.to_vec();
    let mut index: HashMap<K, usize> = out.iter().enumerate().map(|(i, t)| (key(t), i)).collect();
    for p in patch {
        let k = key(p);
        match index.get(&k) {
            Some(&i) => out[i] = p.clone(),
            None => {
                index.insert(k, out.len());
                out.push(p.clone());
            }
        }
    }
    out
}

/// `base` without the entries whose keys `patch` names; naming one that is
/// not there is an error at the patch's `path(index)`.
fn remove_list<T, K: Eq + Hash>(
    base: &mut Vec<T>,
    patch: &[T],
    key: impl Fn(&T) -> K,
    path: impl Fn(usize) -> String,
    what: impl Fn(&T) -> String,
) -> Result<(), FieldError> {
    let present: HashMap<K, ()> = base.iter().map(|t| (key(t), ())).collect();
    let mut gone: HashMap<K, ()> = HashMap::new();
    for (i, p) in patch.iter().enumerate() {
        let k = key(p);
        if !present.contains_key(&k) {
            return Err(err(
                path(i),
                format!("{} is not in the running config", what(p)),
            ));
        }
        gone.insert(k, ());
    }
    base.retain(|t| !gone.contains_key(&key(t)));
    Ok(())
}

fn union(base: &[String], patch: &[String]) -> Vec<String> {
    let mut out = base.to_vec();
    for name in patch {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

fn describe_route(r: &Route) -> String {
    let (dst, metric) = route_key(r);
    format!("route {dst} with metric {metric}")
}

fn describe_static(m: &StaticMapping) -> String {
    format!("static mapping {} {}", m.protocol.as_str(), m.external)
}

fn describe_identity(m: &IdentityMapping) -> String {
    let port = m.port.map(|p| format!(" port {p}")).unwrap_or_default();
    format!(
        "identity mapping {} {}{port}",
        m.protocol.as_str(),
        m.address
    )
}

impl Config {
    /// Both sides must be the same instance in the same schema.
    fn check_same_instance(&self, patch: &Config) -> Result<(), FieldError> {
        for (path, mine, theirs) in [
            ("apiVersion", &self.api_version, &patch.api_version),
            ("kind", &self.kind, &patch.kind),
            ("metadata.name", &self.metadata.name, &patch.metadata.name),
        ] {
            if mine != theirs {
                return Err(err(
                    path,
                    format!("the patch has {theirs:?}, the running config {mine:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The running config with `patch` merged in: keyed list entries of the
    /// patch replace the running ones with the same key (keeping their place)
    /// or are appended in patch order; scalars the patch sets replace the
    /// running ones.
    pub fn merge(&self, patch: &Config) -> Result<Config, FieldError> {
        self.check_same_instance(patch)?;
        let mut out = self.clone();
        let (m, p) = (&mut out.metadata, &patch.metadata);
        if p.namespace.is_some() {
            m.namespace.clone_from(&p.namespace);
        }
        m.labels.extend(p.labels.clone());
        m.annotations.extend(p.annotations.clone());

        let (s, p) = (&mut out.spec, &patch.spec);
        s.interfaces = merge_list(&s.interfaces, &p.interfaces, interface_key);
        s.routes = merge_list(&s.routes, &p.routes, route_key);
        s.neighbors = merge_list(&s.neighbors, &p.neighbors, neighbor_key);
        s.nat44 = match (&s.nat44, &p.nat44) {
            (base, None) => base.clone(),
            (None, Some(patch)) => Some(patch.clone()),
            (Some(base), Some(patch)) => Some(merge_nat44(base, patch)),
        };
        Ok(out)
    }

    /// The running config without the entries `patch` names (by the same keys
    /// as [`Config::merge`]; an interface by `name` alone). A `nat44` in the
    /// patch with no list entries removes the whole section; scalars it sets
    /// go back to their defaults. Naming anything that is not there is an
    /// error at the patch's field path, and nothing is removed.
    pub fn remove(&self, patch: &Config) -> Result<Config, FieldError> {
        self.check_same_instance(patch)?;
        let mut out = self.clone();
        let (s, p) = (&mut out.spec, &patch.spec);
        remove_list(
            &mut s.interfaces,
            &p.interfaces,
            interface_key,
            |i| format!("spec.interfaces[{i}].name"),
            |i| format!("interface {:?}", i.name),
        )?;
        remove_list(
            &mut s.routes,
            &p.routes,
            route_key,
            |i| format!("spec.routes[{i}]"),
            describe_route,
        )?;
        remove_list(
            &mut s.neighbors,
            &p.neighbors,
            neighbor_key,
            |i| format!("spec.neighbors[{i}]"),
            |n| format!("neighbour {} on {:?}", n.ip, n.interface),
        )?;
        if let Some(patch) = &p.nat44 {
            let Some(base) = &mut s.nat44 else {
                return Err(err("spec.nat44", "is not in the running config"));
            };
            let whole = patch.inside.is_empty()
                && patch.outside.is_empty()
                && patch.pools.is_empty()
                && patch.static_mappings.is_empty()
                && patch.identity_mappings.is_empty();
            if whole {
                s.nat44 = None;
            } else {
                remove_nat44(base, patch)?;
            }
        }
        Ok(out)
    }
}

fn merge_nat44(base: &Nat44, patch: &Nat44) -> Nat44 {
    Nat44 {
        inside: union(&base.inside, &patch.inside),
        outside: union(&base.outside, &patch.outside),
        pools: merge_list(&base.pools, &patch.pools, pool_key),
        mapping: patch.mapping.or(base.mapping),
        static_mappings: merge_list(&base.static_mappings, &patch.static_mappings, static_key),
        identity_mappings: merge_list(
            &base.identity_mappings,
            &patch.identity_mappings,
            identity_key,
        ),
        // Per timeout, so a patch setting `udp` keeps the others.
        timeouts: match (&base.timeouts, &patch.timeouts) {
            (base, None) => base.clone(),
            (None, Some(t)) => Some(t.clone()),
            (Some(b), Some(t)) => Some(Timeouts {
                tcp_established: t.tcp_established.clone().or(b.tcp_established.clone()),
                tcp_transitory: t.tcp_transitory.clone().or(b.tcp_transitory.clone()),
                udp: t.udp.clone().or(b.udp.clone()),
                icmp: t.icmp.clone().or(b.icmp.clone()),
            }),
        },
        max_sessions: patch.max_sessions.or(base.max_sessions),
    }
}

/// Unsets `slot` because the patch names it; an error when it is not set.
fn unset<T>(slot: &mut Option<T>, named: bool, path: &str) -> Result<(), FieldError> {
    if named && slot.take().is_none() {
        return Err(err(path, "is not set in the running config"));
    }
    Ok(())
}

fn remove_nat44(base: &mut Nat44, patch: &Nat44) -> Result<(), FieldError> {
    const P: &str = "spec.nat44";
    for (field, list, names) in [
        ("inside", &mut base.inside, &patch.inside),
        ("outside", &mut base.outside, &patch.outside),
    ] {
        remove_list(
            list,
            names,
            Clone::clone,
            |i| format!("{P}.{field}[{i}]"),
            |n| format!("{n:?}"),
        )?;
    }
    remove_list(
        &mut base.pools,
        &patch.pools,
        pool_key,
        |i| format!("{P}.pools[{i}].first"),
        |p| format!("the pool starting at {}", p.first),
    )?;
    remove_list(
        &mut base.static_mappings,
        &patch.static_mappings,
        static_key,
        |i| format!("{P}.staticMappings[{i}]"),
        describe_static,
    )?;
    remove_list(
        &mut base.identity_mappings,
        &patch.identity_mappings,
        identity_key,
        |i| format!("{P}.identityMappings[{i}]"),
        describe_identity,
    )?;
    unset(
        &mut base.mapping,
        patch.mapping.is_some(),
        &format!("{P}.mapping"),
    )?;
    unset(
        &mut base.max_sessions,
        patch.max_sessions.is_some(),
        &format!("{P}.maxSessions"),
    )?;
    if let Some(t) = &patch.timeouts {
        let tp = format!("{P}.timeouts");
        let Some(b) = &mut base.timeouts else {
            return Err(err(tp, "is not set in the running config"));
        };
        let all = t.tcp_established.is_none()
            && t.tcp_transitory.is_none()
            && t.udp.is_none()
            && t.icmp.is_none();
        if all {
            base.timeouts = None;
        } else {
            unset(
                &mut b.tcp_established,
                t.tcp_established.is_some(),
                &format!("{tp}.tcpEstablished"),
            )?;
            unset(
                &mut b.tcp_transitory,
                t.tcp_transitory.is_some(),
                &format!("{tp}.tcpTransitory"),
            )?;
            unset(&mut b.udp, t.udp.is_some(), &format!("{tp}.udp"))?;
            unset(&mut b.icmp, t.icmp.is_some(), &format!("{tp}.icmp"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: cnf}
spec:
  interfaces:
    - {name: inside, kernel: {hostIfName: c0}, ipAddresses: [192.168.100.1/24]}
    - {name: outside, kernel: {hostIfName: c1}, ipAddresses: [80.80.80.100/24]}
    - {name: dmz, kernel: {hostIfName: c2}}
  routes:
    - {dst: 0.0.0.0/0, via: 80.80.80.1, interface: outside, metric: 100}
    - {dst: 10.0.0.0/8, via: 192.168.100.254, interface: inside}
    - {dst: 172.16.0.0/12, via: 192.168.100.254, interface: inside}
  neighbors:
    - {interface: outside, ip: 80.80.80.1, mac: "02:00:00:00:00:01"}
    - {interface: inside, ip: 192.168.100.254, mac: "02:00:00:00:00:02"}
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.105}
      - {first: 80.80.80.200}
    staticMappings:
      - {protocol: tcp, external: "80.80.80.100:8080", local: "192.168.100.10:80"}
      - {protocol: udp, external: "80.80.80.100:8080", local: "192.168.100.10:80"}
    identityMappings:
      - {protocol: udp, address: 80.80.80.100, port: 53}
    timeouts: {udp: 300s, icmp: 60s}
    maxSessions: 1000
"#;

    fn running() -> Config {
        let c = Config::parse(RUNNING).unwrap_or_else(|e| panic!("{e}"));
        c.validate().unwrap_or_else(|e| panic!("{e:?}"));
        c
    }

    /// A patch for instance `cnf` whose `spec` is `spec` (indented by two).
    fn patch(spec: &str) -> Config {
        let doc = format!(
            "apiVersion: xcnf.io/v1alpha1\nkind: CNFConfiguration\nmetadata: {{name: cnf}}\nspec:\n{spec}"
        );
        Config::parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"))
    }

    fn names(c: &Config) -> Vec<&str> {
        c.spec.interfaces.iter().map(|i| i.name.as_str()).collect()
    }

    fn dsts(c: &Config) -> Vec<(&str, Option<&str>, Option<u32>)> {
        c.spec
            .routes
            .iter()
            .map(|r| (r.dst.as_str(), r.via.as_deref(), r.metric))
            .collect()
    }

    fn merged(spec: &str) -> Config {
        running()
            .merge(&patch(spec))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn removed(spec: &str) -> Config {
        running()
            .remove(&patch(spec))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn remove_error(spec: &str) -> String {
        match running().remove(&patch(spec)) {
            Ok(_) => panic!("removing {spec} succeeded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn merge_replaces_in_place_and_appends_in_patch_order() {
        let c = merged(
            "  interfaces:
    - {name: zeta, kernel: {hostIfName: c9}}
    - {name: outside, kernel: {hostIfName: c1}, mtu: 9000}
    - {name: alpha, kernel: {hostIfName: c8}}
  routes:
    - {dst: 10.0.0.0/8, via: 192.168.100.253, interface: inside, metric: 0}
    - {dst: 10.0.0.0/8, via: 192.168.100.252, interface: inside, metric: 5}
    - {dst: 0.0.0.0/0, via: 80.80.80.2, interface: outside, metric: 100}
  neighbors:
    - {interface: outside, ip: 80.80.80.1, mac: \"02:00:00:00:00:0a\"}
    - {interface: dmz, ip: 80.80.80.1, mac: \"02:00:00:00:00:0b\"}
",
        );
        assert_eq!(names(&c), ["inside", "outside", "dmz", "zeta", "alpha"]);
        // The whole entry is replaced: outside's addresses went with it.
        let outside = &c.spec.interfaces[1];
        assert_eq!((outside.mtu, outside.ip_addresses.len()), (Some(9000), 0));
        assert_eq!(
            dsts(&c),
            [
                ("0.0.0.0/0", Some("80.80.80.2"), Some(100)),
                // No metric and metric 0 are the same kernel route.
                ("10.0.0.0/8", Some("192.168.100.253"), Some(0)),
                ("172.16.0.0/12", Some("192.168.100.254"), None),
                ("10.0.0.0/8", Some("192.168.100.252"), Some(5)),
            ]
        );
        let macs: Vec<(&str, &str)> = c
            .spec
            .neighbors
            .iter()
            .map(|n| (n.interface.as_str(), n.mac.as_str()))
            .collect();
        assert_eq!(
            macs,
            [
                ("outside", "02:00:00:00:00:0a"),
                ("inside", "02:00:00:00:00:02"),
                ("dmz", "02:00:00:00:00:0b")
            ]
        );
        c.validate().unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[test]
    fn merge_nat44_unions_roles_keys_lists_and_replaces_set_scalars() {
        let c = merged(
            "  nat44:
    inside: [dmz, inside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.101}
      - {first: 90.0.0.1}
    mapping: endpoint-dependent
    staticMappings:
      - {protocol: udp, external: \"80.80.80.100:8080\", local: \"192.168.100.11:81\"}
      - {protocol: tcp, external: \"80.80.80.100:22\", local: \"192.168.100.10:22\"}
    identityMappings:
      - {protocol: udp, address: 80.80.80.100, port: 53}
      - {protocol: tcp, address: 80.80.80.100, port: 53}
    timeouts: {udp: 30s}
",
        );
        let n = c.spec.nat44.clone().unwrap_or_default();
        assert_eq!(n.inside, ["inside", "dmz"]);
        assert_eq!(n.outside, ["outside"]);
        let pools: Vec<(&str, Option<&str>)> = n
            .pools
            .iter()
            .map(|p| (p.first.as_str(), p.last.as_deref()))
            .collect();
        assert_eq!(
            pools,
            [
                ("80.80.80.100", Some("80.80.80.101")),
                ("80.80.80.200", None),
                ("90.0.0.1", None)
            ]
        );
        assert_eq!(n.mapping, Some(NatMapping::EndpointDependent));
        let statics: Vec<&str> = n.static_mappings.iter().map(|m| m.local.as_str()).collect();
        assert_eq!(
            statics,
            [
                "192.168.100.10:80",
                "192.168.100.11:81",
                "192.168.100.10:22"
            ]
        );
        assert_eq!(n.identity_mappings.len(), 2);
        let t = n.timeouts.unwrap_or_default();
        assert_eq!(
            (t.udp.as_deref(), t.icmp.as_deref(), t.tcp_established),
            (Some("30s"), Some("60s"), None)
        );
        assert_eq!(n.max_sessions, Some(1000));
        c.validate().unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[test]
    fn merge_leaves_unset_scalars_and_takes_a_new_nat44_as_is() {
        let c = merged("  nat44: {maxSessions: 5}\n");
        let n = c.spec.nat44.unwrap_or_default();
        assert_eq!((n.max_sessions, n.mapping), (Some(5), None));
        assert_eq!(n.pools.len(), 2);

        let mut no_nat = running();
        no_nat.spec.nat44 = None;
        let p = patch(
            "  nat44: {inside: [inside], outside: [outside], pools: [{first: 80.80.80.100}]}\n",
        );
        let c = no_nat.merge(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.spec.nat44, p.spec.nat44);
        // An empty patch changes nothing.
        assert_eq!(
            running().merge(&patch("  interfaces: []\n")).ok(),
            Some(running())
        );
    }

    #[test]
    fn merge_and_remove_refuse_another_instance() {
        let mut p = patch("  interfaces: []\n");
        p.metadata.name = "other".into();
        let want = "metadata.name: the patch has \"other\", the running config \"cnf\"";
        assert_eq!(
            running().merge(&p).map_err(|e| e.to_string()),
            Err(want.into())
        );
        assert_eq!(
            running().remove(&p).map_err(|e| e.to_string()),
            Err(want.into())
        );
        let mut p = patch("  interfaces: []\n");
        p.api_version = "xcnf.io/v2".into();
        assert_eq!(
            running().merge(&p).map_err(|e| e.path),
            Err("apiVersion".to_owned())
        );
    }

    #[test]
    fn remove_takes_out_named_entries_and_keeps_the_order_of_the_rest() {
        let c = removed(
            "  interfaces: [{name: outside}]
  routes:
    - {dst: 10.0.0.0/08, interface: whatever, metric: 0}
  neighbors:
    - {interface: outside, ip: 80.80.80.1, mac: \"00:00:00:00:00:00\"}
",
        );
        assert_eq!(names(&c), ["inside", "dmz"]);
        assert_eq!(
            dsts(&c),
            [
                ("0.0.0.0/0", Some("80.80.80.1"), Some(100)),
                ("172.16.0.0/12", Some("192.168.100.254"), None)
            ]
        );
        assert_eq!(c.spec.neighbors.len(), 1);
        assert_eq!(c.spec.neighbors[0].interface, "inside");
        // Removing an interface that is still used is the validator's to refuse.
        let errs = c.validate().err().unwrap_or_default();
        assert!(
            errs.iter().any(|e| e.path == "spec.routes[0].interface"),
            "{errs:?}"
        );
    }

    #[test]
    fn removing_what_is_not_there_names_the_patch_field() {
        for (spec, want) in [
            (
                "  interfaces: [{name: inside}, {name: wan}]\n",
                "spec.interfaces[1].name: interface \"wan\" is not in the running config",
            ),
            (
                "  routes: [{dst: 0.0.0.0/0, interface: outside}]\n",
                "spec.routes[0]: route 0.0.0.0/0 with metric 0 is not in the running config",
            ),
            (
                "  neighbors: [{interface: dmz, ip: 80.80.80.1, mac: \"02:00:00:00:00:01\"}]\n",
                "spec.neighbors[0]: neighbour 80.80.80.1 on \"dmz\" is not in the running config",
            ),
            (
                "  nat44: {inside: [dmz]}\n",
                "spec.nat44.inside[0]: \"dmz\" is not in the running config",
            ),
            (
                "  nat44: {pools: [{first: 80.80.80.101}]}\n",
                "spec.nat44.pools[0].first: the pool starting at 80.80.80.101 is not in the running config",
            ),
            (
                "  nat44: {staticMappings: [{protocol: tcp, external: \"80.80.80.100:8081\", local: \"1.1.1.1:1\"}]}\n",
                "spec.nat44.staticMappings[0]: static mapping tcp 80.80.80.100:8081 is not in the running config",
            ),
            (
                "  nat44: {identityMappings: [{protocol: udp, address: 80.80.80.100, port: 54}]}\n",
                "spec.nat44.identityMappings[0]: identity mapping udp 80.80.80.100 port 54 is not in the running config",
            ),
            (
                "  nat44: {outside: [outside], mapping: endpoint-dependent}\n",
                "spec.nat44.mapping: is not set in the running config",
            ),
            (
                "  nat44: {outside: [outside], timeouts: {tcpTransitory: 1s}}\n",
                "spec.nat44.timeouts.tcpTransitory: is not set in the running config",
            ),
        ] {
            assert_eq!(remove_error(spec), want, "for {spec}");
        }
        let mut no_nat = running();
        no_nat.spec.nat44 = None;
        assert_eq!(
            no_nat
                .remove(&patch("  nat44: {}\n"))
                .map_err(|e| e.to_string()),
            Err("spec.nat44: is not in the running config".to_owned())
        );
    }

    #[test]
    fn remove_nat44_entries_or_the_whole_section() {
        assert_eq!(removed("  nat44: {}\n").spec.nat44, None);
        assert_eq!(removed("  nat44: {maxSessions: 1}\n").spec.nat44, None);
        let n = removed(
            "  nat44:
    pools: [{first: 80.80.80.100}]
    staticMappings: [{protocol: tcp, external: \"80.80.80.100:8080\", local: \"9.9.9.9:9\"}]
    identityMappings: [{protocol: udp, address: 80.80.80.100, port: 53}]
    timeouts: {udp: 1s}
    maxSessions: 7
",
        )
        .spec
        .nat44
        .unwrap_or_default();
        assert_eq!((n.inside.len(), n.outside.len()), (1, 1));
        assert_eq!(n.pools.len(), 1);
        assert_eq!(n.pools[0].first, "80.80.80.200");
        assert_eq!(n.static_mappings.len(), 1);
        assert_eq!(n.static_mappings[0].protocol, Protocol::Udp);
        assert!(n.identity_mappings.is_empty());
        let t = n.timeouts.clone().unwrap_or_default();
        assert_eq!((t.udp, t.icmp.as_deref()), (None, Some("60s")));
        assert_eq!(n.max_sessions, None);
        let n = removed("  nat44: {inside: [inside], timeouts: {}}\n")
            .spec
            .nat44
            .unwrap_or_default();
        assert!(n.inside.is_empty() && n.timeouts.is_none());
    }

    #[test]
    fn merge_then_remove_of_the_same_patch_restores_the_running_config() {
        let p = patch(
            "  interfaces: [{name: wan, kernel: {hostIfName: c5}}]
  routes: [{dst: 1.0.0.0/8, interface: wan}]
  neighbors: [{interface: wan, ip: 1.0.0.1, mac: \"02:00:00:00:00:09\"}]
  nat44:
    outside: [wan]
    pools: [{first: 1.0.0.100}]
",
        );
        let m = running().merge(&p).unwrap_or_else(|e| panic!("{e}"));
        m.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.remove(&p).ok(), Some(running()));
    }
}
