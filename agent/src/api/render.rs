//! What `xcnfctl` prints for each response: tables for people (through the
//! same `nat::show` code as the agent's own views), or JSON values, in the
//! proto3 JSON naming, that `-o json|yaml` serialises.

use std::time::SystemTime;

use serde_json::{Value, json};
use xcnf_proto::v1alpha1 as pb;

use super::convert::{
    self, counters_from_pb, nat_stats_from_pb, op_name, session_from_pb, state_text,
};
use crate::{
    config::proto_name,
    nat::show::{self, IfaceView, SESSION_HEADERS, human_duration, kind_names, session_row},
};

fn ago(since_unix_ns: i64, now: SystemTime) -> String {
    now.duration_since(convert::since(since_unix_ns))
        .map_or_else(|_| "0s".to_owned(), |d| human_duration(d.as_nanos() as u64))
}

/// KEY, STATE, SINCE (time in that state), REASON, DETAIL.
pub fn status_table(items: &[pb::ItemStatus], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            let (state, reason) = state_text(s);
            vec![
                s.key.clone(),
                state.to_owned(),
                ago(s.since_unix_ns, now),
                if reason.is_empty() {
                    "-".into()
                } else {
                    reason
                },
                s.detail.clone(),
            ]
        })
        .collect();
    show::table(&["ITEM", "STATE", "SINCE", "REASON", "DETAIL"], &rows)
}

pub fn status_json(s: &pb::ItemStatus) -> Value {
    let (state, reason) = state_text(s);
    json!({
        "key": s.key,
        "state": state,
        "reason": reason,
        "detail": s.detail,
        "sinceUnixNs": s.since_unix_ns,
    })
}

/// The plan in execution order, then what happened.
pub fn report_text(r: &pb::TransactionReport) -> String {
    let rows: Vec<Vec<String>> = r
        .plan
        .iter()
        .map(|op| {
            vec![
                op_name(op.op()).to_owned(),
                op.key.clone(),
                op.detail.clone(),
                op.pending_reason
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| format!("pending: {p}")),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no changes\n".to_owned()
    } else {
        show::table(&["OP", "ITEM", "DETAIL", "WAITS FOR"], &rows)
    };
    out.push_str(if r.applied {
        "applied\n"
    } else {
        "dry run: nothing changed\n"
    });
    out
}

pub fn report_json(r: &pb::TransactionReport) -> Value {
    json!({
        "plan": r.plan.iter().map(|op| json!({
            "op": op_name(op.op()),
            "key": op.key,
            "detail": op.detail,
            "pendingReason": op.pending_reason,
        })).collect::<Vec<_>>(),
        "applied": r.applied,
        "statuses": r.statuses.iter().map(status_json).collect::<Vec<_>>(),
    })
}

fn iface_view(c: &pb::InterfaceCounters) -> IfaceView {
    let name = match (c.interface.as_str(), c.host_if_name.as_str()) {
        ("", host) => host.to_owned(),
        (logical, host) if logical == host => logical.to_owned(),
        (logical, host) => format!("{logical} ({host})"),
    };
    IfaceView {
        name,
        ifindex: c.ifindex,
        role: convert::nat_role(c.nat_role()),
        counters: counters_from_pb(c),
    }
}

pub fn stats_text(r: &pb::StatsResponse) -> String {
    let views: Vec<IfaceView> = r.interfaces.iter().map(iface_view).collect();
    show::counters_text(&views)
}

pub fn stats_json(r: &pb::StatsResponse) -> Value {
    Value::Array(
        r.interfaces
            .iter()
            .map(|c| {
                let k = counters_from_pb(c);
                let p = k.passed;
                let d = k.dropped;
                json!({
                    "interface": c.interface,
                    "hostIfName": c.host_if_name,
                    "ifindex": c.ifindex,
                    "natRole": c.nat_role().as_str_name(),
                    "rx": {"packets": k.rx.packets, "bytes": k.rx.bytes},
                    "forwarded": {"packets": k.forwarded.packets, "bytes": k.forwarded.bytes},
                    "passed": {
                        "notIpv4": p.not_ipv4, "notForUs": p.not_for_us, "ipOptions": p.ip_options,
                        "ttlExpired": p.ttl_expired, "notForwarded": p.not_forwarded,
                        "noRoute": p.no_route, "fwdDisabled": p.fwd_disabled,
                        "fragNeeded": p.frag_needed, "noNeigh": p.no_neigh,
                        "unmanagedEgress": p.unmanaged_egress, "other": p.other,
                    },
                    "dropped": {
                        "malformed": d.malformed, "blackhole": d.blackhole,
                        "redirectFailed": d.redirect_failed, "natNoMapping": d.nat_no_mapping,
                        "natPoolExhausted": d.nat_pool_exhausted, "natTableFull": d.nat_table_full,
                        "natFragmentUntracked": d.nat_fragment_untracked,
                        "natUnroutable": d.nat_unroutable,
                        "natIpOptions": d.nat_ip_options,
                    },
                })
            })
            .collect(),
    )
}

/// The sessions of a page, then a count line.
pub fn sessions_text(r: &pb::NatSessionsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .sessions
        .iter()
        .map(|s| session_row(&session_from_pb(s)))
        .collect();
    let mut out = show::table(&SESSION_HEADERS, &rows);
    out.push_str(&format!(
        "{} of {} sessions ({} map entries)\n",
        rows.len(),
        r.total,
        r.map_entries
    ));
    out
}

pub fn session_json(s: &pb::NatSession) -> Value {
    let v = session_from_pb(s);
    let ep = |(a, p): (std::net::Ipv4Addr, u16)| json!({"address": a.to_string(), "port": p});
    json!({
        "protocol": proto_name(v.proto),
        "inside": ep(v.inside),
        "external": ep(v.external),
        "remote": ep(v.remote),
        "remoteTranslated": v.remote_translated.map(ep),
        "kind": kind_names(v.kind),
        "state": v.state,
        "ageNs": v.age_ns,
        "idleNs": v.idle_ns,
        "outbound": {"packets": v.outbound.packets, "bytes": v.outbound.bytes},
        "inbound": v.inbound.map(|p| json!({"packets": p.packets, "bytes": p.bytes})),
    })
}

pub fn nat_stats_text(r: &pb::NatStatsResponse) -> String {
    let (cfg, active, sum) = nat_stats_from_pb(r);
    show::stats_text(&cfg, active, &[sum])
}

pub fn nat_stats_json(r: &pb::NatStatsResponse) -> Value {
    let (_, _, s) = nat_stats_from_pb(r);
    json!({
        "enabled": r.enabled,
        "mapping": r.mapping().as_str_name(),
        "poolAddresses": r.pool_addresses,
        "poolRanges": r.pool_ranges,
        "activeSessions": r.active_sessions,
        "maxSessions": r.max_sessions,
        "counters": {
            "snatSessions": s.snat_sessions, "dnatSessions": s.dnat_sessions,
            "staticSnatSessions": s.static_snat_sessions, "hairpinSessions": s.hairpin_sessions,
            "addrOnlySessions": s.addr_only_sessions,
            "translatedFromInside": s.translated_from_inside,
            "translatedFromOutside": s.translated_from_outside,
            "icmpErrorsTranslated": s.icmp_errors_translated,
            "fragmentsTranslated": s.fragments_translated, "identity": s.identity,
            "arpReplies": s.arp_replies, "poolExhausted": s.pool_exhausted,
            "tableFull": s.table_full, "noMapping": s.no_mapping,
            "fragmentUntracked": s.fragment_untracked,
            "icmpErrorUnmatched": s.icmp_error_unmatched, "createRaces": s.create_races,
        },
    })
}

fn serving(r: &pb::HealthResponse) -> &'static str {
    match r.status() {
        pb::health_response::ServingStatus::Serving => "serving",
        pb::health_response::ServingStatus::NotServing => "not serving",
        pb::health_response::ServingStatus::Unspecified => "unknown",
    }
}

pub fn health_text(r: &pb::HealthResponse) -> String {
    let mut out = format!(
        "{}: {} items, {} configured, {} pending, {} failed, {} retrying\n",
        serving(r),
        r.items,
        r.configured,
        r.pending,
        r.failed,
        r.retrying
    );
    if !r.reason.is_empty() {
        out.push_str(&format!("reason: {}\n", r.reason));
    }
    for k in &r.not_configured {
        out.push_str(&format!("not configured: {k}\n"));
    }
    out
}

pub fn health_json(r: &pb::HealthResponse) -> Value {
    json!({
        "status": serving(r),
        "reason": r.reason,
        "items": r.items,
        "configured": r.configured,
        "pending": r.pending,
        "failed": r.failed,
        "retrying": r.retrying,
        "notConfigured": r.not_configured,
    })
}

/// One line per watch event: a snapshot as its table, a change as a line.
pub fn watch_text(e: &pb::WatchEvent, now: SystemTime) -> String {
    match &e.event {
        Some(pb::watch_event::Event::Snapshot(s)) => status_table(&s.items, now),
        Some(pb::watch_event::Event::Change(s)) => {
            let (state, reason) = state_text(s);
            let mut line = format!("{} {state}", s.key);
            if !reason.is_empty() {
                line.push_str(&format!(" ({reason})"));
            }
            if !s.detail.is_empty() {
                line.push_str(&format!(": {}", s.detail));
            }
            line.push('\n');
            line
        }
        None => String::new(),
    }
}

pub fn watch_json(e: &pb::WatchEvent) -> Value {
    match &e.event {
        Some(pb::watch_event::Event::Snapshot(s)) => {
            json!({"snapshot": s.items.iter().map(status_json).collect::<Vec<_>>()})
        }
        Some(pb::watch_event::Event::Change(s)) => json!({"change": status_json(s)}),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn status_rows_show_state_age_and_reason() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let items = vec![
            pb::ItemStatus {
                key: "interface/outside".into(),
                state: pb::item_status::State::Pending.into(),
                reason: "host interface nsm1 does not exist".into(),
                detail: "host nsm1, up".into(),
                since_unix_ns: 940_000_000_000,
                attempt: 0,
            },
            pb::ItemStatus {
                key: "nat44".into(),
                state: pb::item_status::State::Configured.into(),
                since_unix_ns: 999_000_000_000,
                ..Default::default()
            },
        ];
        let text = status_table(&items, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("interface/outside  pending"), "{text}");
        assert!(lines[1].contains("1m00s  host interface nsm1 does not exist  host nsm1, up"));
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["nat44", "configured", "1s", "-"]
        );
    }

    #[test]
    fn reports_say_whether_anything_changed() {
        let r = pb::TransactionReport {
            plan: vec![pb::PlannedOp {
                op: pb::planned_op::Op::Create.into(),
                key: "route/0.0.0.0/0/metric/100".into(),
                detail: "via 80.80.80.1 dev outside".into(),
                pending_reason: Some("interface/outside is pending".into()),
            }],
            applied: false,
            statuses: vec![],
        };
        let text = report_text(&r);
        assert!(text.contains("create  route/0.0.0.0/0/metric/100  via 80.80.80.1 dev outside  pending: interface/outside is pending"), "{text}");
        assert!(text.ends_with("dry run: nothing changed\n"));
        assert_eq!(report_json(&r)["plan"][0]["op"], "create");
        let empty = pb::TransactionReport {
            applied: true,
            ..Default::default()
        };
        assert_eq!(report_text(&empty), "no changes\napplied\n");
    }

    #[test]
    fn counters_name_logical_and_host_interface() {
        let mut c = convert::counters_to_pb(&xcnf_common::IfCounters::default());
        c.interface = "inside".into();
        c.host_if_name = "c0".into();
        c.ifindex = 4;
        c.nat_role = pb::NatRole::Inside.into();
        let text = stats_text(&pb::StatsResponse {
            interfaces: vec![c],
        });
        assert_eq!(
            text.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec![
                "inside", "(c0)", "4", "inside", "0", "0B", "0", "0", "0"
            ])
        );
    }
}
