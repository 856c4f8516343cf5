//! gRPC over NSM's unix sockets: a tonic channel whose connections are
//! [`FdStream`]s secured by [`Security`] (mTLS or, in lab mode, plain), and
//! a server's incoming stream of the same. Descriptors travel on the raw
//! socket underneath the TLS layer: each connection's [`FdShared`] is made
//! before the handshake, and reaches server handlers as the `inner` of the
//! [`ConnInfo`] in the request's extensions, beside the verified peer.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{
    Request,
    transport::{Channel, Endpoint, server::Connected},
};

use super::{
    grpcfd::{FdShared, FdStream},
    security::{PeerId, SecureConnectInfo, SecureStream, Security, Token},
};

/// A single call to nsmgr or the registry gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// An outgoing NSM call: bounded by [`CALL_TIMEOUT`] and carrying this
/// hop's path token in its metadata, as every NSM call must.
pub fn signed<T>(msg: T, token: &Token) -> Result<Request<T>, String> {
    let mut req = Request::new(msg);
    req.set_timeout(CALL_TIMEOUT);
    token
        .insert_into(req.metadata_mut())
        .map_err(|e| e.to_string())?;
    Ok(req)
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{url:?} is not a unix:// URL")]
    NotUnix { url: String },
    /// `reason` is the whole error chain: tonic's own message is only
    /// "transport error", and the TLS failure is what the operator needs.
    #[error("cannot connect to {path}: {reason}")]
    Connect { path: String, reason: String },
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
    /// The server as TLS verified it (`None` in insecure mode): the
    /// audience of our path tokens and the signer of the next segment's.
    pub peer: Arc<std::sync::Mutex<Option<PeerId>>>,
}

impl Dialed {
    pub fn peer(&self) -> Option<PeerId> {
        self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `e` and its sources, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

/// A channel to the gRPC server on `path` (connected, and the peer
/// verified, before it returns).
pub async fn connect(path: &Path, security: &Security) -> Result<Dialed, TransportError> {
    let fds = FdShared::new();
    let peer: Arc<std::sync::Mutex<Option<PeerId>>> = Arc::default();
    let (shared, peer_slot, security) = (fds.clone(), peer.clone(), security.clone());
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
            let (io, peer) = security
                .connect(FdStream::new(s, shared))
                .await
                .map_err(io::Error::other)?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = peer;
            Ok::<_, io::Error>(TokioIo::new(io))
        }
    });
    // The URI is not used for routing: the connector decides where to go.
    let channel = Endpoint::from_static("http://nsm.local")
        .connect_with_connector(connector)
        .await
        .map_err(|e| TransportError::Connect {
            path: path.display().to_string(),
            reason: chain(&e),
        })?;
    Ok(Dialed { channel, fds, peer })
}

/// What a server handler knows about the connection a request came on:
/// `peer` (verified by TLS) and `inner`, the connection's descriptors.
pub type ConnInfo = SecureConnectInfo<Arc<FdShared>>;

impl Connected for FdStream {
    type ConnectInfo = Arc<FdShared>;
    fn connect_info(&self) -> Arc<FdShared> {
        self.fds().clone()
    }
}

/// The connections accepted on `listener`, each secured on its own task
/// (see [`Security::incoming`]) so one slow or failing handshake holds up
/// no other client.
pub fn incoming(
    listener: UnixListener,
    security: &Security,
) -> impl Stream<Item = io::Result<SecureStream<FdStream>>> + Send + 'static {
    let raw =
        UnixListenerStream::new(listener).map(|s| s.map(|s| FdStream::new(s, FdShared::new())));
    security.incoming(raw)
}
