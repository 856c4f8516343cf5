//! IPv4 unicast routes in the main table.

use std::{fmt, net::Ipv4Addr};

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
};

use super::{LinuxError, Netlink};

/// The routing protocol number on every route the agent creates.
///
/// Routes carry their owner in `rtm_protocol`, so `ip route` shows which
/// ones are the agent's (`proto 167`) and a restarted agent can tell its own
/// routes from the operator's or a routing daemon's without keeping state.
/// 167 (0xa7) is neither in the kernel's `RTPROT_*` list (`rtnetlink.h`:
/// up to 18, then 42, 99, 186-192) nor in iproute2's `rt_protos`, nor among
/// the numbers FRR's zebra registers (186-198).
pub const XCNF_RTPROT: u8 = 0xa7;

/// `RT_TABLE_MAIN`, the table `ip route` shows without `table`.
const MAIN_TABLE: u32 = 254;

/// An IPv4 unicast route in the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination network; host bits must be zero.
    pub dst: Ipv4Addr,
    pub len: u8,
    /// The gateway; `None` for a route straight out of `oif`.
    pub via: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// The route's priority; on delete, 0 matches any.
    pub metric: u32,
    /// Who owns the route (`rtm_protocol`); [`XCNF_RTPROT`] for the
    /// agent's. On delete, 0 matches any owner.
    pub protocol: u8,
}

impl Route {
    /// A route owned by the agent.
    pub fn xcnf(
        dst: Ipv4Addr,
        len: u8,
        via: Option<Ipv4Addr>,
        oif: Option<u32>,
        metric: u32,
    ) -> Self {
        Self {
            dst,
            len,
            via,
            oif,
            metric,
            protocol: XCNF_RTPROT,
        }
    }
}

/// As `ip route` would write it, for error messages.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}/{}", self.dst, self.len)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev ifindex {oif}")?;
        }
        write!(f, " metric {} proto {}", self.metric, self.protocol)
    }
}

impl Netlink {
    /// The IPv4 unicast routes of the main table. Multipath routes are left
    /// out: the agent creates none and [`Route`] cannot describe them.
    pub async fn routes(&self) -> Result<Vec<Route>, LinuxError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(msg), || {
                "listing IPv4 routes".to_owned()
            })
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .collect())
    }

    /// Creates the route; one with the same destination, metric and TOS
    /// already there is [`LinuxError::Exists`], a gateway outside every
    /// connected subnet [`LinuxError::Unreachable`].
    pub async fn add_route(&self, route: &Route) -> Result<(), LinuxError> {
        self.change(
            RouteNetlinkMessage::NewRoute(route_message(route, false)),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding {route}"),
            route.oif,
        )
        .await
    }

    /// Creates the route or replaces the one with the same destination and
    /// metric.
    pub async fn replace_route(&self, route: &Route) -> Result<(), LinuxError> {
        self.change(
            RouteNetlinkMessage::NewRoute(route_message(route, false)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replacing {route}"),
            route.oif,
        )
        .await
    }

    /// Deletes the route; a missing one is [`LinuxError::NotFound`].
    pub async fn del_route(&self, route: &Route) -> Result<(), LinuxError> {
        self.change(
            RouteNetlinkMessage::DelRoute(route_message(route, true)),
            0,
            || format!("deleting {route}"),
            route.oif,
        )
        .await
    }
}

fn route_message(route: &Route, delete: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = AddressFamily::Inet;
    h.destination_prefix_length = route.len;
    h.table = MAIN_TABLE as u8;
    h.protocol = RouteProtocol::from(route.protocol);
    if delete {
        // The kernel treats these as wildcards when deleting, so a route
        // is found whatever scope and type it was created with.
        h.scope = RouteScope::NoWhere;
        h.kind = RouteType::Unspec;
    } else {
        // A route without a gateway reaches hosts on the link itself.
        h.scope = if route.via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        h.kind = RouteType::Unicast;
    }
    if route.len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
    }
    if let Some(via) = route.via {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if route.metric != 0 {
        msg.attributes.push(RouteAttribute::Priority(route.metric));
    }
    msg
}

pub(super) fn parse_route(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        len: h.destination_prefix_length,
        via: None,
        oif: None,
        metric: 0,
        protocol: h.protocol.into(),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.via = Some(*a),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Priority(p) => route.metric = *p,
            // Tables above 255 only fit here; the header then says 252.
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    (table == MAIN_TABLE).then_some(route)
}
