//! Every YAML document under deploy/ (but deploy/crd/, the generated CRD) is
//! a valid object of its kind, with nothing in it that its kind does not
//! have: Kubernetes objects parse into the k8s-openapi types and serialize
//! back to the same JSON (those types skip unknown fields, so a misspelt
//! field would otherwise pass); NSM's NetworkService parses into a strict
//! local copy of its schema. CNFConfiguration documents are checked against
//! the CRD schema elsewhere; here the agent's own validator must find
//! nothing wrong with them but what this agent version does not apply yet
//! (NSM interfaces).
//!
//! Across files: every xcnf sidecar has the least-privilege security context
//! that least_privilege.rs tests (deploy/k8s/cnf-deployment.yaml's), and its
//! pod's ServiceAccount may read exactly the CNFConfiguration it is told to.
//! Runs without root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Container, Pod, PodSpec, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use xcnf_tests::workspace_root;

const TEMPLATE: &str = "deploy/k8s/cnf-deployment.yaml";
const AGENT_CONTAINER: &str = "xcnf-agent";
const CONFIG_ANNOTATION: &str = "xcnf.io/config";

/// One YAML document of a file under deploy/.
#[derive(Clone, Debug)]
struct Doc {
    file: String,
    index: usize,
    value: Value,
}

impl Doc {
    fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn at(&self) -> String {
        format!(
            "{} document {} ({} {})",
            self.file,
            self.index,
            self.kind(),
            self.name()
        )
    }
    /// The document as `T`, which must hold every field of it: `T`
    /// serialized back must be the document again.
    fn strict<T: DeserializeOwned + Serialize>(&self) -> T {
        let typed: T = serde_json::from_value(self.value.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", self.at()));
        let back = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{}: {e}", self.at()));
        let mut diffs = Vec::new();
        diff("", &self.value, &back, &mut diffs);
        assert!(
            diffs.is_empty(),
            "{}: fields its type does not have (or changed by parsing):\n  {}",
            self.at(),
            diffs.join("\n  ")
        );
        typed
    }
}

/// Where `doc` and `back` differ, as field paths.
fn diff(path: &str, doc: &Value, back: &Value, out: &mut Vec<String>) {
    match (doc, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => diff(&p, v, w, out),
                    None => out.push(format!("{p}: unknown field")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by parsing"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if doc == back => {}
        _ => out.push(format!("{path}: {doc} became {back}")),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "crd") && p.parent() == Some(deploy_dir()) {
                continue; // generated from the Rust types; its own drift test
            }
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn deploy_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| workspace_root().join("deploy"))
}

/// Every document under deploy/ except deploy/crd/.
fn documents() -> Vec<Doc> {
    let mut files = Vec::new();
    yaml_files(deploy_dir(), &mut files);
    assert!(!files.is_empty(), "no YAML under deploy/");
    let mut docs = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path
            .strip_prefix(workspace_root())
            .unwrap_or(&path)
            .display()
            .to_string();
        for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let y = serde_yaml::Value::deserialize(de).unwrap_or_else(|e| panic!("{file}: {e}"));
            if y.is_null() {
                continue;
            }
            let value = serde_json::to_value(&y).unwrap_or_else(|e| panic!("{file}: {e}"));
            docs.push(Doc {
                file: file.clone(),
                index,
                value,
            });
        }
    }
    docs
}

/// NSM's NetworkService (networkservicemesh.io/v1), after the registry
/// API's NetworkService message: only the fields it has.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkService {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: NetworkServiceSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NetworkServiceSpec {
    payload: String,
    #[serde(default)]
    matches: Vec<NsMatch>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NsMatch {
    #[serde(default)]
    source_selector: BTreeMap<String, String>,
    #[serde(default)]
    routes: Vec<NsRoute>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fallthrough: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<NsMetadata>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NsRoute {
    destination_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NsMetadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The pod specs of the documents, with where they came from.
fn pods(docs: &[Doc]) -> Vec<(String, ObjectMeta, PodSpec)> {
    let mut v = Vec::new();
    for d in docs {
        match (d.api_version(), d.kind()) {
            ("v1", "Pod") => {
                let p: Pod = d.strict();
                v.push((d.at(), p.metadata, p.spec.expect("pod spec")));
            }
            ("apps/v1", "Deployment") => {
                let dep: Deployment = d.strict();
                let t = dep.spec.expect("deployment spec").template;
                v.push((
                    d.at(),
                    t.metadata.unwrap_or_default(),
                    t.spec.expect("pod template spec"),
                ));
            }
            _ => {}
        }
    }
    v
}

fn agent_container(spec: &PodSpec) -> Option<&Container> {
    spec.containers.iter().find(|c| c.name == AGENT_CONTAINER)
}

#[test]
fn every_document_is_its_kind_and_nothing_more() {
    let docs = documents();
    let mut kinds = BTreeMap::<String, usize>::new();
    for d in &docs {
        match (d.api_version(), d.kind()) {
            ("v1", "Pod") => drop(d.strict::<Pod>()),
            ("v1", "ServiceAccount") => drop(d.strict::<ServiceAccount>()),
            ("apps/v1", "Deployment") => drop(d.strict::<Deployment>()),
            ("rbac.authorization.k8s.io/v1", "Role") => drop(d.strict::<Role>()),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(d.strict::<RoleBinding>()),
            ("networkservicemesh.io/v1", "NetworkService") => {
                let ns: NetworkService = d.strict();
                assert!(
                    ["IP", "ETHERNET"].contains(&ns.spec.payload.as_str()),
                    "{}: payload {}",
                    d.at(),
                    ns.spec.payload
                );
            }
            // Checked against the generated CRD schema by the CRD's tests,
            // and by the agent's validator below.
            ("xcnf.io/v1alpha1", "CNFConfiguration") => {}
            (api, kind) => panic!(
                "{}: no type to check apiVersion {api:?} kind {kind:?} against: add it to this test",
                d.at()
            ),
        }
        *kinds.entry(d.kind().to_owned()).or_default() += 1;
    }
    for kind in [
        "Pod",
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkService",
        "CNFConfiguration",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} under deploy/: {kinds:?}"
        );
    }
}

/// A misspelt field must fail the check above, or it checks nothing.
#[test]
fn an_unknown_field_is_caught() {
    let doc = Doc {
        file: "inline".into(),
        index: 0,
        value: serde_json::json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "x"},
            "automountServiceAcountToken": false,
        }),
    };
    let err = std::panic::catch_unwind(|| drop(doc.strict::<ServiceAccount>()))
        .expect_err("a misspelt field passed");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains(".automountServiceAcountToken: unknown field"),
        "{msg}"
    );
}

/// The template's agent securityContext is what least_privilege.rs runs
/// the agent with; every other xcnf sidecar must have the same.
#[test]
fn every_xcnf_sidecar_is_least_privilege() {
    let docs = documents();
    let pods = pods(&docs);
    let template = pods
        .iter()
        .find(|(at, ..)| at.starts_with(TEMPLATE))
        .unwrap_or_else(|| panic!("no pod template in {TEMPLATE}"));
    let reference = agent_container(&template.2)
        .and_then(|c| c.security_context.clone())
        .unwrap_or_else(|| panic!("{TEMPLATE}: no {AGENT_CONTAINER} securityContext"));
    let caps = reference.capabilities.clone().expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]), "{TEMPLATE}");
    assert_eq!(reference.privileged, Some(false), "{TEMPLATE}");
    assert_eq!(
        reference.allow_privilege_escalation,
        Some(false),
        "{TEMPLATE}"
    );
    assert_eq!(
        reference.read_only_root_filesystem,
        Some(true),
        "{TEMPLATE}"
    );

    let mut sidecars = 0;
    for (at, meta, spec) in &pods {
        let Some(agent) = agent_container(spec) else {
            continue;
        };
        sidecars += 1;
        let sc = agent.security_context.as_ref().expect("securityContext");
        assert_eq!(
            sc.capabilities, reference.capabilities,
            "{at}: capabilities"
        );
        assert_eq!(sc.privileged, Some(false), "{at}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{at}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{at}");
        assert_eq!(sc.run_as_user, reference.run_as_user, "{at}");
        for (what, v) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            assert_ne!(v, Some(true), "{at}: {what}");
        }
        // Whatever else the pod runs gets no privileges either.
        for c in spec.containers.iter().filter(|c| c.name != AGENT_CONTAINER) {
            let sc = c.security_context.as_ref();
            assert_ne!(
                sc.and_then(|s| s.privileged),
                Some(true),
                "{at}: {}",
                c.name
            );
            assert!(
                sc.and_then(|s| s.capabilities.as_ref())
                    .and_then(|c| c.add.as_ref())
                    .is_none_or(Vec::is_empty),
                "{at}: {} adds capabilities",
                c.name
            );
        }
        // The downward API: pod identity and the config's name from the annotation.
        let env: BTreeMap<&str, Option<&str>> = agent
            .env
            .iter()
            .flatten()
            .map(|e| {
                let field = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str());
                (e.name.as_str(), field)
            })
            .collect();
        assert_eq!(env.get("POD_NAME"), Some(&Some("metadata.name")), "{at}");
        assert_eq!(
            env.get("POD_NAMESPACE"),
            Some(&Some("metadata.namespace")),
            "{at}"
        );
        let annotation = format!("metadata.annotations['{CONFIG_ANNOTATION}']");
        assert_eq!(
            env.get("XCNF_CR_NAME"),
            Some(&Some(annotation.as_str())),
            "{at}"
        );
        assert!(
            meta.annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(CONFIG_ANNOTATION)),
            "{at}: no {CONFIG_ANNOTATION} annotation"
        );
    }
    assert!(sidecars >= 4, "only {sidecars} xcnf sidecars found");
}

/// Each agent's ServiceAccount is bound to a Role that allows reading its
/// own CNFConfiguration (by name) and writing that one's status, and
/// nothing else.
#[test]
fn every_agent_may_read_only_its_own_config() {
    let docs = documents();
    let roles: Vec<Role> = docs
        .iter()
        .filter(|d| d.kind() == "Role")
        .map(Doc::strict)
        .collect();
    let bindings: Vec<RoleBinding> = docs
        .iter()
        .filter(|d| d.kind() == "RoleBinding")
        .map(Doc::strict)
        .collect();
    let accounts: Vec<String> = docs
        .iter()
        .filter(|d| d.kind() == "ServiceAccount")
        .map(|d| d.name().to_owned())
        .collect();
    for (at, meta, spec) in pods(&docs) {
        if agent_container(&spec).is_none() {
            continue;
        }
        let config = &meta.annotations.as_ref().expect("annotations")[CONFIG_ANNOTATION];
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| panic!("{at}: no serviceAccountName"));
        assert!(
            accounts.contains(&sa),
            "{at}: ServiceAccount {sa} is not defined"
        );
        let role_names: Vec<&str> = bindings
            .iter()
            .filter(|b| {
                b.subjects
                    .iter()
                    .flatten()
                    .any(|s| s.kind == "ServiceAccount" && s.name == sa && s.namespace.is_some())
            })
            .map(|b| {
                assert_eq!(b.role_ref.kind, "Role", "{at}: bind a namespaced Role");
                b.role_ref.name.as_str()
            })
            .collect();
        assert_eq!(role_names.len(), 1, "{at}: {sa} bound to {role_names:?}");
        let role = roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(role_names[0]))
            .unwrap_or_else(|| panic!("{at}: Role {} not defined", role_names[0]));
        let mut allowed = BTreeMap::<String, Vec<String>>::new();
        for rule in role.rules.iter().flatten() {
            assert_eq!(
                rule.api_groups.as_deref(),
                Some(&["xcnf.io".to_owned()][..]),
                "{at}: {rule:?}"
            );
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(std::slice::from_ref(config)),
                "{at}: every rule names the pod's own CNFConfiguration {config}"
            );
            for r in rule.resources.iter().flatten() {
                allowed
                    .entry(r.clone())
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
        let sorted = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for v in allowed.values_mut() {
            v.sort();
        }
        let want: BTreeMap<String, Vec<String>> = [
            (
                "cnfconfigurations".to_owned(),
                sorted(&["get", "list", "watch"]),
            ),
            (
                "cnfconfigurations/status".to_owned(),
                sorted(&["get", "patch", "update"]),
            ),
        ]
        .into();
        assert_eq!(allowed, want, "{at}: Role {}", role_names[0]);
    }
}

/// The chain's NetworkService routes client → nat44 → webserver, the
/// labels the three configs' NSM interfaces carry.
#[test]
fn the_nat44_network_service_chains_the_three_pods() {
    let docs = documents();
    let ns: NetworkService = docs
        .iter()
        .find(|d| d.kind() == "NetworkService")
        .map(Doc::strict)
        .expect("a NetworkService");
    assert_eq!(ns.metadata.name.as_deref(), Some("cnf-nat-example"));
    let hops: Vec<(String, Vec<String>)> = ns
        .spec
        .matches
        .iter()
        .map(|m| {
            (
                m.source_selector["app"].clone(),
                m.routes
                    .iter()
                    .map(|r| r.destination_selector["app"].clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        vec![
            ("client".to_owned(), vec!["nat44".to_owned()]),
            ("nat44".to_owned(), vec!["webserver".to_owned()]),
        ]
    );
}

/// The example chain's configs validate (NSM interfaces over the kernel
/// mechanism, NAT44 on them), and their roles and labels follow the
/// service's routes.
#[test]
fn nat44_chain_configs_validate() {
    let docs = documents();
    let configs: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == "CNFConfiguration" && d.file.contains("nat44-chain/"))
        .collect();
    let names: Vec<&str> = configs.iter().map(|d| d.name()).collect();
    assert_eq!(names, ["client", "cnf-nat44", "webserver"]);
    for d in configs {
        let text = serde_json::to_string(&d.value).unwrap();
        let cfg =
            xcnf_agent::config::Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", d.at()));
        if let Err(errors) = cfg.validate() {
            panic!("{}: {errors:?}", d.at());
        }
        let nsm: Vec<(String, String)> = cfg
            .spec
            .interfaces
            .iter()
            .filter_map(|i| i.nsm.as_ref())
            .map(|n| {
                assert_eq!(n.network_service, "cnf-nat-example", "{}", d.at());
                (format!("{:?}", n.role), n.labels["app"].clone())
            })
            .collect();
        let want: &[(&str, &str)] = match d.name() {
            "client" => &[("Client", "client")],
            "cnf-nat44" => &[("Endpoint", "nat44"), ("Client", "nat44")],
            _ => &[("Endpoint", "webserver")],
        };
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(nsm, want, "{}", d.at());
    }
}
