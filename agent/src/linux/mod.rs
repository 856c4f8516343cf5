//! Linux networking over rtnetlink, in the agent's own network namespace.
//!
//! The agent talks netlink directly instead of shelling out to `ip`, so it
//! works in a minimal container image and gets structured errors a
//! reconciler can act on (exists, not found, gateway unreachable, ...).
//!
//! Netlink sockets belong to the network namespace of the thread that
//! creates them, so [`Netlink::connect`] and [`Events::subscribe`] act on
//! whatever namespace the calling thread is in at that moment; later calls
//! keep using that namespace even from other threads.

mod addr;
mod error;
mod events;
mod link;
mod neigh;
mod route;

use futures::StreamExt as _;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

pub use addr::Address;
pub use error::{Iface, LinuxError};
pub use events::{DEFAULT_EVENT_BUFFER, Events, FibChanges, LinuxEvent};
pub use link::Link;
pub use neigh::{Neighbor, NeighborState};
pub use route::{Route, XCNF_RTPROT};

/// Whether the kernel forwards IPv4 arriving on `ifname`
/// (`net.ipv4.conf.<ifname>.forwarding`, read in the caller's network
/// namespace). The datapath's FIB lookups report "forwarding disabled" for
/// such an interface and hand the packet to a stack that drops it too, so
/// everything not addressed to the CNF itself is lost.
pub fn ipv4_forwarding(ifname: &str) -> Result<bool, LinuxError> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    let text = std::fs::read_to_string(&path).map_err(|source| LinuxError::Kernel {
        op: format!("reading {path}"),
        source,
    })?;
    Ok(text.trim() != "0")
}

/// A netlink handle bound to the network namespace of the thread that
/// called [`Netlink::connect`].
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// Why a request failed before it was put in terms of the operation.
enum Failure {
    /// The kernel answered with this (positive) errno.
    Errno(i32),
    /// The connection task is gone (runtime shutting down).
    Closed,
}

/// How often a dump that the kernel marks as interrupted (the table changed
/// while it was read) is retried before giving up: a reconciler acting on a
/// torn snapshot would add or delete the wrong things.
const DUMP_ATTEMPTS: usize = 5;

impl Netlink {
    /// Opens the connection and spawns its driver task on the current tokio runtime.
    pub fn connect() -> Result<Self, LinuxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            LinuxError::Socket(std::io::Error::other(format!(
                "netlink needs a tokio runtime: {e}"
            )))
        })?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinuxError::Socket)?;
        runtime.spawn(conn);
        Ok(Self { handle })
    }

    /// Sends one request and collects the replies, stopping at the first
    /// kernel error.
    async fn exchange(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, Failure> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle.request(req).map_err(|_| Failure::Closed)?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match &reply.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Failure::Errno(e.raw_code().saturating_abs()));
                }
                NetlinkPayload::InnerMessage(_) => out.push(reply),
                _ => {}
            }
        }
        Ok(out)
    }

    /// A change request (`NLM_F_ACK` plus `flags`) that only succeeds or fails.
    async fn change(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
        iface: Option<u32>,
    ) -> Result<(), LinuxError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .await
            .map(drop)
            .map_err(|f| LinuxError::from_failure(f, op(), iface))
    }

    /// A request answered by a single object (a get by index).
    async fn get(
        &self,
        msg: RouteNetlinkMessage,
        op: impl FnOnce() -> String,
        iface: Option<u32>,
    ) -> Result<Vec<RouteNetlinkMessage>, LinuxError> {
        self.exchange(msg, NLM_F_REQUEST)
            .await
            .map(|v| v.into_iter().filter_map(inner).collect())
            .map_err(|f| LinuxError::from_failure(f, op(), iface))
    }

    /// A full dump, retried while the kernel reports it as interrupted.
    async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        op: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, LinuxError> {
        for _ in 0..DUMP_ATTEMPTS {
            let replies = self
                .exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)
                .await
                .map_err(|f| LinuxError::from_failure(f, op(), None))?;
            if replies
                .iter()
                .all(|r| r.header.flags & NLM_F_DUMP_INTR == 0)
            {
                return Ok(replies.into_iter().filter_map(inner).collect());
            }
        }
        Err(LinuxError::from_failure(
            Failure::Errno(libc::EINTR),
            format!(
                "{} (the kernel interrupted {DUMP_ATTEMPTS} dumps in a row)",
                op()
            ),
            None,
        ))
    }
}

fn inner(m: NetlinkMessage<RouteNetlinkMessage>) -> Option<RouteNetlinkMessage> {
    match m.payload {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}
