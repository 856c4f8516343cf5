//! The reconciler's front door, shared by the file watcher and the gRPC API.
//!
//! The reconciler runs as one task that owns all kernel and datapath state,
//! so transactions never interleave; callers send it commands and await the
//! answer.

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    item::ItemKey,
    status::{ItemState, ItemStatus},
};
use crate::config::{Config, FieldError};

/// How `apply` combines the new config with the running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// The new config is the whole desired state.
    Replace,
    /// Keyed items of the new config are added to or replace those running
    /// (`Config::merge`).
    Merge,
}

/// What a transaction does (or, dry run, would do) to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One step of a plan, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOp {
    pub op: OpKind,
    pub key: ItemKey,
    pub detail: String,
    /// Set when the step waits for a dependency instead of running now.
    pub pending: Option<String>,
}

/// The answer to an apply or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    pub plan: Vec<PlannedOp>,
    /// False for a dry run.
    pub applied: bool,
    /// Every item's status after the transaction.
    pub statuses: Vec<ItemStatus>,
}

/// Why an apply or delete changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error(
        "{key}: {error}; the transaction was rolled back ({} step(s) reverted) and the previous config stays in force",
        .reverted.len()
    )]
    Failed {
        key: ItemKey,
        error: String,
        reverted: Vec<ItemKey>,
    },
    /// The system could not be read or the datapath not loaded, before any
    /// step ran: nothing changed.
    #[error("{0}; nothing was changed")]
    System(String),
    #[error("the reconciler has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Apply {
        config: Box<Config>,
        mode: ApplyMode,
        dry_run: bool,
        reply: oneshot::Sender<Result<ApplyReport, ApplyError>>,
    },
    Delete {
        /// `None` removes the whole config.
        patch: Option<Box<Config>>,
        dry_run: bool,
        reply: oneshot::Sender<Result<ApplyReport, ApplyError>>,
    },
    Get {
        reply: oneshot::Sender<Option<Config>>,
    },
    Status {
        reply: oneshot::Sender<Vec<ItemStatus>>,
    },
}

/// The reconciler's end of the command channel (opaque to front ends).
pub struct Inbox(pub(crate) mpsc::Receiver<Command>);

/// A cheap, cloneable way to talk to the running reconciler.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<ItemStatus>,
}

impl Handle {
    pub async fn apply(
        &self,
        config: Config,
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply {
            config: Box::new(config),
            mode,
            dry_run,
            reply,
        })
        .await?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// Removes the items named in `patch` (`Config::remove`), or everything.
    pub async fn delete(
        &self,
        patch: Option<Config>,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Delete {
            patch: patch.map(Box::new),
            dry_run,
            reply,
        })
        .await?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// The config in force, if any.
    pub async fn get(&self) -> Result<Option<Config>, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Get { reply }).await?;
        rx.await.map_err(|_| ApplyError::Stopped)
    }

    pub async fn status(&self) -> Result<Vec<ItemStatus>, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| ApplyError::Stopped)
    }

    /// Every status change from now on. A slow reader that falls behind gets
    /// `RecvError::Lagged` and should re-read `status()`.
    pub fn watch(&self) -> broadcast::Receiver<ItemStatus> {
        self.events.subscribe()
    }

    async fn send(&self, c: Command) -> Result<(), ApplyError> {
        self.tx.send(c).await.map_err(|_| ApplyError::Stopped)
    }
}

/// True when every item is configured (readiness).
pub fn all_configured(statuses: &[ItemStatus]) -> bool {
    statuses.iter().all(|s| s.state == ItemState::Configured)
}

/// A handle whose commands the test answers itself, for front ends' unit tests.
#[cfg(test)]
pub(crate) fn test_pair() -> (Handle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(16);
    let (events, _) = broadcast::channel(64);
    (Handle { tx, events }, rx)
}
