//! The config file as a live source: edits are applied as they are saved.
//!
//! The watch is on the file's directory, not the file: editors replace files
//! by rename, and a Kubernetes ConfigMap volume swaps a `..data` symlink, so
//! a watch on the file itself would go quiet after the first update. Every
//! change in the directory leads to a read of the file; only content that
//! differs from the last one seen is applied, so unrelated files and
//! re-saves cost nothing. A bad edit is logged with the file and field and
//! changes nothing: the running config stays.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt as _;
use inotify::{Inotify, WatchMask};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    reconcile::{ApplyError, ApplyMode, Handle},
};

/// Errors from setting up the watch.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("watching {}: {source}", .path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Editors write a file in several steps; wait this long after the last
/// event before reading it.
const SETTLE: Duration = Duration::from_millis(100);
/// Without inotify (exhausted watches), the file is polled this often.
const POLL: Duration = Duration::from_secs(2);

/// Watches `path` and applies every new content through `handle` until the
/// handle's reconciler stops. `last` is the content already applied.
pub async fn watch_file(path: PathBuf, handle: Handle, last: String) {
    let mut last = last;
    match events(&path) {
        Ok(mut stream) => {
            info!(path = %path.display(), "watching the config file for changes");
            while stream.next().await.is_some() {
                tokio::time::sleep(SETTLE).await;
                // Drain the burst the write produced.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(1), stream.next()).await
                {
                }
                if !reload(&path, &handle, &mut last).await {
                    return;
                }
            }
            warn!(path = %path.display(), "config file watch ended; polling instead");
        }
        Err(e) => {
            warn!(error = %e, "cannot watch the config file; polling it every {}s", POLL.as_secs())
        }
    }
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if !reload(&path, &handle, &mut last).await {
            return;
        }
    }
}

fn events(
    path: &Path,
) -> Result<impl futures::Stream<Item = std::io::Result<inotify::EventOwned>>, SourceError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let err = |source| SourceError::Watch {
        path: dir.clone(),
        source,
    };
    let inotify = Inotify::init().map_err(err)?;
    inotify
        .watches()
        .add(
            &dir,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MODIFY,
        )
        .map_err(err)?;
    inotify.into_event_stream([0u8; 4096]).map_err(err)
}

/// Reads and applies the file if its content changed. Returns false once
/// the reconciler has stopped.
async fn reload(path: &Path, handle: &Handle, last: &mut String) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // Mid-swap, or removed: the running config stays until it is back.
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot read the config file");
            }
            return true;
        }
    };
    if text == *last {
        return true;
    }
    *last = text.clone();
    let cfg = match Config::parse(&text) {
        Ok(c) => c,
        Err(message) => {
            let e = ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            };
            error!(error = %e, "config edit rejected; the running config stays");
            return true;
        }
    };
    match handle.apply(cfg, ApplyMode::Replace, false).await {
        Ok(report) => {
            let pending = report.plan.iter().filter(|o| o.pending.is_some()).count();
            info!(path = %path.display(), steps = report.plan.len(), pending, "config file change applied");
            true
        }
        Err(ApplyError::Stopped) => false,
        Err(ApplyError::Invalid(errors)) => {
            let e = ConfigError::Invalid {
                path: path.to_path_buf(),
                errors,
            };
            error!(error = %e, "config edit rejected; the running config stays");
            true
        }
        Err(e) => {
            error!(path = %path.display(), error = %e, "config edit failed");
            true
        }
    }
}
