//! Linux interface lookups over rtnetlink, in the agent's own network namespace.
//!
//! The agent talks netlink directly instead of shelling out to `ip`, so it
//! works in a minimal container image and gets structured errors.

use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

/// Errors from netlink lookups.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("interface {name:?} does not exist in the agent's network namespace")]
    NoSuchInterface { name: String },
    #[error("netlink query for interface {name:?} failed: {source}")]
    Query {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// What the datapath needs to know about a kernel interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// The rtnetlink kind (`veth`, `dummy`, ...); `None` for physical NICs.
    pub kind: Option<String>,
    pub mac: [u8; 6],
    pub up: bool,
    pub mtu: u32,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// A netlink handle bound to the current network namespace.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens the connection and spawns its driver task on the current tokio runtime.
    pub fn connect() -> Result<Self, LinuxError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinuxError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Looks an interface up by name.
    pub async fn link(&self, name: &str) -> Result<Link, LinuxError> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(parse_link(name, &msg)),
            Ok(None) => Err(LinuxError::NoSuchInterface {
                name: name.to_owned(),
            }),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(LinuxError::NoSuchInterface {
                    name: name.to_owned(),
                })
            }
            Err(source) => Err(LinuxError::Query {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

fn parse_link(name: &str, msg: &LinkMessage) -> Link {
    let mut link = Link {
        name: name.to_owned(),
        index: msg.header.index,
        kind: None,
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
