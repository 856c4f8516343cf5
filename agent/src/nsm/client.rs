//! The NSM client of one `interfaces[].nsm` entry with `role: client`:
//! requests the network service from nsmgr with a KERNEL mechanism and the
//! agent's netns (or a MEMIF one, see [`super::memif`]), binds the
//! interface that appears (or the memif socket) to the logical name,
//! refreshes before the path expires, heals on DOWN or a lost monitor
//! stream, and closes when told to stop.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_stream::StreamExt;
use tracing::{info, warn};
use xcnf_proto::nsm::{
    connection::{
        Connection, ConnectionEventType, Mechanism, MonitorScopeSelector, Path, PathSegment, State,
        monitor_connection_client::MonitorConnectionClient,
    },
    networkservice::{NetworkServiceRequest, network_service_client::NetworkServiceClient},
};

use super::{
    Context,
    grpcfd::INODE_URL,
    memif,
    security::token::DEFAULT_MAX_TOKEN_LIFETIME,
    system_time, timestamp,
    transport::{self, CALL_TIMEOUT, Dialed},
};
use crate::{
    config::{MemifRole, NsmMechanism},
    reconcile::Binding,
};

/// The agent's own netns, by a path valid from any thread (a tokio worker
/// could otherwise be asked for its per-thread namespace).
pub const OWN_NETNS: &str = "file:///proc/self/ns/net";
/// A failed refresh is tried again this soon (NSM's refresh client).
const RETRY: Duration = Duration::from_millis(200);
/// Re-connecting after nsmgr went away backs off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    /// The logical interface name the connection is bound to.
    pub logical: String,
    pub network_service: String,
    pub labels: HashMap<String, String>,
    /// The interface name asked for inside the pod (kernel mechanism).
    pub interface_name: String,
    pub mechanism: NsmMechanism,
}

/// A running client; [`ClientHandle::close`] ends it with a Close.
pub struct ClientHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClientHandle {
    /// Closes the connection (best effort, bounded) and waits for the task.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            warn!("NSM client did not stop in time");
        }
    }
}

pub fn spawn(ctx: Arc<Context>, spec: ClientSpec) -> ClientHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(Client::new(ctx, spec).run(stopped));
    ClientHandle { stop, task }
}

/// Why the connection ended for now.
enum Lost {
    Stop,
    Heal(String),
}

struct Client {
    ctx: Arc<Context>,
    spec: ClientSpec,
    id: String,
    /// The last Connection nsmgr returned (URLs restored).
    last: Option<Connection>,
    /// Until when the last connection's path is valid: while healing before
    /// then, the interface stays bound (the data plane may well be up).
    valid_until: Option<Instant>,
}

impl Client {
    fn new(ctx: Arc<Context>, spec: ClientSpec) -> Self {
        let id = format!("{}-{}", ctx.name, spec.logical);
        Self {
            ctx,
            spec,
            id,
            last: None,
            valid_until: None,
        }
    }

    fn wait(&self, why: impl std::fmt::Display) {
        self.ctx.bindings.set(
            &self.spec.logical,
            Binding::Waiting(format!(
                "waiting for NSM connection to {}: {why}",
                self.spec.network_service
            )),
        );
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = RETRY;
        loop {
            if *stop.borrow() {
                break;
            }
            match self.connected(&mut stop).await {
                Ok(Lost::Stop) => break,
                Ok(Lost::Heal(why)) => {
                    info!(interface = %self.spec.logical, service = %self.spec.network_service, reason = %why, "NSM connection lost; healing");
                    backoff = RETRY;
                }
                Err(e) => {
                    warn!(interface = %self.spec.logical, service = %self.spec.network_service, error = %e, "NSM request failed; retrying");
                    if self.valid_until.is_none_or(|t| Instant::now() >= t) {
                        self.wait(&e);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.close().await;
        self.ctx.bindings.remove(&self.spec.logical);
    }

    /// One session with nsmgr: connect, request, then refresh and monitor
    /// until the connection is lost or the client is stopped.
    async fn connected(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Lost, String> {
        let security = self.ctx.security()?;
        let dialed = transport::connect(&self.ctx.socket, &security)
            .await
            .map_err(|e| e.to_string())?;
        let conn = self.request(&dialed, true).await?;
        let mut monitor = MonitorConnectionClient::new(dialed.channel.clone())
            .monitor_connections(MonitorScopeSelector {
                path_segments: vec![PathSegment {
                    name: self.ctx.name.clone(),
                    id: self.id.clone(),
                    ..Default::default()
                }],
                network_services: vec![],
            })
            .await
            .map_err(|e| format!("monitor: {}", e.message()))?
            .into_inner();
        let mut refresh_at = refresh_time(&conn);
        let mut expires = path_expiry(&conn);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(Lost::Stop),
                () = tokio::time::sleep_until(refresh_at) => {
                    match self.request(&dialed, false).await {
                        Ok(c) => {
                            refresh_at = refresh_time(&c);
                            expires = path_expiry(&c);
                        }
                        Err(e) if Instant::now() < expires => {
                            warn!(interface = %self.spec.logical, error = %e, "NSM refresh failed; retrying");
                            refresh_at = Instant::now() + RETRY;
                        }
                        Err(e) => return Ok(Lost::Heal(format!("the path expired: {e}"))),
                    }
                }
                ev = monitor.next() => match ev {
                    Some(Ok(ev)) => {
                        let down = ev.connections.get(&self.id).is_some_and(|c| {
                            c.state == State::Down as i32
                                || ev.r#type == ConnectionEventType::Delete as i32
                        });
                        if down {
                            return Ok(Lost::Heal("the connection is DOWN".into()));
                        }
                    }
                    Some(Err(s)) => return Ok(Lost::Heal(format!("monitor stream: {}", s.message()))),
                    None => return Ok(Lost::Heal("monitor stream ended".into())),
                },
            }
        }
    }

    /// Requests (first or healing) or refreshes the connection and binds the
    /// interface.
    async fn request(&mut self, dialed: &Dialed, fresh: bool) -> Result<Connection, String> {
        let (channel, fds) = (&dialed.channel, &dialed.fds);
        let security = self.ctx.security()?;
        let peer = dialed.peer();
        let token = security
            .hop_token(peer.as_ref())
            .map_err(|e| e.to_string())?;
        let mut conn = match (&self.last, fresh) {
            (Some(last), false) => last.clone(),
            (Some(last), true) => Connection {
                // Healing: reselect, as NSM's heal does without a liveness check.
                mechanism: None,
                network_service_endpoint_name: String::new(),
                state: State::ReselectRequested as i32,
                ..last.clone()
            },
            (None, _) => Connection {
                id: self.id.clone(),
                network_service: self.spec.network_service.clone(),
                labels: self.spec.labels.clone(),
                ..Default::default()
            },
        };
        conn.labels = self.spec.labels.clone();
        let mut path = conn.path.take().unwrap_or_default();
        path.index = 0;
        if path.path_segments.is_empty() {
            path.path_segments.push(PathSegment::default());
        }
        let own = &mut path.path_segments[0];
        own.name = self.ctx.name.clone();
        own.id = self.id.clone();
        own.token = token.jwt.clone();
        own.expires = Some(timestamp(token.expires));
        conn.path = Some(path);
        if let Some(m) = conn.mechanism.as_mut() {
            fds.send_mechanism(m).map_err(|e| e.to_string())?;
        }
        let mut pref = match self.spec.mechanism {
            NsmMechanism::Kernel => Mechanism {
                cls: "LOCAL".into(),
                r#type: "KERNEL".into(),
                parameters: [
                    ("name".to_string(), self.spec.interface_name.clone()),
                    (INODE_URL.to_string(), OWN_NETNS.to_string()),
                ]
                .into(),
            },
            NsmMechanism::Memif => memif::preference(),
        };
        fds.send_mechanism(&mut pref).map_err(|e| e.to_string())?;
        let req = transport::signed(
            NetworkServiceRequest {
                connection: Some(conn),
                mechanism_preferences: vec![pref],
            },
            &token,
        )?;
        let mut reply = NetworkServiceClient::new(channel.clone())
            .request(req)
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        if let Some(m) = reply.mechanism.as_mut() {
            fds.restore_mechanism(m);
        }
        // The client policies, seen from our own segment (0) whatever index
        // the reply carries.
        let mut path = reply.path.clone().unwrap_or_default();
        path.index = 0;
        security
            .check_client_path(&path, peer.as_ref())
            .map_err(|e| format!("the reply's path tokens are refused: {e}"))?;
        let binding = self.binding(&reply)?;
        if self.ctx.bindings.get(&self.spec.logical).as_ref() != Some(&binding) {
            let (host_if, socket) = match &binding {
                Binding::Bound(n) => (n.as_str(), ""),
                Binding::Memif(m) => ("", m.socket.as_str()),
                Binding::Waiting(_) => ("", ""),
            };
            info!(interface = %self.spec.logical, host_if, memif_socket = socket, service = %self.spec.network_service, endpoint = %reply.network_service_endpoint_name, "NSM connection up");
        }
        self.ctx.bindings.set(&self.spec.logical, binding);
        self.valid_until = Some(path_expiry(&reply));
        self.last = Some(reply.clone());
        Ok(reply)
    }

    /// What the reply connects: the kernel interface NSM put into the pod,
    /// or the memif socket to connect a slave to.
    fn binding(&self, reply: &Connection) -> Result<Binding, String> {
        match self.spec.mechanism {
            NsmMechanism::Kernel => Ok(Binding::Bound(
                reply
                    .mechanism
                    .as_ref()
                    .and_then(|m| m.parameters.get("name"))
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .unwrap_or_else(|| self.spec.interface_name.clone()),
            )),
            NsmMechanism::Memif => {
                let m = reply
                    .mechanism
                    .as_ref()
                    .ok_or("the reply chose no mechanism")?;
                memif::binding(reply, m, MemifRole::Slave).map(Binding::Memif)
            }
        }
    }

    /// Closes the last connection, if any (bounded; nsmgr may be gone).
    async fn close(&mut self) {
        let Some(mut last) = self.last.take() else {
            return;
        };
        let Ok(security) = self.ctx.security() else {
            return;
        };
        let r = async {
            let dialed = transport::connect(&self.ctx.socket, &security)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(m) = last.mechanism.as_mut() {
                dialed.fds.send_mechanism(m).map_err(|e| e.to_string())?;
            }
            let token = security
                .hop_token(dialed.peer().as_ref())
                .map_err(|e| e.to_string())?;
            let req = transport::signed(last, &token)?;
            NetworkServiceClient::new(dialed.channel)
                .close(req)
                .await
                .map_err(|s| s.message().to_owned())
        };
        match tokio::time::timeout(CALL_TIMEOUT, r).await {
            Ok(Ok(_)) => {
                info!(interface = %self.spec.logical, service = %self.spec.network_service, "NSM connection closed")
            }
            Ok(Err(e)) => warn!(interface = %self.spec.logical, error = %e, "NSM close failed"),
            Err(_) => warn!(interface = %self.spec.logical, "NSM close timed out"),
        }
    }
}

/// The earliest expiry in the path, as an Instant.
fn path_expiry(c: &Connection) -> Instant {
    let now_sys = SystemTime::now();
    let earliest = c
        .path
        .as_ref()
        .into_iter()
        .flat_map(|p| &p.path_segments)
        .filter_map(|s| s.expires.as_ref())
        .map(system_time)
        .min();
    match earliest {
        Some(t) => Instant::now() + t.duration_since(now_sys).unwrap_or_default(),
        None => Instant::now() + DEFAULT_MAX_TOKEN_LIFETIME,
    }
}

/// When to refresh (NSM's refresh client): the time to the earliest expiry
/// in the path, scaled by 1/3 with one segment, else by
/// 0.2 + 0.2 * index / segments.
pub fn refresh_delay(path: Option<&Path>, until_expiry: Duration) -> Duration {
    let (index, len) = path.map_or((0, 1), |p| (p.index as usize, p.path_segments.len().max(1)));
    let factor = if len == 1 {
        1.0 / 3.0
    } else {
        0.2 + 0.2 * index as f64 / len as f64
    };
    until_expiry.mul_f64(factor)
}

fn refresh_time(c: &Connection) -> Instant {
    let until = path_expiry(c).saturating_duration_since(Instant::now());
    Instant::now() + refresh_delay(c.path.as_ref(), until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_at_nsm_fractions_of_the_expiry() {
        let ten = Duration::from_secs(600);
        let seg = PathSegment::default;
        let one = Path {
            index: 0,
            path_segments: vec![seg()],
        };
        assert_eq!(refresh_delay(Some(&one), ten), Duration::from_secs(200));
        let four = Path {
            index: 0,
            path_segments: vec![seg(), seg(), seg(), seg()],
        };
        assert_eq!(refresh_delay(Some(&four), ten), Duration::from_secs(120));
        let mid = Path { index: 2, ..four };
        assert_eq!(refresh_delay(Some(&mid), ten), Duration::from_secs(180));
    }
}
