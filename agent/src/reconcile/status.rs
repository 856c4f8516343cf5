//! Per-item status, as the API, `xcnfctl status` and `watch` report it.

use std::{fmt, time::SystemTime};

use super::item::ItemKey;

/// Where an item stands. Ligato users were confused by PENDING without a
/// reason, so every state but Configured carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemState {
    Configured,
    /// Waiting for something outside the agent's control, such as an
    /// interface that NSM has not created yet; applied when it appears.
    Pending(String),
    /// Refused by the kernel or the datapath in a transaction that was
    /// rolled back; the previous config stays in force.
    Failed(String),
    /// Accepted config whose item failed after the transaction (for example
    /// when re-applying after an interface came back); retried with backoff.
    Retrying {
        error: String,
        attempt: u32,
    },
    /// Removed from the config and from the system (reported once by `watch`).
    Removed,
}

impl ItemState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Pending(_) => "pending",
            Self::Failed(_) => "failed",
            Self::Retrying { .. } => "retrying",
            Self::Removed => "removed",
        }
    }

    /// The reason or error, empty for Configured and Removed.
    pub fn reason(&self) -> String {
        match self {
            Self::Configured | Self::Removed => String::new(),
            Self::Pending(r) | Self::Failed(r) => r.clone(),
            Self::Retrying { error, attempt } => format!("attempt {attempt}: {error}"),
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.reason();
        if r.is_empty() {
            f.write_str(self.name())
        } else {
            write!(f, "{} ({r})", self.name())
        }
    }
}

/// One item's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemStatus {
    pub key: ItemKey,
    pub state: ItemState,
    /// The desired value in one line (`host c0, mtu 1500, up`).
    pub detail: String,
    /// When the state last changed.
    pub since: SystemTime,
}
