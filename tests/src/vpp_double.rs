//! A VPP binary-API test double on a unix socket.
//!
//! VPP cannot run in the test suite, yet the agent's VPP client has to be
//! tested against the protocol it will meet, so this double speaks it: the
//! 16-byte framing, the `sockclnt_create` handshake with a message table of
//! real names and CRCs (its own list, see `table.rs`), replies carrying the
//! request's context and VPP's retvals, dumps answered with details and
//! ended by `control_ping_reply`, requests with a wrong `client_index`
//! dropped. It records the configuration it is given (memif sockets and
//! interfaces, admin state, addresses, routes, NAT44) with the checks VPP's
//! handlers make first, so an invalid request fails as in VPP.
//!
//! Test controls: fail the Nth occurrence of a message with a retval; drop
//! the connection when a message arrives; never answer a message; answer a
//! message late (after the next one); serve another CRC for a message, or
//! leave it out of the table; serve fixed NAT44 sessions; restart (drop all
//! connections and all state, listen again).
//!
//! Not modelled: events, shared-memory transport, IPv6, VRFs other than 0,
//! memif links coming up (no peer ever connects), dumps other than
//! interfaces and NAT44 users/sessions.

mod codec;
mod server;
mod state;
mod table;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddrV4,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use tokio::{
    net::UnixListener,
    task::{AbortHandle, JoinHandle},
};

pub use server::VERSION;
pub use state::{
    DEFAULT_MEMIF_SOCKET, IdentityMap, Iface, Memif, Mode, Nat44, NatIfSides, Role, RoutePath,
    StaticMap, Timeouts, VppState,
};

/// One NAT44 session the double serves in its user and session dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoubleSession {
    pub protocol: u16,
    pub inside: SocketAddrV4,
    pub outside: SocketAddrV4,
    pub ext_host: SocketAddrV4,
    pub is_static: bool,
    pub total_bytes: u64,
    pub total_pkts: u32,
    pub seconds_since_last_heard: u64,
}

#[derive(Debug)]
struct Fault {
    msg: String,
    nth: usize,
    seen: usize,
    retval: i32,
}

#[derive(Debug, Default)]
struct Controls {
    faults: Vec<Fault>,
    close_on: Option<String>,
    ignore: HashSet<String>,
    defer: HashSet<String>,
    crc_override: HashMap<String, String>,
    removed: HashSet<String>,
    sessions: Vec<DoubleSession>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<VppState>,
    ctl: Mutex<Controls>,
    /// Every message received after the handshake, by name, in order.
    received: Mutex<Vec<String>>,
    /// Client names registered, in order.
    clients: Mutex<Vec<String>>,
    next_index: AtomicU32,
}

impl Shared {
    /// A `client_index` as VPP's socket transport hands them out: bit 31 set.
    fn register(&self, name: &str) -> u32 {
        self.clients.lock().expect("clients").push(name.to_owned());
        0x8000_0000 | self.next_index.fetch_add(1, Ordering::Relaxed)
    }

    fn observe(&self, name: &str) -> server::Action {
        self.received
            .lock()
            .expect("received")
            .push(name.to_owned());
        let mut ctl = self.ctl.lock().expect("controls");
        if ctl.close_on.as_deref() == Some(name) {
            ctl.close_on = None;
            return server::Action::Close;
        }
        if ctl.ignore.contains(name) {
            return server::Action::Ignore;
        }
        let mut forced = None;
        for f in ctl.faults.iter_mut().filter(|f| f.msg == name) {
            f.seen += 1;
            if f.seen == f.nth {
                forced = Some(f.retval);
            }
        }
        if ctl.defer.contains(name) {
            server::Action::Defer(forced)
        } else {
            server::Action::Handle(forced)
        }
    }
}

#[derive(Debug)]
struct Listening {
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Listening {
    fn stop(self) {
        self.accept.abort();
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }
}

/// The double, listening on its socket until dropped.
#[derive(Debug)]
pub struct VppDouble {
    path: PathBuf,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

impl VppDouble {
    /// Listens on `path` (which must not exist). Needs a tokio runtime.
    pub fn start(path: &Path) -> Self {
        let shared = Arc::new(Shared::default());
        let d = Self {
            path: path.to_path_buf(),
            shared,
            listening: Mutex::new(None),
        };
        d.listen();
        d
    }

    fn listen(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.path.display()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let shared = self.shared.clone();
        let accept_conns = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let h = tokio::spawn(server::serve(stream, shared.clone()));
                accept_conns.lock().expect("conns").push(h.abort_handle());
            }
        });
        *self.listening.lock().expect("listening") = Some(Listening { accept, conns });
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What VPP was told so far.
    pub fn snapshot(&self) -> VppState {
        self.shared.state.lock().expect("state").clone()
    }

    /// Names of the messages received (after handshakes), in order.
    pub fn received(&self) -> Vec<String> {
        self.shared.received.lock().expect("received").clone()
    }

    /// How many times `msg` was received.
    pub fn count(&self, msg: &str) -> usize {
        self.received().iter().filter(|m| *m == msg).count()
    }

    /// The names clients registered with, one per handshake.
    pub fn clients(&self) -> Vec<String> {
        self.shared.clients.lock().expect("clients").clone()
    }

    /// The `nth` (1-based, counted from now) `msg` fails with `retval` and
    /// changes nothing.
    pub fn fail_nth(&self, msg: &str, nth: usize, retval: i32) {
        self.shared
            .ctl
            .lock()
            .expect("controls")
            .faults
            .push(Fault {
                msg: msg.to_owned(),
                nth,
                seen: 0,
                retval,
            });
    }

    /// The next `msg` drops its connection instead of being answered.
    pub fn close_on(&self, msg: &str) {
        self.shared.ctl.lock().expect("controls").close_on = Some(msg.to_owned());
    }

    /// `msg` is never answered (until [`VppDouble::answer`]).
    pub fn ignore(&self, msg: &str) {
        self.shared
            .ctl
            .lock()
            .expect("controls")
            .ignore
            .insert(msg.to_owned());
    }

    pub fn answer(&self, msg: &str) {
        self.shared.ctl.lock().expect("controls").ignore.remove(msg);
    }

    /// Replies to `msg` are held back and sent after the next reply to
    /// anything else, so they arrive out of order.
    pub fn defer(&self, msg: &str) {
        self.shared
            .ctl
            .lock()
            .expect("controls")
            .defer
            .insert(msg.to_owned());
    }

    /// New handshakes advertise `msg` with `crc` (8 hex digits).
    pub fn set_crc(&self, msg: &str, crc: &str) {
        self.shared
            .ctl
            .lock()
            .expect("controls")
            .crc_override
            .insert(msg.to_owned(), crc.to_owned());
    }

    /// New handshakes leave `msg` out of the table (its plugin not loaded).
    pub fn remove_message(&self, msg: &str) {
        self.shared
            .ctl
            .lock()
            .expect("controls")
            .removed
            .insert(msg.to_owned());
    }

    /// The sessions the NAT44 user and session dumps report.
    pub fn set_sessions(&self, sessions: Vec<DoubleSession>) {
        self.shared.ctl.lock().expect("controls").sessions = sessions;
    }

    /// Simulates a VPP restart: every connection drops, all state is lost,
    /// and the socket is listened on again. Controls are kept.
    pub fn restart(&self) {
        if let Some(l) = self.listening.lock().expect("listening").take() {
            l.stop();
        }
        *self.shared.state.lock().expect("state") = VppState::default();
        self.listen();
    }

    /// Stops listening and drops every connection, without listening again
    /// (VPP down) until [`VppDouble::resume`].
    pub fn stop(&self) {
        if let Some(l) = self.listening.lock().expect("listening").take() {
            l.stop();
        }
        *self.shared.state.lock().expect("state") = VppState::default();
        let _ = std::fs::remove_file(&self.path);
    }

    pub fn resume(&self) {
        self.listen();
    }
}

impl Drop for VppDouble {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listening.lock()
            && let Some(l) = l.take()
        {
            l.stop();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The double on a runtime of its own, in a fresh directory that goes when
/// it is dropped: for tests whose agent is another process and that keep no
/// runtime themselves.
pub struct VppDoubleHost {
    pub double: VppDouble,
    rt: tokio::runtime::Runtime,
    /// Where its API socket is; tests put their memif sockets here too.
    pub dir: PathBuf,
}

impl VppDoubleHost {
    pub fn start(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(crate::netns::unique_prefix(&format!("xcnf-vpp-{tag}-")));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let double = {
            let _g = rt.enter();
            VppDouble::start(&dir.join("api.sock"))
        };
        Self { double, rt, dir }
    }

    /// The API socket, as `--vpp-api-socket` takes it.
    pub fn socket_arg(&self) -> String {
        self.double.path().display().to_string()
    }

    pub fn restart(&self) {
        let _g = self.rt.enter();
        self.double.restart();
    }

    pub fn resume(&self) {
        let _g = self.rt.enter();
        self.double.resume();
    }
}

impl Drop for VppDoubleHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
