//! The API's unix socket: private directory, mode 0600, no stale files.

use std::{
    fs::{DirBuilder, Permissions},
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::Path,
};

use tokio::net::UnixListener;

use super::ApiError;

/// Binds a listener at `path`.
///
/// Directories are created 0700 so the socket is never reachable by others,
/// not even in the moment between bind (which honours the umask) and chmod.
/// Existing directories are left as they are: the path may be anywhere.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let io = |what, source| ApiError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("cannot create the socket's directory", e))?;
    }
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| io("cannot bind", e))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
        .map_err(|e| io("cannot set mode 0600", e))?;
    Ok(listener)
}

/// Removes a socket file nobody listens on any more (the agent was killed).
/// A socket that accepts a connection belongs to a live server, and a file
/// that is not a socket was not ours: both are refused, never removed.
fn remove_stale(path: &Path) -> Result<(), ApiError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ApiError::Io {
                path: path.to_path_buf(),
                what: "cannot inspect",
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ApiError::NotSocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ApiError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing the stale socket of a previous agent");
            std::fs::remove_file(path).map_err(|source| ApiError::Io {
                path: path.to_path_buf(),
                what: "cannot remove the stale socket",
                source,
            })
        }
        Err(source) => Err(ApiError::Io {
            path: path.to_path_buf(),
            what: "cannot tell whether the existing socket is in use",
            source,
        }),
    }
}

/// Removes the socket on shutdown; a failure only leaves a stale file that
/// the next start replaces.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove the API socket");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("xcnf-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn creates_private_dirs_and_a_0600_socket_and_replaces_only_dead_ones() {
        let dir = temp_dir("sock");
        let path = dir.join("inst").join("api.sock");
        let listener = bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).ok();
        assert_eq!(mode(&path), Some(0o600));
        assert_eq!(mode(&dir.join("inst")), Some(0o700));
        // A live listener is not taken over.
        assert!(matches!(bind(&path), Err(ApiError::InUse { .. })));
        // Once it is gone the file is stale and replaced.
        drop(listener);
        let again = bind(&path).unwrap_or_else(|e| panic!("{e}"));
        drop(again);
        // A regular file is never removed.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, b"not a socket").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(bind(&path), Err(ApiError::NotSocket { .. })));
        assert!(path.is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
