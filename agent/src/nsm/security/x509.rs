//! What the security code needs out of an X.509 certificate: the SPIFFE ID
//! (the one URI SAN), NotAfter (caps token lifetimes) and the public key
//! (checks the peer's path tokens). Chain validation is webpki's job
//! (`tls.rs`); this only reads fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use super::id::{IdError, SpiffeId};

/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// secp256r1 / prime256v1, the curve of ES256.
const OID_P256: &str = "1.2.840.10045.3.1.7";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("{0} bytes after the last certificate")]
    Trailing(usize),
    #[error("no certificates")]
    Empty,
    #[error("subject alternative names: {0}")]
    San(String),
    #[error("an X.509-SVID has exactly one URI SAN, this certificate has {0}")]
    UriSanCount(usize),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// A certificate's public key, as far as tokens care: ES256 needs P-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// The uncompressed EC point (0x04 || X || Y).
    EcP256(Vec<u8>),
    /// Any other key; the algorithm (and curve) OIDs, for error messages.
    Other(String),
}

/// The fields of an X.509-SVID leaf that the security code uses.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    pub id: SpiffeId,
    pub not_after: SystemTime,
    pub public_key: PublicKey,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Trailing(rest.len()));
    }
    Ok(cert)
}

/// Reads the SPIFFE ID, NotAfter and key of an X.509-SVID leaf.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, CertError> {
    let cert = parse(der)?;
    let uris: Vec<&str> = match cert
        .subject_alternative_name()
        .map_err(|e| CertError::San(e.to_string()))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let [uri] = uris.as_slice() else {
        return Err(CertError::UriSanCount(uris.len()));
    };
    let id = SpiffeId::parse(uri)?;
    let not_after = unix_to_system(cert.validity().not_after.timestamp());
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let public_key = if alg == OID_EC_PUBLIC_KEY && curve.as_deref() == Some(OID_P256) {
        PublicKey::EcP256(spki.subject_public_key.data.to_vec())
    } else {
        PublicKey::Other(match curve {
            Some(c) => format!("{alg} ({c})"),
            None => alg,
        })
    };
    Ok(LeafInfo {
        id,
        not_after,
        public_key,
    })
}

/// Splits the Workload API's concatenated DER certificates (chains and
/// bundles come as one byte string).
pub fn split_certs(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut certs = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) =
            X509Certificate::from_der(bytes).map_err(|e| CertError::Der(e.to_string()))?;
        let len = bytes.len() - rest.len();
        certs.push(CertificateDer::from(bytes[..len].to_vec()));
        bytes = rest;
    }
    if certs.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(certs)
}

/// Seconds since the epoch to `SystemTime`; certificates before 1970 clamp
/// to the epoch (only NotAfter is read, and such a certificate is expired
/// either way).
fn unix_to_system(secs: i64) -> SystemTime {
    u64::try_from(secs)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or(UNIX_EPOCH)
}
