//! NatSessions' filter and paging, as pure functions over the session list.
//!
//! A page token is the listing position of the last session returned, not an
//! offset: sessions come and go between two requests, and an offset would then
//! repeat or skip sessions that did not change.

use std::net::Ipv4Addr;

use xcnf_proto::v1alpha1 as pb;

use super::convert::kind_bit;
use crate::{config::FieldError, nat::show::SessionView};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Largest page: keeps one response well under gRPC's 4 MiB message limit.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// What an address filter matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AddressMatch {
    Any,
    /// Network address (masked) and mask.
    Prefix(u32, u32),
    Text(String),
}

/// A parsed `NatSessionFilter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    proto: Option<u8>,
    address: AddressMatch,
    port: Option<u16>,
    kind: u8,
}

fn err(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message,
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn parse_address(s: &str) -> AddressMatch {
    let s = s.trim();
    if s.is_empty() {
        return AddressMatch::Any;
    }
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32)),
        None => (s, Some(32)),
    };
    match (a.parse::<Ipv4Addr>(), len) {
        (Ok(a), Some(len)) => AddressMatch::Prefix(u32::from(a) & mask(len), mask(len)),
        _ => AddressMatch::Text(s.to_owned()),
    }
}

impl Filter {
    /// Every out-of-range field is reported, each with its path.
    pub fn from_pb(f: Option<&pb::NatSessionFilter>) -> Result<Self, Vec<FieldError>> {
        let Some(f) = f else {
            return Ok(Self {
                proto: None,
                address: AddressMatch::Any,
                port: None,
                kind: 0,
            });
        };
        let mut errors = Vec::new();
        let proto = match u8::try_from(f.ip_protocol) {
            Ok(0) => None,
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(err(
                    "filter.ipProtocol",
                    format!("{} is not an IP protocol number (0-255)", f.ip_protocol),
                ));
                None
            }
        };
        let port = match u16::try_from(f.port) {
            Ok(0) => None,
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(err(
                    "filter.port",
                    format!("port {} is out of range 1-65535", f.port),
                ));
                None
            }
        };
        let kind = match pb::nat_session::Kind::try_from(f.kind) {
            Ok(k) => kind_bit(k),
            Err(_) => {
                errors.push(err("filter.kind", format!("unknown kind {}", f.kind)));
                0
            }
        };
        if errors.is_empty() {
            Ok(Self {
                proto,
                address: parse_address(&f.address),
                port,
                kind,
            })
        } else {
            Err(errors)
        }
    }

    pub fn matches(&self, v: &SessionView) -> bool {
        let endpoints = [Some(v.inside), Some(v.external), Some(v.remote)]
            .into_iter()
            .chain([v.remote_translated])
            .flatten();
        let mut addr_ok = matches!(self.address, AddressMatch::Any);
        let mut port_ok = self.port.is_none();
        for (a, p) in endpoints {
            addr_ok |= match &self.address {
                AddressMatch::Any => true,
                AddressMatch::Prefix(net, m) => u32::from(a) & m == *net,
                AddressMatch::Text(t) => a.to_string().contains(t.as_str()),
            };
            port_ok |= self.port == Some(p);
        }
        self.proto.is_none_or(|p| p == v.proto)
            && (self.kind == 0 || v.kind & self.kind != 0)
            && addr_ok
            && port_ok
    }
}

type Position = (u8, u32, u16, u32, u16, u8);

fn encode_token(p: Position) -> String {
    format!(
        "{:02x}{:08x}{:04x}{:08x}{:04x}{:02x}",
        p.0, p.1, p.2, p.3, p.4, p.5
    )
}

fn decode_token(t: &str) -> Option<Position> {
    if t.len() != 28 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let field = |from: usize, to: usize| u32::from_str_radix(&t[from..to], 16).ok();
    Some((
        u8::try_from(field(0, 2)?).ok()?,
        field(2, 10)?,
        u16::try_from(field(10, 14)?).ok()?,
        field(14, 22)?,
        u16::try_from(field(22, 26)?).ok()?,
        u8::try_from(field(26, 28)?).ok()?,
    ))
}

/// One page of sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub sessions: Vec<SessionView>,
    /// Empty on the last page.
    pub next_token: String,
    /// Sessions matching the filter, over all pages.
    pub total: u64,
}

/// The page of `views` (sorted by [`SessionView::order`], as
/// `nat::show::session_views` returns them) after `token` that match `filter`.
pub fn page(
    views: Vec<SessionView>,
    filter: &Filter,
    page_size: u32,
    token: &str,
) -> Result<Page, Vec<FieldError>> {
    let size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(vec![err(
                "pageSize",
                format!("{n} is more than {MAX_PAGE_SIZE}"),
            )]);
        }
        n => n,
    } as usize;
    let after = if token.is_empty() {
        None
    } else {
        Some(decode_token(token).ok_or_else(|| {
            vec![err(
                "pageToken",
                format!("{token:?} is not a token this API returned"),
            )]
        })?)
    };
    let matching: Vec<SessionView> = views.into_iter().filter(|v| filter.matches(v)).collect();
    let total = matching.len() as u64;
    let start = after.map_or(0, |a| matching.partition_point(|v| v.order() <= a));
    let mut sessions: Vec<SessionView> = matching.into_iter().skip(start).take(size + 1).collect();
    let next_token = if sessions.len() > size {
        sessions.truncate(size);
        sessions
            .last()
            .map(|v| encode_token(v.order()))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Page {
        sessions,
        next_token,
        total,
    })
}

#[cfg(test)]
mod tests {
    use xcnf_common::{
        PacketBytes,
        nat::{kind, proto, role},
    };

    use super::*;

    fn view(p: u8, inside: [u8; 4], sport: u16, remote: [u8; 4], k: u8) -> SessionView {
        SessionView {
            proto: p,
            inside: (inside.into(), sport),
            external: (Ipv4Addr::new(80, 80, 80, 100), sport.wrapping_add(1000)),
            remote: (remote.into(), 80),
            remote_translated: None,
            kind: k,
            state: "udp".into(),
            age_ns: Some(0),
            idle_ns: 0,
            outbound: PacketBytes::default(),
            inbound: None,
            side: role::INSIDE,
        }
    }

    fn sample() -> Vec<SessionView> {
        let mut v: Vec<SessionView> = (0..25u16)
            .map(|i| {
                let p = if i % 2 == 0 { proto::TCP } else { proto::UDP };
                let k = if i % 5 == 0 { kind::DNAT } else { kind::SNAT };
                view(p, [192, 168, 100, 10 + i as u8], 40000 + i, [8, 8, 8, 8], k)
            })
            .collect();
        v.sort_by_key(SessionView::order);
        v
    }

    fn filter(f: pb::NatSessionFilter) -> Filter {
        Filter::from_pb(Some(&f)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn pages_cover_every_session_once_in_order() {
        let all = sample();
        let any = Filter::from_pb(None).unwrap_or_else(|e| panic!("{e:?}"));
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let p = page(all.clone(), &any, 10, &token).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(p.total, 25);
            pages += 1;
            seen.extend(p.sessions);
            if p.next_token.is_empty() {
                break;
            }
            token = p.next_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, all);
    }

    #[test]
    fn a_session_that_disappears_between_pages_shifts_nothing() {
        let all = sample();
        let any = Filter::from_pb(None).unwrap_or_else(|e| panic!("{e:?}"));
        let first = page(all.clone(), &any, 5, "").unwrap_or_else(|e| panic!("{e:?}"));
        // The first two sessions expire before the next request.
        let later: Vec<SessionView> = all[2..].to_vec();
        let second = page(later, &any, 5, &first.next_token).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(second.sessions, all[5..10].to_vec());
    }

    #[test]
    fn filters_by_protocol_prefix_text_port_and_kind() {
        let all = sample();
        let count = |f: pb::NatSessionFilter| {
            page(all.clone(), &filter(f), 0, "")
                .map(|p| p.total)
                .unwrap_or_else(|e| panic!("{e:?}"))
        };
        let tcp = pb::NatSessionFilter {
            ip_protocol: proto::TCP.into(),
            ..Default::default()
        };
        assert_eq!(count(tcp), 13);
        let cidr = pb::NatSessionFilter {
            address: "192.168.100.16/30".into(),
            ..Default::default()
        };
        assert_eq!(count(cidr), 4); // .16 .17 .18 .19
        let host = pb::NatSessionFilter {
            address: "192.168.100.12".into(),
            ..Default::default()
        };
        assert_eq!(count(host), 1);
        let text = pb::NatSessionFilter {
            address: "168.100.3".into(),
            ..Default::default()
        };
        assert_eq!(count(text), 5); // .30 .31 .32 .33 .34
        let external_port = pb::NatSessionFilter {
            port: 41003,
            ..Default::default()
        };
        assert_eq!(count(external_port), 1);
        let dnat_udp = pb::NatSessionFilter {
            ip_protocol: proto::UDP.into(),
            kind: pb::nat_session::Kind::Dnat.into(),
            ..Default::default()
        };
        assert_eq!(count(dnat_udp), 2); // i = 5, 15
    }

    #[test]
    fn bad_requests_name_their_fields() {
        let bad = Filter::from_pb(Some(&pb::NatSessionFilter {
            ip_protocol: 300,
            port: 70000,
            kind: 99,
            ..Default::default()
        }))
        .err()
        .unwrap_or_default();
        let paths: Vec<&str> = bad.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["filter.ipProtocol", "filter.port", "filter.kind"]);
        let any = Filter::from_pb(None).unwrap_or_else(|e| panic!("{e:?}"));
        let paths = |r: Result<Page, Vec<FieldError>>| {
            r.err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(page(sample(), &any, 10_001, "")), ["pageSize"]);
        assert_eq!(paths(page(sample(), &any, 1, "zz")), ["pageToken"]);
    }
}
