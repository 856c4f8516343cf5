//! Harness for xcnf's integration tests.
//!
//! Everything here runs against the real kernel and needs root; `cargo xtask
//! test` builds the eBPF object and the agent first and points these tests at
//! them through environment variables.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: failing loudly is the point"
)]

pub mod agent;
pub mod bench;
pub mod image;
pub mod kube_double;
pub mod netns;
pub mod nsm_chain;
pub mod nsm_double;
pub mod packet;
pub mod spiffe_double;
pub mod testrun;
pub mod vpp_double;

use std::path::PathBuf;

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The eBPF object under test: `$XCNF_EBPF_OBJECT`, else the release build.
pub fn ebpf_object() -> PathBuf {
    let p = std::env::var_os("XCNF_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bpfel-unknown-none/release/xcnf"));
    assert!(
        p.exists(),
        "eBPF object {} not found: run `cargo xtask build-ebpf --release` (or `cargo xtask test`)",
        p.display()
    );
    p
}
