//! NSM's per-hop path tokens (sdk `tools/token`, `tools/spiffejwt`,
//! `updatetoken` and the OPA policies in `tools/opa/policies`).
//!
//! Every NSM call carries the caller's ES256 JWT (signed with its SVID key,
//! `sub` = own SPIFFE ID, `aud` = [the peer's SPIFFE ID]) in gRPC metadata;
//! servers copy it into the previous path segment and put their own token in
//! theirs, so a Connection's path is a chain of signed hops. A stock nsmgr
//! runs the checks below on every Request, so xcnf must produce exactly
//! these tokens, and it runs the same checks on what it receives.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey},
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::metadata::{MetadataMap, MetadataValue};
use xcnf_proto::nsm::connection::Path;

use super::{tls::PeerId, workload::X509Svid, x509::PublicKey};

/// gRPC metadata key of the caller's JWT.
pub const TOKEN_KEY: &str = "nsm-client-token";
/// gRPC metadata key of the token's expiry (RFC 3339 with nanoseconds).
pub const EXPIRES_KEY: &str = "nsm-client-token-expires";
/// NSM's default `MaxTokenLifetime` (nsmgr, nsc-init and the endpoints all use 10m).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// The only JWS algorithm NSM uses; anything else (notably `none`) is refused.
const ALG: &str = "ES256";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("bad signature (not signed by the peer's key)")]
    BadSignature,
    #[error("expired at {exp} (unix seconds)")]
    Expired { exp: f64 },
    #[error("audience {aud:?} does not contain {want}, the subject of the next segment's token")]
    NotChained { aud: Vec<String>, want: String },
    #[error("the SVID key is not ECDSA P-256, so it cannot sign ES256 tokens")]
    NoSigningKey,
    #[error("signing failed")]
    Sign,
    #[error("the peer's key is {0}, not ECDSA P-256, so it cannot verify ES256 tokens")]
    PeerKey(String),
    #[error("metadata {key}: {reason}")]
    Metadata { key: &'static str, reason: String },
    #[error("path has {len} segments and index {index}: no segment {wanted}")]
    NoSegment {
        index: u32,
        len: usize,
        wanted: String,
    },
    #[error("path segment {index}: {source}")]
    Segment {
        index: usize,
        #[source]
        source: Box<TokenError>,
    },
}

fn at(index: usize) -> impl FnOnce(TokenError) -> TokenError {
    move |e| TokenError::Segment {
        index,
        source: Box::new(e),
    }
}

/// A signed token and the expiry that travels with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub jwt: String,
    pub expires: SystemTime,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
}

/// The claims as written: golang-jwt's field order and an integer `exp`
/// (whole seconds, its NumericDate); the token's `expires` keeps the exact
/// instant for the metadata.
#[derive(Serialize)]
struct SignedClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    aud: &'a [String],
    exp: u64,
}

#[derive(Deserialize)]
struct ParsedHeader {
    alg: String,
}

/// The claims NSM's policies read, as decoded from any token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default, deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    /// Seconds since the epoch; JSON numbers may carry a fraction.
    pub exp: f64,
}

/// JWT allows `aud` as a single string or an array.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

fn unix_secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Signs the token for a call to (or a reply to) `peer`: expiry is the
/// earliest of `now + max_lifetime`, our certificate's NotAfter and the
/// peer's, so no token outlives the identities it binds.
pub fn sign(
    svid: &X509Svid,
    peer: Option<&PeerId>,
    max_lifetime: Duration,
    now: SystemTime,
) -> Result<Token, TokenError> {
    let key = svid.jwt_key().ok_or(TokenError::NoSigningKey)?;
    // A lifetime too large for the clock is no cap at all.
    let mut expires = now
        .checked_add(max_lifetime)
        .map_or(svid.not_after(), |t| t.min(svid.not_after()));
    if let Some(p) = peer {
        expires = expires.min(p.not_after);
    }
    let exp_secs = expires
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aud = peer.map(|p| vec![p.id.to_string()]).unwrap_or_default();
    let header = serde_json::to_vec(&Header {
        alg: ALG,
        typ: "JWT",
    })
    .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let payload = serde_json::to_vec(&SignedClaims {
        sub: svid.id().as_str(),
        aud: &aud,
        exp: exp_secs,
    })
    .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| TokenError::Sign)?;
    Ok(Token {
        jwt: format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())),
        expires,
    })
}

struct Parts<'a> {
    signing_input: &'a str,
    claims: Claims,
    signature: Vec<u8>,
}

fn split(jwt: &str) -> Result<Parts<'_>, TokenError> {
    let malformed =
        |what: &str, e: &dyn std::fmt::Display| TokenError::Malformed(format!("{what}: {e}"));
    let mut it = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TokenError::Malformed(
            "not a JWS compact serialization (three base64url parts)".into(),
        ));
    };
    let header: ParsedHeader = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|e| malformed("header", &e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| malformed("header", &e)))?;
    if header.alg != ALG {
        return Err(TokenError::Malformed(format!(
            "alg {:?}, only {ALG} is accepted",
            header.alg
        )));
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|e| malformed("payload", &e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| malformed("payload", &e)))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| malformed("signature", &e))?;
    Ok(Parts {
        signing_input: &jwt[..h.len() + 1 + p.len()],
        claims,
        signature,
    })
}

/// Reads the claims without checking the signature (OPA's `io.jwt.decode`).
pub fn decode(jwt: &str) -> Result<Claims, TokenError> {
    split(jwt).map(|p| p.claims)
}

/// Checks the ES256 signature against `key` (OPA's `io.jwt.verify_es256`;
/// expiry is a separate policy) and returns the claims.
pub fn verify(jwt: &str, key: &PublicKey) -> Result<Claims, TokenError> {
    let parts = split(jwt)?;
    let point = match key {
        PublicKey::EcP256(point) => point,
        PublicKey::Other(alg) => return Err(TokenError::PeerKey(alg.clone())),
    };
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(parts.signing_input.as_bytes(), &parts.signature)
        .map_err(|_| TokenError::BadSignature)?;
    Ok(parts.claims)
}

impl Token {
    /// Adds the token to outgoing call metadata.
    pub fn insert_into(&self, md: &mut MetadataMap) -> Result<(), TokenError> {
        let jwt = MetadataValue::try_from(self.jwt.as_str()).map_err(|e| TokenError::Metadata {
            key: TOKEN_KEY,
            reason: e.to_string(),
        })?;
        let expires = OffsetDateTime::from(self.expires)
            .format(&Rfc3339)
            .map_err(|e| TokenError::Metadata {
                key: EXPIRES_KEY,
                reason: e.to_string(),
            })?;
        let expires = MetadataValue::try_from(expires).map_err(|e| TokenError::Metadata {
            key: EXPIRES_KEY,
            reason: e.to_string(),
        })?;
        md.insert(TOKEN_KEY, jwt);
        md.insert(EXPIRES_KEY, expires);
        Ok(())
    }

    /// Reads the caller's token from incoming call metadata; `None` when the
    /// caller sent none (the policies then fail on the empty segment).
    pub fn from_metadata(md: &MetadataMap) -> Result<Option<Self>, TokenError> {
        let Some(jwt) = md.get(TOKEN_KEY) else {
            return Ok(None);
        };
        let jwt = jwt.to_str().map_err(|e| TokenError::Metadata {
            key: TOKEN_KEY,
            reason: e.to_string(),
        })?;
        let expires = md.get(EXPIRES_KEY).ok_or(TokenError::Metadata {
            key: EXPIRES_KEY,
            reason: format!("missing (it must come with {TOKEN_KEY})"),
        })?;
        let expires = expires
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("{s:?}: {e}")))
            .map_err(|reason| TokenError::Metadata {
                key: EXPIRES_KEY,
                reason,
            })?;
        Ok(Some(Self {
            jwt: jwt.to_owned(),
            expires: expires.into(),
        }))
    }
}

fn segment_token(path: &Path, index: usize) -> &str {
    path.path_segments
        .get(index)
        .map(|s| s.token.as_str())
        .unwrap_or_default()
}

/// The server half of sdk `updatetoken`: the caller's token (from the call
/// metadata) goes into the previous segment, our own into the current one.
/// Run after the path index points at our segment.
pub fn update_path(path: &mut Path, caller: Option<&Token>, own: &Token) -> Result<(), TokenError> {
    let index = path.index as usize;
    let len = path.path_segments.len();
    if index >= len {
        return Err(TokenError::NoSegment {
            index: path.index,
            len,
            wanted: format!("{index} (own)"),
        });
    }
    if let (Some(t), Some(prev)) = (caller, index.checked_sub(1)) {
        let seg = &mut path.path_segments[prev];
        seg.token = t.jwt.clone();
        seg.expires = Some(t.expires.into());
    }
    let seg = &mut path.path_segments[index];
    seg.token = own.jwt.clone();
    seg.expires = Some(own.expires.into());
    Ok(())
}

/// Policy `tokens_valid`: every segment's token decodes.
pub fn tokens_valid(path: &Path) -> Result<(), TokenError> {
    for (i, seg) in path.path_segments.iter().enumerate() {
        decode(&seg.token).map_err(at(i))?;
    }
    Ok(())
}

/// Policy `tokens_expired` (valid when no token is expired): every `exp`
/// is after `now`.
pub fn tokens_expired(path: &Path, now: SystemTime) -> Result<(), TokenError> {
    let now = unix_secs(now);
    for (i, seg) in path.path_segments.iter().enumerate() {
        let claims = decode(&seg.token).map_err(at(i))?;
        if now >= claims.exp {
            return Err(at(i)(TokenError::Expired { exp: claims.exp }));
        }
    }
    Ok(())
}

/// Policy `tokens_chained`: the audience of each token contains the subject
/// of the next one.
pub fn tokens_chained(path: &Path) -> Result<(), TokenError> {
    let claims = path
        .path_segments
        .iter()
        .enumerate()
        .map(|(i, seg)| decode(&seg.token).map_err(at(i)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in claims.windows(2).enumerate() {
        if !pair[0].aud.contains(&pair[1].sub) {
            return Err(at(i)(TokenError::NotChained {
                aud: pair[0].aud.clone(),
                want: pair[1].sub.clone(),
            }));
        }
    }
    Ok(())
}

/// Policy `prev_token_signed` (servers): the token at `index - 1` is signed
/// by the peer that called us.
pub fn prev_token_signed(path: &Path, peer: &PeerId) -> Result<(), TokenError> {
    let prev = (path.index as usize)
        .checked_sub(1)
        .filter(|&i| i < path.path_segments.len())
        .ok_or_else(|| TokenError::NoSegment {
            index: path.index,
            len: path.path_segments.len(),
            wanted: "index-1 (the caller's)".into(),
        })?;
    verify(segment_token(path, prev), &peer.public_key)
        .map(drop)
        .map_err(at(prev))
}

/// Policy `next_token_signed` (clients): the token at `index + 1` is signed
/// by the server that replied.
pub fn next_token_signed(path: &Path, peer: &PeerId) -> Result<(), TokenError> {
    let next = path.index as usize + 1;
    if next >= path.path_segments.len() {
        return Err(TokenError::NoSegment {
            index: path.index,
            len: path.path_segments.len(),
            wanted: "index+1 (the server's)".into(),
        });
    }
    verify(segment_token(path, next), &peer.public_key)
        .map(drop)
        .map_err(at(next))
}

/// The policies an NSM server applies to a Request's path (sdk `authorize`
/// server defaults), after its own `updatetoken` ran.
pub fn check_server_path(path: &Path, peer: &PeerId, now: SystemTime) -> Result<(), TokenError> {
    tokens_valid(path)?;
    prev_token_signed(path, peer)?;
    tokens_expired(path, now)?;
    tokens_chained(path)
}

/// The policies an NSM client applies to the returned Connection's path
/// (sdk `authorize` client defaults).
pub fn check_client_path(path: &Path, peer: &PeerId, now: SystemTime) -> Result<(), TokenError> {
    tokens_valid(path)?;
    next_token_signed(path, peer)?;
    tokens_expired(path, now)?;
    tokens_chained(path)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use xcnf_proto::nsm::connection::PathSegment;

    use super::*;
    use crate::nsm::security::{testutil, x509};

    const NSC: &str = "spiffe://example.org/nsc";
    const NSMGR: &str = "spiffe://example.org/nsmgr";

    fn svid(id: &str) -> X509Svid {
        let (cert, key) = testutil::leaf(&[id], Duration::from_secs(3600));
        X509Svid::from_der(vec![CertificateDer::from(cert)], key).unwrap_or_else(|e| panic!("{e}"))
    }

    fn peer(svid: &X509Svid) -> PeerId {
        let info = x509::leaf_info(&svid.chain()[0]).unwrap_or_else(|e| panic!("{e}"));
        PeerId {
            id: info.id,
            public_key: info.public_key,
            not_after: info.not_after,
        }
    }

    fn b64json(part: &str) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The layout golang-jwt produces for NSM: header {alg, typ}, claims
    /// {sub, aud: [..], exp: integer}, a 64-byte r||s signature.
    #[test]
    fn token_layout_matches_nsm() {
        let (nsc, nsmgr) = (svid(NSC), svid(NSMGR));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(250);
        // Certificates valid for an hour from the real now, so a fixed past
        // `now` keeps the lifetime cap.
        let t = sign(&nsc, Some(&peer(&nsmgr)), DEFAULT_MAX_TOKEN_LIFETIME, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let parts: Vec<&str> = t.jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(parts[0])
                .unwrap_or_else(|e| panic!("{e}")),
            br#"{"alg":"ES256","typ":"JWT"}"#
        );
        assert_eq!(
            String::from_utf8(
                URL_SAFE_NO_PAD
                    .decode(parts[1])
                    .unwrap_or_else(|e| panic!("{e}"))
            )
            .unwrap_or_else(|e| panic!("{e}")),
            format!(r#"{{"sub":"{NSC}","aud":["{NSMGR}"],"exp":1700000600}}"#)
        );
        assert_eq!(
            b64json(parts[1])["exp"],
            serde_json::json!(1_700_000_600u64)
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(parts[2])
                .unwrap_or_else(|e| panic!("{e}"))
                .len(),
            64
        );
        assert_eq!(t.expires, now + DEFAULT_MAX_TOKEN_LIFETIME);
        let claims = verify(&t.jwt, &peer(&nsc).public_key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims.aud, vec![NSMGR.to_owned()]);
        assert!(matches!(
            verify(&t.jwt, &peer(&nsmgr).public_key),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn audience_may_be_a_single_string() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","aud":"b","exp":1.5}"#);
        let claims = decode(&format!("{header}.{payload}.AAAA")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims.aud, vec!["b".to_owned()]);
        assert_eq!(claims.exp, 1.5);
        let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#);
        assert!(matches!(
            decode(&format!("{header}.{no_exp}.AAAA")),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn update_path_fills_previous_and_own_segment() {
        let (nsc, nsmgr) = (svid(NSC), svid(NSMGR));
        let now = SystemTime::now();
        let caller = sign(&nsc, Some(&peer(&nsmgr)), DEFAULT_MAX_TOKEN_LIFETIME, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let own = sign(&nsmgr, Some(&peer(&nsc)), DEFAULT_MAX_TOKEN_LIFETIME, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut path = Path {
            index: 1,
            path_segments: vec![PathSegment::default(), PathSegment::default()],
        };
        update_path(&mut path, Some(&caller), &own).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path.path_segments[0].token, caller.jwt);
        assert_eq!(path.path_segments[0].expires, Some(caller.expires.into()));
        assert_eq!(path.path_segments[1].token, own.jwt);
        check_server_path(&path, &peer(&nsc), now).unwrap_or_else(|e| panic!("{e}"));

        path.index = 2;
        assert!(matches!(
            update_path(&mut path, Some(&caller), &own),
            Err(TokenError::NoSegment {
                index: 2,
                len: 2,
                ..
            })
        ));
    }

    #[test]
    fn signature_policies_need_the_neighbouring_segment() {
        let nsc = svid(NSC);
        let now = SystemTime::now();
        let t = sign(&nsc, None, DEFAULT_MAX_TOKEN_LIFETIME, now).unwrap_or_else(|e| panic!("{e}"));
        let path = Path {
            index: 0,
            path_segments: vec![PathSegment {
                token: t.jwt,
                ..Default::default()
            }],
        };
        let p = peer(&nsc);
        assert!(matches!(
            prev_token_signed(&path, &p),
            Err(TokenError::NoSegment { .. })
        ));
        assert!(matches!(
            next_token_signed(&path, &p),
            Err(TokenError::NoSegment { .. })
        ));
        // An empty path is valid, expired-free and chained, as in the rego.
        let empty = Path::default();
        tokens_valid(&empty).unwrap_or_else(|e| panic!("{e}"));
        tokens_expired(&empty, now).unwrap_or_else(|e| panic!("{e}"));
        tokens_chained(&empty).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn peer_keys_other_than_p256_cannot_verify() {
        let nsc = svid(NSC);
        let t = sign(&nsc, None, DEFAULT_MAX_TOKEN_LIFETIME, SystemTime::now())
            .unwrap_or_else(|e| panic!("{e}"));
        let err = verify(&t.jwt, &PublicKey::Other("1.2.840.113549.1.1.1".into()))
            .err()
            .unwrap_or_else(|| panic!("verified with an RSA key"));
        assert!(err.to_string().contains("not ECDSA P-256"), "{err}");
    }
}
