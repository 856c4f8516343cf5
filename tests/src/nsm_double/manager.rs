//! nsmgr and forwarder in one: the NetworkService, MonitorConnection and
//! registry services on one unix socket.

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use prost_types::Timestamp;
use tokio::{net::UnixStream, sync::broadcast};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, transport::Endpoint};
use xcnf_agent::nsm::security::{
    PeerId, SecureConnectInfo, Security, Token, X509Source, X509Svid,
    token::{self, DEFAULT_MAX_TOKEN_LIFETIME},
    x509,
};
use xcnf_proto::nsm::{
    connection::{
        Connection, ConnectionEvent, ConnectionEventType, Mechanism, MonitorScopeSelector, Path,
        PathSegment, State as ConnState, monitor_connection_server::MonitorConnection,
    },
    networkservice::{
        NetworkServiceRequest, network_service_client::NetworkServiceClient,
        network_service_server::NetworkService,
    },
    registry::{
        self, NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceEndpointResponse,
        NetworkServiceQuery, NetworkServiceResponse,
        network_service_endpoint_registry_server::NetworkServiceEndpointRegistry,
        network_service_registry_server::NetworkServiceRegistry,
    },
};

use super::{
    fdpass::{Received, RecvStream, proc_path},
    veth::{self, End},
};

const INODE_URL: &str = "inodeURL";
/// NSM's memif mechanism type and its socket parameter.
pub const MEMIF: &str = "MEMIF";
pub const SOCKETFILE: &str = "socketfile";
const FD_WAIT: Duration = Duration::from_secs(5);

pub fn ts(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn time_of(t: &Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
}

/// An endpoint the double knows: registered over gRPC (reached through its
/// listen socket) or built in (the double makes its side itself).
#[derive(Clone, Debug)]
pub enum Reach {
    Socket(Arc<OwnedFd>),
    BuiltIn(BuiltIn),
}

/// A plain endpoint inside the double: its netns, interface name prefix and
/// the /30-style pairs it hands out from `base` (client .1+4k, endpoint .2+4k).
#[derive(Clone, Debug)]
pub struct BuiltIn {
    pub netns: String,
    pub prefix: String,
    pub base: std::net::Ipv4Addr,
}

#[derive(Clone, Debug)]
pub struct Nse {
    pub nse: NetworkServiceEndpoint,
    pub reach: Reach,
    pub expires: SystemTime,
}

/// One client connection as the double holds it.
#[derive(Clone, Debug)]
pub struct Conn {
    /// What the client got back (path index 0).
    pub client: Connection,
    /// What the endpoint returned (for Close).
    pub endpoint: Connection,
    pub nse: String,
    pub client_end: End,
    pub endpoint_end: End,
    /// Kept open while the pair exists: the namespaces' descriptors.
    pub fds: Vec<Arc<OwnedFd>>,
    /// Over the memif mechanism, instead of a veth pair: the socket the
    /// forwarder's master listens on for the client, and the one the
    /// endpoint's master listens on for the forwarder.
    pub memif: Option<MemifPair>,
}

/// The two memif sockets of a connection, as a forwarder would join them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifPair {
    pub client_socket: String,
    pub endpoint_socket: String,
}

#[derive(Default, Debug)]
pub struct State {
    pub nses: BTreeMap<String, Nse>,
    pub conns: BTreeMap<String, Conn>,
    /// Every Request seen, by client connection id (refresh observation).
    pub requests: HashMap<String, u32>,
    pub closes: Vec<String>,
    pub next_builtin: u32,
    /// Registered network services, by name: their matches steer endpoint
    /// selection.
    pub services: BTreeMap<String, registry::NetworkService>,
}

/// What the double does wrong, on purpose, in the token it sends an
/// endpoint with a forwarded Request (the endpoint must refuse it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenFault {
    #[default]
    None,
    /// Signed by a key that is not the one of the double's TLS certificate
    /// (a certificate of the same SPIFFE ID and trusted CA all the same).
    Forged,
    /// Expired an hour ago or so (signed by the right key).
    Expired,
}

/// SPIFFE mode: the double's own SVID (for its tokens' audience when it
/// talks to itself, nsmgr to forwarder) and a second key for forged tokens.
pub struct Tokens {
    pub source: X509Source,
    pub forger: X509Svid,
}

impl Tokens {
    /// The double as a peer: the audience of the tokens nsmgr gives the
    /// forwarder (both are the double).
    fn me(&self) -> Result<PeerId, Status> {
        let ctx = self.source.current();
        let leaf = ctx
            .svid
            .chain()
            .first()
            .ok_or_else(|| Status::internal("no SVID"))?;
        let info = x509::leaf_info(leaf).map_err(status)?;
        Ok(PeerId {
            id: info.id,
            public_key: info.public_key,
            not_after: info.not_after,
        })
    }
}

#[derive(Clone)]
pub struct Manager {
    pub state: Arc<Mutex<State>>,
    pub events: broadcast::Sender<ConnectionEvent>,
    /// Lifetime the double gives path segments and registrations.
    pub expiry: Duration,
    /// mTLS on both of its sides and tokens, or insecure.
    pub security: Security,
    pub tokens: Option<Arc<Tokens>>,
    /// The fault of the token forwarded to endpoints.
    pub fault: Arc<Mutex<TokenFault>>,
    /// The fault of nsmgr's token in replies to gRPC clients.
    pub reply_fault: Arc<Mutex<TokenFault>>,
}

/// The caller of a gRPC Request as the TLS layer and the metadata tell.
pub struct Caller {
    pub peer: Option<PeerId>,
    pub token: Option<Token>,
}

fn labels_match(
    nse: &NetworkServiceEndpoint,
    service: &str,
    want: &BTreeMap<String, String>,
) -> bool {
    let have = nse
        .network_service_labels
        .get(service)
        .map(|l| l.labels.clone())
        .unwrap_or_default();
    // An endpoint qualifies when no label both sides have differs.
    have.iter().all(|(k, v)| want.get(k).is_none_or(|w| w == v))
}

/// `selector` is a subset of `have`.
fn selects(selector: &HashMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The endpoints among `candidates` that a request for `service` with
/// `want` labels may reach. A service registered with matches is matched
/// as NSM's discovery does: the first match whose source selector the
/// request's labels satisfy selects the endpoints that one of its routes'
/// destination selectors selects (a match with `fallthrough` and no such
/// endpoint hands over to the next match), and when no source selector
/// matches, every endpoint qualifies. Without matches, [`labels_match`].
fn choose<'a>(
    service: Option<&registry::NetworkService>,
    name: &str,
    want: &BTreeMap<String, String>,
    candidates: Vec<(&'a String, &'a Nse)>,
) -> Vec<(&'a String, &'a Nse)> {
    let Some(svc) = service.filter(|s| !s.matches.is_empty()) else {
        return candidates
            .into_iter()
            .filter(|(_, n)| labels_match(&n.nse, name, want))
            .collect();
    };
    for m in &svc.matches {
        if !selects(&m.source_selector, want) {
            continue;
        }
        let picked: Vec<_> = candidates
            .iter()
            .filter(|(_, n)| {
                let have: BTreeMap<String, String> = n
                    .nse
                    .network_service_labels
                    .get(name)
                    .map(|l| l.labels.clone().into_iter().collect())
                    .unwrap_or_default();
                m.routes
                    .iter()
                    .any(|r| selects(&r.destination_selector, &have))
            })
            .copied()
            .collect();
        if !picked.is_empty() || !m.fallthrough {
            return picked;
        }
    }
    candidates
}

fn status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Manager {
    pub fn new(expiry: Duration, security: Security, tokens: Option<Arc<Tokens>>) -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(256).0,
            expiry,
            security,
            tokens,
            fault: Arc::default(),
            reply_fault: Arc::default(),
        }
    }

    /// The double's token for `peer` (SPIFFE mode only).
    fn sign(&self, peer: &PeerId) -> Result<String, Status> {
        self.security
            .hop_token(Some(peer))
            .map(|t| t.jwt)
            .map_err(status)
    }

    /// nsmgr's side of a Request in SPIFFE mode: updatetoken and the
    /// server policies on the path up to nsmgr (sdk authorize checks the
    /// left side), then the tokens of nsmgr → forwarder and forwarder →
    /// built-in endpoint (a registered endpoint's is signed when dialled).
    /// Without a caller (the double as its own NSC) it signs segment 0 too.
    fn authorize(&self, path: &mut Path, caller: Option<&Caller>) -> Result<(), Status> {
        let Some(t) = &self.tokens else {
            return Ok(());
        };
        let me = t.me()?;
        match caller {
            Some(c) => {
                let mut left = Path {
                    index: 1,
                    path_segments: path.path_segments[..2].to_vec(),
                };
                let own = self.security.hop_token(c.peer.as_ref()).map_err(status)?;
                token::update_path(&mut left, c.token.as_ref(), &own).map_err(status)?;
                self.security
                    .check_server_path(&left, c.peer.as_ref())
                    .map_err(|e| Status::permission_denied(e.to_string()))?;
                path.path_segments[0] = left.path_segments[0].clone();
            }
            None => path.path_segments[0].token = self.sign(&me)?,
        }
        path.path_segments[1].token = self.sign(&me)?;
        path.path_segments[2].token = self.sign(&me)?;
        Ok(())
    }

    /// The forwarder's token for the endpoint it dialled, faulty if asked.
    fn forwarder_token(&self, peer: Option<&PeerId>) -> Result<Option<Token>, Status> {
        let fault = *self.fault.lock().unwrap();
        self.token_with(fault, peer)
    }

    /// nsmgr's segment in a reply to a gRPC client, re-signed faulty if
    /// asked (the client must refuse the reply).
    fn fault_reply(&self, c: &mut Connection) -> Result<(), Status> {
        let fault = *self.reply_fault.lock().unwrap();
        let Some(t) = &self.tokens else {
            return Ok(());
        };
        if fault == TokenFault::None {
            return Ok(());
        }
        let me = t.me()?;
        if let (Some(tok), Some(seg)) = (
            self.token_with(fault, Some(&me))?,
            c.path.as_mut().and_then(|p| p.path_segments.get_mut(1)),
        ) {
            seg.token = tok.jwt;
        }
        Ok(())
    }

    /// A token of the double for `peer`, with `fault` (SPIFFE mode only).
    fn token_with(
        &self,
        fault: TokenFault,
        peer: Option<&PeerId>,
    ) -> Result<Option<Token>, Status> {
        let Some(t) = &self.tokens else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let tok = match fault {
            TokenFault::None => self.security.hop_token(peer).map_err(status)?,
            TokenFault::Forged => {
                token::sign(&t.forger, peer, DEFAULT_MAX_TOKEN_LIFETIME, now).map_err(status)?
            }
            TokenFault::Expired => token::sign(
                &t.source.current().svid,
                peer,
                DEFAULT_MAX_TOKEN_LIFETIME,
                now - Duration::from_secs(3600),
            )
            .map_err(status)?,
        };
        Ok(Some(tok))
    }

    fn event(&self, kind: ConnectionEventType, c: &Connection) {
        let _ = self.events.send(ConnectionEvent {
            r#type: kind as i32,
            connections: [(c.id.clone(), c.clone())].into(),
        });
    }

    /// The Request path of nsmgr + forwarder, for a client whose namespace
    /// is at `client_ns` (kept open by `client_fd`).
    pub async fn request(
        &self,
        req: NetworkServiceRequest,
        client_ns: String,
        client_fd: Option<Arc<OwnedFd>>,
        caller: Option<&Caller>,
    ) -> Result<Connection, Status> {
        let mut conn = req
            .connection
            .ok_or_else(|| Status::invalid_argument("no connection"))?;
        let pref = req
            .mechanism_preferences
            .iter()
            .find(|m| m.r#type == "KERNEL" || m.r#type == MEMIF)
            .cloned()
            .ok_or_else(|| Status::invalid_argument("no KERNEL or MEMIF mechanism preference"))?;
        let memif = pref.r#type == MEMIF;
        let client_if = pref.parameters.get("name").cloned().unwrap_or_default();
        if !memif && client_if.is_empty() {
            return Err(Status::invalid_argument("KERNEL mechanism without a name"));
        }
        *self
            .state
            .lock()
            .unwrap()
            .requests
            .entry(conn.id.clone())
            .or_default() += 1;
        let now = SystemTime::now();
        let expires = ts(now + self.expiry);
        // Path: the client's segment 0, then nsmgr and forwarder.
        let mut path = conn.path.clone().unwrap_or_default();
        path.path_segments.truncate(1);
        if path.path_segments.is_empty() {
            return Err(Status::invalid_argument("no client path segment"));
        }
        for name in ["nsmgr-double", "forwarder-double"] {
            path.path_segments.push(PathSegment {
                name: name.into(),
                id: format!("{name}-{}", conn.id),
                expires: Some(expires),
                ..Default::default()
            });
        }
        self.authorize(&mut path, caller)?;
        let existing = self.state.lock().unwrap().conns.get(&conn.id).cloned();
        if let Some(old) = &existing
            && if memif {
                old.memif.is_some()
            } else {
                old.memif.is_none()
                    && veth::exists(&old.client_end)
                    && old.client_end.ifname == client_if
            }
        {
            // Refresh: the same connection, the same pair; a registered
            // endpoint is refreshed too (with the connection it returned).
            let mut endpoint = old.endpoint.clone();
            let reach = self
                .state
                .lock()
                .unwrap()
                .nses
                .get(&old.nse)
                .map(|n| n.reach.clone());
            if let Some(Reach::Socket(sock)) = reach {
                let mut p = path.clone();
                p.path_segments.extend(
                    old.endpoint
                        .path
                        .clone()
                        .unwrap_or_default()
                        .path_segments
                        .into_iter()
                        .skip(3),
                );
                // The endpoint's reply carries the path as forwarded.
                let (ec, _, _) = self.forward(&old.endpoint, &p, &sock, &pref.r#type).await?;
                endpoint = ec;
            } else if let Some(p) = endpoint.path.as_mut() {
                for s in &mut p.path_segments {
                    s.expires = Some(expires);
                }
                p.path_segments[..3].clone_from_slice(&path.path_segments);
                if let Some(t) = &self.tokens {
                    p.path_segments[3].token = self.sign(&t.me()?)?;
                }
            }
            let mut c = old.client.clone();
            let mut p = endpoint.path.clone().unwrap_or_default();
            p.index = 0;
            c.path = Some(p);
            {
                let mut st = self.state.lock().unwrap();
                let e = st.conns.get_mut(&conn.id).unwrap();
                e.client = c.clone();
                e.endpoint = endpoint;
            }
            self.event(ConnectionEventType::Update, &c);
            return Ok(c);
        }
        if let Some(old) = existing {
            if old.memif.is_none() {
                veth::delete(&old.client_end);
            }
            self.state.lock().unwrap().conns.remove(&conn.id);
        }
        let (nse_name, nse) = {
            let st = self.state.lock().unwrap();
            let candidates = st
                .nses
                .iter()
                .filter(|(_, n)| n.expires > now)
                .filter(|(_, n)| n.nse.network_service_names.contains(&conn.network_service))
                .filter(|(name, _)| {
                    conn.network_service_endpoint_name.is_empty()
                        || **name == conn.network_service_endpoint_name
                })
                .collect();
            let pick = choose(
                st.services.get(&conn.network_service),
                &conn.network_service,
                &conn.labels.clone().into_iter().collect(),
                candidates,
            )
            .into_iter()
            .next();
            let (name, n) = pick.ok_or_else(|| {
                Status::not_found(format!(
                    "no endpoint for network service {:?}",
                    conn.network_service
                ))
            })?;
            (name.clone(), n.clone())
        };
        conn.network_service_endpoint_name = nse_name.clone();
        conn.payload = "ETHERNET".into();
        // A new connection (or a healing one): the endpoint chooses anew.
        conn.mechanism = None;
        let mut fds: Vec<Arc<OwnedFd>> = client_fd.into_iter().collect();
        let (endpoint_conn, endpoint_end) = match &nse.reach {
            Reach::BuiltIn(b) => {
                let k = {
                    let mut st = self.state.lock().unwrap();
                    st.next_builtin += 1;
                    st.next_builtin - 1
                };
                let base = u32::from(b.base) + 4 * k;
                let (c_ip, e_ip) = (
                    std::net::Ipv4Addr::from(base + 1),
                    std::net::Ipv4Addr::from(base + 2),
                );
                let mut ec = conn.clone();
                let ctx = ec.context.get_or_insert_default();
                let ipc = ctx.ip_context.get_or_insert_default();
                ipc.src_ip_addrs = vec![format!("{c_ip}/32")];
                ipc.dst_ip_addrs = vec![format!("{e_ip}/32")];
                ipc.src_routes = vec![xcnf_proto::nsm::connectioncontext::Route {
                    prefix: format!("{e_ip}/32"),
                    ..Default::default()
                }];
                ipc.dst_routes = vec![xcnf_proto::nsm::connectioncontext::Route {
                    prefix: format!("{c_ip}/32"),
                    ..Default::default()
                }];
                let mut p = path.clone();
                let token = match &self.tokens {
                    Some(t) => self.sign(&t.me()?)?,
                    None => String::new(),
                };
                p.path_segments.push(PathSegment {
                    name: nse_name.clone(),
                    id: format!("{nse_name}-{}", conn.id),
                    expires: Some(expires),
                    token,
                    ..Default::default()
                });
                ec.path = Some(p);
                let end = End {
                    netns: b.netns.clone(),
                    ifname: format!("{}{k}", b.prefix),
                };
                (ec, end)
            }
            Reach::Socket(sock) => {
                let (ec, end, fd) = self.forward(&conn, &path, sock, &pref.r#type).await?;
                fds.push(fd);
                (ec, end)
            }
        };
        let client_end = End {
            netns: client_ns,
            ifname: client_if.clone(),
        };
        let ipc = endpoint_conn
            .context
            .clone()
            .and_then(|c| c.ip_context)
            .unwrap_or_default();
        let mut client = endpoint_conn.clone();
        client.id = conn.id.clone();
        let mut p = endpoint_conn.path.clone().unwrap_or_default();
        p.index = 0;
        client.path = Some(p);
        let pair = if memif {
            // The forwarder's master for the client, in the client's netns
            // (the inodeURL it sent comes back); a built-in endpoint's
            // master is the double's too.
            let client_socket = format!("@nsm-double/{}", conn.id);
            let endpoint_socket = match endpoint_conn
                .mechanism
                .as_ref()
                .and_then(|m| m.parameters.get(SOCKETFILE))
            {
                Some(s) => s.clone(),
                None => format!("@nsm-double-nse/{}", conn.id),
            };
            let mut parameters = pref.parameters.clone();
            parameters.insert(SOCKETFILE.into(), client_socket.clone());
            client.mechanism = Some(Mechanism {
                cls: "LOCAL".into(),
                r#type: MEMIF.into(),
                parameters,
            });
            Some(MemifPair {
                client_socket,
                endpoint_socket,
            })
        } else {
            veth::create(&client_end, &endpoint_end, &ipc).map_err(status)?;
            client.mechanism = Some(Mechanism {
                cls: "LOCAL".into(),
                r#type: "KERNEL".into(),
                parameters: pref.parameters.clone(),
            });
            None
        };
        client.state = ConnState::Up as i32;
        self.state.lock().unwrap().conns.insert(
            conn.id.clone(),
            Conn {
                client: client.clone(),
                endpoint: endpoint_conn,
                nse: nse_name,
                client_end,
                endpoint_end,
                fds,
                memif: pair,
            },
        );
        self.event(ConnectionEventType::Update, &client);
        Ok(client)
    }

    /// Forwards the Request to a registered endpoint (as the forwarder,
    /// path index 2) and takes its netns from the reply.
    async fn forward(
        &self,
        conn: &Connection,
        path: &Path,
        sock: &Arc<OwnedFd>,
        kind: &str,
    ) -> Result<(Connection, End, Arc<OwnedFd>), Status> {
        let (channel, received, peer) = dial(&proc_path(sock), &self.security)
            .await
            .map_err(status)?;
        let mut out = conn.clone();
        if out.mechanism.is_none() {
            // A first request: the forwarder's own connection id.
            out.id = format!("forwarder-double-{}", conn.id);
        }
        let mut path = Path {
            index: 2,
            path_segments: path.path_segments.clone(),
        };
        // The forwarder's client-side updatetoken: its segment's token is
        // for the endpoint it dialled, and goes in the call metadata too.
        let tok = self.forwarder_token(peer.as_ref())?;
        if let Some(t) = &tok {
            path.path_segments[2].token = t.jwt.clone();
        }
        out.path = Some(path);
        let mut req = Request::new(NetworkServiceRequest {
            connection: Some(out),
            mechanism_preferences: vec![Mechanism {
                cls: "LOCAL".into(),
                r#type: kind.into(),
                parameters: Default::default(),
            }],
        });
        if let Some(t) = &tok {
            t.insert_into(req.metadata_mut()).map_err(status)?;
        }
        let reply = NetworkServiceClient::new(channel)
            .request(req)
            .await?
            .into_inner();
        let m = reply
            .mechanism
            .clone()
            .ok_or_else(|| Status::internal("endpoint chose no mechanism"))?;
        if m.r#type != kind {
            return Err(Status::internal(format!("endpoint chose {}", m.r#type)));
        }
        let ifname = m.parameters.get("name").cloned().unwrap_or_default();
        let url = m.parameters.get(INODE_URL).cloned().unwrap_or_default();
        let fd = received.take(&url, FD_WAIT).await.map_err(status)?;
        let end = End {
            netns: proc_path(&fd),
            ifname,
        };
        Ok((reply, end, fd))
    }

    pub async fn close(&self, conn: &Connection) {
        let Some(c) = self.state.lock().unwrap().conns.remove(&conn.id) else {
            return;
        };
        self.state.lock().unwrap().closes.push(conn.id.clone());
        if c.memif.is_none() {
            veth::delete(&c.client_end);
        }
        let reach = self
            .state
            .lock()
            .unwrap()
            .nses
            .get(&c.nse)
            .map(|n| n.reach.clone());
        if let Some(Reach::Socket(sock)) = reach
            && let Ok((channel, _, _)) = dial(&proc_path(&sock), &self.security).await
        {
            let _ = NetworkServiceClient::new(channel)
                .close(c.endpoint.clone())
                .await;
        }
        self.event(ConnectionEventType::Delete, &c.client);
    }

    /// Ends connections whose client stopped refreshing, and registrations
    /// that were not renewed.
    pub async fn expire(&self) {
        let now = SystemTime::now();
        let stale: Vec<Connection> = self
            .state
            .lock()
            .unwrap()
            .conns
            .values()
            .filter(|c| {
                c.client
                    .path
                    .as_ref()
                    .and_then(|p| p.path_segments.get(1))
                    .and_then(|s| s.expires.as_ref())
                    .is_some_and(|e| time_of(e) < now)
            })
            .map(|c| c.client.clone())
            .collect();
        for c in stale {
            self.close(&c).await;
        }
        self.state
            .lock()
            .unwrap()
            .nses
            .retain(|_, n| n.expires > now);
    }
}

type PeerSlot = Arc<Mutex<Option<PeerId>>>;

/// A channel to an endpoint's socket (at a `/proc/<pid>/fd/<n>` path),
/// secured as the double is (the endpoint's SVID verified), collecting the
/// descriptors its replies carry; with the endpoint's verified identity.
pub async fn dial(
    path: &str,
    security: &Security,
) -> Result<(tonic::transport::Channel, Arc<Received>, Option<PeerId>), String> {
    let received = Arc::new(Received::default());
    let slot = PeerSlot::default();
    let (r, sl, security) = (received.clone(), slot.clone(), security.clone());
    let path = path.to_owned();
    let channel = Endpoint::from_static("http://nse.double")
        .connect_with_connector(tower::service_fn(move |_| {
            let (path, r, sl, security) = (path.clone(), r.clone(), sl.clone(), security.clone());
            async move {
                let sock = UnixStream::connect(&path).await?;
                let (io, peer) = security
                    .connect(RecvStream { sock, received: r })
                    .await
                    .map_err(std::io::Error::other)?;
                *sl.lock().unwrap() = peer;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        }))
        .await
        .map_err(|e| format!("connect {e:?}"))?;
    let peer = slot.lock().unwrap().clone();
    Ok((channel, received, peer))
}

/// What the server side knows of a connection: its descriptors and peer.
fn conn_info(req_ext: &tonic::Extensions) -> Result<SecureConnectInfo<Arc<Received>>, Status> {
    req_ext
        .get::<SecureConnectInfo<Arc<Received>>>()
        .cloned()
        .ok_or_else(|| Status::internal("no connection info"))
}

#[tonic::async_trait]
impl NetworkService for Manager {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let info = conn_info(req.extensions())?;
        let caller = Caller {
            peer: info.peer.clone(),
            token: Token::from_metadata(req.metadata())
                .map_err(|e| Status::permission_denied(e.to_string()))?,
        };
        let fds = info.inner;
        let req = req.into_inner();
        let url = req
            .mechanism_preferences
            .iter()
            .find(|m| m.r#type == "KERNEL" || m.r#type == MEMIF)
            .and_then(|m| m.parameters.get(INODE_URL))
            .cloned()
            .unwrap_or_default();
        let fd = fds
            .take(&url, FD_WAIT)
            .await
            .map_err(Status::invalid_argument)?;
        let ns = proc_path(&fd);
        let mut c = Manager::request(self, req, ns, Some(fd), Some(&caller)).await?;
        self.fault_reply(&mut c)?;
        Ok(Response::new(c))
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        Manager::close(self, req.get_ref()).await;
        Ok(Response::new(()))
    }
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorConnection for Manager {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        req: Request<MonitorScopeSelector>,
    ) -> Result<Response<EventStream>, Status> {
        let sel = req.into_inner();
        let ids: Vec<String> = sel.path_segments.iter().map(|s| s.id.clone()).collect();
        let wanted = move |c: &Connection| {
            ids.is_empty()
                || c.path
                    .as_ref()
                    .is_some_and(|p| p.path_segments.iter().any(|s| ids.contains(&s.id)))
                || ids.contains(&c.id)
        };
        let rx = self.events.subscribe();
        let initial: HashMap<String, Connection> = self
            .state
            .lock()
            .unwrap()
            .conns
            .values()
            .filter(|c| wanted(&c.client))
            .map(|c| (c.client.id.clone(), c.client.clone()))
            .collect();
        let first = ConnectionEvent {
            r#type: ConnectionEventType::InitialStateTransfer as i32,
            connections: initial,
        };
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let mut rx = rx;
        tokio::spawn(async move {
            while let Ok(mut e) = rx.recv().await {
                e.connections.retain(|_, c| wanted(c));
                if !e.connections.is_empty() && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        let rest = ReceiverStream::new(out);
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(first)).chain(rest),
        )))
    }
}

type NseStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<NetworkServiceEndpointResponse, Status>> + Send>>;
type NsStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<NetworkServiceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for Manager {
    type FindStream = NseStream;

    async fn register(
        &self,
        req: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        let fds = conn_info(req.extensions())?.inner;
        let mut nse = req.into_inner();
        if nse.name.is_empty() {
            return Err(Status::invalid_argument("endpoint without a name"));
        }
        let sock = fds
            .take(&nse.url, FD_WAIT)
            .await
            .map_err(Status::invalid_argument)?;
        let expires = SystemTime::now() + self.expiry;
        nse.expiration_time = Some(ts(expires));
        if nse.initial_registration_time.is_none() {
            nse.initial_registration_time = Some(ts(SystemTime::now()));
        }
        self.state.lock().unwrap().nses.insert(
            nse.name.clone(),
            Nse {
                nse: nse.clone(),
                reach: Reach::Socket(sock),
                expires,
            },
        );
        Ok(Response::new(nse))
    }

    async fn find(
        &self,
        req: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<NseStream>, Status> {
        let q = req
            .into_inner()
            .network_service_endpoint
            .unwrap_or_default();
        let found: Vec<Result<NetworkServiceEndpointResponse, Status>> = self
            .state
            .lock()
            .unwrap()
            .nses
            .values()
            .filter(|n| q.name.is_empty() || n.nse.name == q.name)
            .map(|n| {
                Ok(NetworkServiceEndpointResponse {
                    network_service_endpoint: Some(n.nse.clone()),
                    deleted: false,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(found))))
    }

    async fn unregister(
        &self,
        req: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<()>, Status> {
        self.state.lock().unwrap().nses.remove(&req.get_ref().name);
        Ok(Response::new(()))
    }
}

#[tonic::async_trait]
impl NetworkServiceRegistry for Manager {
    type FindStream = NsStream;

    async fn register(
        &self,
        req: Request<registry::NetworkService>,
    ) -> Result<Response<registry::NetworkService>, Status> {
        let ns = req.into_inner();
        if ns.name.is_empty() {
            return Err(Status::invalid_argument("network service without a name"));
        }
        self.state
            .lock()
            .unwrap()
            .services
            .insert(ns.name.clone(), ns.clone());
        Ok(Response::new(ns))
    }

    async fn find(&self, _req: Request<NetworkServiceQuery>) -> Result<Response<NsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn unregister(
        &self,
        _req: Request<registry::NetworkService>,
    ) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}
