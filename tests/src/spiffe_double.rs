//! A SPIFFE Workload API test double: SPIRE's agent cannot run in the test
//! suite, so this serves the real protocol (`/SpiffeWorkloadAPI/FetchX509SVID`
//! on a unix socket, refusing calls without the `workload.spiffe.io: true`
//! header with InvalidArgument as SPIRE does, PermissionDenied while no
//! identity is issued) with X.509-SVIDs from a test CA made at run time.
//! SVIDs follow SPIRE's profile: ECDSA P-256 keys, one URI SAN, CA:false,
//! digitalSignature, serverAuth + clientAuth.
//!
//! Controls: issue an SVID for any SPIFFE ID and lifetime, rotate (push a
//! new SVID on every open stream), serve an SVID from a second, untrusted CA
//! (the bundle stays the trusted one), federate with another CA's trust
//! domain, and break every open stream (as an agent restart does) to
//! exercise reconnects.

use std::{
    collections::HashMap,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::Stream;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use tokio::{net::UnixListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use xcnf_proto::spiffe::workload::{
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
    spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer},
};

use crate::netns::unique_prefix;

/// The header SPIRE requires on every Workload API call.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// A certificate authority for one trust domain.
pub struct TestCa {
    trust_domain: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// An issued X.509-SVID, in the Workload API's encoding.
#[derive(Clone, Debug)]
pub struct TestSvid {
    pub spiffe_id: String,
    /// DER leaf (no intermediates: the CA signs leaves directly, as SPIRE's
    /// default setup does).
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub not_after: SystemTime,
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl TestCa {
    /// A new self-signed CA for `trust_domain` (e.g. `example.org`).
    pub fn new(trust_domain: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "xcnf test SPIFFE CA");
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .expect("CA URI"),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + Duration::from_secs(24 * 3600));
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        Self {
            trust_domain: trust_domain.to_owned(),
            issuer,
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate (the trust bundle), DER.
    pub fn bundle_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// Issues an X.509-SVID for `spiffe_id`, valid from an hour ago for
    /// `lifetime` from now.
    pub fn issue(&self, spiffe_id: &str, lifetime: Duration) -> TestSvid {
        let now = SystemTime::now();
        self.issue_valid(spiffe_id, now - Duration::from_secs(3600), now + lifetime)
    }

    /// Issues an X.509-SVID valid from `not_before` to `not_after` (either
    /// may be in the past, for expiry tests).
    pub fn issue_valid(
        &self,
        spiffe_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> TestSvid {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("SVID key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("SVID params");
        params.is_ca = IsCa::ExplicitNoCa;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "xcnf test SPIFFE workload");
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.try_into().expect("SPIFFE ID as IA5 string"),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(not_before);
        // X.509 times have whole seconds.
        let not_after_secs = offset(not_after)
            .replace_nanosecond(0)
            .expect("whole second");
        params.not_after = not_after_secs;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("SVID certificate");
        TestSvid {
            spiffe_id: spiffe_id.to_owned(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            not_after: not_after_secs.into(),
        }
    }
}

/// What the double serves now.
#[derive(Debug)]
struct Served {
    svid: TestSvid,
    lifetime: Duration,
}

#[derive(Debug)]
struct Shared {
    ca: Arc<TestCa>,
    /// The message every open stream sends; `None` = no identity issued.
    current: watch::Sender<Option<X509svidResponse>>,
    /// Bumped by [`SpiffeDouble::break_streams`]: open streams end with an error.
    generation: watch::Sender<u64>,
    served: Mutex<Option<Served>>,
    /// Foreign trust domains' bundles, keyed `spiffe://<td>`.
    federated: Mutex<HashMap<String, Vec<u8>>>,
}

impl Shared {
    fn publish(&self, svid: TestSvid, lifetime: Duration) {
        let resp = X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.cert_der.clone(),
                x509_svid_key: svid.key_der.clone(),
                bundle: self.ca.bundle_der(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: self
                .federated
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) = Some(Served { svid, lifetime });
        self.current.send_replace(Some(resp));
    }
}

/// The Workload API server on a unix socket in a temporary directory,
/// removed (and the server stopped) on drop.
#[derive(Debug)]
pub struct SpiffeDouble {
    dir: PathBuf,
    socket: PathBuf,
    shared: Arc<Shared>,
    untrusted: TestCa,
    server: JoinHandle<()>,
}

type SvidStream = Pin<Box<dyn Stream<Item = Result<X509svidResponse, Status>> + Send>>;
type BundleStream = Pin<Box<dyn Stream<Item = Result<X509BundlesResponse, Status>> + Send>>;

struct Service(Arc<Shared>);

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// Yields `map(current)` now and on every change, until the generation
/// changes (then an Unavailable error, as a restarting agent's streams end).
fn follow<T: Send + 'static>(
    shared: &Shared,
    map: fn(&X509svidResponse, &TestCa) -> T,
    ca: Arc<TestCa>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let mut current = shared.current.subscribe();
    current.mark_changed();
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    Box::pin(futures::stream::unfold(
        Some((current, generation)),
        move |state| {
            let ca = ca.clone();
            async move {
                let (mut current, mut generation) = state?;
                loop {
                    tokio::select! {
                        changed = current.changed() => {
                            changed.ok()?;
                            let msg = current.borrow_and_update().as_ref().map(|r| map(r, &ca));
                            if let Some(msg) = msg {
                                return Some((Ok(msg), Some((current, generation))));
                            }
                        }
                        _ = generation.changed() => {
                            return Some((Err(Status::unavailable("workload API restarting")), None));
                        }
                    }
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = SvidStream;
    type FetchX509BundlesStream = BundleStream;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<SvidStream>, Status> {
        check_header(&req)?;
        if self.0.current.borrow().is_none() {
            return Err(Status::permission_denied("no identity issued"));
        }
        Ok(Response::new(follow(
            &self.0,
            |r, _| r.clone(),
            self.0.ca.clone(),
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<BundleStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(follow(
            &self.0,
            |_, ca| X509BundlesResponse {
                crl: Vec::new(),
                bundles: [(format!("spiffe://{}", ca.trust_domain()), ca.bundle_der())].into(),
            },
            self.0.ca.clone(),
        )))
    }
}

impl SpiffeDouble {
    /// Serves SVIDs for `spiffe_id` from a new CA for its trust domain.
    pub async fn start(spiffe_id: &str, lifetime: Duration) -> Self {
        let td = spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|r| r.split('/').next())
            .expect("spiffe://<td>/...");
        let double = Self::with_ca(Arc::new(TestCa::new(td))).await;
        double.issue(spiffe_id, lifetime);
        double
    }

    /// Serves SVIDs from `ca` (shared with other doubles: workloads of one
    /// trust domain); no identity until [`SpiffeDouble::issue`].
    pub async fn with_ca(ca: Arc<TestCa>) -> Self {
        let dir = std::env::temp_dir().join(unique_prefix("xcnf-spiffe"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind Workload API socket");
        let untrusted = TestCa::new(ca.trust_domain());
        let shared = Arc::new(Shared {
            ca,
            current: watch::channel(None).0,
            generation: watch::channel(0).0,
            served: Mutex::new(None),
            federated: Mutex::new(HashMap::new()),
        });
        let service = SpiffeWorkloadApiServer::new(Service(shared.clone()));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Self {
            dir,
            socket,
            shared,
            untrusted,
            server,
        }
    }

    /// `unix:///...`, the form of `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn ca(&self) -> &Arc<TestCa> {
        &self.shared.ca
    }

    /// The CA the served bundle does not contain.
    pub fn untrusted_ca(&self) -> &TestCa {
        &self.untrusted
    }

    /// Issues an SVID from the trusted CA and pushes it on every stream.
    pub fn issue(&self, spiffe_id: &str, lifetime: Duration) -> TestSvid {
        let svid = self.shared.ca.issue(spiffe_id, lifetime);
        self.shared.publish(svid.clone(), lifetime);
        svid
    }

    /// Pushes a given SVID (with the trusted bundle).
    pub fn serve(&self, svid: TestSvid) {
        let lifetime = svid
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        self.shared.publish(svid, lifetime);
    }

    /// A new key and certificate for the current identity, pushed on every
    /// stream, as SPIRE rotates.
    pub fn rotate(&self) -> TestSvid {
        let (id, lifetime) = {
            let served = self.shared.served.lock().unwrap_or_else(|e| e.into_inner());
            let served = served.as_ref().expect("rotate: nothing issued yet");
            (served.svid.spiffe_id.clone(), served.lifetime)
        };
        self.issue(&id, lifetime)
    }

    /// Serves an SVID for `spiffe_id` signed by the untrusted CA; the
    /// bundle stays the trusted CA's.
    pub fn serve_untrusted(&self, spiffe_id: &str, lifetime: Duration) -> TestSvid {
        let svid = self.untrusted.issue(spiffe_id, lifetime);
        self.shared.publish(svid.clone(), lifetime);
        svid
    }

    /// Adds `ca`'s trust domain as a federated bundle and pushes the
    /// current SVID again with it.
    pub fn federate(&self, ca: &TestCa) {
        self.shared
            .federated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("spiffe://{}", ca.trust_domain()), ca.bundle_der());
        let served = self
            .shared
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| (s.svid.clone(), s.lifetime));
        if let Some((svid, lifetime)) = served {
            self.shared.publish(svid, lifetime);
        }
    }

    /// Ends every open stream with Unavailable (the server keeps listening).
    pub fn break_streams(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for SpiffeDouble {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
