//! The declarative configuration (`../shared/design/config.md`, v1alpha1).
//!
//! The whole schema is modelled, so every valid document parses and unknown
//! fields are rejected with their path. Validation then reports every problem
//! at once, each with its field path, before anything is applied. Sections
//! that this agent version cannot apply yet are refused by validation rather
//! than silently ignored, so a config never looks applied when it is not.

#[cfg(test)]
mod bad_configs;
mod fast_yaml;
mod l3;
mod merge;
mod nat44;
mod net;
mod proto;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use l3::{InterfaceL3, L3Spec, MTU_MAX, MTU_MIN, NeighborSpec, RouteSpec};
#[cfg(test)]
pub(crate) use nat44::test_doc;
pub use nat44::{
    Endpoint, IdentitySpec, MAX_SESSIONS_LIMIT, Nat44Spec, NatTimeouts, Origin, PoolSpec,
    StaticSpec, parse_duration, parse_endpoint, parse_port_range, proto_name,
};
pub use net::{Ipv4Prefix, MacAddr, not_unicast, parse_unicast};
pub use types::*;
pub use validate::{FieldError, Resolved};

/// Errors from reading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML, wrong types and unknown fields; serde_yaml's message
    /// already names the field path, line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", join(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Parses a YAML (or JSON, a YAML subset) document without validating it.
    ///
    /// A JSON document takes serde_json's fast path and YAML written in the
    /// usual subset takes [`fast_yaml`]'s (a 10 000-mapping config parses in
    /// milliseconds either way, instead of ~30 ms). A document neither takes,
    /// and every document that does not parse, is parsed by serde_yaml, whose
    /// errors name the field path, line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('{')
            && let Ok(c) = serde_json::from_str(text)
        {
            return Ok(c);
        }
        if let Some(c) = fast_yaml::from_str(text) {
            // Every config the unit tests parse is also a check that the
            // fast path agrees with serde_yaml.
            #[cfg(test)]
            fast_yaml::assert_same_as_serde_yaml(text, &c);
            return Ok(c);
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(path, &text)
    }

    /// Parses and validates `text`, read from `path` (for the errors).
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg = Self::parse(text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        cfg.validate().map_err(|errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        })?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn json_and_yaml_parse_the_same_and_json_errors_keep_the_path() {
        let yaml = "apiVersion: xcnf.io/v1alpha1\nkind: CNFConfiguration\nmetadata: {name: a}\nspec:\n  interfaces:\n    - {name: x, kernel: {hostIfName: c0}}\n";
        let json = r#"{"apiVersion":"xcnf.io/v1alpha1","kind":"CNFConfiguration","metadata":{"name":"a"},"spec":{"interfaces":[{"name":"x","kernel":{"hostIfName":"c0"}}]}}"#;
        let a = Config::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
        let b = Config::parse(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        let bad = json.replace("\"hostIfName\"", "\"colour\":1,\"hostIfName\"");
        let e = Config::parse(&bad).err().unwrap_or_default();
        assert!(
            e.contains("spec.interfaces[0].kernel: unknown field `colour`"),
            "{e}"
        );
    }
}
