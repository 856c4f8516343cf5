//! A Kubernetes API-server test double for the `CNFConfiguration` custom
//! resource (`cnfconfigurations.xcnf.io`, v1alpha1, namespaced, with a
//! status subresource).
//!
//! No API server can run in the test suite, yet the agent's Kubernetes
//! config source has to be tested against the protocol it will meet: so this
//! double speaks the real REST and watch protocol over plain HTTP/1.1, and
//! the real `kube` client (in `tests/tests/kube_double.rs`) is what proves it
//! does. It follows the API conventions a client can observe:
//!
//! - one global, string-typed `resourceVersion` (an etcd revision: it also
//!   moves when "the rest of the cluster" writes, see [`KubeDouble::compact`]);
//!   `metadata.generation` counts spec changes only; `uid` and
//!   `creationTimestamp` are set on create; a write that changes nothing
//!   keeps the revision;
//! - list (`CNFConfigurationList`, `limit`/`continue` paging, `resourceVersion`
//!   with `resourceVersionMatch=Exact|NotOlderThan`), `fieldSelector` on
//!   `metadata.name`/`metadata.namespace`, `labelSelector` (equality, set and
//!   existence terms), get (404 `Status` when missing);
//! - watch: newline-delimited JSON events in a chunked response, synthetic
//!   ADDED for a watch without a revision (or `0`), the changes after a given
//!   revision, a selection entered or left turned into ADDED/DELETED,
//!   BOOKMARKs when `allowWatchBookmarks=true`, streaming lists
//!   (`sendInitialEvents=true`, ending in a bookmark annotated
//!   `k8s.io/initial-events-end`), `timeoutSeconds`, and for a revision older
//!   than the compaction horizon a 200 whose only event is an ERROR carrying
//!   a 410 `Expired` `Status`, as the watch cache answers;
//! - create, update (PUT) and delete; PATCH as JSON merge patch, JSON patch
//!   and server-side apply (`fieldManager` required; the manager's fields set,
//!   the ones it stopped applying removed; conflicts between managers are not
//!   detected); strategic merge patch refused with 415 as for any custom
//!   resource; a `resourceVersion` in the body is a precondition (409);
//! - the status subresource: writes to the object ignore `status`, writes to
//!   `/status` ignore everything else; `status` is dropped on create;
//! - discovery: `/version`, `/api`, `/apis`, `/apis/xcnf.io`,
//!   `/apis/xcnf.io/v1alpha1` (with `cnfconfigurations/status`).
//!
//! Not modelled: authentication (a kubeconfig points at it without
//! credentials), schema validation against the CRD, finalizers and graceful
//! deletion, `managedFields` in responses, protobuf/CBOR, and aggregated
//! discovery (clients fall back to the plain documents above).

mod patch;
mod select;
mod server;
mod store;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::task::{AbortHandle, JoinHandle};

use server::Shared;
pub use store::{API_VERSION, KIND, PLURAL};

/// The namespace the test controls work in (and the kubeconfig's default).
pub const NAMESPACE: &str = "default";

/// How long [`KubeDouble::restart`] refuses connections.
pub const RESTART_DOWNTIME: Duration = Duration::from_millis(500);

/// The default time between bookmarks on a watch that asked for them (a
/// real API server sends one about every minute; tests cannot wait that).
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// The listener and the connections it accepted, so a restart can drop them.
#[derive(Debug)]
struct Listening {
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

#[derive(Debug)]
struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    netns: Option<PathBuf>,
    handle: tokio::runtime::Handle,
    listening: Mutex<Option<Listening>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds `addr`, inside the network namespace at `netns` if given (a socket
/// stays in the namespace it was made in, whichever thread uses it later).
fn bind(addr: SocketAddr, netns: Option<&Path>) -> std::io::Result<std::net::TcpListener> {
    let Some(netns) = netns else {
        return std::net::TcpListener::bind(addr);
    };
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns)?;
        // SAFETY: a valid namespace fd; only this short-lived thread moves.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::net::TcpListener::bind(addr)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("bind thread panicked")))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let conn = tokio::spawn(async move {
            let svc = service_fn(move |req| server::handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let mut conns = lock(&conns);
        conns.retain(|c| !c.is_finished());
        conns.push(conn.abort_handle());
    }
}

impl Server {
    fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let _rt = self.handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = self
            .handle
            .spawn(accept_loop(listener, self.shared.clone(), conns.clone()));
        *lock(&self.listening) = Some(Listening { accept, conns });
        Ok(())
    }

    /// Closes the listener and every connection, and returns once they are
    /// closed (the runtime's own threads do the closing, so this may block).
    fn stop(&self) {
        let Some(l) = lock(&self.listening).take() else {
            return;
        };
        l.accept.abort();
        let conns: Vec<AbortHandle> = lock(&l.conns).drain(..).collect();
        for c in &conns {
            c.abort();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(l.accept.is_finished() && conns.iter().all(AbortHandle::is_finished)) {
            assert!(
                Instant::now() < deadline,
                "the double's connections did not close"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The API-server double; it stops serving when dropped.
#[derive(Debug)]
pub struct KubeDouble {
    rt: Option<tokio::runtime::Runtime>,
    server: Arc<Server>,
}

impl KubeDouble {
    /// Serves on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_at(None)
    }

    /// Serves on a free port of 127.0.0.1 inside the network namespace at
    /// `netns` (`/run/netns/<name>`), for an agent running in it.
    pub fn start_in_netns(netns: &Path) -> Self {
        Self::start_at(Some(netns))
    }

    fn start_at(netns: Option<&Path>) -> Self {
        // Its own runtime, so the double serves while a test blocks, and
        // the same from sync tests as from async ones.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-double")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("kube double runtime: {e}"));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), netns)
            .unwrap_or_else(|e| panic!("kube double: bind 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("kube double: local address: {e}"));
        let server = Arc::new(Server {
            shared: Arc::new(Shared::new(BOOKMARK_INTERVAL)),
            addr,
            netns: netns.map(Path::to_owned),
            handle: rt.handle().clone(),
            listening: Mutex::new(None),
        });
        server
            .serve(listener)
            .unwrap_or_else(|e| panic!("kube double: serve: {e}"));
        Self {
            rt: Some(rt),
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Writes a kubeconfig for the double (no credentials, namespace
    /// `default`), for `KUBECONFIG` of the kube client and the agent.
    pub fn kubeconfig(&self, path: &Path) {
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: xcnf-double
    cluster:
      server: {url}
users:
  - name: xcnf-double
    user: {{}}
contexts:
  - name: xcnf-double
    context:
      cluster: xcnf-double
      user: xcnf-double
      namespace: {NAMESPACE}
current-context: xcnf-double
",
            url = self.url()
        );
        std::fs::write(path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn shared(&self) -> &Shared {
        &self.server.shared
    }

    /// Creates an object as `POST` would (in its `metadata.namespace`, else
    /// `default`; any `status` dropped) and returns it as stored.
    pub fn create(&self, obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or(NAMESPACE)
            .to_owned();
        self.shared()
            .write(|s| s.create(&ns, obj))
            .unwrap_or_else(|e| panic!("kube double: create: {}", e.message))
    }

    /// Replaces the `spec` of `name`, as a user's `kubectl edit` would:
    /// `generation` moves when the spec changed.
    pub fn update_spec(&self, name: &str, spec: Value) -> Value {
        self.shared()
            .write(|s| {
                let mut obj = s
                    .get(NAMESPACE, name)
                    .cloned()
                    .ok_or_else(|| store::ApiError::not_found(name))?;
                obj["spec"] = spec;
                s.replace(NAMESPACE, name, store::Part::Main, obj)
            })
            .unwrap_or_else(|e| panic!("kube double: update {name}: {}", e.message))
    }

    /// Deletes `name` and returns its last state.
    pub fn delete(&self, name: &str) -> Value {
        self.shared()
            .write(|s| s.delete(NAMESPACE, name))
            .unwrap_or_else(|e| panic!("kube double: delete {name}: {}", e.message))
    }

    /// The object `name` as stored, if it exists.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.shared().lock().get(NAMESPACE, name).cloned()
    }

    /// The `status` of `name` (`Null` when it has none).
    pub fn status(&self, name: &str) -> Value {
        self.get(name)
            .and_then(|o| o.get("status").cloned())
            .unwrap_or(Value::Null)
    }

    /// Polls `name` until `pred` holds for it, and returns it; on timeout
    /// the last state in the error.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let obj = self.get(name);
            if let Some(o) = obj.as_ref().filter(|o| pred(o)) {
                return Ok(o.clone());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {timeout:?}, {name} is {}",
                    obj.map_or_else(|| "missing".to_owned(), |o| o.to_string())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The current revision (as a number; on the wire it is a string).
    pub fn resource_version(&self) -> u64 {
        self.shared().lock().rv()
    }

    /// What the API server does when etcd compacts while watchers lag: the
    /// rest of the cluster writes (the revision moves on), the history up to
    /// then is forgotten, and every open watch ends. A client that resumes a
    /// watch from a revision it saw before gets 410 Expired and must re-list.
    pub fn compact(&self) {
        self.shared().write(|s| {
            s.bump();
            s.compact();
            s.end_watches();
        });
        self.shared().watch_epoch.send_modify(|e| *e += 1);
    }

    /// Ends every open watch cleanly, as a watch timeout does.
    pub fn close_watches(&self) {
        self.shared().write(store::Store::end_watches);
        self.shared().watch_epoch.send_modify(|e| *e += 1);
    }

    /// An API-server restart: every connection is dropped and new ones are
    /// refused for [`RESTART_DOWNTIME`]; the objects (etcd) stay.
    pub fn restart(&self) {
        self.restart_for(RESTART_DOWNTIME);
    }

    /// [`restart`](Self::restart) with the given downtime. Returns once the
    /// port refuses connections; serving resumes in the background.
    pub fn restart_for(&self, down: Duration) {
        self.server.stop();
        let server = self.server.clone();
        self.server.handle.spawn(async move {
            tokio::time::sleep(down).await;
            let s = server.clone();
            let bound = tokio::task::spawn_blocking(move || {
                // The old socket may linger a moment after the close.
                let mut last = None;
                for _ in 0..100 {
                    match bind(s.addr, s.netns.as_deref()) {
                        Ok(l) => return Ok(l),
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
            })
            .await;
            match bound {
                Ok(Ok(l)) => {
                    if let Err(e) = server.serve(l) {
                        eprintln!("kube double: serving again after restart: {e}");
                    }
                }
                Ok(Err(e)) => {
                    eprintln!("kube double: re-binding {} after restart: {e}", server.addr)
                }
                Err(e) => eprintln!("kube double: re-binding after restart: {e}"),
            }
        });
    }

    /// Whether the double accepts connections now.
    pub fn is_serving(&self) -> bool {
        lock(&self.server.listening).is_some()
    }

    /// The time between bookmarks for watches started from now on.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *lock(&self.shared().bookmark_interval) = interval;
    }

    /// Every request so far, as `METHOD /path?query` (query as sent).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared().requests).clone()
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        // shutdown_background is the one way to drop a runtime that may be
        // called from inside another (an async test).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
