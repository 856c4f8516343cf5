//! Network Service Mesh: the agent as NSM client and endpoint over the
//! kernel mechanism, speaking networkservicemesh/api v1 (see
//! `xcnf_proto::nsm`).
//!
//! Layers, bottom up: [`grpcfd`] passes descriptors on the raw unix socket;
//! [`hooks`] is where mTLS and path tokens plug in over it; [`transport`]
//! runs tonic on the result.

pub mod grpcfd;
pub mod hooks;
pub mod transport;

#[cfg(test)]
mod grpcfd_tests;
