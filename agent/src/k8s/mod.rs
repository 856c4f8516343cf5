//! Kubernetes: the `CNFConfiguration` custom resource as a config source,
//! its status, and its CRD.
//!
//! One agent runs in each CNF pod and serves exactly one resource, the one
//! bound to its pod; there is no controller in between. The resource's
//! `spec` is the config schema (`config::Spec`), so the CRD is generated from
//! the same Rust types the agent parses ([`crd`]), and the agent reports what
//! the reconciler did in the resource's status subresource ([`status`]).
//! The watch itself lives in [`source`].

pub mod binding;
pub mod convert;
pub mod crd;
pub mod source;
pub mod status;

pub use binding::{BindOptions, Binding, POD_ANNOTATION};
pub use convert::to_config;
pub use crd::{CRD_FILE, crd_yaml};
pub use source::Source;
pub use status::{CnfConfigurationStatus, Condition, ItemSummary, Rejection};

pub use crate::config::CnfConfiguration;

/// Errors of the Kubernetes source; everything past startup is reported in
/// the resource's status or logged, never returned. The kube errors are in
/// the message and not chained as sources: their own messages already
/// repeat their causes, so a printed cause chain would say it all twice.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Client(kube::Error),
    #[error(
        "no CNFConfiguration is bound to this pod: give --cr-name (XCNF_CR_NAME), or POD_NAME \
         (with the pod annotation {POD_ANNOTATION})"
    )]
    Unbound,
    #[error("reading pod {namespace}/{pod} for its {POD_ANNOTATION} annotation: {error}")]
    Pod {
        namespace: String,
        pod: String,
        error: kube::Error,
    },
    #[error("pod {namespace}/{pod} has no {POD_ANNOTATION} annotation naming its CNFConfiguration")]
    NoAnnotation { namespace: String, pod: String },
    #[error("reading CNFConfiguration {namespace}/{name}: {error}")]
    Get {
        namespace: String,
        name: String,
        error: kube::Error,
    },
    #[error("writing the CRD as YAML: {0}")]
    Yaml(serde_yaml::Error),
    #[error("turning the CRD into JSON to rewrite its schema: {0}")]
    Json(serde_json::Error),
}
