//! SPIFFE Workload API protos against wire bytes derived by hand (so a
//! renumbered field breaks this test rather than the interop with SPIRE),
//! and the gRPC paths as the generated client and server use them.
//!
//! Key byte = (field_number << 3) | wire_type; wire type 2 = LEN. A map
//! entry is a sub-message with key = 1 and value = 2.

use std::{collections::HashMap, error::Error};

use prost::Message;
use xcnf_proto::spiffe::workload::{
    X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
    spiffe_workload_api_server::SpiffeWorkloadApiServer,
};

type TestResult = Result<(), Box<dyn Error>>;

#[test]
fn x509_svid_response_wire_bytes() -> TestResult {
    let msg = X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: "spiffe://a/b".into(),
            x509_svid: vec![0xC1],
            x509_svid_key: vec![0xC2],
            bundle: vec![0xC3],
            hint: "h".into(),
        }],
        crl: vec![vec![0xC4]],
        federated_bundles: HashMap::from([("spiffe://f".to_owned(), vec![0xC5])]),
    };
    let svid: &[u8] = &[
        0x0A, 12, b's', b'p', b'i', b'f', b'f', b'e', b':', b'/', b'/', b'a', b'/',
        b'b', // spiffe_id = 1
        0x12, 1, 0xC1, // x509_svid = 2
        0x1A, 1, 0xC2, // x509_svid_key = 3
        0x22, 1, 0xC3, // bundle = 4
        0x2A, 1, b'h', // hint = 5
    ];
    let entry: &[u8] = &[
        0x0A, 10, b's', b'p', b'i', b'f', b'f', b'e', b':', b'/', b'/', b'f', // key = 1
        0x12, 1, 0xC5, // value = 2
    ];
    let expected = [
        &[0x0A, svid.len() as u8][..],
        svid,
        &[0x12, 1, 0xC4], // crl = 2
        &[0x1A, entry.len() as u8],
        entry, // federated_bundles = 3
    ]
    .concat();
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(X509svidResponse::decode(expected.as_slice())?, msg);
    assert!(X509svidRequest {}.encode_to_vec().is_empty());
    Ok(())
}

#[test]
fn x509_bundles_response_wire_bytes() -> TestResult {
    let msg = X509BundlesResponse {
        crl: vec![vec![0xC4]],
        bundles: HashMap::from([("spiffe://f".to_owned(), vec![0xC5])]),
    };
    let entry: &[u8] = &[
        0x0A, 10, b's', b'p', b'i', b'f', b'f', b'e', b':', b'/', b'/', b'f', 0x12, 1, 0xC5,
    ];
    let expected = [&[0x0A, 1, 0xC4][..], &[0x12, entry.len() as u8], entry].concat();
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(X509BundlesResponse::decode(expected.as_slice())?, msg);
    Ok(())
}

/// No protobuf package, as upstream: the service is `SpiffeWorkloadAPI` at
/// the root, so SPIRE's paths are `/SpiffeWorkloadAPI/<method>`.
#[test]
fn service_name_has_no_package() {
    use tonic::server::NamedService;
    struct Unused;
    assert_eq!(
        <SpiffeWorkloadApiServer<Unused> as NamedService>::NAME,
        "SpiffeWorkloadAPI"
    );
}
