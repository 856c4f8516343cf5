//! Conversion between the config model and its protobuf form
//! (`xcnf.v1alpha1.Config`, the gRPC API), so a config that arrives over gRPC
//! is validated and applied by exactly the code that handles a YAML file.
//!
//! The protobuf form says "not set" with an empty string or an `UNSPECIFIED`
//! enum value where the model has `None` (or the documented default), so
//! model -> proto -> model is the identity for every config whose optional
//! strings are non-empty. What the model cannot express (an enum number this
//! version does not know, a required enum left unspecified) is reported with
//! the same camelCase field path a YAML file would get. Everything else, even
//! if invalid (an interface with no kind), converts and is left to
//! [`Config::validate`], so the user sees every problem at once.
//!
//! Not in the protobuf form: `metadata.namespace`, `metadata.labels` and
//! `metadata.annotations`; they are dropped on the way out and empty on the way in.

use std::collections::BTreeMap;

use xcnf_proto::v1alpha1::{
    self as pb, datapath as pb_datapath, interface as pb_interface, memif_interface as pb_memif,
    nat44 as pb_nat44, nsm_interface as pb_nsm,
};

use super::{FieldError, types::*, validate::Errors};

/// Empty means "not set" in the protobuf form.
fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn text(s: Option<&String>) -> String {
    s.cloned().unwrap_or_default()
}

impl From<&Config> for pb::Config {
    fn from(c: &Config) -> Self {
        Self {
            api_version: c.api_version.clone(),
            kind: c.kind.clone(),
            metadata: Some(pb::Metadata {
                name: c.metadata.name.clone(),
            }),
            spec: Some(pb::Spec {
                interfaces: c.spec.interfaces.iter().map(interface_to_pb).collect(),
                routes: c
                    .spec
                    .routes
                    .iter()
                    .map(|r| pb::Route {
                        dst: r.dst.clone(),
                        via: text(r.via.as_ref()),
                        interface: r.interface.clone(),
                        metric: r.metric,
                    })
                    .collect(),
                neighbors: c
                    .spec
                    .neighbors
                    .iter()
                    .map(|n| pb::Neighbor {
                        interface: n.interface.clone(),
                        ip: n.ip.clone(),
                        mac: n.mac.clone(),
                    })
                    .collect(),
                nat44: c.spec.nat44.as_ref().map(nat44_to_pb),
            }),
        }
    }
}

/// A oneof holds one kind; a model interface with several (which validation
/// refuses) keeps the first of kernel, nsm and memif.
fn interface_to_pb(i: &Interface) -> pb::Interface {
    let kind = if let Some(k) = &i.kernel {
        Some(pb_interface::Kind::Kernel(pb::KernelInterface {
            host_if_name: k.host_if_name.clone(),
        }))
    } else if let Some(n) = &i.nsm {
        Some(pb_interface::Kind::Nsm(pb::NsmInterface {
            network_service: n.network_service.clone(),
            role: match n.role {
                NsmRole::Client => pb_nsm::Role::Client,
                NsmRole::Endpoint => pb_nsm::Role::Endpoint,
            }
            .into(),
            mechanism: match n.mechanism {
                NsmMechanism::Kernel => pb_nsm::Mechanism::Kernel,
                NsmMechanism::Memif => pb_nsm::Mechanism::Memif,
            }
            .into(),
            labels: n.labels.clone().into_iter().collect(),
            interface_name: text(n.interface_name.as_ref()),
            interface_name_prefix: text(n.interface_name_prefix.as_ref()),
            interface_name_from_label: text(n.interface_name_from_label.as_ref()),
            ipam: n.ipam.as_ref().map(|i| pb::NsmIpam {
                cidr: i.cidr.clone(),
            }),
        }))
    } else {
        i.memif.as_ref().map(|m| {
            pb_interface::Kind::Memif(pb::MemifInterface {
                socket: m.socket.clone(),
                role: match m.role {
                    MemifRole::Master => pb_memif::Role::Master,
                    MemifRole::Slave => pb_memif::Role::Slave,
                }
                .into(),
                id: m.id,
                mode: match m.mode {
                    None => pb_memif::Mode::Unspecified,
                    Some(MemifMode::Ethernet) => pb_memif::Mode::Ethernet,
                    Some(MemifMode::Ip) => pb_memif::Mode::Ip,
                }
                .into(),
            })
        })
    };
    pb::Interface {
        name: i.name.clone(),
        kind,
        ip_addresses: i.ip_addresses.clone(),
        mtu: i.mtu,
        enabled: i.enabled,
        datapath: i.datapath.map(|d| pb::Datapath {
            hook: match d.hook {
                Hook::Auto => pb_datapath::Hook::Auto,
                Hook::Xdp => pb_datapath::Hook::Xdp,
                Hook::Tc => pb_datapath::Hook::Tc,
            }
            .into(),
            xdp_mode: match d.xdp_mode {
                None => pb_datapath::XdpMode::Unspecified,
                Some(XdpMode::Native) => pb_datapath::XdpMode::Native,
                Some(XdpMode::Generic) => pb_datapath::XdpMode::Generic,
            }
            .into(),
            peer_redirect: d.peer_redirect,
        }),
        backend: match i.backend {
            None => pb_interface::Backend::Unspecified,
            Some(Backend::Ebpf) => pb_interface::Backend::Ebpf,
            Some(Backend::Vpp) => pb_interface::Backend::Vpp,
        }
        .into(),
    }
}

fn protocol_to_pb(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
        Protocol::Icmp => pb::Protocol::Icmp,
        Protocol::Any => pb::Protocol::Any,
    }
    .into()
}

fn nat44_to_pb(n: &Nat44) -> pb::Nat44 {
    pb::Nat44 {
        inside: n.inside.clone(),
        outside: n.outside.clone(),
        pools: n
            .pools
            .iter()
            .map(|p| pb::Nat44Pool {
                first: p.first.clone(),
                last: text(p.last.as_ref()),
                ports: text(p.ports.as_ref()),
            })
            .collect(),
        mapping: match n.mapping {
            None => pb_nat44::Mapping::Unspecified,
            Some(NatMapping::EndpointIndependent) => pb_nat44::Mapping::EndpointIndependent,
            Some(NatMapping::EndpointDependent) => pb_nat44::Mapping::EndpointDependent,
        }
        .into(),
        static_mappings: n
            .static_mappings
            .iter()
            .map(|m| pb::Nat44StaticMapping {
                protocol: protocol_to_pb(m.protocol),
                external: m.external.clone(),
                local: m.local.clone(),
            })
            .collect(),
        identity_mappings: n
            .identity_mappings
            .iter()
            .map(|m| pb::Nat44IdentityMapping {
                protocol: protocol_to_pb(m.protocol),
                address: m.address.clone(),
                port: m.port,
            })
            .collect(),
        timeouts: n.timeouts.as_ref().map(|t| pb::Nat44Timeouts {
            tcp_established: text(t.tcp_established.as_ref()),
            tcp_transitory: text(t.tcp_transitory.as_ref()),
            udp: text(t.udp.as_ref()),
            icmp: text(t.icmp.as_ref()),
        }),
        max_sessions: n.max_sessions,
    }
}

/// A protobuf enum field's value, or an error at `path` when this version
/// does not know the number.
fn known<T: TryFrom<i32>>(e: &mut Errors, path: impl FnOnce() -> String, v: i32) -> Option<T> {
    let t = T::try_from(v).ok();
    if t.is_none() {
        e.push(path(), format!("{v} is not a known value of this enum"));
    }
    t
}

impl TryFrom<pb::Config> for Config {
    type Error = Vec<FieldError>;

    fn try_from(c: pb::Config) -> Result<Self, Vec<FieldError>> {
        let mut e = Errors(Vec::new());
        let spec = c.spec.unwrap_or_default();
        let interfaces = spec
            .interfaces
            .into_iter()
            .enumerate()
            .map(|(i, itf)| interface_from_pb(&mut e, i, itf))
            .collect();
        let nat44 = spec.nat44.map(|n| nat44_from_pb(&mut e, n));
        if !e.0.is_empty() {
            return Err(e.0);
        }
        Ok(Self {
            // Empty over gRPC means this package's version and kind (config.proto).
            api_version: opt(c.api_version).unwrap_or_else(|| API_VERSION.to_owned()),
            kind: opt(c.kind).unwrap_or_else(|| KIND.to_owned()),
            metadata: Metadata {
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                ..Metadata::default()
            },
            spec: Spec {
                interfaces,
                routes: spec
                    .routes
                    .into_iter()
                    .map(|r| Route {
                        dst: r.dst,
                        via: opt(r.via),
                        interface: r.interface,
                        metric: r.metric,
                    })
                    .collect(),
                neighbors: spec
                    .neighbors
                    .into_iter()
                    .map(|n| Neighbor {
                        interface: n.interface,
                        ip: n.ip,
                        mac: n.mac,
                    })
                    .collect(),
                nat44,
            },
        })
    }
}

fn interface_from_pb(e: &mut Errors, i: usize, itf: pb::Interface) -> Interface {
    let p = format!("spec.interfaces[{i}]");
    let mut out = Interface {
        name: itf.name,
        ip_addresses: itf.ip_addresses,
        mtu: itf.mtu,
        enabled: itf.enabled,
        ..Interface::default()
    };
    match itf.kind {
        // Representable (no kind at all) and reported by validation with
        // every other problem, so not an error here.
        None => {}
        Some(pb_interface::Kind::Kernel(k)) => {
            out.kernel = Some(KernelInterface {
                host_if_name: k.host_if_name,
            });
        }
        Some(pb_interface::Kind::Nsm(n)) => {
            let role = match known(e, || format!("{p}.nsm.role"), n.role) {
                Some(pb_nsm::Role::Client) => NsmRole::Client,
                Some(pb_nsm::Role::Endpoint) => NsmRole::Endpoint,
                Some(pb_nsm::Role::Unspecified) => {
                    e.push(format!("{p}.nsm.role"), "is required (client or endpoint)");
                    NsmRole::default()
                }
                None => NsmRole::default(),
            };
            let mechanism = match known(e, || format!("{p}.nsm.mechanism"), n.mechanism) {
                Some(pb_nsm::Mechanism::Memif) => NsmMechanism::Memif,
                _ => NsmMechanism::Kernel,
            };
            out.nsm = Some(NsmInterface {
                network_service: n.network_service,
                role,
                mechanism,
                labels: n.labels.into_iter().collect::<BTreeMap<_, _>>(),
                interface_name: opt(n.interface_name),
                interface_name_prefix: opt(n.interface_name_prefix),
                interface_name_from_label: opt(n.interface_name_from_label),
                ipam: n.ipam.map(|i| Ipam { cidr: i.cidr }),
            });
        }
        Some(pb_interface::Kind::Memif(m)) => {
            let role = match known(e, || format!("{p}.memif.role"), m.role) {
                Some(pb_memif::Role::Master) => MemifRole::Master,
                Some(pb_memif::Role::Slave) => MemifRole::Slave,
                Some(pb_memif::Role::Unspecified) => {
                    e.push(format!("{p}.memif.role"), "is required (master or slave)");
                    MemifRole::default()
                }
                None => MemifRole::default(),
            };
            let mode = match known(e, || format!("{p}.memif.mode"), m.mode) {
                Some(pb_memif::Mode::Ethernet) => Some(MemifMode::Ethernet),
                Some(pb_memif::Mode::Ip) => Some(MemifMode::Ip),
                Some(pb_memif::Mode::Unspecified) | None => None,
            };
            out.memif = Some(MemifInterface {
                socket: m.socket,
                role,
                id: m.id,
                mode,
            });
        }
    }
    out.datapath = itf.datapath.map(|d| DatapathSpec {
        hook: match known(e, || format!("{p}.datapath.hook"), d.hook) {
            Some(pb_datapath::Hook::Xdp) => Hook::Xdp,
            Some(pb_datapath::Hook::Tc) => Hook::Tc,
            _ => Hook::Auto,
        },
        xdp_mode: match known(e, || format!("{p}.datapath.xdpMode"), d.xdp_mode) {
            Some(pb_datapath::XdpMode::Native) => Some(XdpMode::Native),
            Some(pb_datapath::XdpMode::Generic) => Some(XdpMode::Generic),
            _ => None,
        },
        peer_redirect: d.peer_redirect,
    });
    out.backend = match known(e, || format!("{p}.backend"), itf.backend) {
        Some(pb_interface::Backend::Ebpf) => Some(Backend::Ebpf),
        Some(pb_interface::Backend::Vpp) => Some(Backend::Vpp),
        _ => None,
    };
    out
}

fn protocol_from_pb(e: &mut Errors, path: impl FnOnce() -> String, v: i32) -> Protocol {
    match known(e, path, v) {
        Some(pb::Protocol::Tcp) => Protocol::Tcp,
        Some(pb::Protocol::Udp) => Protocol::Udp,
        Some(pb::Protocol::Icmp) => Protocol::Icmp,
        _ => Protocol::Any,
    }
}

fn nat44_from_pb(e: &mut Errors, n: pb::Nat44) -> Nat44 {
    Nat44 {
        inside: n.inside,
        outside: n.outside,
        pools: n
            .pools
            .into_iter()
            .map(|p| Pool {
                first: p.first,
                last: opt(p.last),
                ports: opt(p.ports),
            })
            .collect(),
        mapping: match known(e, || "spec.nat44.mapping".to_owned(), n.mapping) {
            Some(pb_nat44::Mapping::EndpointIndependent) => Some(NatMapping::EndpointIndependent),
            Some(pb_nat44::Mapping::EndpointDependent) => Some(NatMapping::EndpointDependent),
            _ => None,
        },
        static_mappings: n
            .static_mappings
            .into_iter()
            .enumerate()
            .map(|(i, m)| StaticMapping {
                protocol: protocol_from_pb(
                    e,
                    || format!("spec.nat44.staticMappings[{i}].protocol"),
                    m.protocol,
                ),
                external: m.external,
                local: m.local,
            })
            .collect(),
        identity_mappings: n
            .identity_mappings
            .into_iter()
            .enumerate()
            .map(|(i, m)| IdentityMapping {
                protocol: protocol_from_pb(
                    e,
                    || format!("spec.nat44.identityMappings[{i}].protocol"),
                    m.protocol,
                ),
                address: m.address,
                port: m.port,
            })
            .collect(),
        timeouts: n.timeouts.map(|t| Timeouts {
            tcp_established: opt(t.tcp_established),
            tcp_transitory: opt(t.tcp_transitory),
            udp: opt(t.udp),
            icmp: opt(t.icmp),
        }),
        max_sessions: n.max_sessions,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// model -> proto -> model. (The wire form of the messages is prost's and
    /// is pinned by proto/tests/schema.rs.)
    fn round_trip(c: &Config) -> Config {
        Config::try_from(pb::Config::from(c)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn every_example_round_trips() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("../deploy/examples");
        let mut files = vec![root.join("src/config/testdata/schema-example.yaml")];
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
        assert!(files.len() > 1, "no examples in {}", dir.display());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{e}"));
            let c = parse(&text);
            assert_eq!(round_trip(&c), c, "{}", f.display());
        }
    }

    #[test]
    fn every_enum_value_and_optional_round_trips() {
        let c = parse(
            r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: t}
spec:
  interfaces:
    - {name: a, kernel: {hostIfName: c0}, datapath: {hook: xdp, xdpMode: generic}, backend: ebpf, enabled: false}
    - {name: b, kernel: {hostIfName: c1}, datapath: {hook: tc}}
    - {name: c, kernel: {hostIfName: c2}, datapath: {xdpMode: native}, mtu: 9000}
    - name: d
      nsm: {networkService: ns, role: endpoint, mechanism: memif, interfaceNamePrefix: nsm, ipam: {cidr: 10.0.0.0/24}}
      backend: vpp
    - {name: e, nsm: {networkService: ns, role: client, interfaceNameFromLabel: app}}
    - {name: f, memif: {socket: /run/m.sock, role: slave, id: 3}, backend: vpp}
  routes:
    - {dst: 10.0.0.0/8, interface: a}
  nat44:
    inside: [a]
    outside: [b]
    pools: [{first: 1.1.1.1}]
    mapping: endpoint-dependent
    staticMappings:
      - {protocol: icmp, external: 1.1.1.2, local: 10.0.0.2}
      - {protocol: udp, external: "1.1.1.3:53", local: "10.0.0.3:53"}
      - {external: 1.1.1.4, local: 10.0.0.4}
    identityMappings:
      - {protocol: tcp, address: 1.1.1.1, port: 22}
      - {protocol: any, address: 1.1.1.5}
    timeouts: {udp: 30s}
"#,
        );
        assert_eq!(round_trip(&c), c);
        let mut no_mapping = c.clone();
        if let Some(n) = &mut no_mapping.spec.nat44 {
            n.mapping = None;
            n.timeouts = None;
        }
        assert_eq!(round_trip(&no_mapping), no_mapping);
    }

    #[test]
    fn empty_message_gets_the_package_version_and_kind() {
        let c = Config::try_from(pb::Config::default()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (c.api_version.as_str(), c.kind.as_str()),
            (API_VERSION, KIND)
        );
        assert_eq!(c.spec, Spec::default());
        // The missing name is validation's to report, with the rest.
        let errs = c.validate().err().unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "metadata.name");
    }

    #[test]
    fn what_the_model_cannot_express_is_named_with_its_path() {
        let c = parse(
            r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: t}
spec:
  interfaces:
    - {name: a, kernel: {hostIfName: c0}, datapath: {hook: tc}}
    - {name: b, nsm: {networkService: ns, role: client}}
    - {name: c, memif: {socket: /run/m.sock, role: master}}
  nat44:
    inside: [a]
    outside: [b]
    staticMappings: [{external: 1.1.1.4, local: 10.0.0.4}]
    identityMappings: [{address: 1.1.1.1}]
"#,
        );
        let mut m = pb::Config::from(&c);
        let Some(spec) = m.spec.as_mut() else {
            panic!("no spec")
        };
        spec.interfaces[0].backend = 9;
        if let Some(d) = spec.interfaces[0].datapath.as_mut() {
            d.hook = 7;
            d.xdp_mode = -1;
        }
        if let Some(pb_interface::Kind::Nsm(n)) = spec.interfaces[1].kind.as_mut() {
            n.role = 0;
            n.mechanism = 5;
        }
        if let Some(pb_interface::Kind::Memif(n)) = spec.interfaces[2].kind.as_mut() {
            n.role = 0;
        }
        if let Some(n) = spec.nat44.as_mut() {
            n.mapping = 3;
            n.static_mappings[0].protocol = 17;
            n.identity_mappings[0].protocol = 6;
        }
        let errs: Vec<String> = Config::try_from(m)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "spec.interfaces[0].datapath.hook: 7 is not a known value of this enum",
                "spec.interfaces[0].datapath.xdpMode: -1 is not a known value of this enum",
                "spec.interfaces[0].backend: 9 is not a known value of this enum",
                "spec.interfaces[1].nsm.role: is required (client or endpoint)",
                "spec.interfaces[1].nsm.mechanism: 5 is not a known value of this enum",
                "spec.interfaces[2].memif.role: is required (master or slave)",
                "spec.nat44.mapping: 3 is not a known value of this enum",
                "spec.nat44.staticMappings[0].protocol: 17 is not a known value of this enum",
                "spec.nat44.identityMappings[0].protocol: 6 is not a known value of this enum",
            ]
        );
    }

    #[test]
    fn an_interface_without_kind_is_left_to_validation() {
        let m = pb::Config {
            metadata: Some(pb::Metadata { name: "t".into() }),
            spec: Some(pb::Spec {
                interfaces: vec![pb::Interface {
                    name: "a".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Config::try_from(m).unwrap_or_else(|e| panic!("{e:?}"));
        let errs = c.validate().err().unwrap_or_default();
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.interfaces[0]: exactly one of kernel, nsm and memif must be set"]
        );
    }
}
