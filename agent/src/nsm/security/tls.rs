//! mTLS with X.509-SVIDs, the way NSM's go-spiffe `tlsconfig.MTLS*Config`
//! does it: both sides present their SVID, each verifies the other's chain
//! against the bundle of the peer's trust domain and authorizes the peer by
//! its SPIFFE ID (URI SAN), never by host name, so any SNI works.
//!
//! Certificates and bundles are read from the source's watch channel at
//! every handshake, so rotations apply to new connections without rebuilding
//! configs. Generic over the IO type so it stacks on grpcfd or a plain unix
//! stream alike.

use std::{fmt, sync::Arc, time::SystemTime};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ClientHello, ResolvesServerCert,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::{
    id::{SpiffeId, TrustDomain},
    workload::{X509Context, X509Source},
    x509::{self, CertError, PublicKey},
};

/// The SNI sent to servers: NSM servers ignore it (peers are verified by
/// SPIFFE ID), but TLS needs some name.
const SNI: &str = "localhost";

/// gRPC over TLS negotiates HTTP/2 by ALPN; grpc-go refuses TLS peers
/// without it.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("TLS handshake: refused the peer: {0}")]
    Refused(String),
    #[error("peer certificate: {0}")]
    PeerCert(#[from] CertError),
    #[error("peer sent no certificate")]
    NoPeerCert,
    #[error("peer {0} is from trust domain {1}, for which there is no bundle")]
    UnknownTrustDomain(SpiffeId, TrustDomain),
    #[error("peer {id}: certificate chain does not verify against the {td} bundle: {reason}")]
    Chain {
        id: SpiffeId,
        td: TrustDomain,
        reason: String,
    },
    #[error("peer {id} is not authorized ({authorizer})")]
    Unauthorized { id: SpiffeId, authorizer: String },
}

/// Which peer SPIFFE IDs are accepted once the chain verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorizer {
    /// Any ID with a verified chain (NSM's default, `tlsconfig.AuthorizeAny()`).
    Any,
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
    /// Exactly this ID.
    Exact(SpiffeId),
    /// One of these IDs.
    OneOf(Vec<SpiffeId>),
}

impl Authorizer {
    pub fn authorize(&self, id: &SpiffeId) -> Result<(), TlsError> {
        let ok = match self {
            Authorizer::Any => true,
            Authorizer::MemberOf(td) => id.is_member_of(td),
            Authorizer::Exact(want) => id == want,
            Authorizer::OneOf(ids) => ids.contains(id),
        };
        if ok {
            Ok(())
        } else {
            Err(TlsError::Unauthorized {
                id: id.clone(),
                authorizer: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorizer::Any => f.write_str("any ID"),
            Authorizer::MemberOf(td) => write!(f, "members of {td} only"),
            Authorizer::Exact(id) => write!(f, "only {id}"),
            Authorizer::OneOf(ids) => {
                f.write_str("one of ")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                Ok(())
            }
        }
    }
}

/// The verified peer of a connection: who it is, and what its path tokens
/// must be checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerId {
    pub id: SpiffeId,
    /// The leaf's public key: the peer's path tokens verify with it.
    pub public_key: PublicKey,
    /// The leaf's NotAfter: tokens for this peer must not outlive it.
    pub not_after: SystemTime,
}

impl PeerId {
    fn from_certs(certs: Option<&[CertificateDer<'_>]>) -> Result<Self, TlsError> {
        let leaf = certs.and_then(|c| c.first()).ok_or(TlsError::NoPeerCert)?;
        let info = x509::leaf_info(leaf)?;
        Ok(Self {
            id: info.id,
            public_key: info.public_key,
            not_after: info.not_after,
        })
    }
}

/// Client and server TLS configs over one X.509 source.
#[derive(Clone)]
pub struct SpiffeTls {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for SpiffeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeTls").finish_non_exhaustive()
    }
}

impl SpiffeTls {
    pub fn new(source: &X509Source, authorizer: Authorizer) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(SpiffeVerifier {
            ctx: source.watch(),
            authorizer,
            algs: provider.signature_verification_algorithms,
        });
        let resolver = Arc::new(SvidResolver(source.watch()));
        let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];

        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(resolver.clone());
        client.alpn_protocols = vec![ALPN_H2.to_vec()];

        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        server.alpn_protocols = vec![ALPN_H2.to_vec()];

        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// The client config, for callers that drive rustls themselves.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Runs the client handshake over `io`; the server must present an
    /// authorized SVID.
    pub async fn connect<S>(&self, io: S) -> Result<(client::TlsStream<S>, PeerId), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let name = ServerName::try_from(SNI).map_err(|e| {
            TlsError::Config(rustls::Error::General(format!("server name {SNI}: {e}")))
        })?;
        let tls = TlsConnector::from(self.client.clone())
            .connect(name, io)
            .await
            .map_err(handshake_error)?;
        let peer = PeerId::from_certs(tls.get_ref().1.peer_certificates())?;
        Ok((tls, peer))
    }

    /// Runs the server handshake over `io`; the client must present an
    /// authorized SVID.
    pub async fn accept<S>(&self, io: S) -> Result<(server::TlsStream<S>, PeerId), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let tls = TlsAcceptor::from(self.server.clone())
            .accept(io)
            .await
            .map_err(handshake_error)?;
        let peer = PeerId::from_certs(tls.get_ref().1.peer_certificates())?;
        Ok((tls, peer))
    }
}

/// Presents the current SVID, on either side of a handshake.
#[derive(Debug)]
struct SvidResolver(watch::Receiver<Arc<X509Context>>);

impl SvidResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.borrow().svid.certified_key()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a peer SVID for either side of a handshake.
#[derive(Debug)]
struct SpiffeVerifier {
    ctx: watch::Receiver<Arc<X509Context>>,
    authorizer: Authorizer,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), TlsError> {
        let info = x509::leaf_info(end_entity)?;
        let td = info.id.trust_domain();
        let ctx = self.ctx.borrow().clone();
        let bundle = ctx
            .bundles
            .get(&td)
            .ok_or_else(|| TlsError::UnknownTrustDomain(info.id.clone(), td.clone()))?;
        let chain_err = |reason: String| TlsError::Chain {
            id: info.id.clone(),
            td: td.clone(),
            reason,
        };
        let anchors = bundle
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map_err(|e| chain_err(format!("bundle certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ee =
            webpki::EndEntityCert::try_from(end_entity).map_err(|e| chain_err(e.to_string()))?;
        ee.verify_for_usage(
            self.algs.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| chain_err(e.to_string()))?;
        self.authorizer.authorize(&info.id)
    }
}

/// Our verifier's reason when it refused the peer (rustls only formats it
/// with Debug), else the handshake's own error.
fn handshake_error(e: std::io::Error) -> TlsError {
    let ours = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                Some(other.0.to_string())
            }
            _ => None,
        });
    match ours {
        Some(reason) => TlsError::Refused(reason),
        None => TlsError::Handshake(e),
    }
}

/// Carries our own error through rustls, so the handshake error names the
/// peer and the reason.
fn to_rustls(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(to_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
