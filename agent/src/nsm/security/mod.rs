//! NSM security: SPIFFE mTLS on every NSM connection and the signed path
//! tokens, the way networkservicemesh/sdk does them, so xcnf interoperates
//! with a stock nsmgr — or, explicitly, neither (`insecure`, lab only).
//!
//! [`Security`] is the one value the NSM client and endpoint hold: it wraps
//! each raw connection (after grpcfd, before gRPC) and signs and checks the
//! tokens. The pieces stay usable on their own: [`workload`] (the SPIFFE
//! Workload API source), [`tls`] (rustls configs with SPIFFE verification)
//! and [`token`] (ES256 JWTs and the OPA policies).

pub mod id;
pub mod stream;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod token;
pub mod workload;
pub mod x509;

use std::{io, sync::Arc, time::Duration, time::SystemTime};

use futures::{Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tracing::warn;
use xcnf_proto::nsm::connection::Path;

pub use id::{SpiffeId, TrustDomain};
pub use stream::{SecureConnectInfo, SecureStream};
pub use tls::{Authorizer, PeerId, SpiffeTls, TlsError};
pub use token::{Token, TokenError};
pub use workload::{WorkloadError, X509Context, X509Source, X509Svid};

/// How long an accepted connection may take to finish its TLS handshake: a
/// peer that connects and stays silent must not hold a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("NSM security: the peer is unknown (no TLS peer), so its tokens cannot be checked")]
    NoPeer,
}

/// How the agent secures NSM, from its command line / environment.
#[derive(Clone, Debug)]
pub struct SecurityOptions {
    /// No mTLS and no tokens (labs only). Off by default.
    pub insecure: bool,
    /// The Workload API socket (`unix:///...`); `None` reads
    /// `SPIFFE_ENDPOINT_SOCKET`.
    pub spiffe_endpoint: Option<String>,
    /// How long to wait for the first SVID before giving up.
    pub first_svid_wait: Duration,
    /// NSM's MaxTokenLifetime.
    pub max_token_lifetime: Duration,
    /// Which peers to accept; NSM accepts any ID with a valid chain.
    pub authorizer: Authorizer,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            spiffe_endpoint: None,
            first_svid_wait: workload::DEFAULT_FIRST_SVID_WAIT,
            max_token_lifetime: token::DEFAULT_MAX_TOKEN_LIFETIME,
            authorizer: Authorizer::Any,
        }
    }
}

/// SPIFFE mode: an X.509 source, TLS configs over it, and the token lifetime.
#[derive(Debug)]
pub struct Spiffe {
    source: X509Source,
    tls: SpiffeTls,
    max_token_lifetime: Duration,
}

/// How NSM connections are secured.
#[derive(Clone, Debug)]
pub enum Security {
    /// mTLS with SVIDs from the Workload API and signed path tokens.
    Spiffe(Arc<Spiffe>),
    /// Plain connections and no tokens. Only for labs: any local process
    /// can then impersonate nsmgr or a client.
    Insecure,
}

impl Security {
    /// Builds the mode `opts` asks for; in SPIFFE mode this waits for the
    /// first SVID (and fails with the Workload API's last error if none
    /// arrives in time).
    pub async fn from_options(opts: SecurityOptions) -> Result<Self, SecurityError> {
        if opts.insecure {
            return Ok(Self::insecure());
        }
        let source = match &opts.spiffe_endpoint {
            Some(endpoint) => X509Source::connect(endpoint, opts.first_svid_wait).await?,
            None => X509Source::from_env(opts.first_svid_wait).await?,
        };
        Self::spiffe_with_lifetime(source, opts.authorizer, opts.max_token_lifetime)
    }

    /// SPIFFE mode with NSM's default token lifetime.
    pub fn spiffe(source: X509Source, authorizer: Authorizer) -> Result<Self, SecurityError> {
        Self::spiffe_with_lifetime(source, authorizer, token::DEFAULT_MAX_TOKEN_LIFETIME)
    }

    pub fn spiffe_with_lifetime(
        source: X509Source,
        authorizer: Authorizer,
        max_token_lifetime: Duration,
    ) -> Result<Self, SecurityError> {
        let tls = SpiffeTls::new(&source, authorizer)?;
        Ok(Self::Spiffe(Arc::new(Spiffe {
            source,
            tls,
            max_token_lifetime,
        })))
    }

    /// Insecure mode; says so loudly, since it is never right in production.
    pub fn insecure() -> Self {
        warn!(
            "NSM SECURITY IS OFF (insecure: true): no mTLS and no path tokens; any local process can impersonate NSM peers. Use only in labs."
        );
        Self::Insecure
    }

    pub fn is_insecure(&self) -> bool {
        matches!(self, Self::Insecure)
    }

    /// The current SVID's SPIFFE ID (`None` when insecure).
    pub fn own_id(&self) -> Option<SpiffeId> {
        match self {
            Self::Spiffe(s) => Some(s.source.current().svid.id().clone()),
            Self::Insecure => None,
        }
    }

    /// Client side of a new connection: TLS handshake (or pass-through).
    pub async fn connect<S>(
        &self,
        io: S,
    ) -> Result<(SecureStream<S>, Option<PeerId>), SecurityError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match self {
            Self::Spiffe(s) => {
                let (tls, peer) = s.tls.connect(io).await?;
                Ok((SecureStream::client(tls, peer.clone()), Some(peer)))
            }
            Self::Insecure => Ok((SecureStream::plain(io), None)),
        }
    }

    /// Server side of an accepted connection.
    pub async fn accept<S>(&self, io: S) -> Result<(SecureStream<S>, Option<PeerId>), SecurityError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match self {
            Self::Spiffe(s) => {
                let (tls, peer) = s.tls.accept(io).await?;
                Ok((SecureStream::server(tls, peer.clone()), Some(peer)))
            }
            Self::Insecure => Ok((SecureStream::plain(io), None)),
        }
    }

    /// Secures every connection from `raw` (a listener's accepted streams)
    /// for a tonic server (`serve_with_incoming`). Handshakes run
    /// concurrently; a peer that fails one is logged and dropped, so one bad
    /// client cannot stall or stop the server. Accept errors pass through.
    pub fn incoming<St, S>(
        &self,
        raw: St,
    ) -> impl Stream<Item = io::Result<SecureStream<S>>> + Send + 'static
    where
        St: Stream<Item = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel(16);
        let security = self.clone();
        tokio::spawn(async move {
            let mut raw = std::pin::pin!(raw);
            loop {
                let next = tokio::select! {
                    () = tx.closed() => return,
                    next = raw.next() => next,
                };
                match next {
                    None => return,
                    Some(Err(e)) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(io)) => {
                        let (tx, security) = (tx.clone(), security.clone());
                        tokio::spawn(async move {
                            let accepted =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, security.accept(io))
                                    .await
                                    .unwrap_or(Err(SecurityError::HandshakeTimeout(
                                        HANDSHAKE_TIMEOUT,
                                    )));
                            match accepted {
                                Ok((stream, _)) => {
                                    let _ = tx.send(Ok(stream)).await;
                                }
                                Err(e) => warn!(error = %e, "NSM connection refused"),
                            }
                        });
                    }
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// Our token for a call to, or a reply to, `peer` (`None` when insecure).
    pub fn sign_token(&self, peer: Option<&PeerId>) -> Result<Option<Token>, SecurityError> {
        match self {
            Self::Spiffe(s) => {
                let ctx = s.source.current();
                Ok(Some(token::sign(
                    &ctx.svid,
                    peer,
                    s.max_token_lifetime,
                    SystemTime::now(),
                )?))
            }
            Self::Insecure => Ok(None),
        }
    }

    /// This hop's token for a call to, or a reply to, `peer`, as the NSM
    /// code puts it in the path and the call metadata. Insecure mode has an
    /// empty token that still expires after MaxTokenLifetime, so paths
    /// expire and refresh on NSM's schedule either way.
    pub fn hop_token(&self, peer: Option<&PeerId>) -> Result<Token, SecurityError> {
        Ok(self.sign_token(peer)?.unwrap_or_else(|| Token {
            jwt: String::new(),
            expires: SystemTime::now() + token::DEFAULT_MAX_TOKEN_LIFETIME,
        }))
    }

    /// The server policies on a Request's path (after `updatetoken`); a
    /// no-op when insecure.
    pub fn check_server_path(
        &self,
        path: &Path,
        peer: Option<&PeerId>,
    ) -> Result<(), SecurityError> {
        match self {
            Self::Spiffe(_) => {
                let peer = peer.ok_or(SecurityError::NoPeer)?;
                Ok(token::check_server_path(path, peer, SystemTime::now())?)
            }
            Self::Insecure => Ok(()),
        }
    }

    /// The client policies on a returned Connection's path; a no-op when
    /// insecure.
    pub fn check_client_path(
        &self,
        path: &Path,
        peer: Option<&PeerId>,
    ) -> Result<(), SecurityError> {
        match self {
            Self::Spiffe(_) => {
                let peer = peer.ok_or(SecurityError::NoPeer)?;
                Ok(token::check_client_path(path, peer, SystemTime::now())?)
            }
            Self::Insecure => Ok(()),
        }
    }
}
