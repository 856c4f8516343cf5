//! Serde model of the schema. Field names follow config.md (camelCase).
//!
//! The same types generate the Kubernetes CRD (`crate::k8s`): `#[schemars]`
//! attributes put into its OpenAPI schema the checks the API server can
//! enforce on its own (enums, ranges, lengths, patterns), so a bad custom
//! resource is refused at `kubectl apply` already. They never change serde's
//! behaviour, and they are never stricter than `Config::validate`, which
//! still checks everything (a config file or the gRPC API has no API server
//! in front of it).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "xcnf.io/v1alpha1";
pub const KIND: &str = "CNFConfiguration";

/// Regular expressions for the CRD schema, in the subset Go's RE2 (the API
/// server) and ECMA-262 (JSON-schema validators) read alike.
mod pattern {
    macro_rules! octet {
        () => {
            "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
        };
    }
    macro_rules! ipv4 {
        () => {
            concat!(octet!(), "(\\.", octet!(), "){3}")
        };
    }
    macro_rules! port {
        () => {
            "[0-9]{1,5}"
        };
    }
    /// Logical names (interfaces, the instance): `check_label` in validate.rs.
    pub const LABEL: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
    /// Linux interface names: no '/', ':' or whitespace (`check_ifname`).
    pub const IFNAME: &str = "^[^/:\\s]+$";
    /// A dotted-quad IPv4 address without leading zeros, as
    /// `std::net::Ipv4Addr` parses it.
    pub const IPV4: &str = concat!("^", ipv4!(), "$");
    /// `a.b.c.d/len`, len 0-32 in one or two digits (`Ipv4Prefix`).
    pub const IPV4_PREFIX: &str = concat!("^", ipv4!(), "/([0-2]?[0-9]|3[0-2])$");
    /// `a.b.c.d` or `a.b.c.d:port` (`parse_endpoint`); the port's range is
    /// checked by the agent.
    pub const ENDPOINT: &str = concat!("^", ipv4!(), "(:", port!(), ")?$");
    /// `first-last` or one port (`parse_port_range`).
    pub const PORT_RANGE: &str = concat!("^ *", port!(), " *(- *", port!(), " *)?$");
    /// `aa:bb:cc:dd:ee:ff` (`MacAddr`).
    pub const MAC: &str = "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$";
    /// `7440s`, `4m`, `1h30m`, `1500ms` (`parse_duration`).
    pub const DURATION: &str = "^ *([0-9]+(ms|s|m|h))+ *$";
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

/// The subset of Kubernetes object metadata a config file may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The instance name: pins live under `/sys/fs/bpf/xcnf/<name>/`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state; in Kubernetes, the `spec` of a `CNFConfiguration`
/// custom resource.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, CustomResource,
)]
#[kube(
    group = "xcnf.io",
    version = "v1alpha1",
    kind = "CNFConfiguration",
    root = "CnfConfiguration",
    plural = "cnfconfigurations",
    singular = "cnfconfiguration",
    shortname = "cnfconfig",
    namespaced,
    status = "crate::k8s::CnfConfigurationStatus",
    derive = "PartialEq",
    doc = "The configuration of one xcnf agent (one CNF): interfaces, routes, neighbours and NAT44. The agent bound to it applies every new generation and reports the outcome in status.",
    // As JSON: the structured form repeats `type_ = "string"`, which
    // clippy takes for a duplicated attribute.
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<Neighbor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat44: Option<Nat44>,
}

/// A logical interface. Exactly one of `kernel`, `nsm` and `memif` says how
/// the interface comes to exist; everything else refers to it by `name`.
// The API server enforces the "exactly one" itself (the CEL rule below), so
// a resource with none or two is refused at `kubectl apply`, not only in the
// agent's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.kernel) ? 1 : 0) + (has(self.nsm) ? 1 : 0) + (has(self.memif) ? 1 : 0) == 1",
    "message": "exactly one of kernel, nsm and memif must be given"
}]))]
pub struct Interface {
    #[schemars(length(min = 1, max = 32), pattern(pattern::LABEL))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsm: Option<NsmInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memif: Option<MemifInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(pattern::IPV4_PREFIX)))]
    pub ip_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = super::l3::MTU_MIN, max = super::l3::MTU_MAX))]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
}

impl Interface {
    /// `enabled` defaults to true.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The backend that programs this interface, as its kind decides: a
    /// memif (direct or from NSM) lives in VPP, a kernel interface in eBPF.
    /// A contradicting `backend` field is a validation error of its own, so
    /// checks that depend on the backend use this and do not repeat it.
    pub fn backend(&self) -> Backend {
        let memif = self.memif.is_some()
            || self
                .nsm
                .as_ref()
                .is_some_and(|n| n.mechanism == NsmMechanism::Memif);
        if memif { Backend::Vpp } else { Backend::Ebpf }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelInterface {
    /// An existing interface in the agent's network namespace.
    #[schemars(length(min = 1, max = 15), pattern(pattern::IFNAME))]
    pub host_if_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NsmInterface {
    #[schemars(length(min = 1))]
    pub network_service: String,
    pub role: NsmRole,
    #[serde(default)]
    pub mechanism: NsmMechanism,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), pattern(pattern::IFNAME))]
    pub interface_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name_from_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NsmRole {
    #[default]
    Client,
    Endpoint,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NsmMechanism {
    #[default]
    Kernel,
    Memif,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    #[schemars(pattern(pattern::IPV4_PREFIX))]
    pub cidr: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemifInterface {
    /// The control socket: an absolute path, or `@name` for an abstract
    /// socket (as NSM hands them out).
    #[schemars(length(min = 1))]
    pub socket: String,
    pub role: MemifRole,
    #[serde(default)]
    pub id: u32,
    /// `ethernet` (default) carries frames; `ip` carries bare IPv4 packets
    /// and needs no neighbour resolution, but both ends must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MemifMode>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemifMode {
    #[default]
    Ethernet,
    Ip,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemifRole {
    #[default]
    Master,
    Slave,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatapathSpec {
    #[serde(default)]
    pub hook: Hook,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    /// Whether TC may hand the packets it forwards out of this interface
    /// straight to the interface's peer (`bpf_redirect_peer`), when it is a
    /// veth or netkit whose peer is in another network namespace. Unset
    /// means yes: it skips most of a veth hop. `false` keeps every forwarded
    /// packet on this interface's transmit path, where its qdisc, TC egress
    /// hooks and packet captures (tcpdump) see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_redirect: Option<bool>,
}

/// Where the eBPF program attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// TC on veth (native XDP there copies every skb and is slower than the
    /// kernel), XDP on every other driver.
    #[default]
    Auto,
    Xdp,
    Tc,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// In the driver; falls back to generic where the driver has no XDP.
    #[default]
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Ebpf,
    Vpp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    #[schemars(pattern(pattern::IPV4_PREFIX))]
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::IPV4))]
    pub via: Option<String>,
    #[schemars(length(min = 1, max = 32), pattern(pattern::LABEL))]
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub metric: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Neighbor {
    #[schemars(length(min = 1, max = 32), pattern(pattern::LABEL))]
    pub interface: String,
    #[schemars(pattern(pattern::IPV4))]
    pub ip: String,
    #[schemars(pattern(pattern::MAC))]
    pub mac: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nat44 {
    #[serde(default)]
    #[schemars(inner(length(min = 1, max = 32), pattern(pattern::LABEL)))]
    pub inside: Vec<String>,
    #[serde(default)]
    #[schemars(inner(length(min = 1, max = 32), pattern(pattern::LABEL)))]
    pub outside: Vec<String>,
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// `None` (absent) is the default mapping; kept apart from an explicit
    /// value so a merge patch only replaces what it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<NatMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_mappings: Vec<StaticMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_mappings: Vec<IdentityMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::nat44::MAX_SESSIONS_LIMIT))]
    pub max_sessions: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pool {
    #[schemars(pattern(pattern::IPV4))]
    pub first: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::IPV4))]
    pub last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::PORT_RANGE))]
    pub ports: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatMapping {
    #[default]
    EndpointIndependent,
    EndpointDependent,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    #[default]
    Any,
}

impl Protocol {
    /// The name the YAML uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Any => "any",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticMapping {
    #[serde(default)]
    pub protocol: Protocol,
    #[schemars(pattern(pattern::ENDPOINT))]
    pub external: String,
    #[schemars(pattern(pattern::ENDPOINT))]
    pub local: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityMapping {
    #[serde(default)]
    pub protocol: Protocol,
    #[schemars(pattern(pattern::IPV4))]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::DURATION))]
    pub tcp_established: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::DURATION))]
    pub tcp_transitory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::DURATION))]
    pub udp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::DURATION))]
    pub icmp: Option<String>,
}
