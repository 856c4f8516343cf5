//! Certificates for the unit tests: self-signed X.509-SVID leaves (enough
//! for parsing and token tests; chain validation is tested against the
//! Workload API double in tests/tests/nsm_security.rs).

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

/// A self-signed P-256 certificate with `uris` as URI SANs: (DER, PKCS#8 key).
pub fn leaf(uris: &[&str], lifetime: Duration) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap_or_else(|e| panic!("{e}"));
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap_or_else(|e| panic!("{e}"))))
        .collect();
    params.not_after = (SystemTime::now() + lifetime).into();
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (cert.der().to_vec(), key.serialize_der())
}
