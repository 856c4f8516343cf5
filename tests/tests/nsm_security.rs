//! NSM security against the SPIFFE Workload API double: the SVID source
//! (fetch, rotation, reconnect, deadline), SPIFFE mTLS over unix sockets
//! (peer IDs, untrusted CA and foreign trust domain rejected both ways,
//! authorizers, rotation for new connections), the ES256 path tokens and
//! NSM's policies (expired, forged, tampered, unchained, capped expiry), and
//! a tonic NetworkService round trip over TLS over a unix socket carrying
//! the token metadata. No root needed.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{
    Request, Response, Status,
    transport::{Endpoint, Server, Uri, server::UdsConnectInfo},
};
use xcnf_agent::nsm::security::{
    Authorizer, PeerId, SecureConnectInfo, Security, SecurityError, SecurityOptions, SpiffeId,
    Token, TokenError, TrustDomain, WorkloadError, X509Source, X509Svid,
    token::{self, DEFAULT_MAX_TOKEN_LIFETIME},
    workload::SECURITY_HEADER,
    x509,
};
use xcnf_proto::{
    nsm::{
        connection::{Connection, Path, PathSegment},
        networkservice::{
            NetworkServiceRequest,
            network_service_client::NetworkServiceClient,
            network_service_server::{NetworkService, NetworkServiceServer},
        },
    },
    spiffe::workload::{X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient},
};
use xcnf_tests::{
    netns::unique_prefix,
    spiffe_double::{SpiffeDouble, TestCa},
};

/// Guards against a hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(24 * 3600);

const NSC: &str = "spiffe://example.org/ns/default/sa/nsc";
const NSMGR: &str = "spiffe://example.org/ns/nsm-system/sa/nsmgr";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

async fn source(double: &SpiffeDouble) -> X509Source {
    X509Source::connect(&double.endpoint(), PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("X509Source: {e}"))
}

fn spiffe(source: X509Source, authorizer: Authorizer) -> Security {
    Security::spiffe(source, authorizer).unwrap_or_else(|e| panic!("Security: {e}"))
}

/// Two workloads of example.org sharing one CA, each with its own Workload API.
async fn pair() -> (SpiffeDouble, SpiffeDouble) {
    let ca = Arc::new(TestCa::new("example.org"));
    let nsc = SpiffeDouble::with_ca(ca.clone()).await;
    nsc.issue(NSC, DAY);
    let nsmgr = SpiffeDouble::with_ca(ca).await;
    nsmgr.issue(NSMGR, DAY);
    (nsc, nsmgr)
}

fn peer_of(svid: &X509Svid) -> PeerId {
    let info = x509::leaf_info(&svid.chain()[0]).unwrap_or_else(|e| panic!("{e}"));
    PeerId {
        id: info.id,
        public_key: info.public_key,
        not_after: info.not_after,
    }
}

type Side = Result<
    (
        xcnf_agent::nsm::security::SecureStream<UnixStream>,
        Option<PeerId>,
    ),
    SecurityError,
>;

/// Client and server handshakes on the two ends of a socket pair.
async fn handshake(client: &Security, server: &Security) -> (Side, Side) {
    let (a, b) = UnixStream::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
    tokio::time::timeout(PATIENCE, async {
        tokio::join!(client.connect(a), server.accept(b))
    })
    .await
    .unwrap_or_else(|_| panic!("handshake hung"))
}

/// After a handshake the verifying side refused: the other side either
/// failed too or learns it on its first read.
async fn assert_refused(side: Side) {
    if let Ok((mut stream, _)) = side {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("read hung"));
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "the refused side got data: {read:?}"
        );
    }
}

fn err_text<T>(r: Result<T, SecurityError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn workload_fetches_svid_and_bundle() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let src = source(&double).await;
    let ctx = src.current();
    assert_eq!(ctx.svid.id(), &id(NSC));
    assert_eq!(ctx.svid.chain().len(), 1);
    let bundle = ctx
        .bundles
        .get(&TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|| panic!("no example.org bundle"));
    assert_eq!(bundle[0].as_ref(), double.ca().bundle_der().as_slice());
}

#[tokio::test]
async fn workload_follows_rotation() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let src = source(&double).await;
    let mut rx = src.watch();
    let before = src.current().svid.chain()[0].clone();
    rx.mark_unchanged();
    let rotated = double.rotate();
    tokio::time::timeout(PATIENCE, rx.changed())
        .await
        .unwrap_or_else(|_| panic!("rotation not seen"))
        .unwrap_or_else(|e| panic!("{e}"));
    let after = src.current();
    assert_ne!(after.svid.chain()[0], before);
    assert_eq!(after.svid.chain()[0].as_ref(), rotated.cert_der.as_slice());
    assert_eq!(after.svid.id(), &id(NSC));
}

#[tokio::test]
async fn workload_reconnects_after_stream_loss() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let src = source(&double).await;
    let mut rx = src.watch();
    rx.mark_unchanged();
    double.break_streams();
    // The SVID stays in use while the stream is down...
    assert_eq!(src.current().svid.id(), &id(NSC));
    // ...and an SVID issued meanwhile arrives over the new stream.
    let rotated = double.rotate();
    tokio::time::timeout(PATIENCE, async {
        loop {
            rx.changed().await.unwrap_or_else(|e| panic!("{e}"));
            if rx.borrow().svid.chain()[0].as_ref() == rotated.cert_der.as_slice() {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no SVID after the stream was lost"));
}

#[tokio::test]
async fn workload_reports_missing_svid_by_deadline() {
    let double = SpiffeDouble::with_ca(Arc::new(TestCa::new("example.org"))).await;
    let err = X509Source::connect(&double.endpoint(), Duration::from_millis(700))
        .await
        .err()
        .unwrap_or_else(|| panic!("a source without an SVID"));
    assert!(matches!(err, WorkloadError::NoSvid { .. }), "{err}");
    assert!(err.to_string().contains("no identity issued"), "{err}");

    let missing = std::env::temp_dir().join(unique_prefix("xcnf-nosock"));
    let err = X509Source::connect(
        &format!("unix://{}", missing.display()),
        Duration::from_millis(300),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("a source without a socket"));
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test]
async fn workload_double_requires_the_security_header() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let path = double.endpoint().replacen("unix://", "unix:", 1);
    let channel = Endpoint::from_shared(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let status = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .err()
        .unwrap_or_else(|| panic!("served without {SECURITY_HEADER}"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn mtls_peers_see_each_others_spiffe_ids() {
    let (nsc, nsmgr) = pair().await;
    let client = spiffe(source(&nsc).await, Authorizer::Any);
    let server = spiffe(source(&nsmgr).await, Authorizer::Any);
    let (c, s) = handshake(&client, &server).await;
    let (mut c, c_peer) = c.unwrap_or_else(|e| panic!("client: {e}"));
    let (mut s, s_peer) = s.unwrap_or_else(|e| panic!("server: {e}"));
    assert_eq!(c_peer.map(|p| p.id), Some(id(NSMGR)));
    assert_eq!(s_peer.map(|p| p.id), Some(id(NSC)));
    assert_eq!(c.peer().map(|p| &p.id), Some(&id(NSMGR)));
    // The secured stream carries data both ways.
    c.write_all(b"ping").await.unwrap_or_else(|e| panic!("{e}"));
    c.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").await.unwrap_or_else(|e| panic!("{e}"));
    s.flush().await.unwrap_or_else(|e| panic!("{e}"));
    c.read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn mtls_new_connections_use_the_rotated_svid() {
    let (nsc, nsmgr) = pair().await;
    let client = spiffe(source(&nsc).await, Authorizer::Any);
    let server_src = source(&nsmgr).await;
    let mut rx = server_src.watch();
    rx.mark_unchanged();
    let server = spiffe(server_src, Authorizer::Any);
    let (c, _) = handshake(&client, &server).await;
    let first = c.unwrap_or_else(|e| panic!("{e}")).1;

    let rotated = nsmgr.rotate();
    tokio::time::timeout(PATIENCE, rx.changed())
        .await
        .unwrap_or_else(|_| panic!("rotation not seen"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (c, _) = handshake(&client, &server).await;
    let second = c.unwrap_or_else(|e| panic!("{e}")).1;
    let rotated_key = x509::leaf_info(&rotated.cert_der)
        .unwrap_or_else(|e| panic!("{e}"))
        .public_key;
    assert_eq!(second.as_ref().map(|p| &p.public_key), Some(&rotated_key));
    assert_ne!(first, second);
}

#[tokio::test]
async fn mtls_rejects_a_client_from_an_untrusted_ca() {
    let (nsc, nsmgr) = pair().await;
    nsc.serve_untrusted(NSC, DAY);
    let client = spiffe(source(&nsc).await, Authorizer::Any);
    let server = spiffe(source(&nsmgr).await, Authorizer::Any);
    let (c, s) = handshake(&client, &server).await;
    let err = err_text(s);
    assert!(
        err.contains(NSC) && err.contains("does not verify against the example.org bundle"),
        "{err}"
    );
    assert_refused(c).await;
}

#[tokio::test]
async fn mtls_rejects_a_server_from_an_untrusted_ca() {
    let (nsc, nsmgr) = pair().await;
    nsmgr.serve_untrusted(NSMGR, DAY);
    let client = spiffe(source(&nsc).await, Authorizer::Any);
    let server = spiffe(source(&nsmgr).await, Authorizer::Any);
    let (c, s) = handshake(&client, &server).await;
    let err = err_text(c);
    assert!(
        err.contains(NSMGR) && err.contains("does not verify against the example.org bundle"),
        "{err}"
    );
    assert_refused(s).await;
}

#[tokio::test]
async fn mtls_rejects_a_foreign_trust_domain_both_ways() {
    let nsc = SpiffeDouble::start(NSC, DAY).await;
    let other = SpiffeDouble::start("spiffe://other.org/nsmgr", DAY).await;
    // other.org trusts example.org, not the other way round.
    other.federate(nsc.ca());
    let example_src = source(&nsc).await;
    let example = spiffe(example_src.clone(), Authorizer::Any);
    let foreign = spiffe(source(&other).await, Authorizer::Any);
    let no_bundle = "peer spiffe://other.org/nsmgr is from trust domain other.org, for which there is no bundle";

    // example.org client, other.org server: the client refuses.
    let (c, s) = handshake(&example, &foreign).await;
    let err = err_text(c);
    assert!(err.contains(no_bundle), "{err}");
    assert_refused(s).await;

    // other.org client, example.org server: the server refuses.
    let (c, s) = handshake(&foreign, &example).await;
    let err = err_text(s);
    assert!(err.contains(no_bundle), "{err}");
    assert_refused(c).await;

    // Once example.org federates with other.org, both directions work, and
    // MemberOf still tells the domains apart.
    let mut rx = example_src.watch();
    rx.mark_unchanged();
    nsc.federate(other.ca());
    tokio::time::timeout(PATIENCE, rx.changed())
        .await
        .unwrap_or_else(|_| panic!("federated bundle not seen"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (c, s) = handshake(&foreign, &example).await;
    assert_eq!(
        s.unwrap_or_else(|e| panic!("{e}")).1.map(|p| p.id),
        Some(id("spiffe://other.org/nsmgr"))
    );
    c.unwrap_or_else(|e| panic!("{e}"));
    let members = spiffe(
        example_src,
        Authorizer::MemberOf(TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}"))),
    );
    let (c, s) = handshake(&foreign, &members).await;
    assert!(err_text(s).contains("members of example.org only"));
    assert_refused(c).await;
}

#[tokio::test]
async fn mtls_authorizers_refuse_unexpected_ids() {
    let (nsc, nsmgr) = pair().await;
    let server = spiffe(source(&nsmgr).await, Authorizer::Any);
    let nsc_src = source(&nsc).await;

    let exact = spiffe(
        nsc_src.clone(),
        Authorizer::Exact(id("spiffe://example.org/other")),
    );
    let (c, s) = handshake(&exact, &server).await;
    let err = err_text(c);
    assert!(
        err.contains(&format!(
            "peer {NSMGR} is not authorized (only spiffe://example.org/other)"
        )),
        "{err}"
    );
    assert_refused(s).await;

    let wrong_td = spiffe(
        nsc_src.clone(),
        Authorizer::MemberOf(TrustDomain::parse("other.org").unwrap_or_else(|e| panic!("{e}"))),
    );
    let (c, _) = handshake(&wrong_td, &server).await;
    assert!(err_text(c).contains("members of other.org only"));

    for ok in [
        Authorizer::Exact(id(NSMGR)),
        Authorizer::MemberOf(TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}"))),
        Authorizer::OneOf(vec![id(NSC), id(NSMGR)]),
    ] {
        let client = spiffe(nsc_src.clone(), ok.clone());
        let (c, s) = handshake(&client, &server).await;
        c.unwrap_or_else(|e| panic!("{ok}: {e}"));
        s.unwrap_or_else(|e| panic!("{ok}: {e}"));
    }

    // The server side authorizes clients the same way.
    let picky = spiffe(source(&nsmgr).await, Authorizer::Exact(id(NSMGR)));
    let client = spiffe(nsc_src, Authorizer::Any);
    let (c, s) = handshake(&client, &picky).await;
    assert!(err_text(s).contains(&format!("peer {NSC} is not authorized")));
    assert_refused(c).await;
}

/// A one-hop path as nsmgr sees it after its updatepath (index 1 = own
/// segment) and updatetoken.
fn served_path(caller: &Token, own: &Token) -> Path {
    let mut path = Path {
        index: 1,
        path_segments: vec![
            PathSegment {
                name: "nsc".into(),
                id: "c-1".into(),
                ..Default::default()
            },
            PathSegment {
                name: "nsmgr".into(),
                id: "m-1".into(),
                ..Default::default()
            },
        ],
    };
    token::update_path(&mut path, Some(caller), own).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[tokio::test]
async fn tokens_sign_verify_and_pass_both_policies() {
    let (nsc, nsmgr) = pair().await;
    let (nsc_src, nsmgr_src) = (source(&nsc).await, source(&nsmgr).await);
    let (nsc_svid, nsmgr_svid) = (&nsc_src.current().svid, &nsmgr_src.current().svid);
    let now = SystemTime::now();
    let caller = token::sign(
        nsc_svid,
        Some(&peer_of(nsmgr_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let claims =
        token::verify(&caller.jwt, &peer_of(nsc_svid).public_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.sub, NSC);
    assert_eq!(claims.aud, vec![NSMGR.to_owned()]);
    let own = token::sign(
        nsmgr_svid,
        Some(&peer_of(nsc_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut path = served_path(&caller, &own);
    token::check_server_path(&path, &peer_of(nsc_svid), now).unwrap_or_else(|e| panic!("{e}"));
    // The reply, as the client checks it (its updatepath restores its index).
    path.index = 0;
    token::check_client_path(&path, &peer_of(nsmgr_svid), now).unwrap_or_else(|e| panic!("{e}"));
    // Checked against the wrong peer, the signature policies fail.
    path.index = 1;
    let err = token::check_server_path(&path, &peer_of(nsmgr_svid), now)
        .err()
        .unwrap_or_else(|| panic!("token verified with the wrong key"));
    assert_eq!(
        err.to_string(),
        "path segment 0: bad signature (not signed by the peer's key)"
    );
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    let (nsc, nsmgr) = pair().await;
    let (nsc_src, nsmgr_src) = (source(&nsc).await, source(&nsmgr).await);
    let (nsc_svid, nsmgr_svid) = (&nsc_src.current().svid, &nsmgr_src.current().svid);
    let now = SystemTime::now();
    // Signed 20 minutes ago with NSM's 10-minute lifetime.
    let stale = token::sign(
        nsc_svid,
        Some(&peer_of(nsmgr_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now - Duration::from_secs(1200),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let own = token::sign(
        nsmgr_svid,
        Some(&peer_of(nsc_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = served_path(&stale, &own);
    let err = token::check_server_path(&path, &peer_of(nsc_svid), now)
        .err()
        .unwrap_or_else(|| panic!("expired token accepted"));
    assert!(
        matches!(&err, TokenError::Segment { index: 0, source } if matches!(**source, TokenError::Expired { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_rejected() {
    let (nsc, nsmgr) = pair().await;
    let (nsc_src, nsmgr_src) = (source(&nsc).await, source(&nsmgr).await);
    let (nsc_svid, nsmgr_svid) = (&nsc_src.current().svid, &nsmgr_src.current().svid);
    let nsc_peer = peer_of(nsc_svid);
    let now = SystemTime::now();
    let own = token::sign(nsmgr_svid, Some(&nsc_peer), DEFAULT_MAX_TOKEN_LIFETIME, now)
        .unwrap_or_else(|e| panic!("{e}"));

    // Same SPIFFE ID, another key (an SVID from the untrusted CA).
    nsc.serve_untrusted(NSC, DAY);
    let forger = X509Source::connect(&nsc.endpoint(), PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let forged = token::sign(
        &forger.current().svid,
        Some(&peer_of(nsmgr_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = token::check_server_path(&served_path(&forged, &own), &nsc_peer, now)
        .err()
        .unwrap_or_else(|| panic!("forged token accepted"));
    assert_eq!(
        err.to_string(),
        "path segment 0: bad signature (not signed by the peer's key)"
    );

    // A genuine token whose payload was edited (a longer expiry).
    let genuine = token::sign(
        nsc_svid,
        Some(&peer_of(nsmgr_svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let parts: Vec<&str> = genuine.jwt.split('.').collect();
    let mut claims = token::decode(&genuine.jwt).unwrap_or_else(|e| panic!("{e}"));
    claims.exp += 86_400.0;
    let payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_else(|e| panic!("{e}")));
    let tampered = Token {
        jwt: format!("{}.{payload}.{}", parts[0], parts[2]),
        expires: genuine.expires,
    };
    let err = token::check_server_path(&served_path(&tampered, &own), &nsc_peer, now)
        .err()
        .unwrap_or_else(|| panic!("tampered token accepted"));
    assert_eq!(
        err.to_string(),
        "path segment 0: bad signature (not signed by the peer's key)"
    );

    // `alg: none` with the signature stripped.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = Token {
        jwt: format!("{none_header}.{}.", parts[1]),
        expires: genuine.expires,
    };
    let err = token::check_server_path(&served_path(&unsigned, &own), &nsc_peer, now)
        .err()
        .unwrap_or_else(|| panic!("unsigned token accepted"));
    assert!(
        err.to_string()
            .starts_with("path segment 0: malformed token: alg \"none\""),
        "{err}"
    );

    // Garbage and an empty token (a caller that sent none).
    for jwt in ["not-a-jwt", ""] {
        let bad = Token {
            jwt: jwt.into(),
            expires: now,
        };
        let err = token::check_server_path(&served_path(&bad, &own), &nsc_peer, now)
            .err()
            .unwrap_or_else(|| panic!("{jwt:?} accepted"));
        assert!(
            err.to_string()
                .starts_with("path segment 0: malformed token"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn unchained_tokens_are_rejected() {
    let ca = Arc::new(TestCa::new("example.org"));
    let (nsc, nsmgr, nse) = (
        SpiffeDouble::with_ca(ca.clone()).await,
        SpiffeDouble::with_ca(ca.clone()).await,
        SpiffeDouble::with_ca(ca).await,
    );
    nsc.issue(NSC, DAY);
    nsmgr.issue(NSMGR, DAY);
    nse.issue("spiffe://example.org/nse", DAY);
    let (a, b, c) = (source(&nsc).await, source(&nsmgr).await, source(&nse).await);
    let (a, b, c) = (&a.current().svid, &b.current().svid, &c.current().svid);
    let now = SystemTime::now();
    let sign = |who: &X509Svid, to: &X509Svid| {
        token::sign(who, Some(&peer_of(to)), DEFAULT_MAX_TOKEN_LIFETIME, now)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let segment = |t: &Token| PathSegment {
        token: t.jwt.clone(),
        ..Default::default()
    };
    // nsc -> nsmgr -> nse: every aud names the next hop.
    let chained = Path {
        index: 2,
        path_segments: vec![
            segment(&sign(a, b)),
            segment(&sign(b, c)),
            segment(&sign(c, b)),
        ],
    };
    token::tokens_chained(&chained).unwrap_or_else(|e| panic!("{e}"));
    token::check_server_path(&chained, &peer_of(b), now).unwrap_or_else(|e| panic!("{e}"));
    // nsc's token addressed to the nse, skipping nsmgr.
    let skipped = Path {
        index: 2,
        path_segments: vec![
            segment(&sign(a, c)),
            segment(&sign(b, c)),
            segment(&sign(c, b)),
        ],
    };
    let err = token::tokens_chained(&skipped)
        .err()
        .unwrap_or_else(|| panic!("unchained path accepted"));
    assert_eq!(
        err.to_string(),
        format!(
            "path segment 0: audience [\"spiffe://example.org/nse\"] does not contain {NSMGR}, the subject of the next segment's token"
        )
    );
    assert!(token::check_server_path(&skipped, &peer_of(b), now).is_err());
}

#[tokio::test]
async fn token_expiry_is_capped_by_both_certificates() {
    let ca = Arc::new(TestCa::new("example.org"));
    let (nsc, nsmgr) = (
        SpiffeDouble::with_ca(ca.clone()).await,
        SpiffeDouble::with_ca(ca).await,
    );
    let short = nsc.issue(NSC, Duration::from_secs(120));
    nsmgr.issue(NSMGR, DAY);
    let (nsc_src, nsmgr_src) = (source(&nsc).await, source(&nsmgr).await);
    let now = SystemTime::now();
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_else(|e| panic!("{e}"))
            .as_secs() as f64
    };

    // Own certificate expires before now + 10 min.
    let t = token::sign(
        &nsc_src.current().svid,
        Some(&peer_of(&nsmgr_src.current().svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.expires, short.not_after);
    assert_eq!(
        token::decode(&t.jwt).unwrap_or_else(|e| panic!("{e}")).exp,
        unix(short.not_after)
    );

    // The peer's certificate expires first.
    let t = token::sign(
        &nsmgr_src.current().svid,
        Some(&peer_of(&nsc_src.current().svid)),
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.expires, short.not_after);

    // Otherwise the lifetime: exp in whole seconds, expires exact.
    let t = token::sign(
        &nsmgr_src.current().svid,
        None,
        DEFAULT_MAX_TOKEN_LIFETIME,
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.expires, now + DEFAULT_MAX_TOKEN_LIFETIME);
    let claims = token::decode(&t.jwt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.exp, unix(now + DEFAULT_MAX_TOKEN_LIFETIME).floor());
    assert!(claims.aud.is_empty());
}

#[tokio::test]
async fn token_metadata_round_trips() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let src = source(&double).await;
    let t = token::sign(
        &src.current().svid,
        None,
        DEFAULT_MAX_TOKEN_LIFETIME,
        SystemTime::now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut md = tonic::metadata::MetadataMap::new();
    t.insert_into(&mut md).unwrap_or_else(|e| panic!("{e}"));
    let expires = md
        .get(token::EXPIRES_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no expiry"));
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");
    let back = Token::from_metadata(&md)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no token"));
    assert_eq!(back, t);

    md.insert(
        token::EXPIRES_KEY,
        "yesterday".parse().unwrap_or_else(|e| panic!("{e:?}")),
    );
    let err = Token::from_metadata(&md)
        .err()
        .unwrap_or_else(|| panic!("bad expiry accepted"));
    assert!(
        err.to_string()
            .starts_with("metadata nsm-client-token-expires"),
        "{err}"
    );
    assert_eq!(
        Token::from_metadata(&tonic::metadata::MetadataMap::new()).ok(),
        Some(None)
    );
}

/// A NetworkService that does what nsmgr's chain does with security:
/// updatepath, updatetoken, then the server policies.
struct Nsmgr {
    security: Security,
}

#[tonic::async_trait]
impl NetworkService for Nsmgr {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let peer = req
            .extensions()
            .get::<SecureConnectInfo<UdsConnectInfo>>()
            .and_then(|i| i.peer.clone());
        let caller = Token::from_metadata(req.metadata())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut conn = req.into_inner().connection.unwrap_or_default();
        let mut path = conn.path.take().unwrap_or_default();
        path.index += 1;
        path.path_segments.push(PathSegment {
            name: "nsmgr".into(),
            id: "m-1".into(),
            ..Default::default()
        });
        let own = self
            .security
            .sign_token(peer.as_ref())
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_else(|| panic!("no token in SPIFFE mode"));
        token::update_path(&mut path, caller.as_ref(), &own)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.security
            .check_server_path(&path, peer.as_ref())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        conn.path = Some(path);
        Ok(Response::new(conn))
    }

    async fn close(&self, _req: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

#[tokio::test]
async fn grpc_round_trip_over_tls_on_a_unix_socket() {
    let (nsc, nsmgr) = pair().await;
    let server_sec = spiffe(source(&nsmgr).await, Authorizer::Any);
    let client_sec = spiffe(source(&nsc).await, Authorizer::Any);

    let dir = std::env::temp_dir().join(unique_prefix("xcnf-nsmgr"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let socket = dir.join("nsm.io.sock");
    let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
    let incoming = server_sec.incoming(UnixListenerStream::new(listener));
    let service = NetworkServiceServer::new(Nsmgr {
        security: server_sec.clone(),
    });
    let server = tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );

    // A plain-text client cannot get through: the server wants TLS.
    let plain = Endpoint::from_shared(format!("unix:{}", socket.display()))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let status = NetworkServiceClient::new(channel)
            .request(NetworkServiceRequest::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("plain-text request served"));
        assert_ne!(status.code(), tonic::Code::Ok);
    }

    let peer_slot: Arc<Mutex<Option<PeerId>>> = Arc::default();
    let (sec, slot, path) = (client_sec.clone(), peer_slot.clone(), socket.clone());
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (sec, slot, path) = (sec.clone(), slot.clone(), path.clone());
            async move {
                let io = UnixStream::connect(path).await?;
                let (stream, peer) = sec.connect(io).await.map_err(std::io::Error::other)?;
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = peer;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let server_peer = peer_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| panic!("no server peer"));
    assert_eq!(server_peer.id, id(NSMGR));
    let mut client = NetworkServiceClient::new(channel);

    let mine = client_sec
        .sign_token(Some(&server_peer))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no token"));
    let request = |t: &Token| {
        let mut req = Request::new(NetworkServiceRequest {
            connection: Some(Connection {
                id: "c-1".into(),
                network_service: "icmp-responder".into(),
                path: Some(Path {
                    index: 0,
                    path_segments: vec![PathSegment {
                        name: "nsc".into(),
                        id: "c-1".into(),
                        token: t.jwt.clone(),
                        expires: Some(t.expires.into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            mechanism_preferences: Vec::new(),
        });
        t.insert_into(req.metadata_mut())
            .unwrap_or_else(|e| panic!("{e}"));
        req
    };

    let reply = client
        .request(request(&mine))
        .await
        .unwrap_or_else(|e| panic!("Request: {e}"))
        .into_inner();
    let mut path = reply.path.unwrap_or_else(|| panic!("no path"));
    assert_eq!(path.path_segments.len(), 2);
    path.index = 0;
    client_sec
        .check_client_path(&path, Some(&server_peer))
        .unwrap_or_else(|e| panic!("reply path: {e}"));
    let server_claims =
        token::decode(&path.path_segments[1].token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server_claims.sub, NSMGR);
    assert_eq!(server_claims.aud, vec![NSC.to_owned()]);

    // A token signed by another key is refused by the server's policies.
    nsc.serve_untrusted(NSC, DAY);
    let forger = X509Source::connect(&nsc.endpoint(), PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let forged = token::sign(
        &forger.current().svid,
        Some(&server_peer),
        DEFAULT_MAX_TOKEN_LIFETIME,
        SystemTime::now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let status = client
        .request(request(&forged))
        .await
        .err()
        .unwrap_or_else(|| panic!("forged token served"));
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("path segment 0: bad signature"),
        "{}",
        status.message()
    );

    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn insecure_mode_passes_through_without_tokens() {
    let insecure = Security::insecure();
    assert!(insecure.is_insecure());
    let (c, s) = handshake(&insecure, &insecure).await;
    let (mut c, c_peer) = c.unwrap_or_else(|e| panic!("{e}"));
    let (mut s, s_peer) = s.unwrap_or_else(|e| panic!("{e}"));
    assert!(c_peer.is_none() && s_peer.is_none());
    c.write_all(b"x").await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf, b"x");
    assert_eq!(insecure.sign_token(None).ok(), Some(None));
    insecure
        .check_server_path(&Path::default(), None)
        .unwrap_or_else(|e| panic!("{e}"));

    // A SPIFFE server does not accept a plain-text peer.
    let double = SpiffeDouble::start(NSMGR, DAY).await;
    let server = spiffe(source(&double).await, Authorizer::Any);
    let (mut a, b) = UnixStream::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
    a.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(a);
    let s = tokio::time::timeout(PATIENCE, server.accept(b))
        .await
        .unwrap_or_else(|_| panic!("accept hung"));
    assert!(matches!(s, Err(SecurityError::Tls(_))));
}

#[tokio::test]
async fn security_from_options() {
    let double = SpiffeDouble::start(NSC, DAY).await;
    let sec = Security::from_options(SecurityOptions {
        spiffe_endpoint: Some(double.endpoint()),
        ..SecurityOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sec.own_id(), Some(id(NSC)));
    assert!(!sec.is_insecure());

    let insecure = Security::from_options(SecurityOptions {
        insecure: true,
        ..SecurityOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(insecure.is_insecure() && insecure.own_id().is_none());

    let err = Security::from_options(SecurityOptions {
        spiffe_endpoint: Some("tcp://127.0.0.1:8081".into()),
        ..SecurityOptions::default()
    })
    .await
    .err()
    .unwrap_or_else(|| panic!("a TCP endpoint was accepted"));
    assert!(
        matches!(err, SecurityError::Workload(WorkloadError::Endpoint(_))),
        "{err}"
    );
}

#[tokio::test]
async fn mtls_rejects_an_expired_peer_certificate() {
    let (nsc, nsmgr) = pair().await;
    let now = SystemTime::now();
    nsmgr.serve(nsmgr.ca().issue_valid(
        NSMGR,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    ));
    let client = spiffe(source(&nsc).await, Authorizer::Any);
    let server = spiffe(source(&nsmgr).await, Authorizer::Any);
    let (c, s) = handshake(&client, &server).await;
    let err = err_text(c);
    assert!(err.contains(NSMGR) && err.contains("Expired"), "{err}");
    assert_refused(s).await;
}
