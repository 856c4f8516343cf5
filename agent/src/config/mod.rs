//! The declarative configuration (`../shared/design/config.md`, v1alpha1).
//!
//! The whole schema is modelled, so every valid document parses and unknown
//! fields are rejected with their path. Validation then reports every problem
//! at once, each with its field path, before anything is applied. Sections
//! that this agent version cannot apply yet are refused by validation rather
//! than silently ignored, so a config never looks applied when it is not.

#[cfg(test)]
mod bad_configs;
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
pub use validate::FieldError;

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
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::parse(&text).map_err(|message| ConfigError::Parse {
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
