//! The xcnf agent library: configuration, Linux lookups and the eBPF datapath.
//!
//! The `xcnf-agent` binary wires these together; integration tests and later
//! front ends (gRPC, Kubernetes) reuse them.

pub mod api;
pub mod config;
pub mod datapath;
pub mod k8s;
pub mod linux;
pub mod nat;
pub mod nsm;
pub mod reconcile;
pub mod source;
