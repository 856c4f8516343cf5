//! The SPIFFE Workload API client: an always-current X.509-SVID and its trust
//! bundles from `SPIFFE_ENDPOINT_SOCKET`.
//!
//! SPIRE rotates SVIDs long before they expire and pushes each new one on the
//! open `FetchX509SVID` stream, so the source keeps that stream open and
//! publishes every update on a watch channel: TLS configs read the channel
//! for each new handshake, so rotation needs no restart. A lost stream (agent
//! restart) is re-opened with backoff while the last SVID stays in use.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
};
use tokio::{
    sync::watch,
    time::{Instant, sleep, sleep_until, timeout_at},
};
use tonic::{Streaming, metadata::MetadataValue, transport::Endpoint};
use tracing::{info, warn};
use xcnf_proto::spiffe::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};

use super::{
    id::{IdError, SpiffeId, TrustDomain},
    x509::{self, CertError, PublicKey},
};

/// The environment variable naming the Workload API socket.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The metadata every Workload API call must carry (value `true`): it proves
/// the caller is a gRPC client and not a browser tricked into a request.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// How long the first SVID may take when nothing else is configured.
pub const DEFAULT_FIRST_SVID_WAIT: Duration = Duration::from_secs(30);

/// Upper bound on the first-SVID wait.
const MAX_FIRST_SVID_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Backoff between reconnects after the stream is lost.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{ENDPOINT_ENV} is not set")]
    EnvUnset,
    #[error("SPIFFE endpoint {0:?}: only unix sockets are supported (unix:///path or unix:/path)")]
    Endpoint(String),
    #[error("SPIFFE Workload API at {endpoint}: connect: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("SPIFFE Workload API at {endpoint}: FetchX509SVID: {status}")]
    Fetch {
        endpoint: String,
        status: Box<tonic::Status>,
    },
    #[error("SPIFFE Workload API at {endpoint}: FetchX509SVID stream ended")]
    StreamEnded { endpoint: String },
    #[error(
        "SPIFFE Workload API at {endpoint}: no valid X.509-SVID within {wait:?} (last problem: {last})"
    )]
    NoSvid {
        endpoint: String,
        wait: Duration,
        last: String,
    },
    #[error("X509SVIDResponse.{field}: {reason}")]
    Malformed { field: String, reason: String },
}

fn malformed(field: impl Into<String>, reason: impl ToString) -> WorkloadError {
    WorkloadError::Malformed {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// The workload's own identity: certificate chain and key.
#[derive(Debug)]
pub struct X509Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    /// For TLS: built once per SVID so a handshake only clones an Arc.
    certified_key: Arc<CertifiedKey>,
    /// For ES256 path tokens; `None` when the SVID key is not P-256.
    jwt_key: Option<Arc<EcdsaKeyPair>>,
}

impl X509Svid {
    /// Builds an SVID from its chain (leaf first) and PKCS#8 key, checking
    /// that the leaf is an X.509-SVID and that the key belongs to it.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        pkcs8_key: Vec<u8>,
    ) -> Result<Self, WorkloadError> {
        let leaf = chain
            .first()
            .ok_or_else(|| malformed("svids[0].x509_svid", CertError::Empty))?;
        let info = x509::leaf_info(leaf).map_err(|e| malformed("svids[0].x509_svid", e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key.clone()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| malformed("svids[0].x509_svid_key", e))?;
        let jwt_key = match &info.public_key {
            PublicKey::EcP256(point) => {
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8_key,
                    &SystemRandom::new(),
                )
                .map_err(|e| malformed("svids[0].x509_svid_key", e))?;
                if pair.public_key().as_ref() != point.as_slice() {
                    return Err(malformed(
                        "svids[0].x509_svid_key",
                        "the private key does not belong to the leaf certificate",
                    ));
                }
                Some(Arc::new(pair))
            }
            PublicKey::Other(_) => None,
        };
        let certified_key = Arc::new(CertifiedKey::new(chain.clone(), signing_key));
        Ok(Self {
            id: info.id,
            chain,
            not_after: info.not_after,
            certified_key,
            jwt_key,
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified_key.clone()
    }

    pub(crate) fn jwt_key(&self) -> Option<&EcdsaKeyPair> {
        self.jwt_key.as_deref()
    }
}

/// CA certificates per trust domain: the own domain's bundle plus federated
/// ones. A peer is checked against its own trust domain's bundle only.
#[derive(Clone, Debug, Default)]
pub struct BundleSet {
    bundles: HashMap<TrustDomain, Vec<CertificateDer<'static>>>,
}

impl BundleSet {
    pub fn insert(&mut self, td: TrustDomain, certs: Vec<CertificateDer<'static>>) {
        self.bundles.insert(td, certs);
    }

    pub fn get(&self, td: &TrustDomain) -> Option<&[CertificateDer<'static>]> {
        self.bundles.get(td).map(Vec::as_slice)
    }
}

/// One Workload API update: the SVID in use and the bundles to verify peers with.
#[derive(Debug)]
pub struct X509Context {
    pub svid: X509Svid,
    pub bundles: BundleSet,
}

impl X509Context {
    /// Validates a `FetchX509SVID` response; the first SVID is the default
    /// identity, as in go-spiffe.
    pub fn from_response(resp: X509svidResponse) -> Result<Self, WorkloadError> {
        let Some(first) = resp.svids.into_iter().next() else {
            return Err(malformed("svids", "empty"));
        };
        let declared =
            SpiffeId::parse(&first.spiffe_id).map_err(|e| malformed("svids[0].spiffe_id", e))?;
        let chain =
            x509::split_certs(&first.x509_svid).map_err(|e| malformed("svids[0].x509_svid", e))?;
        let svid = X509Svid::from_der(chain, first.x509_svid_key)?;
        if svid.id != declared {
            return Err(malformed(
                "svids[0].spiffe_id",
                format!("{declared} but the certificate says {}", svid.id),
            ));
        }
        let mut bundles = BundleSet::default();
        for (key, der) in resp.federated_bundles {
            let field = format!("federated_bundles[{key:?}]");
            let td = TrustDomain::parse(&key).map_err(|e: IdError| malformed(&field, e))?;
            bundles.insert(
                td,
                x509::split_certs(&der).map_err(|e| malformed(&field, e))?,
            );
        }
        let own = x509::split_certs(&first.bundle).map_err(|e| malformed("svids[0].bundle", e))?;
        bundles.insert(svid.id.trust_domain(), own);
        Ok(Self { svid, bundles })
    }
}

/// The always-current SVID and bundles. Cloning shares the one stream.
#[derive(Clone, Debug)]
pub struct X509Source {
    rx: watch::Receiver<Arc<X509Context>>,
    /// Only for [`X509Source::fixed`]: keeps the channel open so receivers'
    /// `changed()` waits instead of failing.
    _fixed: Option<Arc<watch::Sender<Arc<X509Context>>>>,
}

impl X509Source {
    /// Connects to the endpoint in `SPIFFE_ENDPOINT_SOCKET`.
    pub async fn from_env(wait: Duration) -> Result<Self, WorkloadError> {
        let endpoint = std::env::var(ENDPOINT_ENV).map_err(|_| WorkloadError::EnvUnset)?;
        Self::connect(&endpoint, wait).await
    }

    /// Connects to the Workload API at `endpoint` (`unix:///path`) and waits
    /// up to `wait` for a valid SVID (retrying connects meanwhile, since the
    /// SPIRE agent often starts alongside the workload); then follows the
    /// stream in the background for as long as anyone holds the source or a
    /// TLS config made from it.
    pub async fn connect(endpoint: &str, wait: Duration) -> Result<Self, WorkloadError> {
        let socket = socket_path(endpoint)?;
        // Far beyond any sensible wait, and safe from Instant overflow.
        let deadline = Instant::now() + wait.min(MAX_FIRST_SVID_WAIT);
        let mut backoff = BACKOFF_MIN;
        let mut last = String::from("none (timed out)");
        let (stream, first) = loop {
            match timeout_at(deadline, open(endpoint, &socket)).await {
                Ok(Ok(opened)) => break opened,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => {}
            }
            if Instant::now() + backoff >= deadline {
                return Err(WorkloadError::NoSvid {
                    endpoint: endpoint.to_owned(),
                    wait,
                    last,
                });
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        info!(id = %first.svid.id(), %endpoint, "SPIFFE X.509-SVID received");
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(follow(endpoint.to_owned(), socket, stream, tx));
        Ok(Self { rx, _fixed: None })
    }

    /// A source that never changes (material obtained elsewhere, tests).
    pub fn fixed(ctx: X509Context) -> Self {
        let (tx, rx) = watch::channel(Arc::new(ctx));
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    pub fn current(&self) -> Arc<X509Context> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every rotation.
    pub fn watch(&self) -> watch::Receiver<Arc<X509Context>> {
        self.rx.clone()
    }
}

/// `unix:///path` (SPIFFE's form) or `unix:/path` to the socket path.
fn socket_path(endpoint: &str) -> Result<String, WorkloadError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .filter(|p| p.starts_with('/') && p.len() > 1)
        .ok_or_else(|| WorkloadError::Endpoint(endpoint.to_owned()))?;
    Ok(path.to_owned())
}

/// Opens `FetchX509SVID` and reads until the first valid update.
async fn open(
    endpoint: &str,
    socket: &str,
) -> Result<(Streaming<X509svidResponse>, X509Context), WorkloadError> {
    let connect_err = |reason: String| WorkloadError::Connect {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let channel = Endpoint::from_shared(format!("unix:{socket}"))
        .map_err(|e| connect_err(e.to_string()))?
        .connect()
        .await
        .map_err(|e| connect_err(root_cause(&e)))?;
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut()
        .insert(SECURITY_HEADER, MetadataValue::from_static("true"));
    let mut stream = SpiffeWorkloadApiClient::new(channel)
        .fetch_x509svid(req)
        .await
        .map_err(|status| WorkloadError::Fetch {
            endpoint: endpoint.to_owned(),
            status: Box::new(status),
        })?
        .into_inner();
    loop {
        match next_update(endpoint, &mut stream).await? {
            Ok(ctx) => return Ok((stream, ctx)),
            Err(e) => warn!(%endpoint, error = %e, "ignoring invalid X.509-SVID update"),
        }
    }
}

/// The next message: outer error = the stream is gone, inner = a bad update.
async fn next_update(
    endpoint: &str,
    stream: &mut Streaming<X509svidResponse>,
) -> Result<Result<X509Context, WorkloadError>, WorkloadError> {
    match stream.message().await {
        Ok(Some(resp)) => Ok(X509Context::from_response(resp)),
        Ok(None) => Err(WorkloadError::StreamEnded {
            endpoint: endpoint.to_owned(),
        }),
        Err(status) => Err(WorkloadError::Fetch {
            endpoint: endpoint.to_owned(),
            status: Box::new(status),
        }),
    }
}

/// Publishes every update; re-opens the stream when it is lost; stops when
/// nobody holds a receiver any more.
async fn follow(
    endpoint: String,
    socket: String,
    mut stream: Streaming<X509svidResponse>,
    tx: watch::Sender<Arc<X509Context>>,
) {
    loop {
        let lost = loop {
            tokio::select! {
                () = tx.closed() => return,
                update = next_update(&endpoint, &mut stream) => match update {
                    Ok(Ok(ctx)) => publish(&tx, ctx),
                    Ok(Err(e)) => warn!(%endpoint, error = %e, "ignoring invalid X.509-SVID update"),
                    Err(e) => break e,
                },
            }
        };
        warn!(%endpoint, error = %lost, "SPIFFE Workload API stream lost; reconnecting, the current SVID stays in use");
        let mut backoff = BACKOFF_MIN;
        stream = loop {
            let wake = Instant::now() + backoff;
            tokio::select! {
                () = tx.closed() => return,
                opened = open(&endpoint, &socket) => match opened {
                    Ok((s, ctx)) => {
                        publish(&tx, ctx);
                        break s;
                    }
                    Err(e) => warn!(%endpoint, error = %e, "SPIFFE Workload API reconnect failed"),
                },
            }
            tokio::select! {
                () = tx.closed() => return,
                () = sleep_until(wake) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
    }
}

fn publish(tx: &watch::Sender<Arc<X509Context>>, ctx: X509Context) {
    info!(id = %ctx.svid.id(), "SPIFFE X.509-SVID updated");
    tx.send_replace(Arc::new(ctx));
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root.to_string()
}

#[cfg(test)]
mod tests {
    use xcnf_proto::spiffe::workload::X509svid;

    use super::*;
    use crate::nsm::security::testutil;

    const ID: &str = "spiffe://example.org/nsc";

    fn response(id: &str, cert: &[u8], key: &[u8], bundle: &[u8]) -> X509svidResponse {
        X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: id.into(),
                x509_svid: cert.to_vec(),
                x509_svid_key: key.to_vec(),
                bundle: bundle.to_vec(),
                hint: String::new(),
            }],
            ..Default::default()
        }
    }

    fn err(resp: X509svidResponse) -> String {
        match X509Context::from_response(resp) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn response_validation_names_the_field() {
        let (cert, key) = testutil::leaf(&[ID], Duration::from_secs(3600));
        let (ca, other_key) = testutil::leaf(&["spiffe://example.org"], Duration::from_secs(3600));
        let ctx = X509Context::from_response(response(ID, &cert, &key, &ca))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ctx.svid.id().as_str(), ID);
        assert!(ctx.svid.jwt_key().is_some());
        assert!(
            ctx.bundles
                .get(&TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}")))
                .is_some()
        );

        assert_eq!(
            err(X509svidResponse::default()),
            "X509SVIDResponse.svids: empty"
        );
        assert!(
            err(response("spiffe://example.org/x", &cert, &key, &ca))
                .starts_with("X509SVIDResponse.svids[0].spiffe_id: spiffe://example.org/x but the certificate says")
        );
        assert_eq!(
            err(response(ID, &cert, &other_key, &ca)),
            "X509SVIDResponse.svids[0].x509_svid_key: the private key does not belong to the leaf certificate"
        );
        assert_eq!(
            err(response(ID, &cert, &key, &[])),
            "X509SVIDResponse.svids[0].bundle: no certificates"
        );
        assert!(
            err(response(ID, b"junk", &key, &ca))
                .starts_with("X509SVIDResponse.svids[0].x509_svid: not a DER")
        );
        let (two, two_key) =
            testutil::leaf(&[ID, "spiffe://example.org/y"], Duration::from_secs(3600));
        assert_eq!(
            err(response(ID, &two, &two_key, &ca)),
            "X509SVIDResponse.svids[0].x509_svid: an X.509-SVID has exactly one URI SAN, this certificate has 2"
        );
        let mut fed = response(ID, &cert, &key, &ca);
        fed.federated_bundles
            .insert("spiffe://Other.org".into(), ca.clone());
        assert!(err(fed).starts_with("X509SVIDResponse.federated_bundles[\"spiffe://Other.org\"]"));
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            socket_path("unix:///run/spire/sockets/agent.sock")
                .ok()
                .as_deref(),
            Some("/run/spire/sockets/agent.sock")
        );
        assert_eq!(
            socket_path("unix:/tmp/a.sock").ok().as_deref(),
            Some("/tmp/a.sock")
        );
        for bad in [
            "tcp://127.0.0.1:8081",
            "/tmp/a.sock",
            "unix://",
            "unix:relative",
        ] {
            assert!(socket_path(bad).is_err(), "{bad} accepted");
        }
    }
}
