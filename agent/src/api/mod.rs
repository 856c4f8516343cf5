//! The agent's gRPC API (`xcnf.v1alpha1.AgentService`, proto/xcnf/v1alpha1/api.proto)
//! on a unix socket, and the client side `xcnfctl` uses.
//!
//! Config changes go through the reconciler's [`Handle`], so the API, the
//! file watcher and any later front end share one transaction queue. The
//! datapath reads open the pinned maps on every request instead of borrowing
//! the agent's loaded object: they then work whatever state the datapath is
//! in, and a read never holds up the reconciler.

pub mod client;
pub mod convert;
pub mod reads;
pub mod render;
pub mod service;
pub mod sessions;
pub mod socket;

use std::{
    future::Future,
    path::{Path, PathBuf},
};

use tokio_stream::wrappers::UnixListenerStream;
use xcnf_proto::v1alpha1::agent_service_server::AgentServiceServer;

pub use reads::{DatapathReads, VppSlot};
pub use service::Api;

use crate::reconcile::Handle;

/// Where the agents' sockets live: `/run/xcnf/<instance>/api.sock`.
pub const RUN_DIR: &str = "/run/xcnf";

/// The socket file's name in the instance's run directory.
pub const SOCKET_NAME: &str = "api.sock";

/// The default socket of an instance.
pub fn default_socket(instance: &str) -> PathBuf {
    Path::new(RUN_DIR).join(instance).join(SOCKET_NAME)
}

/// Errors of the API server and client; each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: another process is serving on this socket (another agent with the same instance?)", .path.display())]
    InUse { path: PathBuf },
    #[error("{}: exists and is not a socket; not removing it", .path.display())]
    NotSocket { path: PathBuf },
    #[error("gRPC server on {}: {source}", .path.display())]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// `reason` is the innermost cause only: tonic nests the same OS error
    /// three times, which helps nobody reading one line.
    #[error("cannot connect to {}: {reason} (is the agent running, with this --instance or --socket?)", .path.display())]
    Connect { path: PathBuf, reason: String },
}

/// The bound API socket, before it serves. Binding comes first, apart from
/// serving, so that an agent started twice for one instance fails before it
/// touches the other one's datapath.
pub struct Listener {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds the unix socket `path`. Missing parent directories are created
    /// with mode 0700 and the socket is made mode 0600, so only the agent's
    /// user (root) can talk to it. A socket file left by a dead agent is
    /// replaced; one that still answers is not.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        Ok(Self {
            listener: socket::bind(path)?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` resolves, then removes the socket file.
    pub async fn serve(
        self,
        handle: Handle,
        reads: DatapathReads,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ApiError> {
        tracing::info!(socket = %self.path.display(), "gRPC API listening");
        let result = tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(Api::new(handle, reads)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(self.listener), shutdown)
            .await
            .map_err(|source| ApiError::Serve {
                path: self.path.clone(),
                source,
            });
        socket::remove(&self.path);
        result
    }
}

/// [`Listener::bind`] and [`Listener::serve`] in one.
pub async fn serve(
    handle: Handle,
    reads: DatapathReads,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    Listener::bind(socket)?.serve(handle, reads, shutdown).await
}

#[cfg(test)]
mod tests;
