//! api.proto: hand-derived wire bytes of the agent API's messages (a
//! renumbered field breaks this test, not a deployed client) and the shape of
//! `AgentService` in the descriptor set.

use std::error::Error;

use prost::Message;
use prost_types::FileDescriptorSet;
use xcnf_proto::FILE_DESCRIPTOR_SET;
use xcnf_proto::v1alpha1::{
    ApplyRequest, ConfigDocument, HealthResponse, ItemStatus, NatEndpoint, NatRole, NatSession,
    NatSessionFilter, NatSessionsRequest, PacketBytes, PlannedOp, StatusSnapshot, WatchEvent,
    apply_request, config_document, health_response, item_status, nat_session, planned_op,
    watch_event,
};

type TestResult = Result<(), Box<dyn Error>>;

// Wire format reminders: a key byte is (field_number << 3) | wire_type, with
// wire type 0 = varint, 2 = length-delimited. proto3 omits scalars equal to
// their default unless the field is `optional`.

#[test]
fn apply_request_wire_bytes_and_back() -> TestResult {
    let msg = ApplyRequest {
        document: Some(ConfigDocument {
            format: Some(config_document::Format::Yaml("a: 1".into())),
        }),
        mode: apply_request::Mode::Merge.into(),
        dry_run: true,
    };
    let expected: &[u8] = &[
        0x0A, 0x06, // document = 1, LEN, 6 bytes:
        0x0A, 0x04, b'a', b':', b' ', b'1', //   yaml = 1 (oneof format), LEN, "a: 1"
        0x10, 0x02, // mode = 2, VARINT, MODE_MERGE = 2
        0x18, 0x01, // dry_run = 3, VARINT, true
    ];
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(ApplyRequest::decode(expected)?, msg);
    Ok(())
}

#[test]
fn item_status_wire_bytes() {
    let msg = ItemStatus {
        key: "nat44".into(),
        state: item_status::State::Pending.into(),
        reason: "x".into(),
        detail: String::new(),
        since_unix_ns: -1,
        attempt: 3,
    };
    let mut expected = vec![0x0A, 0x05]; // key = 1, LEN, 5 bytes
    expected.extend_from_slice(b"nat44");
    expected.extend_from_slice(&[
        0x10, 0x02, // state = 2, VARINT, STATE_PENDING = 2
        0x1A, 0x01, b'x', // reason = 3, LEN, "x"; detail = 4 is empty: omitted
        // since_unix_ns = 5, VARINT: (5 << 3) | 0 = 0x28; int64 -1 is ten bytes
        0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x30,
        0x03, // attempt = 6, VARINT, 3
    ]);
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn planned_op_keeps_an_empty_pending_reason() -> TestResult {
    let msg = PlannedOp {
        op: planned_op::Op::Delete.into(),
        key: "k".into(),
        detail: String::new(),
        pending_reason: Some(String::new()),
    };
    let expected: &[u8] = &[
        0x08, 0x03, // op = 1, VARINT, OP_DELETE = 3
        0x12, 0x01, b'k', // key = 2, LEN, "k"
        0x22, 0x00, // pending_reason = 4, LEN, empty: `optional`, so still sent
    ];
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(
        PlannedOp::decode(expected)?.pending_reason,
        Some(String::new())
    );
    Ok(())
}

#[test]
fn watch_event_wire_bytes() {
    let change = WatchEvent {
        event: Some(watch_event::Event::Change(ItemStatus {
            key: "a".into(),
            ..Default::default()
        })),
    };
    // change = 2 (oneof event), LEN, 3 bytes: key = 1, LEN, "a"
    assert_eq!(change.encode_to_vec(), [0x12, 0x03, 0x0A, 0x01, b'a']);
    let snapshot = WatchEvent {
        event: Some(watch_event::Event::Snapshot(StatusSnapshot::default())),
    };
    // snapshot = 1, LEN, empty: an empty snapshot is still a snapshot.
    assert_eq!(snapshot.encode_to_vec(), [0x0A, 0x00]);
}

#[test]
fn nat_sessions_request_wire_bytes() {
    let msg = NatSessionsRequest {
        page_size: 300,
        page_token: "t".into(),
        filter: Some(NatSessionFilter {
            ip_protocol: 6,
            address: String::new(),
            port: 80,
            kind: nat_session::Kind::Dnat.into(),
        }),
    };
    let expected: &[u8] = &[
        0x08, 0xAC, 0x02, // page_size = 1, VARINT, 300
        0x12, 0x01, b't', // page_token = 2, LEN, "t"
        0x1A, 0x06, // filter = 3, LEN, 6 bytes:
        0x08, 0x06, //   ip_protocol = 1, VARINT, 6
        0x18, 0x50, //   port = 3, VARINT, 80 (address = 2 empty: omitted)
        0x20, 0x02, //   kind = 4, VARINT, KIND_DNAT = 2
    ];
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn health_response_wire_bytes() {
    let msg = HealthResponse {
        status: health_response::ServingStatus::NotServing.into(),
        not_configured: vec!["x".into()],
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x08, 0x02, // status = 1, VARINT, SERVING_STATUS_NOT_SERVING = 2
        0x42, 0x01, b'x', // not_configured = 8, LEN: (8 << 3) | 2 = 0x42, "x"
    ];
    assert_eq!(msg.encode_to_vec(), expected);
}

#[test]
fn nat_session_round_trips_with_absent_inbound() -> TestResult {
    let msg = NatSession {
        ip_protocol: 17,
        inside: Some(NatEndpoint {
            address: "192.168.100.10".into(),
            port: 5353,
        }),
        external: Some(NatEndpoint {
            address: "80.80.80.100".into(),
            port: 1024,
        }),
        remote: Some(NatEndpoint {
            address: "8.8.8.8".into(),
            port: 53,
        }),
        remote_translated: None,
        kinds: vec![nat_session::Kind::Snat.into()],
        state: "half".into(),
        age_ns: Some(1),
        idle_ns: 1,
        outbound: Some(PacketBytes {
            packets: 1,
            bytes: 80,
        }),
        inbound: None,
        side: NatRole::Inside.into(),
    };
    let back = NatSession::decode(msg.encode_to_vec().as_slice())?;
    assert_eq!(back, msg);
    assert!(back.inbound.is_none() && back.remote_translated.is_none());
    // age_ns has presence: 0 is sent (field 8, varint 0), absence is not.
    let zero = NatSession {
        age_ns: Some(0),
        ..Default::default()
    };
    assert_eq!(zero.encode_to_vec(), [0x40, 0x00]);
    assert_eq!(NatSession::default().encode_to_vec(), Vec::<u8>::new());
    assert_eq!(NatSession::decode(&[0x40, 0x00][..])?.age_ns, Some(0));
    Ok(())
}

#[test]
fn agent_service_has_every_rpc_with_its_types() -> TestResult {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let service = fds
        .file
        .iter()
        .filter(|f| f.name() == "xcnf/v1alpha1/api.proto")
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "AgentService")
        .ok_or("AgentService missing from api.proto")?;
    let got: Vec<(&str, &str, &str, bool)> = service
        .method
        .iter()
        .map(|m| {
            (
                m.name(),
                m.input_type(),
                m.output_type(),
                m.server_streaming(),
            )
        })
        .collect();
    let p = ".xcnf.v1alpha1.";
    let want: Vec<(String, String, String, bool)> = [
        ("Get", "GetRequest", "GetResponse", false),
        ("Apply", "ApplyRequest", "ApplyResponse", false),
        ("Delete", "DeleteRequest", "DeleteResponse", false),
        ("Status", "StatusRequest", "StatusResponse", false),
        ("Watch", "WatchRequest", "WatchEvent", true),
        ("Stats", "StatsRequest", "StatsResponse", false),
        (
            "NatSessions",
            "NatSessionsRequest",
            "NatSessionsResponse",
            false,
        ),
        ("NatStats", "NatStatsRequest", "NatStatsResponse", false),
        ("Health", "HealthRequest", "HealthResponse", false),
        ("VppCli", "VppCliRequest", "VppCliResponse", false),
    ]
    .iter()
    .map(|(n, i, o, s)| (n.to_string(), format!("{p}{i}"), format!("{p}{o}"), *s))
    .collect();
    let got: Vec<(String, String, String, bool)> = got
        .into_iter()
        .map(|(n, i, o, s)| (n.to_owned(), i.to_owned(), o.to_owned(), s))
        .collect();
    assert_eq!(got, want);
    // No other service: DatapathService was folded into AgentService.
    let services: Vec<&str> = fds
        .file
        .iter()
        .flat_map(|f| &f.service)
        .map(|s| s.name())
        .collect();
    assert_eq!(services, ["AgentService"]);
    Ok(())
}
