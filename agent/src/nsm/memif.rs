//! NSM's MEMIF mechanism, for interfaces with `mechanism: memif`: the
//! packets go through VPP, so NSM hands over a memif control socket instead
//! of a kernel interface. As a client xcnf connects a slave to the socket
//! the forwarder's master listens on; as an endpoint it listens as master
//! on a socket it names itself, in its own network namespace, which it
//! passes by descriptor so the forwarder can reach the abstract name.
//!
//! Unlike the kernel mechanism, nobody else programs the addresses: the
//! forwarder cannot reach into our VPP, so the IP context becomes VPP
//! addresses and routes on the memif ([`NsmMemif`]).

use std::net::Ipv4Addr;

use xcnf_proto::nsm::{
    connection::{Connection, Mechanism},
    connectioncontext::Route,
};

use super::{client::OWN_NETNS, grpcfd::INODE_URL};
use crate::{
    config::{Ipv4Prefix, MemifMode, MemifRole},
    reconcile::NsmMemif,
    vpp::ops::memif_socket_filename,
};

/// The mechanism type (`mechanisms/memif/constants.go`).
pub const MEMIF: &str = "MEMIF";
/// The control socket: `@name` for an abstract socket, else a path.
pub const SOCKETFILE: &str = "socketfile";

/// The client's preference: MEMIF, with our netns (sent as a descriptor)
/// so that a forwarder can put the socket where we can reach it.
pub fn preference() -> Mechanism {
    Mechanism {
        cls: "LOCAL".into(),
        r#type: MEMIF.into(),
        parameters: [(INODE_URL.to_string(), OWN_NETNS.to_string())].into(),
    }
}

/// The socket an endpoint listens on for a connection. Derived from the
/// connection id, so a refresh or an agent restart names the same socket;
/// abstract, so nothing is left on disk; short, as abstract names end at
/// 107 bytes.
pub fn endpoint_socketfile(connection_id: &str) -> String {
    let mut h = xcnf_common::maps::Fnv1a::default();
    h.write(connection_id.as_bytes());
    format!("@xcnf-memif/{:016x}", h.finish())
}

/// What VPP gets for a connection: `mech` is the chosen MEMIF mechanism
/// with the `inodeURL` as this side sees it (our own netns, another netns'
/// path, or absent). A client takes the `src` half of the IP context, an
/// endpoint the `dst` half.
pub fn binding(conn: &Connection, mech: &Mechanism, role: MemifRole) -> Result<NsmMemif, String> {
    if mech.r#type != MEMIF {
        return Err(format!(
            "NSM chose mechanism {:?}, not {MEMIF}",
            mech.r#type
        ));
    }
    let socketfile = mech
        .parameters
        .get(SOCKETFILE)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the {MEMIF} mechanism has no {SOCKETFILE} parameter"))?;
    let is_abstract = socketfile.starts_with('@') || socketfile.starts_with("abstract:");
    if !is_abstract && !socketfile.starts_with('/') {
        return Err(format!(
            "{SOCKETFILE} {socketfile:?} is neither an abstract name (@name) nor an absolute path"
        ));
    }
    if socketfile.len() > 107 {
        return Err(format!(
            "{SOCKETFILE} {socketfile:?} is longer than a unix socket name can be"
        ));
    }
    // An abstract name lives in a network namespace: ours unless NSM says
    // another one, whose path VPP then opens.
    let netns = match mech.parameters.get(INODE_URL).map(String::as_str) {
        None | Some("") => None,
        Some(u) if u == OWN_NETNS => None,
        // The FS-socket case: the same key carries the socket's URL.
        Some(_) if !is_abstract => None,
        Some(u) => match u.strip_prefix("file://") {
            Some(path) => Some(path.to_owned()),
            None => {
                return Err(format!(
                    "the memif socket is in a network namespace the agent cannot open ({INODE_URL} {u:?})"
                ));
            }
        },
    };
    let ip = conn.context.as_ref().and_then(|c| c.ip_context.as_ref());
    let (addrs, routes): (&[String], &[Route]) = match (ip, role) {
        (None, _) => (&[], &[]),
        (Some(i), MemifRole::Slave) => (&i.src_ip_addrs, &i.src_routes),
        (Some(i), MemifRole::Master) => (&i.dst_ip_addrs, &i.dst_routes),
    };
    Ok(NsmMemif {
        socket: memif_socket_filename(socketfile, netns.as_deref()),
        role,
        mode: if conn.payload.eq_ignore_ascii_case("IP") {
            MemifMode::Ip
        } else {
            MemifMode::Ethernet
        },
        addresses: addrs
            .iter()
            .filter(|a| !a.contains(':'))
            .map(|a| {
                a.parse::<Ipv4Prefix>()
                    .map_err(|e| format!("IP context address {a:?}: {e}"))
            })
            .collect::<Result<_, _>>()?,
        routes: routes
            .iter()
            .filter(|r| !r.prefix.contains(':'))
            .map(route)
            .collect::<Result<_, _>>()?,
    })
}

fn route(r: &Route) -> Result<(Ipv4Prefix, Option<Ipv4Addr>), String> {
    let dst = r
        .prefix
        .parse::<Ipv4Prefix>()
        .map_err(|e| format!("IP context route {:?}: {e}", r.prefix))?;
    let via = match r.next_hop.as_str() {
        "" => None,
        v => Some(
            v.parse::<Ipv4Addr>()
                .map_err(|e| format!("IP context route {} next hop {v:?}: {e}", r.prefix))?,
        ),
    };
    Ok((dst.network(), via))
}

#[cfg(test)]
mod tests {
    use xcnf_proto::nsm::connectioncontext::{ConnectionContext, IpContext};

    use super::*;

    fn conn(payload: &str) -> Connection {
        Connection {
            payload: payload.into(),
            context: Some(ConnectionContext {
                ip_context: Some(IpContext {
                    src_ip_addrs: vec!["10.0.0.2/32".into(), "fd00::2/128".into()],
                    dst_ip_addrs: vec!["10.0.0.1/32".into()],
                    src_routes: vec![Route {
                        prefix: "10.0.0.1/32".into(),
                        ..Default::default()
                    }],
                    dst_routes: vec![Route {
                        prefix: "10.0.0.2/32".into(),
                        next_hop: "10.0.0.2".into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mech(params: &[(&str, &str)]) -> Mechanism {
        Mechanism {
            cls: "LOCAL".into(),
            r#type: MEMIF.into(),
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_client_slave_takes_the_source_half_on_an_abstract_socket_in_its_netns() {
        let b = binding(
            &conn("ETHERNET"),
            &mech(&[
                (SOCKETFILE, "@/tmp/memif/c1/memif.socket"),
                (INODE_URL, OWN_NETNS),
            ]),
            MemifRole::Slave,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.socket, "abstract:/tmp/memif/c1/memif.socket");
        assert_eq!(b.mode, MemifMode::Ethernet);
        assert_eq!(b.role, MemifRole::Slave);
        assert_eq!(
            b.addresses,
            ["10.0.0.2/32"
                .parse::<Ipv4Prefix>()
                .unwrap_or_else(|e| panic!("{e}"))]
        );
        assert_eq!(b.routes.len(), 1);
        assert_eq!(b.routes[0].1, None);
    }

    #[test]
    fn an_endpoint_master_takes_the_destination_half_and_ip_payload() {
        let b = binding(&conn("IP"), &mech(&[(SOCKETFILE, "@x")]), MemifRole::Master)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.mode, MemifMode::Ip);
        assert_eq!(b.addresses[0].to_string(), "10.0.0.1/32");
        assert_eq!(b.routes[0].1, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn another_netns_goes_to_vpp_by_path() {
        let b = binding(
            &conn(""),
            &mech(&[(SOCKETFILE, "@m"), (INODE_URL, "file:///proc/7/fd/9")]),
            MemifRole::Slave,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.socket, "abstract:m,netns_name=/proc/7/fd/9");
        // A path socket ignores the namespace.
        let b = binding(
            &conn(""),
            &mech(&[
                (SOCKETFILE, "/run/m.sock"),
                (INODE_URL, "file:///run/m.sock"),
            ]),
            MemifRole::Slave,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.socket, "/run/m.sock");
    }

    #[test]
    fn bad_mechanisms_say_what_is_wrong() {
        let c = conn("");
        let e = |m: Mechanism| binding(&c, &m, MemifRole::Slave).err().unwrap_or_default();
        assert!(e(mech(&[])).contains("no socketfile"));
        assert!(e(mech(&[(SOCKETFILE, "rel.sock")])).contains("neither an abstract name"));
        assert!(e(mech(&[(SOCKETFILE, "@m"), (INODE_URL, "inode://1/2")])).contains("cannot open"));
        let mut k = mech(&[(SOCKETFILE, "@m")]);
        k.r#type = "KERNEL".into();
        assert!(e(k).contains("not MEMIF"));
        let mut bad = conn("");
        if let Some(i) = bad.context.as_mut().and_then(|c| c.ip_context.as_mut()) {
            i.src_ip_addrs = vec!["10.0.0.300/32".into()];
        }
        let got = binding(&bad, &mech(&[(SOCKETFILE, "@m")]), MemifRole::Slave);
        assert!(got.err().unwrap_or_default().contains("IP context address"));
    }

    #[test]
    fn endpoint_sockets_are_stable_per_connection_and_short() {
        let a = endpoint_socketfile("nse-1234-connection-id-that-is-long-enough-to-matter");
        assert_eq!(
            a,
            endpoint_socketfile("nse-1234-connection-id-that-is-long-enough-to-matter")
        );
        assert_ne!(a, endpoint_socketfile("other"));
        assert!(a.starts_with('@') && a.len() < 40, "{a}");
    }
}
