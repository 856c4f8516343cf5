//! NAT44 in the agent: compiling the config into the datapath's maps,
//! sweeping expired sessions, and reading sessions back for `xcnfctl`.

pub mod plan;
pub mod session;
pub mod show;
pub mod sweep;
pub mod tables;

use std::path::PathBuf;

pub use plan::{NatPlan, StaticEntry, split_pools, static_entries};

/// Errors from reading or changing the pinned NAT maps; each names the pin.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(
        "cannot open pinned map {}: {source} (is an agent running, or was one kept, with this --instance and --bpffs?)",
        .path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinned map {}: {source}", .path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot read CLOCK_MONOTONIC: {0}")]
    Clock(#[source] std::io::Error),
}
