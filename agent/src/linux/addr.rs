//! IPv4 interface addresses.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
};

use super::{LinuxError, Netlink};
use crate::config::Ipv4Prefix;

/// An IPv4 address assigned to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub prefix: Ipv4Prefix,
}

impl Netlink {
    /// IPv4 addresses of one interface, or of all with `None`.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>, LinuxError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(msg), || match index {
                Some(i) => format!("listing the IPv4 addresses of ifindex {i}"),
                None => "listing IPv4 addresses".to_owned(),
            })
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_address(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Adds `prefix` (the interface's address and its subnet length) to
    /// the interface; an address that is already there is [`LinuxError::Exists`].
    pub async fn add_address(&self, index: u32, prefix: Ipv4Prefix) -> Result<(), LinuxError> {
        let mut msg = address_message(index, prefix);
        // What `ip addr add ... brd +` sets: without it the subnet's
        // broadcast address would not count as local.
        if let Some(brd) = broadcast(prefix) {
            msg.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.change(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding address {} to ifindex {index}", show(prefix)),
            Some(index),
        )
        .await
    }

    /// Removes the address; a missing one is [`LinuxError::NotFound`].
    /// Deleting a subnet's first (primary) address also deletes the other
    /// addresses of that subnet on the interface, unless
    /// `net.ipv4.conf.<if>.promote_secondaries` is set.
    pub async fn del_address(&self, index: u32, prefix: Ipv4Prefix) -> Result<(), LinuxError> {
        self.change(
            RouteNetlinkMessage::DelAddress(address_message(index, prefix)),
            0,
            || format!("deleting address {} from ifindex {index}", show(prefix)),
            Some(index),
        )
        .await
    }
}

fn address_message(index: u32, prefix: Ipv4Prefix) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix.len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    let ip = IpAddr::V4(prefix.addr);
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

/// The subnet's all-ones address; /31 and /32 have none (RFC 3021).
fn broadcast(p: Ipv4Prefix) -> Option<Ipv4Addr> {
    (p.len <= 30).then(|| {
        let host_bits = u32::MAX.checked_shr(u32::from(p.len)).unwrap_or(0);
        Ipv4Addr::from(u32::from(p.addr) | host_bits)
    })
}

pub(super) fn show(p: Ipv4Prefix) -> String {
    format!("{}/{}", p.addr, p.len)
}

pub(super) fn parse_address(msg: &AddressMessage) -> Option<Address> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links, so it is only the fallback.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    Some(Address {
        index: msg.header.index,
        prefix: Ipv4Prefix {
            addr: local.or(address)?,
            len: msg.header.prefix_len,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_of_common_lengths() {
        let p = |a: [u8; 4], len| Ipv4Prefix {
            addr: Ipv4Addr::from(a),
            len,
        };
        assert_eq!(
            broadcast(p([10, 0, 0, 1], 24)),
            Some(Ipv4Addr::new(10, 0, 0, 255))
        );
        assert_eq!(
            broadcast(p([10, 1, 2, 3], 0)),
            Some(Ipv4Addr::new(255, 255, 255, 255))
        );
        assert_eq!(
            broadcast(p([10, 0, 0, 5], 30)),
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        assert_eq!(broadcast(p([10, 0, 0, 1], 31)), None);
        assert_eq!(broadcast(p([10, 0, 0, 1], 32)), None);
    }
}
