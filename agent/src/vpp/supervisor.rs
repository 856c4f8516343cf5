//! Keeps a connection to VPP and reconnects when it goes away.
//!
//! A VPP restart loses its whole configuration, and the socket closing is
//! the only sign of it. So every successful (re)connect starts a new
//! *epoch*: the reconciler watches [`VppStatus`] and, when the epoch moves,
//! re-applies everything it put into VPP; while disconnected it marks the
//! VPP items Pending. Calls made while disconnected fail at once with
//! `VppError::NotConnected` rather than waiting for a timeout.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{
    client::{Client, ClientOptions},
    error::VppError,
};

/// The connection as the reconciler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VppStatus {
    /// Incremented on every successful connect; 0 until the first.
    pub epoch: u64,
    pub connected: bool,
    /// Why the last connect failed or the last connection ended.
    pub error: Option<String>,
}

/// Delay between connect attempts: doubles from `initial` up to `max`, and
/// starts over after a connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// The supervised connection. Dropping it stops reconnecting and drops the
/// current client.
#[derive(Debug)]
pub struct VppConnection {
    path: PathBuf,
    current: Arc<RwLock<Option<Client>>>,
    status: watch::Receiver<VppStatus>,
    task: JoinHandle<()>,
}

impl Drop for VppConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VppConnection {
    /// Starts connecting to `path` in the background (needs a tokio runtime).
    pub fn start(path: impl Into<PathBuf>, opts: ClientOptions, backoff: Backoff) -> Self {
        let path = path.into();
        let current = Arc::new(RwLock::new(None));
        let (tx, status) = watch::channel(VppStatus::default());
        let task = tokio::spawn(supervise(path.clone(), opts, backoff, current.clone(), tx));
        Self {
            path,
            current,
            status,
            task,
        }
    }

    pub fn status(&self) -> VppStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every connect and disconnect.
    pub fn subscribe(&self) -> watch::Receiver<VppStatus> {
        self.status.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.status.borrow().epoch
    }

    /// The current client, or `NotConnected` (with the last error) at once.
    pub fn client(&self) -> Result<Client, VppError> {
        let client = self.current.read().ok().and_then(|c| c.clone());
        match client {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(VppError::NotConnected {
                path: self.path.clone(),
                reason: self
                    .status
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or_else(|| "not connected yet".to_owned()),
            }),
        }
    }

    /// Waits until connected in an epoch of at least `min_epoch`, and
    /// returns that status (the reconciler's "VPP is back, resync").
    pub async fn connected_since(&self, min_epoch: u64) -> VppStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| s.connected && s.epoch >= min_epoch).await {
            Ok(s) => s.clone(),
            // The supervisor task is gone only if this was dropped.
            Err(_) => self.status(),
        }
    }

    /// Stops reconnecting and unregisters the current client from VPP.
    pub async fn shutdown(self) {
        self.task.abort();
        let client = self.current.write().ok().and_then(|mut c| c.take());
        if let Some(c) = client
            && let Err(e) = c.disconnect().await
        {
            tracing::debug!(error = %e, "sockclnt_delete on shutdown");
        }
    }
}

async fn supervise(
    path: PathBuf,
    opts: ClientOptions,
    backoff: Backoff,
    current: Arc<RwLock<Option<Client>>>,
    status: watch::Sender<VppStatus>,
) {
    let mut delay = backoff.initial;
    loop {
        match Client::connect(&path, opts.clone()).await {
            Ok(client) => {
                delay = backoff.initial;
                if let Ok(mut c) = current.write() {
                    *c = Some(client.clone());
                }
                status.send_modify(|s| {
                    s.epoch += 1;
                    s.connected = true;
                    s.error = None;
                });
                let reason = client.closed().await;
                if let Ok(mut c) = current.write() {
                    *c = None;
                }
                status.send_modify(|s| {
                    s.connected = false;
                    s.error = Some(reason);
                });
                // VPP usually comes back at once after a restart: try now.
                continue;
            }
            Err(e) => {
                let error = e.to_string();
                status.send_if_modified(|s| {
                    let changed = s.connected || s.error.as_deref() != Some(error.as_str());
                    s.connected = false;
                    s.error = Some(error.clone());
                    changed
                });
                tracing::debug!(path = %path.display(), %error, ?delay, "VPP API connect failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}
