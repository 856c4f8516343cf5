//! Interfaces: lookups, up/down and MTU.

use futures::TryStreamExt as _;
use rtnetlink::packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};

use super::{Iface, LinuxError, Netlink};

/// What the agent needs to know about a kernel interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// The rtnetlink kind (`veth`, `dummy`, ...); `None` for physical NICs.
    pub kind: Option<String>,
    pub mac: [u8; 6],
    /// Administratively up (`IFF_UP`), whatever the carrier.
    pub up: bool,
    pub mtu: u32,
    /// The link's other end (a veth's or netkit's peer) is in another
    /// network namespace (`IFLA_LINK_NETNSID` is present).
    pub peer_elsewhere: bool,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    /// Whether the datapath may redirect to this interface's peer directly
    /// (see `xcnf_common::iface::flags::PEER_REDIRECT`).
    pub fn can_redirect_to_peer(&self) -> bool {
        matches!(self.kind.as_deref(), Some("veth" | "netkit")) && self.peer_elsewhere
    }
}

impl Netlink {
    /// Looks an interface up by name.
    pub async fn link(&self, name: &str) -> Result<Link, LinuxError> {
        let missing = || LinuxError::NoSuchInterface {
            iface: Iface::Name(name.to_owned()),
        };
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(parse_link(&msg)),
            Ok(None) => Err(missing()),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(missing())
            }
            Err(e) => Err(LinuxError::Kernel {
                op: format!("looking up interface {name:?}"),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// Looks an interface up by index, as routes, addresses and events name it.
    pub async fn link_by_index(&self, index: u32) -> Result<Link, LinuxError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self
            .get(
                RouteNetlinkMessage::GetLink(msg),
                || format!("looking up ifindex {index}"),
                Some(index),
            )
            .await?;
        replies
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) if l.header.index == index => Some(parse_link(l)),
                _ => None,
            })
            .ok_or(LinuxError::NoSuchInterface {
                iface: Iface::Index(index),
            })
    }

    /// Every interface in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, LinuxError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
                "listing interfaces".to_owned()
            })
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Sets the interface administratively up or down.
    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), LinuxError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        // Only the bits in change_mask are touched, so other flags stay.
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        let word = if up { "up" } else { "down" };
        self.change(
            RouteNetlinkMessage::SetLink(msg),
            0,
            || format!("setting ifindex {index} {word}"),
            Some(index),
        )
        .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), LinuxError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.change(
            RouteNetlinkMessage::SetLink(msg),
            0,
            || format!("setting the MTU of ifindex {index} to {mtu}"),
            Some(index),
        )
        .await
    }
}

pub(super) fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        name: String::new(),
        index: msg.header.index,
        kind: None,
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        peer_elsewhere: false,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkNetNsId(_) => link.peer_elsewhere = true,
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
