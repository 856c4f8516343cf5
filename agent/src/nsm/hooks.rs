//! Where NSM security plugs in: the transport (mTLS with SPIFFE SVIDs over
//! the fd-passing stream) and the per-hop path tokens.
//!
//! NSM runs mTLS even on its unix sockets and puts a signed JWT per hop into
//! the path; the SPIFFE implementation lives apart (`nsm::security`). What
//! the NSM client and endpoint need from it is only these two traits, so they
//! work the same whichever implementation is behind them. Without one, only
//! the explicit insecure mode runs: no TLS, no signatures. It is never a
//! silent fallback ([`Security::new`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use prost_types::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;
use xcnf_proto::nsm::connection::Path;

use super::grpcfd::FdStream;

/// A byte stream gRPC runs on: the raw [`FdStream`], or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Who is at the other end of a connection, as the transport established it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerId {
    /// The SPIFFE ID of the peer's verified certificate; `None` without TLS.
    pub spiffe_id: Option<String>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Wraps a connection on the fd-passing stream. The descriptors keep
/// travelling on the raw socket underneath: the wrapped stream's
/// [`super::grpcfd::FdShared`] is taken before wrapping.
pub trait TransportSecurity: Send + Sync + 'static {
    /// The client side of a new connection (mTLS handshake, peer verified).
    fn wrap_client(&self, io: FdStream) -> BoxFuture<'_, io::Result<(Box<dyn Io>, PeerId)>>;
    /// The server side of an accepted connection.
    fn wrap_server(&self, io: FdStream) -> BoxFuture<'_, io::Result<(Box<dyn Io>, PeerId)>>;
}

/// Which end of a hop a token check is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A server checks the token of the previous hop (`index - 1`).
    Server,
    /// A client checks the token of the next hop (`index + 1`) in a reply.
    Client,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot make a path token: {0}")]
    Sign(String),
    #[error("path segment {index}: {reason}")]
    Rejected { index: usize, reason: String },
}

/// The per-hop tokens in the connection path (NSM `updatetoken`, OPA
/// `tokens_*` policies).
pub trait PathTokens: Send + Sync + 'static {
    /// This hop's token for a call to (or a reply to) `peer`, and its expiry.
    fn own_token(&self, peer: Option<&PeerId>) -> Result<(String, Timestamp), TokenError>;
    /// Checks the tokens of `path` seen from segment `index` in `role`.
    fn check(&self, path: &Path, index: usize, role: Role) -> Result<(), TokenError>;
}

/// How long an insecure token is said to last: NSM's default
/// MaxTokenLifetime, so refresh timing is what it would be with tokens.
pub const INSECURE_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Lab mode: plain unix sockets, empty tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct Insecure {
    pub token_lifetime: Option<Duration>,
}

impl TransportSecurity for Insecure {
    fn wrap_client(&self, io: FdStream) -> BoxFuture<'_, io::Result<(Box<dyn Io>, PeerId)>> {
        Box::pin(async move { Ok((Box::new(io) as Box<dyn Io>, PeerId::default())) })
    }
    fn wrap_server(&self, io: FdStream) -> BoxFuture<'_, io::Result<(Box<dyn Io>, PeerId)>> {
        Box::pin(async move { Ok((Box::new(io) as Box<dyn Io>, PeerId::default())) })
    }
}

impl PathTokens for Insecure {
    fn own_token(&self, _peer: Option<&PeerId>) -> Result<(String, Timestamp), TokenError> {
        let lifetime = self.token_lifetime.unwrap_or(INSECURE_TOKEN_LIFETIME);
        Ok((String::new(), timestamp(SystemTime::now() + lifetime)))
    }
    fn check(&self, _path: &Path, _index: usize, _role: Role) -> Result<(), TokenError> {
        Ok(())
    }
}

/// The transport and the tokens, shared by every NSM client and endpoint of
/// the agent.
#[derive(Clone)]
pub struct Security {
    pub transport: Arc<dyn TransportSecurity>,
    pub tokens: Arc<dyn PathTokens>,
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "NSM needs mTLS with SPIFFE certificates and signed path tokens, which this agent build cannot provide yet; run with --nsm-insecure (XCNF_NSM_INSECURE=true) only in a lab"
    )]
    Unavailable,
}

impl Security {
    /// The security the agent runs NSM with. `insecure` must be asked for
    /// explicitly and says so loudly; without it and without a provider,
    /// NSM interfaces fail with [`SecurityError::Unavailable`].
    pub fn new(insecure: bool) -> Result<Self, SecurityError> {
        if insecure {
            warn!(
                "NSM INSECURE MODE: no mTLS and no path tokens on NSM connections; any local process can impersonate the NSM manager or an endpoint. Use only in a lab."
            );
            return Ok(Self::insecure());
        }
        Err(SecurityError::Unavailable)
    }

    /// Insecure mode without the warning (tests).
    pub fn insecure() -> Self {
        Self {
            transport: Arc::new(Insecure::default()),
            tokens: Arc::new(Insecure::default()),
            insecure: true,
        }
    }

    /// A provider's transport and tokens.
    pub fn with(transport: Arc<dyn TransportSecurity>, tokens: Arc<dyn PathTokens>) -> Self {
        Self {
            transport,
            tokens,
            insecure: false,
        }
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn system_time(t: &Timestamp) -> SystemTime {
    let secs = Duration::from_secs(t.seconds.max(0) as u64);
    SystemTime::UNIX_EPOCH + secs + Duration::from_nanos(t.nanos.max(0) as u64)
}
