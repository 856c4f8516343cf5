//! A test NSM manager: nsmgr and forwarder in one process, speaking NSM v1
//! (NetworkService, MonitorConnection and both registries) on a unix socket
//! with grpcfd descriptor passing, so the agent's NSM client and endpoint
//! talk to it as to the real thing.
//!
//! For the kernel mechanism it makes a real veth pair between the client's
//! namespace (the descriptor the client sent) and the endpoint's (the
//! descriptor in the endpoint's reply, or the netns of a built-in
//! endpoint), named as the mechanisms say, with the IP context's addresses
//! and routes on both ends. Endpoints are chosen by service name and labels
//! (an endpoint qualifies when no label both sides have differs).
//! [`NsmDouble::restart`] drops every stream, connection and data-plane
//! pair and listens again (registrations stay, as the registry is a
//! separate service in NSM), so clients must heal.
//!
//! Started with a SPIFFE Workload API ([`NsmDouble::start_secure`]) it
//! secures NSM as a real nsmgr does: mTLS on its socket and when it dials an
//! endpoint (peers verified against the trust bundle), and on every Request
//! the token policies (`tokens_valid`, `prev_token_signed`, `tokens_expired`,
//! `tokens_chained`, refused with PermissionDenied) and its own signed
//! segments. [`NsmDouble::set_token_fault`] makes the token it forwards to an
//! endpoint forged or expired, to test the endpoint's checks, and
//! [`NsmDouble::set_reply_token_fault`] its own token in replies, to test a
//! client's. The TLS and
//! token code is the agent's own (`xcnf_agent::nsm::security`, tested on its
//! own against independent expectations in tests/tests/nsm_security.rs).

mod fdpass;
mod manager;
mod veth;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{net::UnixListener, runtime::Runtime, task::JoinHandle};
use tokio_stream::StreamExt;
use tonic::transport::Server;
use xcnf_proto::nsm::{
    connection::{
        Connection, Mechanism, Path as NsmPath, PathSegment,
        monitor_connection_server::MonitorConnectionServer,
    },
    networkservice::{NetworkServiceRequest, network_service_server::NetworkServiceServer},
    registry::{
        Destination, Match, NetworkService, NetworkServiceEndpoint, NetworkServiceLabels,
        network_service_endpoint_registry_server::NetworkServiceEndpointRegistryServer,
        network_service_registry_server::NetworkServiceRegistryServer,
    },
};

use manager::{BuiltIn, Manager, Nse, Reach, Tokens};
pub use manager::{Conn, MEMIF, MemifPair, SOCKETFILE, TokenFault};
use xcnf_agent::nsm::security::{Authorizer, Security, X509Source, X509Svid, x509};

use crate::spiffe_double::SpiffeDouble;

use fdpass::{Received, RecvStream};

/// Labels a selector requires, as `(key, value)` pairs.
pub type Selector<'a> = &'a [(&'a str, &'a str)];

/// The running double. Dropping it stops serving and deletes every pair it
/// made.
pub struct NsmDouble {
    rt: Runtime,
    socket: PathBuf,
    manager: Manager,
    server: Option<JoinHandle<()>>,
}

impl NsmDouble {
    /// Serves on `socket`, insecure; path segments and registrations last
    /// `expiry`.
    pub fn start(socket: &Path, expiry: Duration) -> Self {
        let rt = runtime();
        Self::with_manager(rt, socket, Manager::new(expiry, Security::Insecure, None))
    }

    /// Serves on `socket` with mTLS and path tokens, its SVID from `spiffe`
    /// (whatever it serves: an untrusted one makes the double a peer to be
    /// refused). The forged-token key is a second SVID of the same SPIFFE ID
    /// from `spiffe`'s trusted CA.
    pub fn start_secure(socket: &Path, expiry: Duration, spiffe: &SpiffeDouble) -> Self {
        let rt = runtime();
        let source = rt
            .block_on(X509Source::connect(
                &spiffe.endpoint(),
                Duration::from_secs(30),
            ))
            .unwrap_or_else(|e| panic!("NSM double: SVID: {e}"));
        let security = Security::spiffe(source.clone(), Authorizer::Any)
            .unwrap_or_else(|e| panic!("NSM double: TLS: {e}"));
        let id = source.current().svid.id().to_string();
        let forged = spiffe.ca().issue(&id, Duration::from_secs(3600));
        let chain = x509::split_certs(&forged.cert_der).unwrap();
        let forger = X509Svid::from_der(chain, forged.key_der).unwrap();
        let tokens = Arc::new(Tokens { source, forger });
        Self::with_manager(rt, socket, Manager::new(expiry, security, Some(tokens)))
    }

    /// Makes the token forwarded to endpoints faulty (or right again).
    pub fn set_token_fault(&self, fault: TokenFault) {
        *self.manager.fault.lock().unwrap() = fault;
    }

    /// Makes nsmgr's token in the replies to gRPC clients faulty (or right
    /// again); what the double holds stays right.
    pub fn set_reply_token_fault(&self, fault: TokenFault) {
        *self.manager.reply_fault.lock().unwrap() = fault;
    }

    fn with_manager(rt: Runtime, socket: &Path, manager: Manager) -> Self {
        let m = manager.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                m.expire().await;
            }
        });
        let mut d = Self {
            rt,
            socket: socket.to_path_buf(),
            manager,
            server: None,
        };
        d.listen();
        d
    }

    fn listen(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _guard = self.rt.enter();
        let listener = UnixListener::bind(&self.socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.socket.display()));
        let m = self.manager.clone();
        let raw = tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| {
            s.map(|sock| RecvStream {
                sock,
                received: Arc::new(Received::default()),
            })
        });
        let incoming = m.security.incoming(raw);
        self.server = Some(self.rt.spawn(async move {
            let _ = Server::builder()
                .add_service(NetworkServiceServer::new(m.clone()))
                .add_service(MonitorConnectionServer::new(m.clone()))
                .add_service(NetworkServiceEndpointRegistryServer::new(m.clone()))
                .add_service(NetworkServiceRegistryServer::new(m))
                .serve_with_incoming(incoming)
                .await;
        }));
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, for NSM_SOCKET.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Drops every stream, connection and pair, and listens again.
    pub fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        let conns: Vec<Conn> = {
            let mut st = self.manager.state.lock().unwrap();
            std::mem::take(&mut st.conns).into_values().collect()
        };
        for c in conns {
            veth::delete(&c.client_end);
        }
        // Aborting the task does not close the HTTP/2 connections it
        // spawned: a fresh runtime does.
        let old = std::mem::replace(&mut self.rt, runtime());
        old.shutdown_background();
        self.manager.events = tokio::sync::broadcast::channel(256).0;
        let m = self.manager.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                m.expire().await;
            }
        });
        self.listen();
    }

    /// A plain endpoint inside the double for `service`: its side of each
    /// pair goes into `netns` (a path), named `<prefix><n>`, and pair `n`
    /// gets `base+4n+1` (client) and `base+4n+2` (endpoint), /32 each with
    /// a route to the other.
    pub fn add_endpoint(
        &self,
        name: &str,
        service: &str,
        labels: &[(&str, &str)],
        netns: &Path,
        prefix: &str,
        base: std::net::Ipv4Addr,
    ) {
        let nse = NetworkServiceEndpoint {
            name: name.into(),
            network_service_names: vec![service.into()],
            network_service_labels: [(
                service.to_string(),
                NetworkServiceLabels {
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
            )]
            .into(),
            ..Default::default()
        };
        self.manager.state.lock().unwrap().nses.insert(
            name.into(),
            Nse {
                nse,
                reach: Reach::BuiltIn(BuiltIn {
                    netns: netns.display().to_string(),
                    prefix: prefix.into(),
                    base,
                }),
                expires: SystemTime::now() + Duration::from_secs(365 * 24 * 3600),
            },
        );
    }

    /// Registers network service `name` with `matches`, each a source
    /// selector and the destination selector of its one route, as a
    /// `NetworkService` resource does: a request whose labels satisfy a
    /// source selector reaches only the endpoints its destination selector
    /// selects.
    pub fn add_service(&self, name: &str, matches: &[(Selector<'_>, Selector<'_>)]) {
        let map = |sel: Selector<'_>| {
            sel.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ns = NetworkService {
            name: name.into(),
            payload: "ETHERNET".into(),
            matches: matches
                .iter()
                .map(|(src, dst)| Match {
                    source_selector: map(src),
                    routes: vec![Destination {
                        destination_selector: map(dst),
                        weight: 0,
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.manager
            .state
            .lock()
            .unwrap()
            .services
            .insert(name.into(), ns);
    }

    /// Requests `service` as a client whose namespace is at `netns`, with
    /// interface `ifname` (the double as its own NSC, for testing an
    /// endpoint). Refreshing is the caller's business.
    pub fn request(
        &self,
        id: &str,
        service: &str,
        labels: &[(&str, &str)],
        netns: &Path,
        ifname: &str,
    ) -> Result<Connection, String> {
        let kernel = Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [("name".to_string(), ifname.to_string())].into(),
        };
        self.request_with(id, service, labels, netns, kernel)
    }

    /// [`NsmDouble::request`] over the memif mechanism: the client gets the
    /// forwarder's socket in its mechanism's `socketfile`.
    pub fn request_memif(
        &self,
        id: &str,
        service: &str,
        labels: &[(&str, &str)],
        netns: &Path,
    ) -> Result<Connection, String> {
        let memif = Mechanism {
            cls: "LOCAL".into(),
            r#type: manager::MEMIF.into(),
            parameters: Default::default(),
        };
        self.request_with(id, service, labels, netns, memif)
    }

    fn request_with(
        &self,
        id: &str,
        service: &str,
        labels: &[(&str, &str)],
        netns: &Path,
        mechanism: Mechanism,
    ) -> Result<Connection, String> {
        let conn = self
            .last(id)
            .map(|c| c.client)
            .unwrap_or_else(|| Connection {
                id: id.into(),
                network_service: service.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                path: Some(NsmPath {
                    index: 0,
                    path_segments: vec![PathSegment {
                        name: "test-nsc".into(),
                        id: id.into(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            });
        let req = NetworkServiceRequest {
            connection: Some(conn),
            mechanism_preferences: vec![mechanism],
        };
        let m = self.manager.clone();
        let ns = netns.display().to_string();
        self.rt
            .block_on(async move { m.request(req, ns, None, None).await })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    /// Closes a connection made by [`NsmDouble::request`].
    pub fn close(&self, id: &str) {
        let m = self.manager.clone();
        let c = Connection {
            id: id.into(),
            ..Default::default()
        };
        self.rt.block_on(async move { m.close(&c).await });
    }

    /// The connection with this client id, as the double holds it.
    pub fn last(&self, id: &str) -> Option<Conn> {
        self.manager.state.lock().unwrap().conns.get(id).cloned()
    }

    /// Every connection the double holds.
    pub fn connections(&self) -> Vec<Conn> {
        self.manager
            .state
            .lock()
            .unwrap()
            .conns
            .values()
            .cloned()
            .collect()
    }

    /// How many Requests (first and refreshes) came for a client id.
    pub fn requests(&self, id: &str) -> u32 {
        self.manager
            .state
            .lock()
            .unwrap()
            .requests
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Request counts of every client id.
    pub fn all_requests(&self) -> Vec<(String, u32)> {
        self.manager
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Ids of the connections closed so far.
    pub fn closes(&self) -> Vec<String> {
        self.manager.state.lock().unwrap().closes.clone()
    }

    /// The registered endpoints (name, services).
    pub fn endpoints(&self) -> Vec<NetworkServiceEndpoint> {
        self.manager
            .state
            .lock()
            .unwrap()
            .nses
            .values()
            .map(|n| n.nse.clone())
            .collect()
    }

    /// Asks a registered endpoint's `grpc.health.v1.Health/Check` about
    /// `service` over its listen socket: the status, or the gRPC error.
    pub fn health(&self, endpoint: &str, service: &str) -> Result<i32, String> {
        let reach = self
            .manager
            .state
            .lock()
            .unwrap()
            .nses
            .get(endpoint)
            .map(|n| n.reach.clone());
        let Some(Reach::Socket(sock)) = reach else {
            return Err(format!("{endpoint} is not a registered endpoint"));
        };
        let service = service.to_owned();
        let security = self.manager.security.clone();
        self.rt.block_on(async move {
            let (channel, _, _) = manager::dial(&fdpass::proc_path(&sock), &security).await?;
            xcnf_proto::health::health_client::HealthClient::new(channel)
                .check(xcnf_proto::health::HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }

    /// Waits until `pred` holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&Self) -> bool) {
        let end = std::time::Instant::now() + timeout;
        while !pred(self) {
            assert!(
                std::time::Instant::now() < end,
                "NSM double: timed out waiting for {what}; connections {:?}, endpoints {:?}, requests {:?}",
                self.connections()
                    .iter()
                    .map(|c| (&c.client.id, &c.client_end))
                    .collect::<Vec<_>>(),
                self.endpoints().iter().map(|n| &n.name).collect::<Vec<_>>(),
                self.all_requests(),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NsmDouble {
    fn drop(&mut self) {
        let conns: Vec<Conn> = std::mem::take(&mut self.manager.state.lock().unwrap().conns)
            .into_values()
            .collect();
        for c in conns {
            veth::delete(&c.client_end);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
