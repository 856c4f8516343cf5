//! The committed CRD against the types, and custom resources against the
//! CRD's schema.
//!
//! The schema is checked with a JSON-schema validator after turning the
//! OpenAPI dialect into JSON Schema the way the API server reads it:
//! `nullable` admits null, and an object with `properties` admits no other
//! field (kubectl's default strict field validation refuses them; without it
//! the API server would silently drop them, which is worse for a test).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::{
    config::Config,
    k8s::status::{self, Observed, Rejection},
    reconcile::{ItemKey, ItemState, ItemStatus},
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generated() -> String {
    crd_yaml().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn committed_crd_matches_the_types() {
    let path = repo_root().join(CRD_FILE);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crd`", path.display()));
    let want = generated();
    if committed != want {
        let (n, (c, w)) = committed
            .lines()
            .chain(std::iter::repeat("<end of file>"))
            .zip(want.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (c, w))| c != w)
            .unwrap_or((0, ("", "")));
        panic!(
            "{CRD_FILE} is out of date with the Rust types: run `cargo xtask crd`\n\
             first difference at line {}:\n  committed: {c}\n  generated: {w}",
            n + 1
        );
    }
}

fn openapi_schema() -> Value {
    let crd: Value = serde_yaml::from_str(&generated()).unwrap_or_else(|e| panic!("{e}"));
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(versions.len(), 1, "one version: {versions:?}");
    assert_eq!(versions[0]["name"], "v1alpha1");
    versions[0]["schema"]["openAPIV3Schema"].clone()
}

/// The CRD's schema as JSON Schema (see the module doc).
fn json_schema() -> Value {
    fn convert(s: &mut Value) {
        let Some(o) = s.as_object_mut() else { return };
        if o.remove("nullable") == Some(Value::Bool(true))
            && let Some(t) = o.get("type").cloned()
        {
            o.insert("type".into(), json!([t, "null"]));
        }
        let preserve = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if o.contains_key("properties") && !preserve && !o.contains_key("additionalProperties") {
            o.insert("additionalProperties".into(), json!(false));
        }
        if let Some(Value::Object(props)) = o.get_mut("properties") {
            props.values_mut().for_each(convert);
        }
        for k in ["items", "additionalProperties"] {
            if let Some(v) = o.get_mut(k) {
                convert(v);
            }
        }
    }
    let mut s = openapi_schema();
    convert(&mut s);
    // The API server adds these to every resource's schema itself.
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert("metadata".into(), json!({"type": "object"}));
    }
    s
}

/// The schema's complaints about `doc`, each as `instance path: message`,
/// after the API server's pruning of nulls (see [`prune_nulls`]).
fn schema_errors(doc: &Value) -> Vec<String> {
    let schema = json_schema();
    let mut doc = doc.clone();
    prune_nulls(&openapi_schema(), &mut doc);
    let v = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema: {e}"));
    v.iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Drops object fields that are `null` where the schema does not say
/// `nullable`, as the API server does before validation (apiextensions v1
/// structural pruning): for such fields an explicit null means unset.
fn prune_nulls(schema: &Value, doc: &mut Value) {
    match doc {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            fields.retain(|k, v| {
                let nullable = props
                    .and_then(|p| p.get(k))
                    .is_some_and(|s| s.get("nullable") == Some(&json!(true)));
                !v.is_null() || nullable
            });
            for (k, v) in fields.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    prune_nulls(s, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|v| prune_nulls(s, v));
            }
        }
        _ => {}
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap_or_else(|e| panic!("{e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_custom_resource_under_deploy_validates_against_the_crd_schema() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("deploy"), &mut files);
    let mut checked = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        for doc in yaml_docs(&text) {
            if doc["kind"] != "CNFConfiguration" {
                continue;
            }
            assert_eq!(doc["apiVersion"], "xcnf.io/v1alpha1", "{}", path.display());
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked.push(path.clone());
        }
    }
    assert!(
        checked
            .iter()
            .any(|p| p.ends_with("deploy/examples/nat44-chain.yaml")),
        "the classic example was not checked: {checked:?}"
    );
}

fn example() -> Value {
    let path = repo_root().join("deploy/examples/nat44-chain.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    yaml_docs(&text).remove(0)
}

#[test]
fn the_whole_schema_example_of_the_contract_validates() {
    // Every section of config.md, NSM and memif included (which this agent
    // version refuses to apply, but the schema must accept).
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/schema-example.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let doc = yaml_docs(&text).remove(0);
    assert_eq!(schema_errors(&doc), Vec::<String>::new());
}

/// `example()` with the value at `pointer` replaced (or removed, for null).
fn edited(pointer: &str, value: Value) -> Value {
    let mut doc = example();
    edit(&mut doc, pointer, value);
    doc
}

fn edit(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{pointer}"));
    let target = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the example"));
    match (target, value) {
        (Value::Object(o), Value::Null) => {
            o.remove(key);
        }
        (Value::Object(o), v) => {
            o.insert(key.to_string(), v);
        }
        (Value::Array(a), v) => {
            let i: usize = key.parse().unwrap_or_else(|e| panic!("{key}: {e}"));
            a[i] = v;
        }
        (other, _) => panic!("{parent} is {other}"),
    }
}

fn agent_errors(doc: &Value) -> Vec<String> {
    let text = serde_json::to_string(doc).unwrap_or_else(|e| panic!("{e}"));
    match Config::parse(&text) {
        Err(m) => vec![m],
        Ok(c) => c
            .validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

#[test]
fn the_schema_refuses_bad_values_at_their_path_and_so_does_the_agent() {
    let cases = [
        (
            "/spec/interfaces/0/mtu",
            json!(70000),
            "/spec/interfaces/0/mtu",
        ),
        (
            "/spec/interfaces/0/mtu",
            json!(67),
            "/spec/interfaces/0/mtu",
        ),
        (
            "/spec/interfaces/0/name",
            json!("Inside"),
            "/spec/interfaces/0/name",
        ),
        (
            "/spec/interfaces/0/name",
            json!("a".repeat(33)),
            "/spec/interfaces/0/name",
        ),
        (
            "/spec/interfaces/0/name",
            json!("-x"),
            "/spec/interfaces/0/name",
        ),
        (
            "/spec/interfaces/0/kernel/hostIfName",
            json!("c0-is-far-too-long"),
            "/spec/interfaces/0/kernel/hostIfName",
        ),
        (
            "/spec/interfaces/0/kernel/hostIfName",
            json!("a/b"),
            "/spec/interfaces/0/kernel/hostIfName",
        ),
        (
            "/spec/interfaces/0/kernel/hostIfName",
            Value::Null,
            "/spec/interfaces/0/kernel",
        ),
        (
            "/spec/interfaces/0/datapath/hook",
            json!("fast"),
            "/spec/interfaces/0/datapath/hook",
        ),
        (
            "/spec/interfaces/0/datapath/xdpMode",
            json!("offload"),
            "/spec/interfaces/0/datapath/xdpMode",
        ),
        (
            "/spec/interfaces/0/datapath/peerRedirect",
            json!("yes"),
            "/spec/interfaces/0/datapath/peerRedirect",
        ),
        (
            "/spec/interfaces/0/backend",
            json!("dpdk"),
            "/spec/interfaces/0/backend",
        ),
        (
            "/spec/interfaces/0/ipAddresses/0",
            json!("192.168.100.1"),
            "/spec/interfaces/0/ipAddresses/0",
        ),
        (
            "/spec/interfaces/0/ipAddresses/0",
            json!("192.168.300.1/24"),
            "/spec/interfaces/0/ipAddresses/0",
        ),
        (
            "/spec/interfaces/0/ipAddresses/0",
            json!("192.168.100.1/33"),
            "/spec/interfaces/0/ipAddresses/0",
        ),
        (
            "/spec/interfaces/0/colour",
            json!("red"),
            "/spec/interfaces/0",
        ),
        (
            "/spec/nat44/mapping",
            json!("symmetric"),
            "/spec/nat44/mapping",
        ),
        (
            "/spec/nat44/maxSessions",
            json!(0),
            "/spec/nat44/maxSessions",
        ),
        (
            "/spec/nat44/maxSessions",
            json!(16_777_217),
            "/spec/nat44/maxSessions",
        ),
        (
            "/spec/nat44/pools/0/first",
            json!("80.80.80"),
            "/spec/nat44/pools/0/first",
        ),
        (
            "/spec/nat44/pools/0/ports",
            json!("1024:65535"),
            "/spec/nat44/pools/0/ports",
        ),
        (
            "/spec/nat44/timeouts/udp",
            json!("5 minutes"),
            "/spec/nat44/timeouts/udp",
        ),
        (
            "/spec/nat44/inside/0",
            json!("In side"),
            "/spec/nat44/inside/0",
        ),
        (
            "/spec/nat44/staticMappings",
            json!([{"protocol": "sctp", "external": "80.80.80.100:80", "local": "192.168.100.10:80"}]),
            "/spec/nat44/staticMappings/0/protocol",
        ),
        (
            "/spec/nat44/staticMappings",
            json!([{"external": "80.80.80.100:http", "local": "192.168.100.10:80"}]),
            "/spec/nat44/staticMappings/0/external",
        ),
        (
            "/spec/nat44/identityMappings",
            json!([{"protocol": "udp", "address": "80.80.80.100", "port": 70000}]),
            "/spec/nat44/identityMappings/0/port",
        ),
        (
            "/spec/routes",
            json!([{"dst": "0.0.0.0/0", "via": "80.80.80.1"}]),
            "/spec/routes/0",
        ),
        (
            "/spec/routes",
            json!([{"dst": "0.0.0.0/0", "interface": "outside", "metric": -1}]),
            "/spec/routes/0/metric",
        ),
        (
            "/spec/neighbors",
            json!([{"interface": "outside", "ip": "80.80.80.1", "mac": "02:00:00:00:00"}]),
            "/spec/neighbors/0/mac",
        ),
        ("/spec", Value::Null, ""),
    ];
    assert_eq!(schema_errors(&example()), Vec::<String>::new());
    for (pointer, value, at) in cases {
        let doc = edited(pointer, value.clone());
        let errors = schema_errors(&doc);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "{pointer} = {value}: want a schema error at {at:?}, got {errors:#?}"
        );
        // Never stricter than the agent: what the API server refuses, the
        // agent refuses too (for files and gRPC, which have no API server).
        assert!(
            !agent_errors(&doc).is_empty(),
            "{pointer} = {value}: refused by the schema but accepted by the agent"
        );
    }
}

#[test]
fn the_schema_accepts_edge_values_the_agent_accepts() {
    let cases = [
        ("/spec/interfaces/0/mtu", json!(68)),
        ("/spec/interfaces/0/mtu", json!(65535)),
        ("/spec/interfaces/0/kernel/hostIfName", json!("veth.0-c@x")),
        (
            "/spec/interfaces/0/ipAddresses/0",
            json!("192.168.100.1/32"),
        ),
        (
            "/spec/interfaces/0/ipAddresses/0",
            json!("192.168.100.1/08"),
        ),
        ("/spec/nat44/maxSessions", json!(1)),
        ("/spec/nat44/maxSessions", json!(16_777_216)),
        ("/spec/nat44/pools/0/ports", json!("1024")),
        ("/spec/nat44/pools/0/ports", json!(" 1024 - 2048 ")),
        ("/spec/nat44/timeouts/udp", json!("1h30m")),
        ("/spec/nat44/timeouts/icmp", json!("1500ms")),
        ("/spec/nat44/mapping", json!("endpoint-dependent")),
        (
            "/spec/routes",
            json!([{"dst": "10.0.0.0/8", "via": "80.80.80.1", "interface": "outside", "metric": 4_294_967_295_u32}]),
        ),
        (
            "/spec/nat44/identityMappings",
            json!([{"protocol": "tcp", "address": "80.80.80.100", "port": 65535}]),
        ),
    ];
    // Explicit nulls where the agent reads "unset": enums the API server
    // prunes, optional objects it keeps as null.
    let mut nulls = example();
    for pointer in [
        "/spec/interfaces/0/backend",
        "/spec/interfaces/0/mtu",
        "/spec/interfaces/0/datapath",
        "/spec/nat44/mapping",
        "/spec/nat44/timeouts",
    ] {
        let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
        nulls
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{parent} is not an object in the example"))
            .insert(field.to_string(), Value::Null);
    }
    assert_eq!(agent_errors(&nulls), Vec::<String>::new());
    assert_eq!(schema_errors(&nulls), Vec::<String>::new());
    for (pointer, value) in cases {
        let doc = edited(pointer, value.clone());
        assert_eq!(
            agent_errors(&doc),
            Vec::<String>::new(),
            "{pointer} = {value}"
        );
        assert_eq!(
            schema_errors(&doc),
            Vec::<String>::new(),
            "{pointer} = {value}"
        );
    }
    // The longest logical name, where it is defined and where it is used.
    let long = json!("a".repeat(32));
    let mut doc = example();
    edit(&mut doc, "/spec/interfaces/0/name", long.clone());
    edit(&mut doc, "/spec/nat44/inside/0", long);
    assert_eq!(agent_errors(&doc), Vec::<String>::new());
    assert_eq!(schema_errors(&doc), Vec::<String>::new());
}

#[test]
fn the_status_the_agent_writes_validates_against_the_schema() {
    let items = [
        ItemStatus {
            key: ItemKey::Link("inside".into()),
            state: ItemState::Configured,
            detail: String::new(),
            since: std::time::SystemTime::UNIX_EPOCH,
        },
        ItemStatus {
            key: ItemKey::Nat,
            state: ItemState::Retrying {
                error: "EBUSY".into(),
                attempt: 1,
            },
            detail: String::new(),
            since: std::time::SystemTime::UNIX_EPOCH,
        },
    ];
    let rejection = Rejection::Invalid("spec.x: bad".into());
    for (rejection, in_force) in [(None, Some(1)), (Some(&rejection), None)] {
        let s = status::compute(
            &Observed {
                generation: Some(2),
                rejection,
                in_force,
                items: &items,
            },
            None,
            &status::now(),
        );
        let mut doc = example();
        doc["status"] = serde_json::to_value(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schema_errors(&doc), Vec::<String>::new(), "{s:?}");
    }
    // And a status without observations yet (nulls where nothing is known).
    let mut doc = example();
    doc["status"] = serde_json::to_value(status::CnfConfigurationStatus::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schema_errors(&doc), Vec::<String>::new());
}

/// Kubernetes accepts only structural schemas: every node has a type (or
/// says it is free-form), no `$ref`, no `additionalProperties` next to
/// `properties`, no `uniqueItems`, and list-map keys are required fields.
/// This is the subset of the API server's checks that a generated schema
/// can get wrong.
#[test]
fn the_crd_schema_is_structural() {
    fn check(path: &str, s: &Value, errors: &mut Vec<String>) {
        let Some(o) = s.as_object() else {
            errors.push(format!("{path}: not an object"));
            return;
        };
        let free = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
            || o.get("x-kubernetes-int-or-string") == Some(&json!(true));
        match o.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            None if free => {}
            other => errors.push(format!("{path}: type {other:?}")),
        }
        for k in [
            "$ref",
            "$schema",
            "definitions",
            "$defs",
            "oneOf",
            "anyOf",
            "allOf",
            "not",
        ] {
            if o.contains_key(k) {
                errors.push(format!("{path}: has {k}"));
            }
        }
        if o.contains_key("properties") && o.contains_key("additionalProperties") {
            errors.push(format!("{path}: properties and additionalProperties"));
        }
        if o.get("uniqueItems") == Some(&json!(true)) {
            errors.push(format!("{path}: uniqueItems"));
        }
        // The API server checks enum values against the type before
        // nullability, so a `null` entry makes an explicit null a refusal.
        if let Some(enums) = o.get("enum").and_then(Value::as_array) {
            for e in enums {
                let fits = match o.get("type").and_then(Value::as_str) {
                    Some("string") => e.is_string(),
                    Some("integer") => e.is_i64() || e.is_u64(),
                    _ => !e.is_null(),
                };
                if !fits {
                    errors.push(format!("{path}: enum value {e} does not fit the type"));
                }
            }
        }
        if let Some(f) = o.get("format").and_then(Value::as_str)
            && !K8S_FORMATS.contains(&f)
        {
            errors.push(format!("{path}: format {f:?} is unknown to the API server"));
        }
        if let Some(keys) = o
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
        {
            let required = o["items"]["required"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for k in keys {
                if !required.contains(k) {
                    errors.push(format!("{path}: list-map key {k} is not required"));
                }
            }
        }
        if let Some(Value::Object(props)) = o.get("properties") {
            for (k, v) in props {
                check(&format!("{path}.{k}"), v, errors);
            }
        }
        if let Some(items) = o.get("items") {
            check(&format!("{path}[]"), items, errors);
        }
        if let Some(extra @ Value::Object(_)) = o.get("additionalProperties") {
            check(&format!("{path}{{}}"), extra, errors);
        }
    }
    let schema = openapi_schema();
    let mut errors = Vec::new();
    check("", &schema, &mut errors);
    assert_eq!(errors, Vec::<String>::new());
    // The status subresource, so the agent's status writes do not bump
    // the generation (and spec edits by users cannot touch the status).
    let crd: Value = serde_yaml::from_str(&generated()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        json!({})
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["metadata"]["name"], "cnfconfigurations.xcnf.io");
    assert_eq!(crd["spec"]["names"]["kind"], "CNFConfiguration");
}
