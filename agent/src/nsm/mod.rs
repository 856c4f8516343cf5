//! Network Service Mesh: the agent as NSM client and endpoint over the
//! kernel mechanism, speaking networkservicemesh/api v1 (see
//! `xcnf_proto::nsm`).
//!
//! Layers, bottom up: [`grpcfd`] passes descriptors on the raw unix socket;
//! [`security`] runs mTLS with SPIFFE SVIDs over it (or, explicitly, nothing)
//! and signs and checks the path tokens; [`transport`] runs tonic on the
//! result.

pub mod client;
pub mod endpoint;
pub mod grpcfd;
pub mod health;
pub mod ipam;
pub mod manager;
pub mod memif;
pub mod registry;
pub mod security;
pub mod transport;

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use prost_types::Timestamp;
use tokio::sync::watch;

pub use manager::{DEFAULT_SOCKET, NsmManager, NsmOptions};

use crate::reconcile::Bindings;

/// What every client and endpoint of the agent shares.
pub struct Context {
    /// nsmgr's socket.
    pub socket: PathBuf,
    /// This agent's NSM name.
    pub name: String,
    pub bindings: Bindings,
    /// The security NSM runs with, or why there is none (yet): SPIFFE mode
    /// gets its first SVID in the background, and the manager starts the
    /// NSM interfaces when it arrives.
    pub security: watch::Sender<Result<security::Security, String>>,
    /// Where endpoints listen.
    pub listen_dir: PathBuf,
}

impl Context {
    pub fn security(&self) -> Result<security::Security, String> {
        self.security.borrow().clone()
    }
}

/// A protobuf timestamp of `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The instant of a protobuf timestamp (before the epoch: the epoch).
pub fn system_time(t: &Timestamp) -> SystemTime {
    let secs = Duration::from_secs(t.seconds.max(0) as u64);
    SystemTime::UNIX_EPOCH + secs + Duration::from_nanos(t.nanos.max(0) as u64)
}

#[cfg(test)]
mod grpcfd_tests;
