//! A `CNFConfiguration` custom resource as a config document.
//!
//! The resource is read untyped ([`DynamicObject`]) rather than as
//! [`CnfConfiguration`](crate::config::CnfConfiguration): a spec this agent
//! cannot parse (a CRD newer or older than the agent, a field the API server
//! kept) must still reach the agent, so that it can say so in the status,
//! instead of failing inside the watch where nobody sees it.

use kube::core::DynamicObject;

use crate::config::{API_VERSION, Config, KIND};

/// The config of `obj`: its apiVersion, kind, name and namespace, and its
/// spec as it is. Parse errors name the field path, as for a config file.
/// Labels and annotations stay out: the config in force is stored and
/// compared, and `kubectl apply`'s last-applied annotation would copy the
/// whole resource into it.
pub fn to_config(obj: &DynamicObject) -> Result<Config, String> {
    let (api_version, kind) = match &obj.types {
        Some(t) => (t.api_version.as_str(), t.kind.as_str()),
        // Items of a list may come without their type; the watch is on
        // this one resource type.
        None => (API_VERSION, KIND),
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "name".into(),
        obj.metadata.name.clone().unwrap_or_default().into(),
    );
    if let Some(ns) = &obj.metadata.namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), api_version.into());
    doc.insert("kind".into(), kind.into());
    doc.insert("metadata".into(), metadata.into());
    if let Some(spec) = obj.data.get("spec") {
        doc.insert("spec".into(), spec.clone());
    }
    // Through YAML text, so errors carry the field path the way a config
    // file's do; the position in this generated text means nothing to the
    // user and is dropped.
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    Config::parse(&text).map_err(|m| strip_position(&m).to_string())
}

/// `spec.x: unknown field ... at line 3 column 5` -> without the position.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i)
            if message[i + " at line ".len()..]
                .split_once(" column ")
                .is_some_and(|(l, c)| is_number(l) && is_number(c)) =>
        {
            &message[..i]
        }
        _ => message,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Hook;

    fn resource(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn cr(spec: serde_json::Value) -> DynamicObject {
        resource(serde_json::json!({
            "apiVersion": "xcnf.io/v1alpha1",
            "kind": "CNFConfiguration",
            "metadata": {
                "name": "cnf-nat44",
                "namespace": "cnf",
                "generation": 4,
                "uid": "6d9d1f6e-0000-4000-8000-000000000001",
                "resourceVersion": "812",
                "labels": {"app": "nat44"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
            },
            "spec": spec,
            "status": {"observedGeneration": 3}
        }))
    }

    #[test]
    fn the_resource_becomes_the_config_document_with_its_spec_as_is() {
        let spec = serde_json::json!({
            "interfaces": [
                {"name": "inside", "kernel": {"hostIfName": "c0"},
                 "ipAddresses": ["192.168.100.1/24"], "datapath": {"hook": "tc"}},
                {"name": "outside", "kernel": {"hostIfName": "c1"}, "mtu": 1400}
            ],
            "nat44": {"inside": ["inside"], "outside": ["outside"],
                      "pools": [{"first": "80.80.80.100"}]}
        });
        let c = to_config(&cr(spec.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.api_version, "xcnf.io/v1alpha1");
        assert_eq!(c.kind, "CNFConfiguration");
        assert_eq!(c.metadata.name, "cnf-nat44");
        assert_eq!(c.metadata.namespace.as_deref(), Some("cnf"));
        assert!(c.metadata.labels.is_empty() && c.metadata.annotations.is_empty());
        assert_eq!(
            c.spec.interfaces[0].datapath.map(|d| d.hook),
            Some(Hook::Tc)
        );
        // Nothing added, nothing lost: the spec serializes back to itself.
        assert_eq!(
            serde_json::to_value(&c.spec).unwrap_or_else(|e| panic!("{e}")),
            spec
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn a_wrong_api_version_on_the_resource_is_carried_and_refused_by_validation() {
        let mut r = cr(serde_json::json!({"interfaces": []}));
        if let Some(t) = r.types.as_mut() {
            t.api_version = "xcnf.io/v1beta1".into();
        }
        let c = to_config(&r).unwrap_or_else(|e| panic!("{e}"));
        let errors = c.validate().err().unwrap_or_default();
        assert_eq!(errors[0].path, "apiVersion", "{errors:?}");
    }

    #[test]
    fn a_list_item_without_its_type_takes_the_watched_type() {
        let mut r = cr(serde_json::json!({}));
        r.types = None;
        let c = to_config(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.api_version.as_str(), c.kind.as_str()),
            (API_VERSION, KIND)
        );
        assert!(c.spec.interfaces.is_empty());
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_their_path_without_a_position() {
        let e = to_config(&cr(serde_json::json!({
            "interfaces": [{"name": "inside", "kernel": {"hostIfName": "c0", "colour": "red"}}]
        })))
        .err()
        .unwrap_or_default();
        assert!(
            e.starts_with("spec.interfaces[0].kernel: unknown field `colour`"),
            "{e}"
        );
        assert!(!e.contains(" at line "), "{e}");

        let e = to_config(&cr(serde_json::json!({
            "interfaces": [{"name": "inside", "kernel": {"hostIfName": "c0"}, "mtu": "big"}]
        })))
        .err()
        .unwrap_or_default();
        assert!(e.starts_with("spec.interfaces[0].mtu: invalid type"), "{e}");
    }

    #[test]
    fn a_resource_without_spec_is_refused() {
        let mut r = cr(serde_json::json!({}));
        r.data = serde_json::json!({});
        let e = to_config(&r).err().unwrap_or_default();
        assert!(e.contains("missing field `spec`"), "{e}");
    }

    #[test]
    fn positions_are_stripped_only_when_they_are_positions() {
        assert_eq!(strip_position("a: bad at line 3 column 7"), "a: bad");
        assert_eq!(
            strip_position("a: look at line x column 7"),
            "a: look at line x column 7"
        );
        assert_eq!(strip_position("no position"), "no position");
    }
}
