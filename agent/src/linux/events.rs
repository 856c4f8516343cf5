//! Kernel change notifications: links, IPv4 addresses and IPv4 routes.
//!
//! The reconciler waits on these instead of polling, so configuration for an
//! interface that appears minutes later (an NSM-injected one) is applied
//! when it shows up.

use std::{
    os::fd::AsRawFd as _,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
    sys::{AsyncSocket as _, SocketAddr},
};

use super::{LinuxError, Route, addr::parse_address, link::parse_link, route::parse_route};
use crate::config::Ipv4Prefix;

/// The receive buffer a subscription asks for. The kernel drops
/// notifications that do not fit while the agent is busy; 8 MiB (which the
/// kernel doubles for bookkeeping) holds a few thousand link messages, far
/// more than a pod's interfaces churn at once.
pub const DEFAULT_EVENT_BUFFER: usize = 8 << 20;

/// One change in the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinuxEvent {
    /// An interface appeared, changed (flags, name, MTU, ...) or went away.
    Link {
        index: u32,
        name: String,
        up: bool,
        removed: bool,
    },
    Address {
        index: u32,
        prefix: Ipv4Prefix,
        removed: bool,
    },
    /// A main-table IPv4 unicast route, as [`super::Netlink::routes`] lists them.
    Route { route: Route, removed: bool },
    /// The kernel dropped notifications because the socket buffer was full:
    /// whatever was missed is unknown, so the caller must re-read
    /// everything it cares about. The kernel drops silently from the
    /// overflow until the backlog is read; the connection task reads the
    /// socket empty before it passes anything on, so by the time this
    /// arrives that window is closed and a re-read sees every change the
    /// stream will not report.
    Overrun,
}

type Unsolicited = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A subscription, bound to the network namespace of the thread that
/// created it. Dropping it closes the socket.
pub struct Events {
    sub: Subscription,
}

impl Events {
    /// Subscribes with [`DEFAULT_EVENT_BUFFER`], on the current tokio runtime.
    pub fn subscribe() -> Result<Self, LinuxError> {
        Self::subscribe_with_buffer(DEFAULT_EVENT_BUFFER)
    }

    /// Subscribes with a receive buffer of `bytes` (the kernel enforces a
    /// small minimum); a small one makes [`LinuxEvent::Overrun`] easy to
    /// provoke.
    pub fn subscribe_with_buffer(bytes: usize) -> Result<Self, LinuxError> {
        let sub = Subscription::connect(
            &[
                MulticastGroup::Link,
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv4Route,
            ],
            bytes,
        )?;
        Ok(Self { sub })
    }

    /// The next event; `None` once the socket failed, after which the
    /// caller has to subscribe again and resync.
    pub async fn recv(&mut self) -> Option<LinuxEvent> {
        StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = LinuxEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LinuxEvent>> {
        loop {
            match self.sub.rx.poll_next_unpin(cx) {
                Poll::Ready(Some((msg, _))) => {
                    if let Some(ev) = decode(msg) {
                        return Poll::Ready(Some(ev));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// A multicast subscription: the notifications, and the task that reads
/// the socket, which dropping the subscription stops.
struct Subscription {
    rx: Unsolicited,
    driver: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Subscribes to `groups` with a receive buffer of `bytes`, on the
    /// current tokio runtime.
    fn connect(groups: &[MulticastGroup], bytes: usize) -> Result<Self, LinuxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            LinuxError::Socket(std::io::Error::other(format!(
                "netlink events need a tokio runtime: {e}"
            )))
        })?;
        let (mut conn, _handle, rx) =
            rtnetlink::new_multicast_connection(groups).map_err(LinuxError::Socket)?;
        set_receive_buffer(conn.socket_mut().socket_mut(), bytes).map_err(LinuxError::Socket)?;
        Ok(Self {
            rx,
            driver: runtime.spawn(conn),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Every notification that can change what the FIB answers: links,
/// addresses, routes, policy rules and neighbours, without detail. Its
/// consumer, the datapath's route cache, only needs to know that something
/// changed (see `datapath::route_ctl`), and a lost notification (overrun)
/// is a change too.
pub struct FibChanges {
    sub: Subscription,
}

impl FibChanges {
    /// Subscribes with [`DEFAULT_EVENT_BUFFER`], on the current tokio runtime.
    pub fn subscribe() -> Result<Self, LinuxError> {
        let sub = Subscription::connect(
            &[
                MulticastGroup::Link,
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv4Route,
                MulticastGroup::Ipv4Rule,
                MulticastGroup::Neigh,
            ],
            DEFAULT_EVENT_BUFFER,
        )?;
        Ok(Self { sub })
    }

    /// Waits for a change, then takes every change already queued behind
    /// it, so a burst is one answer. `None` once the socket failed.
    pub async fn next_burst(&mut self) -> Option<()> {
        self.sub.rx.next().await?;
        while self.sub.rx.try_recv().is_ok() {}
        Some(())
    }
}

impl std::fmt::Debug for FibChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FibChanges").finish_non_exhaustive()
    }
}

/// Asks for `bytes` beyond `net.core.rmem_max` if the agent may
/// (CAP_NET_ADMIN, which it needs anyway), else for what the limit allows.
fn set_receive_buffer(sock: &rtnetlink::sys::Socket, bytes: usize) -> std::io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket fd and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    sock.set_rx_buf_sz(size)
}

fn decode(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinuxEvent> {
    let msg = match msg.payload {
        NetlinkPayload::Overrun(_) => return Some(LinuxEvent::Overrun),
        NetlinkPayload::InnerMessage(m) => m,
        _ => return None,
    };
    let link = |l, removed| {
        let l = parse_link(l);
        LinuxEvent::Link {
            index: l.index,
            name: l.name,
            up: l.up,
            removed,
        }
    };
    let address = |a, removed| {
        parse_address(a).map(|a| LinuxEvent::Address {
            index: a.index,
            prefix: a.prefix,
            removed,
        })
    };
    let route = |r, removed| parse_route(r).map(|route| LinuxEvent::Route { route, removed });
    match &msg {
        RouteNetlinkMessage::NewLink(l) => Some(link(l, false)),
        RouteNetlinkMessage::DelLink(l) => Some(link(l, true)),
        RouteNetlinkMessage::NewAddress(a) => address(a, false),
        RouteNetlinkMessage::DelAddress(a) => address(a, true),
        RouteNetlinkMessage::NewRoute(r) => route(r, false),
        RouteNetlinkMessage::DelRoute(r) => route(r, true),
        _ => None,
    }
}
