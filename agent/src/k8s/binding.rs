//! Which `CNFConfiguration` belongs to this agent.
//!
//! The agent is a container of the CNF pod, so the resource is named by the
//! pod: directly (`--cr-name`, usually filled from the downward API), or by
//! the pod's `xcnf.io/config` annotation, which the agent reads from its own
//! pod object. The annotation lets one pod template serve many CNFs without
//! a per-CNF environment; the flag needs no permission to read pods.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use super::K8sError;

/// The pod annotation that names the pod's `CNFConfiguration`.
pub const POD_ANNOTATION: &str = "xcnf.io/config";

/// What the command line and the downward API say.
#[derive(Clone, Debug, Default)]
pub struct BindOptions {
    /// The resource's name; wins over the annotation.
    pub cr_name: Option<String>,
    /// The namespace of the resource and the pod; default: the client's
    /// (in a pod, the service account's namespace).
    pub namespace: Option<String>,
    /// The agent's own pod, read for its annotation when `cr_name` is unset.
    pub pod_name: Option<String>,
}

/// The resource this agent serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNFConfiguration {}/{}", self.namespace, self.name)
    }
}

impl Binding {
    pub async fn resolve(client: &Client, o: &BindOptions) -> Result<Self, K8sError> {
        let namespace = o
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        if let Some(name) = o.cr_name.clone().filter(|n| !n.is_empty()) {
            return Ok(Self { namespace, name });
        }
        let pod = o
            .pod_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(K8sError::Unbound)?;
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let found = api.get(&pod).await.map_err(|error| K8sError::Pod {
            namespace: namespace.clone(),
            pod: pod.clone(),
            error,
        })?;
        let name = annotation(&found).ok_or_else(|| K8sError::NoAnnotation {
            namespace: namespace.clone(),
            pod,
        })?;
        Ok(Self { namespace, name })
    }
}

fn annotation(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(POD_ANNOTATION)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_the_resource() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cnf-nat44-7d9c", "annotations": {"xcnf.io/config": " cnf-nat44 "}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(annotation(&pod).as_deref(), Some("cnf-nat44"));
        let bare: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "annotations": {"xcnf.io/config": ""}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(annotation(&bare), None);
        assert_eq!(annotation(&Pod::default()), None);
    }
}
