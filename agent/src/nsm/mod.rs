//! Network Service Mesh: the agent as NSM client and endpoint over the
//! kernel mechanism, speaking networkservicemesh/api v1 (see
//! `xcnf_proto::nsm`).
//!
//! Layers, bottom up: [`grpcfd`] passes descriptors on the raw unix socket;
//! [`hooks`] is where mTLS and path tokens plug in over it; [`transport`]
//! runs tonic on the result.

pub mod client;
pub mod endpoint;
pub mod grpcfd;
pub mod health;
pub mod hooks;
pub mod ipam;
pub mod manager;
pub mod memif;
pub mod registry;
pub mod security;
pub mod transport;

use std::path::PathBuf;

pub use manager::{DEFAULT_SOCKET, NsmManager, NsmOptions};

use crate::reconcile::Bindings;

/// What every client and endpoint of the agent shares.
pub struct Context {
    /// nsmgr's socket.
    pub socket: PathBuf,
    /// This agent's NSM name.
    pub name: String,
    pub bindings: Bindings,
    /// The security NSM runs with, or why there is none.
    pub security: Result<hooks::Security, String>,
    /// Where endpoints listen.
    pub listen_dir: PathBuf,
}

impl Context {
    pub fn security(&self) -> Result<hooks::Security, String> {
        self.security.clone()
    }
}

#[cfg(test)]
mod grpcfd_tests;
