//! IPv4 neighbour (ARP) entries.

use std::net::Ipv4Addr;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::RouteType,
};

use super::{LinuxError, Netlink};

/// The NUD state of a neighbour entry, as `ip neigh` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    Noarp,
    Permanent,
    None,
    /// A combination of bits the kernel does not normally report.
    Other(u16),
}

impl From<NeighbourState> for NeighborState {
    fn from(s: NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => Self::Incomplete,
            NeighbourState::Reachable => Self::Reachable,
            NeighbourState::Stale => Self::Stale,
            NeighbourState::Delay => Self::Delay,
            NeighbourState::Probe => Self::Probe,
            NeighbourState::Failed => Self::Failed,
            NeighbourState::Noarp => Self::Noarp,
            NeighbourState::Permanent => Self::Permanent,
            NeighbourState::None => Self::None,
            other => Self::Other(u16::from(other)),
        }
    }
}

/// An IPv4 neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub index: u32,
    pub ip: Ipv4Addr,
    /// `None` while unresolved (incomplete, failed).
    pub mac: Option<[u8; 6]>,
    pub state: NeighborState,
}

impl Netlink {
    /// IPv4 neighbour entries of one interface, or of all with `None`.
    pub async fn neighbors(&self, index: Option<u32>) -> Result<Vec<Neighbor>, LinuxError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetNeighbour(msg), || match index {
                Some(i) => format!("listing the IPv4 neighbours of ifindex {i}"),
                None => "listing IPv4 neighbours".to_owned(),
            })
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => parse_neighbor(n),
                _ => None,
            })
            .filter(|n| index.is_none_or(|i| n.index == i))
            .collect())
    }

    /// Pins `ip` to `mac` on the interface (NUD_PERMANENT, so the kernel
    /// never probes or expires it), replacing any entry for `ip` there.
    pub async fn set_neighbor(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), LinuxError> {
        let mut msg = neighbor_message(index, ip);
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.change(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || {
                format!(
                    "setting neighbour {ip} lladdr {} on ifindex {index}",
                    show_mac(mac)
                )
            },
            Some(index),
        )
        .await
    }

    /// Deletes the entry for `ip`; a missing one is [`LinuxError::NotFound`].
    pub async fn del_neighbor(&self, index: u32, ip: Ipv4Addr) -> Result<(), LinuxError> {
        self.change(
            RouteNetlinkMessage::DelNeighbour(neighbor_message(index, ip)),
            0,
            || format!("deleting neighbour {ip} on ifindex {index}"),
            Some(index),
        )
        .await
    }
}

fn neighbor_message(index: u32, ip: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    msg
}

fn show_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn parse_neighbor(msg: &NeighbourMessage) -> Option<Neighbor> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbor {
        index: msg.header.ifindex,
        ip: ip?,
        mac,
        state: msg.header.state.into(),
    })
}
