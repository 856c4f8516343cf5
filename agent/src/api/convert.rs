//! Between the agent's types and the API's messages, both ways: the server
//! encodes, `xcnfctl` decodes into the same types so it prints with the same
//! `nat::show` code the agent's tests cover.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};
use xcnf_common::{
    DropReasons, IfCounters, PacketBytes, PassReasons,
    nat::{NatConfig, NatStats, config_flags, kind, role},
};
use xcnf_proto::v1alpha1 as pb;

use crate::{
    config::{Config, FieldError},
    nat::show::SessionView,
    reconcile::{ApplyError, ApplyReport, ItemState, ItemStatus, OpKind, PlannedOp},
};

/// A config sent as protobuf messages.
pub fn config_from_proto(pb: pb::Config) -> Result<Config, Vec<FieldError>> {
    Config::try_from(pb)
}

/// The config as protobuf messages.
pub fn config_to_proto(cfg: &Config) -> pb::Config {
    pb::Config::from(cfg)
}

/// The config a request carries, parsed (not validated: the reconciler
/// validates the result of a merge, not its parts). `field` is the request
/// field's name, for error paths. `None`: the request has no document.
pub fn document(
    doc: Option<pb::ConfigDocument>,
    field: &str,
) -> Result<Option<Config>, Vec<FieldError>> {
    let Some(format) = doc.and_then(|d| d.format) else {
        return Ok(None);
    };
    let prefixed = |errors: Vec<FieldError>| {
        errors
            .into_iter()
            .map(|e| FieldError {
                path: format!("{field}.{}", e.path),
                message: e.message,
            })
            .collect::<Vec<_>>()
    };
    match format {
        pb::config_document::Format::Yaml(text) => {
            Config::parse(&text).map(Some).map_err(|message| {
                vec![FieldError {
                    path: format!("{field}.yaml"),
                    message,
                }]
            })
        }
        pb::config_document::Format::Config(c) => config_from_proto(c).map(Some).map_err(prefixed),
    }
}

/// INVALID_ARGUMENT listing every field error: one `path: message` per line
/// in the message (for people and plain clients), and a google.rpc.BadRequest
/// with one violation each (for programs).
pub fn invalid(errors: &[FieldError]) -> Status {
    let mut message = String::from("invalid config:");
    for e in errors {
        message.push_str(&format!("\n{e}"));
    }
    let violations: Vec<FieldViolation> = errors
        .iter()
        .map(|e| FieldViolation::new(&e.path, &e.message))
        .collect();
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

/// The gRPC status of a transaction that changed nothing.
pub fn apply_error(e: ApplyError) -> Status {
    match e {
        ApplyError::Invalid(errors) => invalid(&errors),
        ApplyError::Failed {
            ref key,
            ref reverted,
            ..
        } => {
            let metadata = HashMap::from([
                ("key".to_owned(), key.to_string()),
                (
                    "reverted".to_owned(),
                    reverted
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ]);
            Status::with_error_details(
                Code::Aborted,
                e.to_string(),
                ErrorDetails::with_error_info("TRANSACTION_ROLLED_BACK", "xcnf.io", metadata),
            )
        }
        ApplyError::Stopped => Status::unavailable(e.to_string()),
        ApplyError::System(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The field errors of an INVALID_ARGUMENT status: from its BadRequest
/// details, else one per line of its message.
pub fn field_errors(status: &Status) -> Vec<FieldError> {
    if let Some(br) = status.get_details_bad_request() {
        return br
            .field_violations
            .into_iter()
            .map(|v| FieldError {
                path: v.field,
                message: v.description,
            })
            .collect();
    }
    status
        .message()
        .lines()
        .skip(1)
        .map(|l| match l.split_once(": ") {
            Some((path, message)) => FieldError {
                path: path.to_owned(),
                message: message.to_owned(),
            },
            None => FieldError {
                path: String::new(),
                message: l.to_owned(),
            },
        })
        .collect()
}

fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall-clock time of `since_unix_ns`.
pub fn since(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

pub fn status_to_pb(s: &ItemStatus) -> pb::ItemStatus {
    use pb::item_status::State;
    let (state, reason, attempt) = match &s.state {
        ItemState::Configured => (State::Configured, String::new(), 0),
        ItemState::Pending(r) => (State::Pending, r.clone(), 0),
        ItemState::Failed(r) => (State::Failed, r.clone(), 0),
        ItemState::Retrying { error, attempt } => (State::Retrying, error.clone(), *attempt),
        ItemState::Removed => (State::Removed, String::new(), 0),
    };
    pb::ItemStatus {
        key: s.key.to_string(),
        state: state.into(),
        reason,
        detail: s.detail.clone(),
        since_unix_ns: unix_ns(s.since),
        attempt,
    }
}

/// The state's name and reason as `ItemState` prints them.
pub fn state_text(s: &pb::ItemStatus) -> (&'static str, String) {
    use pb::item_status::State;
    match s.state() {
        State::Unspecified => ("unknown", s.reason.clone()),
        State::Configured => ("configured", String::new()),
        State::Pending => ("pending", s.reason.clone()),
        State::Failed => ("failed", s.reason.clone()),
        State::Retrying => ("retrying", format!("attempt {}: {}", s.attempt, s.reason)),
        State::Removed => ("removed", String::new()),
    }
}

fn op_to_pb(op: &PlannedOp) -> pb::PlannedOp {
    let kind = match op.op {
        OpKind::Create => pb::planned_op::Op::Create,
        OpKind::Update => pb::planned_op::Op::Update,
        OpKind::Delete => pb::planned_op::Op::Delete,
    };
    pb::PlannedOp {
        op: kind.into(),
        key: op.key.to_string(),
        detail: op.detail.clone(),
        pending_reason: op.pending.clone(),
    }
}

/// `create`, `update`, `delete`, as `OpKind::name`.
pub fn op_name(op: pb::planned_op::Op) -> &'static str {
    match op {
        pb::planned_op::Op::Unspecified => "?",
        pb::planned_op::Op::Create => OpKind::Create.name(),
        pb::planned_op::Op::Update => OpKind::Update.name(),
        pb::planned_op::Op::Delete => OpKind::Delete.name(),
    }
}

pub fn report_to_pb(r: &ApplyReport) -> pb::TransactionReport {
    pb::TransactionReport {
        plan: r.plan.iter().map(op_to_pb).collect(),
        applied: r.applied,
        statuses: r.statuses.iter().map(status_to_pb).collect(),
    }
}

fn pb_pair(p: &PacketBytes) -> pb::PacketBytes {
    pb::PacketBytes {
        packets: p.packets,
        bytes: p.bytes,
    }
}

fn pair(p: Option<&pb::PacketBytes>) -> PacketBytes {
    p.map_or_else(PacketBytes::default, |p| PacketBytes {
        packets: p.packets,
        bytes: p.bytes,
    })
}

pub fn nat_role_to_pb(r: u8) -> pb::NatRole {
    match r {
        role::INSIDE => pb::NatRole::Inside,
        role::OUTSIDE => pb::NatRole::Outside,
        _ => pb::NatRole::None,
    }
}

pub fn nat_role(r: pb::NatRole) -> u8 {
    match r {
        pb::NatRole::Inside => role::INSIDE,
        pb::NatRole::Outside => role::OUTSIDE,
        pb::NatRole::None => role::NONE,
    }
}

/// One interface's counters; destructured, so a counter added to the
/// datapath cannot be forgotten here.
pub fn counters_to_pb(c: &IfCounters) -> pb::InterfaceCounters {
    let PassReasons {
        not_ipv4,
        not_for_us,
        ip_options,
        ttl_expired,
        not_forwarded,
        no_route,
        fwd_disabled,
        frag_needed,
        no_neigh,
        unmanaged_egress,
        other,
    } = c.passed;
    let DropReasons {
        malformed,
        blackhole,
        redirect_failed,
        nat_no_mapping,
        nat_pool_exhausted,
        nat_table_full,
        nat_fragment_untracked,
        nat_unroutable,
        nat_ip_options,
    } = c.dropped;
    pb::InterfaceCounters {
        rx: Some(pb_pair(&c.rx)),
        forwarded: Some(pb_pair(&c.forwarded)),
        passed: Some(pb::PassReasons {
            not_ipv4,
            not_for_us,
            ip_options,
            ttl_expired,
            not_forwarded,
            no_route,
            fwd_disabled,
            frag_needed,
            no_neigh,
            unmanaged_egress,
            other,
        }),
        dropped: Some(pb::DropReasons {
            malformed,
            blackhole,
            redirect_failed,
            nat_no_mapping,
            nat_pool_exhausted,
            nat_table_full,
            nat_fragment_untracked,
            nat_unroutable,
            nat_ip_options,
        }),
        ..Default::default()
    }
}

pub fn counters_from_pb(c: &pb::InterfaceCounters) -> IfCounters {
    let p = c.passed.unwrap_or_default();
    let d = c.dropped.unwrap_or_default();
    IfCounters {
        rx: pair(c.rx.as_ref()),
        forwarded: pair(c.forwarded.as_ref()),
        passed: PassReasons {
            not_ipv4: p.not_ipv4,
            not_for_us: p.not_for_us,
            ip_options: p.ip_options,
            ttl_expired: p.ttl_expired,
            not_forwarded: p.not_forwarded,
            no_route: p.no_route,
            fwd_disabled: p.fwd_disabled,
            frag_needed: p.frag_needed,
            no_neigh: p.no_neigh,
            unmanaged_egress: p.unmanaged_egress,
            other: p.other,
        },
        dropped: DropReasons {
            malformed: d.malformed,
            blackhole: d.blackhole,
            redirect_failed: d.redirect_failed,
            nat_no_mapping: d.nat_no_mapping,
            nat_pool_exhausted: d.nat_pool_exhausted,
            nat_table_full: d.nat_table_full,
            nat_fragment_untracked: d.nat_fragment_untracked,
            nat_unroutable: d.nat_unroutable,
            nat_ip_options: d.nat_ip_options,
        },
    }
}

pub fn nat_counters_to_pb(s: &NatStats) -> pb::NatCounters {
    let NatStats {
        snat_sessions,
        dnat_sessions,
        static_snat_sessions,
        hairpin_sessions,
        addr_only_sessions,
        translated_from_inside,
        translated_from_outside,
        icmp_errors_translated,
        fragments_translated,
        identity,
        arp_replies,
        pool_exhausted,
        table_full,
        no_mapping,
        fragment_untracked,
        icmp_error_unmatched,
        create_races,
    } = *s;
    pb::NatCounters {
        snat_sessions,
        dnat_sessions,
        static_snat_sessions,
        hairpin_sessions,
        addr_only_sessions,
        translated_from_inside,
        translated_from_outside,
        icmp_errors_translated,
        fragments_translated,
        identity,
        arp_replies,
        pool_exhausted,
        table_full,
        no_mapping,
        fragment_untracked,
        icmp_error_unmatched,
        create_races,
    }
}

pub fn nat_counters_from_pb(c: &pb::NatCounters) -> NatStats {
    let pb::NatCounters {
        snat_sessions,
        dnat_sessions,
        static_snat_sessions,
        hairpin_sessions,
        addr_only_sessions,
        translated_from_inside,
        translated_from_outside,
        icmp_errors_translated,
        fragments_translated,
        identity,
        arp_replies,
        pool_exhausted,
        table_full,
        no_mapping,
        fragment_untracked,
        icmp_error_unmatched,
        create_races,
    } = *c;
    NatStats {
        snat_sessions,
        dnat_sessions,
        static_snat_sessions,
        hairpin_sessions,
        addr_only_sessions,
        translated_from_inside,
        translated_from_outside,
        icmp_errors_translated,
        fragments_translated,
        identity,
        arp_replies,
        pool_exhausted,
        table_full,
        no_mapping,
        fragment_untracked,
        icmp_error_unmatched,
        create_races,
    }
}

pub fn nat_stats_to_pb(cfg: &NatConfig, active: u64, sum: &NatStats) -> pb::NatStatsResponse {
    let mapping = if cfg.flags & config_flags::ENDPOINT_DEPENDENT != 0 {
        pb::nat44::Mapping::EndpointDependent
    } else {
        pb::nat44::Mapping::EndpointIndependent
    };
    pb::NatStatsResponse {
        enabled: cfg.flags & config_flags::ENABLED != 0,
        mapping: mapping.into(),
        pool_addresses: cfg.pool_addrs,
        pool_ranges: cfg.pool_ranges,
        active_sessions: active,
        max_sessions: cfg.max_sessions,
        counters: Some(nat_counters_to_pb(sum)),
    }
}

/// The response as the datapath's own types, for `nat::show::stats_text`.
pub fn nat_stats_from_pb(r: &pb::NatStatsResponse) -> (NatConfig, u64, NatStats) {
    let mut flags = 0;
    if r.enabled {
        flags |= config_flags::ENABLED;
    }
    if r.mapping() == pb::nat44::Mapping::EndpointDependent {
        flags |= config_flags::ENDPOINT_DEPENDENT;
    }
    let cfg = NatConfig {
        flags,
        pool_ranges: r.pool_ranges,
        pool_addrs: r.pool_addresses,
        max_sessions: r.max_sessions,
    };
    let sum = r
        .counters
        .as_ref()
        .map(nat_counters_from_pb)
        .unwrap_or_default();
    (cfg, r.active_sessions, sum)
}

const KINDS: [(u8, pb::nat_session::Kind); 5] = [
    (kind::SNAT, pb::nat_session::Kind::Snat),
    (kind::DNAT, pb::nat_session::Kind::Dnat),
    (kind::STATIC_SNAT, pb::nat_session::Kind::StaticSnat),
    (kind::HAIRPIN, pb::nat_session::Kind::Hairpin),
    (kind::ADDR_ONLY, pb::nat_session::Kind::AddressOnly),
];

/// The `kind` bit of a filter's kind; 0 for UNSPECIFIED (any).
pub fn kind_bit(k: pb::nat_session::Kind) -> u8 {
    KINDS
        .iter()
        .find(|(_, p)| *p == k)
        .map_or(0, |(bit, _)| *bit)
}

fn endpoint_to_pb((a, port): (Ipv4Addr, u16)) -> pb::NatEndpoint {
    pb::NatEndpoint {
        address: a.to_string(),
        port: port.into(),
    }
}

fn endpoint(e: Option<&pb::NatEndpoint>) -> (Ipv4Addr, u16) {
    e.map_or((Ipv4Addr::UNSPECIFIED, 0), |e| {
        (
            e.address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            u16::try_from(e.port).unwrap_or(u16::MAX),
        )
    })
}

pub fn session_to_pb(v: &SessionView) -> pb::NatSession {
    pb::NatSession {
        ip_protocol: v.proto.into(),
        inside: Some(endpoint_to_pb(v.inside)),
        external: Some(endpoint_to_pb(v.external)),
        remote: Some(endpoint_to_pb(v.remote)),
        remote_translated: v.remote_translated.map(endpoint_to_pb),
        kinds: KINDS
            .iter()
            .filter(|(bit, _)| v.kind & bit != 0)
            .map(|(_, k)| (*k).into())
            .collect(),
        state: v.state.clone(),
        age_ns: v.age_ns,
        idle_ns: v.idle_ns,
        outbound: Some(pb_pair(&v.outbound)),
        inbound: v.inbound.as_ref().map(pb_pair),
        side: nat_role_to_pb(v.side).into(),
    }
}

pub fn session_from_pb(s: &pb::NatSession) -> SessionView {
    SessionView {
        proto: u8::try_from(s.ip_protocol).unwrap_or(u8::MAX),
        inside: endpoint(s.inside.as_ref()),
        external: endpoint(s.external.as_ref()),
        remote: endpoint(s.remote.as_ref()),
        remote_translated: s.remote_translated.as_ref().map(|e| endpoint(Some(e))),
        kind: s.kinds().fold(0, |bits, k| bits | kind_bit(k)),
        state: s.state.clone(),
        age_ns: s.age_ns,
        idle_ns: s.idle_ns,
        outbound: pair(s.outbound.as_ref()),
        inbound: s.inbound.as_ref().map(|p| pair(Some(p))),
        side: nat_role(s.side()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::ItemKey;

    fn distinct_counters() -> IfCounters {
        // Every field a different value, so a swapped pair shows up.
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        IfCounters {
            rx: PacketBytes {
                packets: next(),
                bytes: next(),
            },
            forwarded: PacketBytes {
                packets: next(),
                bytes: next(),
            },
            passed: PassReasons {
                not_ipv4: next(),
                not_for_us: next(),
                ip_options: next(),
                ttl_expired: next(),
                not_forwarded: next(),
                no_route: next(),
                fwd_disabled: next(),
                frag_needed: next(),
                no_neigh: next(),
                unmanaged_egress: next(),
                other: next(),
            },
            dropped: DropReasons {
                malformed: next(),
                blackhole: next(),
                redirect_failed: next(),
                nat_no_mapping: next(),
                nat_pool_exhausted: next(),
                nat_table_full: next(),
                nat_fragment_untracked: next(),
                nat_unroutable: next(),
                nat_ip_options: next(),
            },
        }
    }

    #[test]
    fn counters_and_nat_stats_survive_the_wire() {
        let c = distinct_counters();
        let pb = counters_to_pb(&c);
        assert_eq!(pb.dropped.as_ref().map(|d| d.nat_unroutable), Some(23));
        assert_eq!(counters_from_pb(&pb), c);
        let fields: [u64; NatStats::FIELDS] = std::array::from_fn(|i| i as u64 * 3 + 1);
        let stats = NatStats::from_fields(fields);
        let cfg = NatConfig {
            flags: config_flags::ENABLED | config_flags::ENDPOINT_DEPENDENT,
            pool_ranges: 2,
            pool_addrs: 9,
            max_sessions: 4096,
        };
        let back = nat_stats_from_pb(&nat_stats_to_pb(&cfg, 17, &stats));
        assert_eq!(back, (cfg, 17, stats));
    }

    #[test]
    fn sessions_survive_the_wire() {
        let v = SessionView {
            proto: 6,
            inside: (Ipv4Addr::new(192, 168, 100, 10), 5555),
            external: (Ipv4Addr::new(80, 80, 80, 100), 1024),
            remote: (Ipv4Addr::new(80, 80, 80, 101), 80),
            remote_translated: Some((Ipv4Addr::new(192, 168, 100, 11), 80)),
            kind: kind::SNAT | kind::HAIRPIN,
            state: "established".into(),
            age_ns: Some(7),
            idle_ns: 3,
            outbound: PacketBytes {
                packets: 1,
                bytes: 60,
            },
            inbound: None,
            side: role::INSIDE,
        };
        let pb = session_to_pb(&v);
        assert_eq!(pb.kinds.len(), 2);
        assert_eq!(session_from_pb(&pb), v);
    }

    #[test]
    fn statuses_keep_reason_and_attempt() {
        let s = ItemStatus {
            key: ItemKey::Link("inside".into()),
            state: ItemState::Retrying {
                error: "EBUSY".into(),
                attempt: 3,
            },
            detail: "host c0, up".into(),
            since: UNIX_EPOCH + Duration::from_secs(5),
        };
        let pb = status_to_pb(&s);
        assert_eq!(pb.key, "interface/inside");
        assert_eq!(pb.since_unix_ns, 5_000_000_000);
        assert_eq!(state_text(&pb), ("retrying", s.state.reason()));
        assert_eq!(since(pb.since_unix_ns), s.since);
    }

    #[test]
    fn invalid_carries_every_field_error_both_ways() {
        let errors = vec![
            FieldError {
                path: "spec.routes[0].dst".into(),
                message: "not a prefix".into(),
            },
            FieldError {
                path: "spec.nat44.staticMappings[2].external".into(),
                message: "port 70000 is out of range 1-65535".into(),
            },
        ];
        let st = invalid(&errors);
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(st.message().contains("spec.routes[0].dst: not a prefix"));
        assert_eq!(field_errors(&st), errors);
        // A status without details still yields the lines of its message.
        let plain = Status::invalid_argument(st.message().to_owned());
        assert_eq!(field_errors(&plain), errors);
    }

    #[test]
    fn documents_parse_or_name_the_field() {
        let ok = document(
            Some(pb::ConfigDocument {
                format: Some(pb::config_document::Format::Yaml(crate::config::test_doc(
                    "",
                ))),
            }),
            "document",
        );
        assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
        assert!(matches!(document(None, "patch"), Ok(None)));
        let bad = document(
            Some(pb::ConfigDocument {
                format: Some(pb::config_document::Format::Yaml("spec: [".into())),
            }),
            "document",
        )
        .err()
        .unwrap_or_default();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].path, "document.yaml");
    }
}
