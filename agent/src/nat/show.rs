//! Human-readable views of the NAT and counter maps, for `xcnfctl`.
//!
//! Pure functions from map contents to text, so the pairing and the
//! wording can be tested with synthetic entries.

use std::{fmt::Write as _, net::Ipv4Addr};

use xcnf_common::{
    DropReasons, IfCounters, PacketBytes, PassReasons,
    nat::{NatConfig, NatStats, Session, SessionKey, config_flags, kind, proto, role},
};

use super::session::{State, idle_ns, pair};
use crate::config::proto_name;

/// Left-aligned columns separated by two spaces; trailing spaces trimmed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (c, w) in r.iter().zip(&widths) {
            let _ = write!(line, "{c:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `59s`, `4m02s`, `2h03m`, `3d04h`; sub-second as `0.25s`.
pub fn human_duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0 => format!("{:.2}s", ns as f64 / 1e9),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512B`, `1.5K`, `3.2M`, `7.0G` (powers of 1024).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

fn endpoint(p: u8, addr: [u8; 4], port: u16) -> String {
    let a = Ipv4Addr::from(addr);
    match p {
        proto::TCP | proto::UDP => format!("{a}:{port}"),
        proto::ICMP if port != 0 => format!("{a} id {port}"),
        _ => a.to_string(),
    }
}

/// The [`kind`] bits by name, joined with `+`.
pub fn kind_names(bits: u8) -> String {
    let names: Vec<&str> = [
        (kind::SNAT, "snat"),
        (kind::DNAT, "dnat"),
        (kind::STATIC_SNAT, "static"),
        (kind::HAIRPIN, "hairpin"),
        (kind::ADDR_ONLY, "addr-only"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join("+")
    }
}

fn traffic(p: &PacketBytes) -> String {
    format!("{}/{}", p.packets, human_bytes(p.bytes))
}

pub const SESSION_HEADERS: [&str; 10] = [
    "PROTO",
    "INSIDE",
    "EXTERNAL",
    "REMOTE",
    "KIND",
    "STATE",
    "AGE",
    "IDLE",
    "OUT PKT/B",
    "IN PKT/B",
];

/// One session as `xcnfctl nat sessions` shows it; the API carries the same
/// fields, so the client rebuilds this from the wire and prints it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub proto: u8,
    /// The inside host as it sent the packet (address, port or ICMP id).
    pub inside: (Ipv4Addr, u16),
    /// What the inside host is translated to.
    pub external: (Ipv4Addr, u16),
    /// The destination the inside host dialled.
    pub remote: (Ipv4Addr, u16),
    /// Who answers, when the destination was translated too (hairpin).
    pub remote_translated: Option<(Ipv4Addr, u16)>,
    /// [`kind`] bits.
    pub kind: u8,
    /// A [`State`] name, or `half` for a half without its peer.
    pub state: String,
    /// `None` where the NAT does not tell (VPP).
    pub age_ns: Option<u64>,
    pub idle_ns: u64,
    /// Traffic of the half shown.
    pub outbound: PacketBytes,
    /// Traffic of the other half; `None` for a half.
    pub inbound: Option<PacketBytes>,
    /// The [`role`] the shown half's packets arrive from.
    pub side: u8,
}

impl SessionView {
    /// The listing order, also the API's paging order: protocol, inside
    /// endpoint, remote endpoint, side (the shown half's map key).
    pub fn order(&self) -> (u8, u32, u16, u32, u16, u8) {
        (
            self.proto,
            u32::from(self.inside.0),
            self.inside.1,
            u32::from(self.remote.0),
            self.remote.1,
            self.side,
        )
    }
}

/// One view per session: the half that arrived from inside (for a hairpin
/// session, its initiator) gives the inside, external and remote endpoints.
/// Halves without a peer get a view of their own, state `half`. Sorted by
/// [`SessionView::order`].
pub fn session_views(halves: &[(SessionKey, Session)], now_ns: u64) -> Vec<SessionView> {
    let pairing = pair(halves);
    let mut views = Vec::with_capacity(pairing.pairs.len() + pairing.orphans.len());
    for &(i, j) in &pairing.pairs {
        let (a, b) = (&halves[i], &halves[j]);
        let (p, o) = match (a.0.dir, b.0.dir) {
            (role::INSIDE, role::OUTSIDE) => (a, b),
            (role::OUTSIDE, role::INSIDE) => (b, a),
            _ if b.1.is_initiator() && !a.1.is_initiator() => (b, a),
            _ => (a, b),
        };
        let state = State::of(p.0.proto, &p.1, &o.1).to_string();
        let age = now_ns.saturating_sub(p.1.created_ns().min(o.1.created_ns()));
        let idle = idle_ns(now_ns, &p.1, &o.1);
        views.push(view(p, state, age, idle, Some(traffic_of(&o.1))));
    }
    for &i in &pairing.orphans {
        let h = &halves[i];
        let age = now_ns.saturating_sub(h.1.created_ns());
        let idle = now_ns.saturating_sub(h.1.last_seen_ns);
        views.push(view(h, "half".to_owned(), age, idle, None));
    }
    views.sort_by_key(SessionView::order);
    views
}

fn traffic_of(s: &Session) -> PacketBytes {
    PacketBytes {
        packets: s.packets,
        bytes: s.bytes,
    }
}

fn view(
    (k, v): &(SessionKey, Session),
    state: String,
    age_ns: u64,
    idle_ns: u64,
    inbound: Option<PacketBytes>,
) -> SessionView {
    let remote = (Ipv4Addr::from(k.daddr), k.dport);
    let answers = (Ipv4Addr::from(v.daddr), v.dport);
    SessionView {
        proto: k.proto,
        inside: (Ipv4Addr::from(k.saddr), k.sport),
        external: (Ipv4Addr::from(v.saddr), v.sport),
        remote,
        // Destination translated too (hairpin): what was dialled → who answers.
        remote_translated: (answers != remote).then_some(answers),
        kind: v.kind,
        state,
        age_ns: Some(age_ns),
        idle_ns,
        outbound: traffic_of(v),
        inbound,
        side: k.dir,
    }
}

/// A session's line under [`SESSION_HEADERS`].
pub fn session_row(v: &SessionView) -> Vec<String> {
    let p = v.proto;
    let ep = |(a, port): (Ipv4Addr, u16)| endpoint(p, a.octets(), port);
    let mut remote = ep(v.remote);
    if let Some(t) = v.remote_translated {
        remote = format!("{remote}→{}", ep(t));
    }
    vec![
        proto_name(p).to_owned(),
        ep(v.inside),
        ep(v.external),
        remote,
        kind_names(v.kind),
        v.state.clone(),
        v.age_ns.map_or_else(|| "-".to_owned(), human_duration),
        human_duration(v.idle_ns),
        traffic(&v.outbound),
        v.inbound.as_ref().map_or_else(|| "-".to_owned(), traffic),
    ]
}

/// [`session_views`] as table rows.
pub fn session_rows(halves: &[(SessionKey, Session)], now_ns: u64) -> Vec<Vec<String>> {
    session_views(halves, now_ns)
        .iter()
        .map(session_row)
        .collect()
}

/// `xcnfctl nat stats`: the configuration, active sessions, and the
/// per-CPU event counters summed.
pub fn stats_text(cfg: &NatConfig, active: u64, per_cpu: &[NatStats]) -> String {
    let sum = NatStats::summed(per_cpu);
    let totals = stats_fields(&sum);
    let enabled = cfg.flags & config_flags::ENABLED != 0;
    let mapping = if cfg.flags & config_flags::ENDPOINT_DEPENDENT != 0 {
        "endpoint-dependent"
    } else {
        "endpoint-independent"
    };
    let head: Vec<(&str, String)> = if enabled {
        vec![
            ("nat44", format!("enabled, {mapping}")),
            (
                "pool",
                format!("{} addresses in {} ranges", cfg.pool_addrs, cfg.pool_ranges),
            ),
            (
                "active sessions",
                format!("{active} of {}", cfg.max_sessions),
            ),
        ]
    } else {
        vec![("nat44", "not configured".to_owned())]
    };
    let rows: Vec<Vec<String>> = head
        .into_iter()
        .chain(totals.iter().map(|(n, v)| (*n, v.to_string())))
        .map(|(n, v)| vec![n.to_owned(), v])
        .collect();
    table(&["", ""], &rows)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every [`NatStats`] field with its label; destructured, so a field added
/// to the struct cannot be forgotten here.
fn stats_fields(s: &NatStats) -> [(&'static str, u64); 17] {
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
    [
        ("sessions created: snat", snat_sessions),
        ("sessions created: dnat", dnat_sessions),
        ("sessions created: static snat", static_snat_sessions),
        ("sessions created: hairpin", hairpin_sessions),
        ("sessions created: address-only", addr_only_sessions),
        ("translated from inside", translated_from_inside),
        ("translated from outside", translated_from_outside),
        ("icmp errors translated", icmp_errors_translated),
        ("fragments translated", fragments_translated),
        ("identity (exempt) packets", identity),
        ("arp replies", arp_replies),
        ("refused: pool exhausted", pool_exhausted),
        ("refused: table full", table_full),
        ("dropped: no mapping", no_mapping),
        ("dropped: fragment untracked", fragment_untracked),
        ("icmp errors unmatched", icmp_error_unmatched),
        ("creation races", create_races),
    ]
}

fn pass_reasons(p: &PassReasons) -> [(&'static str, u64); 11] {
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
    } = *p;
    [
        ("not_ipv4", not_ipv4),
        ("not_for_us", not_for_us),
        ("ip_options", ip_options),
        ("ttl_expired", ttl_expired),
        ("not_forwarded", not_forwarded),
        ("no_route", no_route),
        ("fwd_disabled", fwd_disabled),
        ("frag_needed", frag_needed),
        ("no_neigh", no_neigh),
        ("unmanaged_egress", unmanaged_egress),
        ("other", other),
    ]
}

fn drop_reasons(d: &DropReasons) -> [(&'static str, u64); 9] {
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
    } = *d;
    [
        ("malformed", malformed),
        ("blackhole", blackhole),
        ("redirect_failed", redirect_failed),
        ("nat_no_mapping", nat_no_mapping),
        ("nat_pool_exhausted", nat_pool_exhausted),
        ("nat_table_full", nat_table_full),
        ("nat_fragment_untracked", nat_fragment_untracked),
        ("nat_unroutable", nat_unroutable),
        ("nat_ip_options", nat_ip_options),
    ]
}

/// One managed interface for `xcnfctl counters`.
#[derive(Clone, Debug)]
pub struct IfaceView {
    pub name: String,
    pub ifindex: u32,
    pub role: u8,
    /// Summed over CPUs.
    pub counters: IfCounters,
}

pub fn role_name(r: u8) -> &'static str {
    match r {
        role::INSIDE => "inside",
        role::OUTSIDE => "outside",
        _ => "-",
    }
}

/// A summary table, then every non-zero pass and drop reason by interface.
pub fn counters_text(ifaces: &[IfaceView]) -> String {
    let rows: Vec<Vec<String>> = ifaces
        .iter()
        .map(|i| {
            let c = &i.counters;
            vec![
                i.name.clone(),
                i.ifindex.to_string(),
                role_name(i.role).to_owned(),
                c.rx.packets.to_string(),
                human_bytes(c.rx.bytes),
                c.forwarded.packets.to_string(),
                c.passed.total().to_string(),
                c.dropped.total().to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "INTERFACE",
            "IFINDEX",
            "NAT ROLE",
            "RX PKTS",
            "RX BYTES",
            "FORWARDED",
            "PASSED",
            "DROPPED",
        ],
        &rows,
    );
    let mut detail = Vec::new();
    for i in ifaces {
        let passed = pass_reasons(&i.counters.passed).map(|(n, v)| ("passed", n, v));
        let dropped = drop_reasons(&i.counters.dropped).map(|(n, v)| ("dropped", n, v));
        for (what, reason, v) in passed.into_iter().chain(dropped) {
            if v != 0 {
                detail.push(vec![
                    i.name.clone(),
                    what.to_owned(),
                    reason.to_owned(),
                    v.to_string(),
                ]);
            }
        }
    }
    if !detail.is_empty() {
        out.push('\n');
        out.push_str(&table(&["INTERFACE", "", "REASON", "PKTS"], &detail));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use xcnf_common::nat::{INITIATOR, tcp_seen};

    use super::*;
    use crate::nat::session::tests::snat_pair;

    const S: u64 = 1_000_000_000;

    #[test]
    fn sessions_print_one_aligned_line_each_from_the_inside_view() {
        let mut tcp = snat_pair(
            ([192, 168, 100, 10], 40000),
            ([80, 80, 80, 100], 1024),
            ([80, 80, 80, 80], 80),
            proto::TCP,
        );
        for (n, h) in tcp.iter_mut().enumerate() {
            h.1.flags = tcp_seen::SYN;
            h.1.created_s = 100;
            h.1.last_seen_ns = (395 + n as u64) * S;
            h.1.packets = 10 + n as u64;
            h.1.bytes = 2048 * (n as u64 + 1);
        }
        let mut icmp = snat_pair(
            ([192, 168, 100, 10], 7),
            ([80, 80, 80, 100], 7),
            ([80, 80, 80, 80], 0),
            proto::ICMP,
        );
        icmp[0].1.created_s = 399;
        icmp[1].1.created_s = 399;
        icmp[0].1.last_seen_ns = 399 * S;
        icmp[1].1.last_seen_ns = 399 * S;
        // The outside half first: the inside half must still be the one shown.
        let halves = vec![tcp[1], icmp[0], tcp[0], icmp[1]];
        let text = table(&SESSION_HEADERS, &session_rows(&halves, 400 * S));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "icmp",
                "192.168.100.10",
                "id",
                "7",
                "80.80.80.100",
                "id",
                "7",
                "80.80.80.80",
                "snat",
                "icmp",
                "1s",
                "1s",
                "0/0B",
                "0/0B"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "tcp",
                "192.168.100.10:40000",
                "80.80.80.100:1024",
                "80.80.80.80:80",
                "snat",
                "established",
                "5m00s",
                "4s",
                "10/2.0K",
                "11/4.0K"
            ]
        );
        // Aligned: every column starts at the same offset on every line.
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(
            col(lines[0], "EXTERNAL"),
            col(lines[2], "80.80.80.100:1024")
        );
        assert_eq!(col(lines[0], "STATE"), col(lines[2], "established"));
        assert_eq!(col(lines[0], "IN PKT/B"), lines[1].rfind("0/0B").unwrap());
        assert_eq!(col(lines[0], "IN PKT/B"), col(lines[2], "11/4.0K"));
    }

    #[test]
    fn hairpin_shows_dialled_and_real_destination_and_halves_stand_alone() {
        // A (192.168.100.10) dials B's external 80.80.80.101:80; B is 192.168.100.11.
        let ka = SessionKey {
            saddr: [192, 168, 100, 10],
            daddr: [80, 80, 80, 101],
            sport: 5555,
            dport: 80,
            proto: proto::TCP,
            dir: role::INSIDE,
            _pad: [0; 2],
        };
        let va = Session {
            saddr: [80, 80, 80, 100],
            daddr: [192, 168, 100, 11],
            sport: 5555,
            dport: 80,
            peer_dir: role::INSIDE,
            kind: kind::HAIRPIN | kind::SNAT,
            flags: INITIATOR,
            ..Default::default()
        };
        let kb = ka.peer(&va);
        let vb = Session {
            saddr: ka.daddr,
            daddr: ka.saddr,
            sport: ka.dport,
            dport: ka.sport,
            peer_dir: role::INSIDE,
            kind: va.kind,
            ..Default::default()
        };
        let [orphan, _] = snat_pair(
            ([192, 168, 100, 12], 9),
            ([80, 80, 80, 100], 9),
            ([80, 80, 80, 80], 9),
            proto::UDP,
        );
        let rows = session_rows(&[(kb, vb), orphan, (ka, va)], 0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], "192.168.100.10:5555");
        assert_eq!(rows[0][3], "80.80.80.101:80→192.168.100.11:80");
        assert_eq!(rows[0][4], "snat+hairpin");
        assert_eq!(rows[1][0], "udp");
        assert_eq!((rows[1][5].as_str(), rows[1][9].as_str()), ("half", "-"));
    }

    #[test]
    fn durations_and_bytes() {
        assert_eq!(human_duration(250_000_000), "0.25s");
        assert_eq!(human_duration(59 * S), "59s");
        assert_eq!(human_duration(242 * S), "4m02s");
        assert_eq!(human_duration(7440 * S), "2h04m");
        assert_eq!(human_duration(100_000 * S), "1d03h");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(5 << 30), "5.0G");
        assert_eq!(kind_names(0), "-");
        assert_eq!(kind_names(kind::DNAT | kind::ADDR_ONLY), "dnat+addr-only");
    }

    #[test]
    fn stats_sum_cpus_and_show_active() {
        let a = NatStats {
            snat_sessions: 3,
            pool_exhausted: 1,
            ..Default::default()
        };
        let b = NatStats {
            snat_sessions: 4,
            create_races: 2,
            ..Default::default()
        };
        let cfg = NatConfig {
            flags: config_flags::ENABLED,
            pool_ranges: 1,
            pool_addrs: 6,
            max_sessions: 1000,
        };
        let text = stats_text(&cfg, 5, &[a, b]);
        let find = |k: &str| {
            text.lines()
                .find(|l| l.starts_with(k))
                .unwrap_or_else(|| panic!("{k} in {text}"))
                .trim_start_matches(k)
                .trim()
                .to_owned()
        };
        assert_eq!(find("nat44"), "enabled, endpoint-independent");
        assert_eq!(find("active sessions"), "5 of 1000");
        assert_eq!(find("pool "), "6 addresses in 1 ranges");
        assert_eq!(find("sessions created: snat"), "7");
        assert_eq!(find("refused: pool exhausted"), "1");
        assert_eq!(find("creation races"), "2");
        assert_eq!(text.lines().count(), 3 + 17);
        assert!(stats_text(&NatConfig::default(), 0, &[]).starts_with("nat44"));
    }

    #[test]
    fn counters_list_nonzero_reasons() {
        let mut c = IfCounters {
            rx: PacketBytes {
                packets: 10,
                bytes: 2048,
            },
            forwarded: PacketBytes {
                packets: 6,
                bytes: 1000,
            },
            ..Default::default()
        };
        c.passed.not_ipv4 = 1;
        c.dropped.nat_no_mapping = 2;
        c.dropped.nat_pool_exhausted = 1;
        let text = counters_text(&[
            IfaceView {
                name: "c0".into(),
                ifindex: 3,
                role: role::INSIDE,
                counters: c,
            },
            IfaceView {
                name: "c1".into(),
                ifindex: 5,
                role: role::OUTSIDE,
                counters: IfCounters::default(),
            },
        ]);
        let words: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(words[1], ["c0", "3", "inside", "10", "2.0K", "6", "1", "3"]);
        assert_eq!(words[2], ["c1", "5", "outside", "0", "0B", "0", "0", "0"]);
        assert!(words[3].is_empty());
        assert_eq!(
            &words[5..],
            [
                vec!["c0", "passed", "not_ipv4", "1"],
                vec!["c0", "dropped", "nat_no_mapping", "2"],
                vec!["c0", "dropped", "nat_pool_exhausted", "1"],
            ]
        );
    }
}
