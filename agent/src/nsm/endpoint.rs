//! The NSM endpoint of one `interfaces[].nsm` entry with `role: endpoint`:
//! serves NetworkService and MonitorConnection on a unix socket, registers
//! with the registry, and answers Requests for its service with the KERNEL
//! mechanism (the agent's netns, an interface name from the prefix or a
//! label) or the MEMIF one (a VPP master on a socket of ours, see
//! [`super::memif`]) and a point-to-point address pair.
//!
//! Several clients may connect over the kernel mechanism; the logical
//! interface is bound to the interface of the oldest live connection (the
//! reconciler gives one logical name one host interface), the others are
//! served all the same. Over memif, one client at a time: the others would
//! get a socket with no memif behind it.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    net::UnixListener,
    sync::{broadcast, mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use xcnf_proto::health::health_server::HealthServer;
use xcnf_proto::nsm::{
    connection::{
        Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, PathSegment, State,
        monitor_connection_server::{MonitorConnection, MonitorConnectionServer},
    },
    connectioncontext::Route,
    networkservice::{
        NetworkServiceRequest,
        network_service_server::{NetworkService, NetworkServiceServer},
    },
};

use super::{
    Context,
    client::OWN_NETNS,
    grpcfd::INODE_URL,
    health::EndpointHealth,
    ipam::Ipam,
    memif,
    registry::{Registration, keep_registered},
    security::{
        Security, Token,
        token::{self, DEFAULT_MAX_TOKEN_LIFETIME},
    },
    system_time,
    transport::{ConnInfo, incoming},
};
use crate::{
    config::{Ipv4Prefix, MemifRole, NsmInterface, NsmMechanism},
    reconcile::Binding,
};

/// How often connections that stopped refreshing are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

pub struct EndpointHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EndpointHandle {
    /// Unregisters, stops serving and waits for it.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .is_err()
        {
            warn!("NSM endpoint did not stop in time");
        }
    }
}

/// How the endpoint names the interfaces it asks for.
#[derive(Clone, Debug)]
enum Naming {
    Prefix(String),
    Label(String),
}

/// One connection the endpoint serves.
#[derive(Clone, Debug)]
struct Served {
    conn: Connection,
    /// The kernel interface's name; empty over memif.
    ifname: String,
    /// What the logical interface is bound to while this is the oldest.
    binding: Binding,
    /// When the previous hop's token expires: no refresh by then ends it.
    expires: SystemTime,
    since: u64,
}

struct State_ {
    /// `None`: no addresses handed out (both sides have their own config).
    ipam: Option<Ipam>,
    conns: BTreeMap<String, Served>,
    counter: u64,
}

#[derive(Clone)]
struct Endpoint {
    name: String,
    logical: String,
    service: String,
    mechanism: NsmMechanism,
    naming: Naming,
    state: Arc<Mutex<State_>>,
    security: Security,
    ctx: Arc<Context>,
    events: broadcast::Sender<ConnectionEvent>,
}

static IDS: AtomicU64 = AtomicU64::new(0);

fn new_id(name: &str) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{name}-{:x}-{:x}-{}",
        std::process::id(),
        t,
        IDS.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn spawn(ctx: Arc<Context>, logical: &str, spec: &NsmInterface) -> EndpointHandle {
    let (stop, stopped) = watch::channel(false);
    let logical = logical.to_owned();
    let spec = spec.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = run(ctx.clone(), &logical, &spec, stopped).await {
            warn!(interface = %logical, error = %e, "NSM endpoint failed");
            ctx.bindings.set(
                &logical,
                Binding::Waiting(format!("NSM endpoint for {}: {e}", spec.network_service)),
            );
        }
    });
    EndpointHandle { stop, task }
}

async fn run(
    ctx: Arc<Context>,
    logical: &str,
    spec: &NsmInterface,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let security = ctx.security()?;
    let cidr: Option<Ipv4Prefix> = match &spec.ipam {
        Some(i) => Some(i.cidr.parse()?),
        None => None,
    };
    let naming = match (&spec.interface_name_prefix, &spec.interface_name_from_label) {
        (_, Some(l)) => Naming::Label(l.clone()),
        (Some(p), None) => Naming::Prefix(p.clone()),
        (None, None) => Naming::Prefix("nsm".into()),
    };
    let name = format!("{}-{logical}", ctx.name);
    std::fs::create_dir_all(&ctx.listen_dir)
        .map_err(|e| format!("{}: {e}", ctx.listen_dir.display()))?;
    let socket = ctx.listen_dir.join(format!("{logical}.sock"));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    ctx.bindings.set(
        logical,
        Binding::Waiting(format!(
            "waiting for an NSM client of {}",
            spec.network_service
        )),
    );
    let ep = Endpoint {
        name: name.clone(),
        logical: logical.to_owned(),
        service: spec.network_service.clone(),
        mechanism: spec.mechanism,
        naming,
        state: Arc::new(Mutex::new(State_ {
            ipam: cidr.map(Ipam::new),
            conns: BTreeMap::new(),
            counter: 0,
        })),
        security: security.clone(),
        ctx: ctx.clone(),
        events: broadcast::channel(64).0,
    };
    let (server_stop_tx, server_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NetworkServiceServer::new(ep.clone()))
            .add_service(MonitorConnectionServer::new(ep.clone()))
            .add_service(HealthServer::new(EndpointHealth))
            .serve_with_incoming_shutdown(incoming(listener, &security), async {
                let _ = server_stop.await;
            }),
    );
    let sweeper = {
        let ep = ep.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                ep.expire();
            }
        })
    };
    let reg = Registration {
        name,
        service: spec.network_service.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        url: format!("file://{}", socket.display()),
    };
    let stop_reg = stop.clone();
    keep_registered(ctx.clone(), reg, &socket, stop_reg).await;
    let _ = stop.changed().await;
    sweeper.abort();
    let _ = server_stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        warn!(interface = %logical, "NSM endpoint server did not stop in time");
    }
    let _ = std::fs::remove_file(&socket);
    ctx.bindings.remove(logical);
    Ok(())
}

fn bad(m: impl std::fmt::Display) -> Status {
    Status::invalid_argument(m.to_string())
}

impl Endpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the logical interface to the oldest live connection's interface.
    fn rebind(&self) {
        let oldest = self
            .lock()
            .conns
            .values()
            .min_by_key(|s| s.since)
            .map(|s| s.binding.clone());
        self.ctx.bindings.set(
            &self.logical,
            match oldest {
                Some(b) => b,
                None => Binding::Waiting(format!("waiting for an NSM client of {}", self.service)),
            },
        );
    }

    fn event(&self, kind: ConnectionEventType, c: &Connection) {
        let _ = self.events.send(ConnectionEvent {
            r#type: kind as i32,
            connections: [(c.id.clone(), c.clone())].into(),
        });
    }

    /// The interface name of a new connection.
    fn pick_name(&self, st: &State_, conn: &Connection) -> Result<String, Status> {
        let taken: Vec<&str> = st.conns.values().map(|s| s.ifname.as_str()).collect();
        match &self.naming {
            Naming::Label(key) => {
                let n = conn.labels.get(key).cloned().ok_or_else(|| {
                    bad(format!(
                        "the request has no label {key:?} to name the interface"
                    ))
                })?;
                if n.is_empty() || n.len() > 15 || n.contains(['/', ':', ' ']) {
                    return Err(bad(format!("label {key}={n:?} is not an interface name")));
                }
                if taken.contains(&n.as_str()) {
                    return Err(Status::already_exists(format!("interface {n} is in use")));
                }
                Ok(n)
            }
            Naming::Prefix(p) => (0..10_000)
                .map(|i| format!("{p}{i}"))
                .find(|n| !taken.contains(&n.as_str()))
                .ok_or_else(|| Status::resource_exhausted("no interface name left")),
        }
    }

    fn expire(&self) {
        let now = SystemTime::now();
        let gone: Vec<Served> = {
            let mut st = self.lock();
            let ids: Vec<String> = st
                .conns
                .iter()
                .filter(|(_, s)| s.expires < now)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter()
                .filter_map(|id| {
                    if let Some(ipam) = st.ipam.as_mut() {
                        ipam.release(id);
                    }
                    st.conns.remove(id)
                })
                .collect()
        };
        for s in &gone {
            info!(interface = %self.logical, connection = %s.conn.id, "NSM connection not refreshed in time; closed");
            self.event(ConnectionEventType::Delete, &s.conn);
        }
        if !gone.is_empty() {
            self.rebind();
        }
    }
}

#[tonic::async_trait]
impl NetworkService for Endpoint {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let info = req
            .extensions()
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("no connection info"))?;
        let caller = Token::from_metadata(req.metadata())
            .map_err(|e| Status::permission_denied(format!("the caller's token: {e}")))?;
        let req = req.into_inner();
        let mut conn = req.connection.ok_or_else(|| bad("no connection"))?;
        if conn.network_service != self.service {
            return Err(Status::not_found(format!(
                "this endpoint serves {:?}, not {:?}",
                self.service, conn.network_service
            )));
        }
        // Path (NSM updatepath): our segment is the next one, or ours already.
        let mut path = conn.path.take().unwrap_or_default();
        let mut idx = path.index as usize;
        if path
            .path_segments
            .get(idx)
            .is_none_or(|s| s.name != self.name)
        {
            idx += 1;
        }
        if idx == 0 {
            return Err(bad("an endpoint cannot be the first hop"));
        }
        path.path_segments.truncate(idx + 1);
        if path.path_segments.len() <= idx {
            path.path_segments.push(PathSegment {
                name: self.name.clone(),
                id: new_id(&self.name),
                ..Default::default()
            });
        }
        // NSM updatetoken and the server policies: the caller's token into
        // its segment, ours into ours, then the chain up to us is checked.
        path.index = idx as u32;
        let own = self
            .security
            .hop_token(info.peer.as_ref())
            .map_err(|e| Status::internal(e.to_string()))?;
        token::update_path(&mut path, caller.as_ref(), &own)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.security
            .check_server_path(&path, info.peer.as_ref())
            .map_err(|e| Status::permission_denied(format!("path tokens refused: {e}")))?;
        let id = path.path_segments[idx].id.clone();
        conn.id = id.clone();
        let prev_expires = path.path_segments[idx - 1]
            .expires
            .as_ref()
            .map(system_time)
            .unwrap_or_else(|| SystemTime::now() + DEFAULT_MAX_TOKEN_LIFETIME);
        conn.path = Some(path);

        let excluded: Vec<Ipv4Prefix> = conn
            .context
            .as_ref()
            .and_then(|c| c.ip_context.as_ref())
            .map(|i| {
                i.excluded_prefixes
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let (ifname, pair, fresh) = {
            let mut st = self.lock();
            let known = st.conns.get(&id).map(|s| s.ifname.clone());
            let fresh = known.is_none();
            let ifname = match (known, self.mechanism) {
                (Some(n), _) => n,
                (None, NsmMechanism::Kernel) => self.pick_name(&st, &conn)?,
                // One logical interface is one memif in VPP: a second
                // client would get a socket nobody listens on.
                (None, NsmMechanism::Memif) if !st.conns.is_empty() => {
                    return Err(Status::resource_exhausted(format!(
                        "{} serves one client at a time over memif (its logical interface {} is one VPP memif)",
                        self.name, self.logical
                    )));
                }
                (None, NsmMechanism::Memif) => String::new(),
            };
            let pair = match st.ipam.as_mut() {
                Some(ipam) => Some(
                    ipam.allocate(&id, &excluded)
                        .map_err(|e| Status::resource_exhausted(e.to_string()))?,
                ),
                None => None,
            };
            (ifname, pair, fresh)
        };

        // Mechanism: KERNEL in our netns, named by us; or MEMIF, a master
        // on our socket in our netns.
        let kind = match self.mechanism {
            NsmMechanism::Kernel => "KERNEL",
            NsmMechanism::Memif => memif::MEMIF,
        };
        let mut mech = match conn.mechanism.take() {
            Some(m) if m.r#type == kind => m,
            _ => req
                .mechanism_preferences
                .into_iter()
                .find(|m| m.r#type == kind)
                .ok_or_else(|| bad(format!("no {kind} mechanism among the preferences")))?,
        };
        match self.mechanism {
            NsmMechanism::Kernel => {
                mech.parameters.insert("name".into(), ifname.clone());
            }
            NsmMechanism::Memif => {
                mech.parameters
                    .insert(memif::SOCKETFILE.into(), memif::endpoint_socketfile(&id));
            }
        }
        mech.parameters.insert(INODE_URL.into(), OWN_NETNS.into());

        if let Some(pair) = pair {
            let ctx = conn.context.get_or_insert_default();
            let ipc = ctx.ip_context.get_or_insert_default();
            let (c, e) = (
                format!("{}/32", pair.client),
                format!("{}/32", pair.endpoint),
            );
            ipc.src_ip_addrs.retain(|a| a != &c);
            ipc.src_ip_addrs.push(c.clone());
            ipc.dst_ip_addrs.retain(|a| a != &e);
            ipc.dst_ip_addrs.push(e.clone());
            ipc.src_routes.retain(|r| r.prefix != e);
            ipc.src_routes.push(Route {
                prefix: e,
                ..Default::default()
            });
            ipc.dst_routes.retain(|r| r.prefix != c);
            ipc.dst_routes.push(Route {
                prefix: c,
                ..Default::default()
            });
        }
        conn.state = State::Up as i32;
        let binding = match self.mechanism {
            NsmMechanism::Kernel => Binding::Bound(ifname.clone()),
            NsmMechanism::Memif => memif::binding(&conn, &mech, MemifRole::Master)
                .map(Binding::Memif)
                .map_err(bad)?,
        };
        info.inner
            .send_mechanism(&mut mech)
            .map_err(|e| Status::internal(e.to_string()))?;
        conn.mechanism = Some(mech);

        {
            let mut st = self.lock();
            st.counter += 1;
            let since = st.conns.get(&id).map_or(st.counter, |s| s.since);
            st.conns.insert(
                id.clone(),
                Served {
                    conn: conn.clone(),
                    ifname: ifname.clone(),
                    binding,
                    expires: prev_expires,
                    since,
                },
            );
        }
        if fresh {
            let client = pair.map(|p| p.client.to_string()).unwrap_or_default();
            info!(interface = %self.logical, host_if = %ifname, connection = %id, client = %client, "NSM client connected");
        }
        self.rebind();
        self.event(ConnectionEventType::Update, &conn);
        Ok(Response::new(conn))
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        let conn = req.into_inner();
        let gone = {
            let mut st = self.lock();
            if let Some(ipam) = st.ipam.as_mut() {
                ipam.release(&conn.id);
            }
            st.conns.remove(&conn.id)
        };
        if let Some(s) = gone {
            info!(interface = %self.logical, host_if = %s.ifname, connection = %conn.id, "NSM connection closed by the client");
            self.event(ConnectionEventType::Delete, &s.conn);
            self.rebind();
        }
        Ok(Response::new(()))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorConnection for Endpoint {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        req: Request<MonitorScopeSelector>,
    ) -> Result<Response<EventStream>, Status> {
        let ids: Vec<String> = req
            .into_inner()
            .path_segments
            .into_iter()
            .map(|s| s.id)
            .collect();
        let wanted = move |c: &Connection| {
            ids.is_empty()
                || c.path
                    .as_ref()
                    .is_some_and(|p| p.path_segments.iter().any(|s| ids.contains(&s.id)))
        };
        let mut rx = self.events.subscribe();
        let initial: HashMap<String, Connection> = self
            .lock()
            .conns
            .values()
            .filter(|s| wanted(&s.conn))
            .map(|s| (s.conn.id.clone(), s.conn.clone()))
            .collect();
        let (tx, out) = mpsc::channel(64);
        let _ = tx
            .send(Ok(ConnectionEvent {
                r#type: ConnectionEventType::InitialStateTransfer as i32,
                connections: initial,
            }))
            .await;
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(mut e) => {
                        e.connections.retain(|_, c| wanted(c));
                        if !e.connections.is_empty() && tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
