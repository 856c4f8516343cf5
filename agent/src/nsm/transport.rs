//! gRPC over NSM's unix sockets: a tonic channel whose connections are
//! [`FdStream`]s wrapped by the [`TransportSecurity`], and a server's
//! incoming stream of the same, each carrying its [`ConnInfo`] (descriptors
//! and peer) into the request's extensions.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, server::Connected};
use tracing::debug;

use super::{
    grpcfd::{FdShared, FdStream},
    hooks::{Io, PeerId, TransportSecurity},
};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{url:?} is not a unix:// URL")]
    NotUnix { url: String },
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: tonic::transport::Error,
    },
}

/// The socket path of a `unix://` URL (or a bare absolute path).
pub fn unix_path(url: &str) -> Result<PathBuf, TransportError> {
    match url.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        None if url.starts_with('/') => Ok(PathBuf::from(url)),
        _ => Err(TransportError::NotUnix { url: url.into() }),
    }
}

/// A client channel and what its connections carry beside the messages.
#[derive(Clone, Debug)]
pub struct Dialed {
    pub channel: Channel,
    /// The descriptors its connections send and receive.
    pub fds: Arc<FdShared>,
    /// The server as the transport established it (its SPIFFE ID under
    /// mTLS), for the audience of path tokens; set once connected.
    pub peer: Arc<std::sync::Mutex<Option<PeerId>>>,
}

impl Dialed {
    pub fn peer(&self) -> Option<PeerId> {
        self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A channel to the gRPC server on `path` (connected before it returns).
pub async fn connect(
    path: &Path,
    security: Arc<dyn TransportSecurity>,
) -> Result<Dialed, TransportError> {
    let fds = FdShared::new();
    let peer: Arc<std::sync::Mutex<Option<PeerId>>> = Arc::default();
    let (shared, peer_slot) = (fds.clone(), peer.clone());
    let p = path.to_path_buf();
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (p, shared, security, slot) = (
            p.clone(),
            shared.clone(),
            security.clone(),
            peer_slot.clone(),
        );
        async move {
            let s = UnixStream::connect(&p).await?;
            let (io, peer) = security.wrap_client(FdStream::new(s, shared)).await?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
            Ok::<_, io::Error>(TokioIo::new(io))
        }
    });
    // The URI is not used for routing: the connector decides where to go.
    let channel = Endpoint::from_static("http://nsm.local")
        .connect_with_connector(connector)
        .await
        .map_err(|source| TransportError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Dialed { channel, fds, peer })
}

/// What a server handler knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub fds: Arc<FdShared>,
    pub peer: PeerId,
}

/// An accepted, wrapped server connection.
pub struct ServerConn {
    io: Box<dyn Io>,
    info: ConnInfo,
}

impl Connected for ServerConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, each wrapped on its own task so
/// one slow handshake does not hold up the others.
pub fn incoming(
    listener: UnixListener,
    security: Arc<dyn TransportSecurity>,
) -> ReceiverStream<io::Result<ServerConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let s = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (conn_tx, security) = (tx.clone(), security.clone());
            tokio::spawn(async move {
                let fds = FdShared::new();
                match security.wrap_server(FdStream::new(s, fds.clone())).await {
                    Ok((io, peer)) => {
                        let _ = conn_tx
                            .send(Ok(ServerConn {
                                io,
                                info: ConnInfo { fds, peer },
                            }))
                            .await;
                    }
                    // One failed handshake is that peer's problem, not the server's.
                    Err(e) => debug!(error = %e, "NSM connection refused by the transport"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
