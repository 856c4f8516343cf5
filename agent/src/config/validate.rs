//! Validation: every problem, each with its field path.

use std::{collections::HashMap, fmt};

use super::types::*;

/// One validation problem: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `spec.interfaces[2].kernel.hostIfName`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Linux limits interface names to IFNAMSIZ - 1 bytes and forbids these.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1-15 bytes long"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "{name:?} is not a valid Linux interface name (no '/', ':' or whitespace)"
        ));
    }
    Ok(())
}

/// `[a-z0-9-]`, not starting or ending with `-`: safe in paths, DNS labels and map keys.
fn check_label(name: &str, max: usize) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > max
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "{name:?} must be 1-{max} characters of [a-z0-9-], not starting or ending with '-'"
        ));
    }
    Ok(())
}

/// Collects problems; shared with the nat44 section's checks.
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
    pub(super) fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.push(path, m);
        }
    }
}

/// The longest NSM endpoint interface name prefix: room is left for a
/// four-digit index within Linux's 15 bytes.
const NSM_PREFIX_MAX: usize = 11;

/// How an endpoint over the kernel mechanism names the interfaces NSM
/// makes for its clients.
fn check_endpoint_naming(e: &mut Errors, n: &NsmInterface, np: &str) {
    if n.interface_name.is_some() {
        e.push(
                format!("{np}.interfaceName"),
                "only applies to role client (an endpoint names its interfaces with interfaceNamePrefix or interfaceNameFromLabel)",
            );
    }
    match (&n.interface_name_prefix, &n.interface_name_from_label) {
        (Some(_), Some(_)) | (None, None) => e.push(
            np.to_owned(),
            "role endpoint needs exactly one of interfaceNamePrefix and interfaceNameFromLabel",
        ),
        (Some(prefix), None) => {
            if prefix.len() > NSM_PREFIX_MAX {
                e.push(
                        format!("{np}.interfaceNamePrefix"),
                        format!("{prefix:?} is longer than {NSM_PREFIX_MAX} bytes (room for an index within 15)"),
                    );
            } else {
                e.check(format!("{np}.interfaceNamePrefix"), check_ifname(prefix));
            }
        }
        (None, Some(label)) => {
            if label.is_empty() {
                e.push(format!("{np}.interfaceNameFromLabel"), "must not be empty");
            }
        }
    }
}

/// The `nsm` section of interface `p`.
fn check_nsm(e: &mut Errors, p: &str, n: &NsmInterface, backend: Backend) {
    let np = format!("{p}.nsm");
    if n.network_service.is_empty() || n.network_service.contains(char::is_whitespace) {
        e.push(
            format!("{np}.networkService"),
            format!(
                "{:?} must be a non-empty name without whitespace",
                n.network_service
            ),
        );
    }
    for k in n.labels.keys() {
        if k.is_empty() {
            e.push(format!("{np}.labels"), "label keys must not be empty");
        }
    }
    match n.mechanism {
        NsmMechanism::Memif => {
            if backend != Backend::Vpp {
                e.push(
                    format!("{p}.backend"),
                    "nsm mechanism memif requires backend: vpp",
                );
            }
            // VPP names a memif (memif<socket>/<id>); nothing here does.
            let vpp_names = "does not apply to mechanism memif: VPP names memif interfaces";
            for (set, field) in [
                (n.interface_name.is_some(), "interfaceName"),
                (n.interface_name_prefix.is_some(), "interfaceNamePrefix"),
                (
                    n.interface_name_from_label.is_some(),
                    "interfaceNameFromLabel",
                ),
            ] {
                if set {
                    e.push(format!("{np}.{field}"), vpp_names);
                }
            }
        }
        NsmMechanism::Kernel => {
            if backend == Backend::Vpp {
                e.push(
                    format!("{p}.backend"),
                    "nsm mechanism kernel uses the ebpf backend",
                );
            }
        }
    }
    let only_endpoint = "only applies to role endpoint";
    let memif = n.mechanism == NsmMechanism::Memif;
    match n.role {
        NsmRole::Client => {
            if !memif {
                match &n.interface_name {
                    None => e.push(
                        format!("{np}.interfaceName"),
                        "is required for role client: the name of the interface NSM puts into this namespace",
                    ),
                    Some(name) => e.check(format!("{np}.interfaceName"), check_ifname(name)),
                }
                if n.interface_name_prefix.is_some() {
                    e.push(format!("{np}.interfaceNamePrefix"), only_endpoint);
                }
                if n.interface_name_from_label.is_some() {
                    e.push(format!("{np}.interfaceNameFromLabel"), only_endpoint);
                }
            }
            if n.ipam.is_some() {
                e.push(format!("{np}.ipam"), only_endpoint);
            }
        }
        NsmRole::Endpoint => {
            if !memif {
                check_endpoint_naming(e, n, &np);
            }
            // Without ipam the endpoint hands out no addresses: both sides
            // take theirs from their own config (the classic chain's /24s).
            match &n.ipam {
                None => {}
                Some(ipam) => match ipam.cidr.parse::<super::Ipv4Prefix>() {
                    Err(m) => e.push(format!("{np}.ipam.cidr"), m),
                    Ok(c) if c.len > 30 => e.push(
                        format!("{np}.ipam.cidr"),
                        format!("{c} leaves no room for an address pair (at most /30)"),
                    ),
                    Ok(c) if !c.is_network() => e.push(
                        format!("{np}.ipam.cidr"),
                        format!("{c} has host bits set (did you mean {}?)", c.network()),
                    ),
                    Ok(_) => {}
                },
            }
        }
    }
}

impl Config {
    /// Checks the whole document; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        self.resolve().map(|_| ())
    }

    /// [`Config::validate`], keeping what it resolved.
    pub fn resolve(&self) -> Result<Resolved, Vec<FieldError>> {
        let mut e = Errors(Vec::new());
        if self.api_version != API_VERSION {
            e.push(
                "apiVersion",
                format!("must be {API_VERSION:?}, not {:?}", self.api_version),
            );
        }
        if self.kind != KIND {
            e.push("kind", format!("must be {KIND:?}, not {:?}", self.kind));
        }
        e.check("metadata.name", check_label(&self.metadata.name, 63));

        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut host_names: HashMap<&str, usize> = HashMap::new();
        let mut memifs: HashMap<(&str, u32), usize> = HashMap::new();
        for (i, itf) in self.spec.interfaces.iter().enumerate() {
            let p = format!("spec.interfaces[{i}]");
            e.check(format!("{p}.name"), check_label(&itf.name, 32));
            if let Some(first) = names.insert(&itf.name, i) {
                e.push(
                    format!("{p}.name"),
                    format!("{:?} is already used by spec.interfaces[{first}]", itf.name),
                );
            }
            let kinds = [itf.kernel.is_some(), itf.nsm.is_some(), itf.memif.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                e.push(
                    p.clone(),
                    "exactly one of kernel, nsm and memif must be set",
                );
            }
            let backend = itf.backend.unwrap_or_default();
            if let Some(k) = &itf.kernel {
                let hp = format!("{p}.kernel.hostIfName");
                e.check(hp.clone(), check_ifname(&k.host_if_name));
                if let Some(first) = host_names.insert(&k.host_if_name, i) {
                    e.push(
                        hp,
                        format!(
                            "{:?} is already used by spec.interfaces[{first}]",
                            k.host_if_name
                        ),
                    );
                }
                if backend == Backend::Vpp {
                    e.push(
                        format!("{p}.backend"),
                        "kernel interfaces use the ebpf backend",
                    );
                }
            }
            if let Some(n) = &itf.nsm {
                check_nsm(&mut e, &p, n, backend);
                if let Some(name) = &n.interface_name
                    && n.role == NsmRole::Client
                    && let Some(first) = host_names.insert(name, i)
                {
                    e.push(
                        format!("{p}.nsm.interfaceName"),
                        format!("{name:?} is already used by spec.interfaces[{first}]"),
                    );
                }
            }
            if let Some(m) = &itf.memif {
                if backend != Backend::Vpp {
                    e.push(
                        format!("{p}.backend"),
                        "memif interfaces require backend: vpp",
                    );
                }
                e.check(format!("{p}.memif.socket"), check_memif_socket(&m.socket));
                // VPP keys a memif by (socket, id): a second one is refused
                // by VPP mid-transaction, so it is refused here by name.
                if let Some(first) = memifs.insert((m.socket.as_str(), m.id), i) {
                    e.push(
                        format!("{p}.memif.id"),
                        format!(
                            "id {} on socket {:?} is already used by spec.interfaces[{first}]",
                            m.id, m.socket
                        ),
                    );
                }
            }
            if itf.backend() == Backend::Vpp && itf.mtu.is_some() {
                e.push(
                    format!("{p}.mtu"),
                    "only applies to the ebpf backend (a memif's MTU follows its buffer size)",
                );
            }
            if let Some(d) = &itf.datapath {
                if d.xdp_mode.is_some() && d.hook == Hook::Tc {
                    e.push(
                        format!("{p}.datapath.xdpMode"),
                        "only applies to hook xdp or auto",
                    );
                }
                if d.peer_redirect.is_some() && d.hook == Hook::Xdp {
                    e.push(
                        format!("{p}.datapath.peerRedirect"),
                        "only applies to hook tc or auto (XDP redirects through its devmap)",
                    );
                }
                if backend == Backend::Vpp {
                    e.push(format!("{p}.datapath"), "only applies to the ebpf backend");
                }
            }
        }
        self.check_vpp_l3(&mut e);
        let l3 = self.spec.resolve_l3().map_err(|errors| e.0.extend(errors));
        let nat = match &self.spec.nat44 {
            Some(nat) => nat
                .resolve(&self.spec.interfaces)
                .map(Some)
                .map_err(|errors| e.0.extend(errors)),
            None => Ok(None),
        };
        match (l3, nat) {
            (Ok(l3), Ok(nat44)) if e.0.is_empty() => Ok(Resolved { l3, nat44 }),
            _ => Err(e.0),
        }
    }
}

impl Config {
    /// Routes and neighbours on VPP interfaces: VPP routes have no metric
    /// (the kernel's tie-breaker), and static neighbours are a kernel-only
    /// item in this agent.
    fn check_vpp_l3(&self, e: &mut Errors) {
        let on_vpp = |name: &str| {
            self.spec
                .interfaces
                .iter()
                .any(|i| i.name == name && i.backend() == Backend::Vpp)
        };
        for (i, r) in self.spec.routes.iter().enumerate() {
            if r.metric.is_some() && on_vpp(&r.interface) {
                e.push(
                    format!("spec.routes[{i}].metric"),
                    format!(
                        "{:?} is a vpp interface and VPP routes have no metric",
                        r.interface
                    ),
                );
            }
        }
        for (i, n) in self.spec.neighbors.iter().enumerate() {
            if on_vpp(&n.interface) {
                e.push(
                    format!("spec.neighbors[{i}].interface"),
                    format!(
                        "{:?} is a vpp interface; static neighbours apply to kernel interfaces (VPP resolves its own)",
                        n.interface
                    ),
                );
            }
        }
    }
}

/// A memif control socket: an absolute path, or `@name` (abstract).
fn check_memif_socket(s: &str) -> Result<(), String> {
    let name = s.strip_prefix('@');
    let ok = match name {
        Some(n) => !n.is_empty() && n.len() < 107,
        None => s.starts_with('/') && s.len() < 108 && !s.ends_with('/'),
    };
    if s.bytes().any(|b| b == 0 || b.is_ascii_control()) || !ok {
        return Err(format!(
            "{s:?} is not a socket: want an absolute path or @name (abstract), under 108 bytes"
        ));
    }
    Ok(())
}

/// What validation resolved: the typed L3 view and the NAT44 spec, so the
/// reconciler plans from exactly what was checked without resolving again
/// (with 10 000 mappings resolving is a noticeable part of an apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub l3: super::L3Spec,
    pub nat44: Option<super::Nat44Spec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: cnf-nat44}
spec:
  interfaces:
    - name: inside
      kernel: {hostIfName: c0}
    - name: outside
      kernel: {hostIfName: c1}
      datapath: {hook: xdp, xdpMode: generic}
"#;

    fn errors(yaml: &str) -> Vec<String> {
        match Config::parse(yaml) {
            Err(m) => vec![format!("parse: {m}")],
            Ok(c) => match c.validate() {
                Ok(()) => vec![],
                Err(es) => es.iter().map(ToString::to_string).collect(),
            },
        }
    }

    #[test]
    fn good_config_is_valid_and_defaults_apply() {
        assert_eq!(errors(GOOD), Vec::<String>::new());
        let c = Config::parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.spec.interfaces[0].is_enabled());
        assert_eq!(c.spec.interfaces[0].datapath, None);
        let d = c.spec.interfaces[1].datapath.unwrap_or_default();
        assert_eq!((d.hook, d.xdp_mode), (Hook::Xdp, Some(XdpMode::Generic)));
    }

    #[test]
    fn unknown_field_names_its_path() {
        let e = errors(&GOOD.replace("hostIfName: c0", "hostIfName: c0, colour: red"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("spec.interfaces[0].kernel: unknown field `colour`"),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_yaml_is_a_parse_error_with_position() {
        let e = errors("apiVersion: [unclosed");
        assert!(
            e[0].starts_with("parse: ") && e[0].contains("line"),
            "{e:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml = r#"
apiVersion: xcnf.io/v1beta9
kind: Nope
metadata: {name: Bad_Name}
spec:
  interfaces:
    - name: inside
      kernel: {hostIfName: "this-name-is-way-too-long"}
    - name: inside
      kernel: {hostIfName: "a/b"}
      datapath: {hook: tc, xdpMode: native}
    - name: both
      kernel: {hostIfName: x0}
      memif: {socket: /run/m.sock, role: master}
    - name: m
      memif: {socket: /run/m.sock, role: slave}
      ipAddresses: [10.0.0.1/33, 10.0.0.1]
      mtu: 20
  nat44: {inside: [inside]}
"#;
        let got = errors(yaml);
        let want = [
            "apiVersion: must be",
            "kind: must be",
            "metadata.name: \"Bad_Name\"",
            "spec.interfaces[0].kernel.hostIfName: \"this-name-is-way-too-long\" must be 1-15",
            "spec.interfaces[1].name: \"inside\" is already used by spec.interfaces[0]",
            "spec.interfaces[1].kernel.hostIfName: \"a/b\" is not a valid",
            "spec.interfaces[1].datapath.xdpMode: only applies",
            "spec.interfaces[2]: exactly one of kernel, nsm and memif",
            "spec.interfaces[3].backend: memif interfaces require backend: vpp",
            "spec.interfaces[3].ipAddresses[0]: prefix length \"33\" is out of range",
            "spec.interfaces[3].ipAddresses[1]: \"10.0.0.1\" is not an IPv4 prefix",
            "spec.interfaces[3].mtu: 20 is out of range 68-65535",
            "spec.nat44.outside: must name at least one interface",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn full_schema_example_parses() {
        // The contract's example document must always parse, even where this
        // agent version refuses to apply parts of it.
        let doc = include_str!("testdata/schema-example.yaml");
        let c = Config::parse(doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metadata.name, "cnf-nat44");
        assert_eq!(c.spec.interfaces.len(), 3);
        let nat = c.spec.nat44.unwrap_or_default();
        assert_eq!(nat.static_mappings.len(), 2);
        assert_eq!(nat.max_sessions, Some(262144));
    }
}

#[cfg(test)]
mod examples {
    use super::*;

    /// The contract: every example shipped in deploy/examples/ stays valid.
    #[test]
    fn every_deploy_example_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen > 0, "no examples found in {}", dir.display());
    }
}
