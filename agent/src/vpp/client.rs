//! One connection to VPP's binary API over the socket transport.
//!
//! The handshake registers the client and fetches VPP's message table;
//! every message xcnf uses is checked against it before anything is sent,
//! so an incompatible VPP is refused at connect with the message and both
//! CRCs named, instead of misreading replies later.
//!
//! Calls may run concurrently: each gets its own context, a reader task
//! hands replies to the waiting call by context, and a writer task owns the
//! socket's write half so a call that times out or is cancelled can never
//! leave half a message on the stream.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    task::AbortHandle,
};

use super::{
    error::VppError,
    msg::{
        Message, MsgRef, Reply, Request, USED, decode_reply, encode_request,
        memclnt::{
            ControlPing, ControlPingReply, SOCKCLNT_CREATE_ID, SockclntCreate, SockclntCreateReply,
            SockclntDelete,
        },
    },
    wire::{self, read_frame},
};

/// Where VPP's `socksvr` listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vpp/api.sock";

/// How the client registers and how long it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The limit for every call (a dump: until its control_ping reply), and
    /// for the handshake.
    pub call_timeout: Duration,
    /// Shown by VPP's `show api clients` (at most 63 bytes).
    pub client_name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            client_name: "xcnf-agent".to_owned(),
        }
    }
}

/// A registered connection. Cheap to clone; all clones share the socket.
/// Dropping the last clone stops the reader and writer tasks (use
/// [`Client::disconnect`] to unregister politely first).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    opts: ClientOptions,
    client_index: u32,
    /// Our messages' ids, checked at connect.
    ids: HashMap<&'static str, u16>,
    /// VPP's whole table reversed, to name an unexpected reply.
    names: HashMap<u16, String>,
    vpp_messages: usize,
    next_context: AtomicU32,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
    tasks: [AbortHandle; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the reader and writer tasks share with the calls.
#[derive(Debug)]
struct Shared {
    waiters: Mutex<Waiters>,
    /// `Some(reason)` once the connection is gone.
    closed: watch::Sender<Option<String>>,
}

#[derive(Debug, Default)]
struct Waiters {
    open: bool,
    by_context: HashMap<u32, mpsc::UnboundedSender<Vec<u8>>>,
}

impl Shared {
    /// Marks the connection closed; every waiting call sees its channel
    /// end and fails with `Disconnected`.
    fn close(&self, reason: String) {
        if let Ok(mut w) = self.waiters.lock() {
            w.open = false;
            w.by_context.clear();
        }
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn register(
        &self,
        context: u32,
        msg: &'static str,
    ) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, VppError> {
        let mut w = self
            .waiters
            .lock()
            .map_err(|_| VppError::Disconnected { msg })?;
        if !w.open {
            return Err(VppError::Disconnected { msg });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        w.by_context.insert(context, tx);
        Ok(rx)
    }

    fn unregister(&self, context: u32) {
        if let Ok(mut w) = self.waiters.lock() {
            w.by_context.remove(&context);
        }
    }

    fn deliver(&self, payload: Vec<u8>) {
        let Some(context) = wire::reply_context(&payload) else {
            return;
        };
        if let Ok(w) = self.waiters.lock() {
            match w.by_context.get(&context) {
                Some(tx) => {
                    let _ = tx.send(payload);
                }
                // A reply after its call timed out, or an event: dropped.
                None => tracing::debug!(
                    context,
                    msg_id = wire::msg_id(&payload),
                    "VPP message for no waiting call"
                ),
            }
        }
    }
}

/// Removes a call's waiter however the call ends (reply, error, timeout,
/// cancellation), so late replies find nobody and are dropped.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    context: u32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.unregister(self.context);
    }
}

impl Client {
    /// Connects to `path`, registers as `opts.client_name` and checks the
    /// message table. Fails with `CrcMismatch`/`MissingMessage` if this VPP
    /// does not have every message xcnf uses, as xcnf was written for it.
    pub async fn connect(path: impl AsRef<Path>, opts: ClientOptions) -> Result<Self, VppError> {
        let path = path.as_ref().to_path_buf();
        let mut stream = UnixStream::connect(&path)
            .await
            .map_err(|source| VppError::Connect {
                path: path.clone(),
                source,
            })?;
        let reply =
            tokio::time::timeout(opts.call_timeout, handshake(&mut stream, &opts.client_name))
                .await
                .map_err(|_| VppError::Timeout {
                    msg: SockclntCreate::NAME,
                    timeout: opts.call_timeout,
                })??;
        let table: HashMap<String, u16> = reply
            .table
            .iter()
            .map(|e| (e.name_crc.clone(), e.id))
            .collect();
        let ids = check_table(&table, USED)?;
        let names = reply
            .table
            .iter()
            .map(|e| (e.id, e.name_crc.clone()))
            .collect();

        let (read, write) = stream.into_split();
        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters {
                open: true,
                by_context: HashMap::new(),
            }),
            closed,
        });
        let (outbox, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(read, shared.clone())).abort_handle();
        let writer = tokio::spawn(write_loop(write, inbox, shared.clone())).abort_handle();
        tracing::info!(
            path = %path.display(),
            client_index = reply.index,
            messages = reply.table.len(),
            "connected to the VPP API"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                opts,
                client_index: reply.index,
                ids,
                names,
                vpp_messages: reply.table.len(),
                next_context: AtomicU32::new(1),
                outbox,
                shared,
                tasks: [reader, writer],
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The registration handle VPP gave (`client_index` of every request).
    pub fn client_index(&self) -> u32 {
        self.inner.client_index
    }

    /// How many messages VPP's table holds.
    pub fn vpp_message_count(&self) -> usize {
        self.inner.vpp_messages
    }

    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.borrow().is_some()
    }

    /// Resolves when the connection is gone (VPP exited, the socket
    /// closed); returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.inner.shared.closed.subscribe();
        match rx.wait_for(|c| c.is_some()).await {
            Ok(c) => c.clone().unwrap_or_default(),
            Err(_) => "the connection was dropped".to_owned(),
        }
    }

    /// Sends one request and waits for its reply. A retval other than 0 is
    /// `VppError::Retval` with VPP's meaning.
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Reply, VppError> {
        let id = self.id_of::<R>()?;
        let reply_id = self.id_of::<R::Reply>()?;
        let context = self.next_context();
        let payload = encode_request(req, id, self.inner.client_index, context)?;
        let timeout = self.inner.opts.call_timeout;
        let shared = &self.inner.shared;
        let mut rx = shared.register(context, R::NAME)?;
        let _guard = WaiterGuard { shared, context };
        let call = async {
            self.send(wire::frame(&payload).map_err(VppError::Io)?, R::NAME)?;
            let p = rx
                .recv()
                .await
                .ok_or(VppError::Disconnected { msg: R::NAME })?;
            self.expect_id(&p, reply_id, R::NAME, R::Reply::NAME)?;
            let reply: R::Reply = decode_reply(&p)?;
            match reply.retval() {
                0 => Ok(reply),
                rv => Err(VppError::retval(R::NAME, rv)),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| VppError::Timeout {
                msg: R::NAME,
                timeout,
            })?
    }

    /// Sends a dump followed by a `control_ping` with the same context and
    /// collects the details until the ping's reply, which VPP sends after
    /// the last of them (it handles messages in order).
    pub async fn dump<R: Request>(&self, req: &R) -> Result<Vec<R::Reply>, VppError> {
        let id = self.id_of::<R>()?;
        let details_id = self.id_of::<R::Reply>()?;
        let ping_id = self.id_of::<ControlPing>()?;
        let ping_reply_id = self.id_of::<ControlPingReply>()?;
        let context = self.next_context();
        let ci = self.inner.client_index;
        let mut bytes =
            wire::frame(&encode_request(req, id, ci, context)?).map_err(VppError::Io)?;
        bytes.extend(
            wire::frame(&encode_request(&ControlPing, ping_id, ci, context)?)
                .map_err(VppError::Io)?,
        );
        let timeout = self.inner.opts.call_timeout;
        let shared = &self.inner.shared;
        let mut rx = shared.register(context, R::NAME)?;
        let _guard = WaiterGuard { shared, context };
        let call = async {
            self.send(bytes, R::NAME)?;
            let mut out = Vec::new();
            loop {
                let p = rx
                    .recv()
                    .await
                    .ok_or(VppError::Disconnected { msg: R::NAME })?;
                match wire::msg_id(&p) {
                    Some(i) if i == details_id => out.push(decode_reply::<R::Reply>(&p)?),
                    Some(i) if i == ping_reply_id => {
                        let ping: ControlPingReply = decode_reply(&p)?;
                        return match ping.retval {
                            0 => Ok(out),
                            rv => Err(VppError::retval(R::NAME, rv)),
                        };
                    }
                    _ => self.expect_id(&p, details_id, R::NAME, R::Reply::NAME)?,
                }
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| VppError::Timeout {
                msg: R::NAME,
                timeout,
            })?
    }

    /// Unregisters (`sockclnt_delete`); VPP then closes the socket.
    pub async fn disconnect(&self) -> Result<(), VppError> {
        let r = self
            .request(&SockclntDelete {
                index: self.inner.client_index,
            })
            .await;
        self.inner
            .shared
            .close("disconnected by the client".to_owned());
        r.map(|_| ())
    }

    fn next_context(&self) -> u32 {
        self.inner.next_context.fetch_add(1, Ordering::Relaxed)
    }

    fn id_of<M: Message>(&self) -> Result<u16, VppError> {
        self.inner
            .ids
            .get(M::NAME)
            .copied()
            .ok_or(VppError::MissingMessage {
                msg: M::NAME,
                crc: M::CRC,
                api: M::API,
            })
    }

    fn send(&self, bytes: Vec<u8>, msg: &'static str) -> Result<(), VppError> {
        self.inner
            .outbox
            .send(bytes)
            .map_err(|_| VppError::Disconnected { msg })
    }

    fn expect_id(
        &self,
        payload: &[u8],
        want: u16,
        msg: &'static str,
        expected: &'static str,
    ) -> Result<(), VppError> {
        match wire::msg_id(payload) {
            Some(id) if id == want => Ok(()),
            Some(id) => Err(VppError::UnexpectedReply {
                msg,
                expected,
                got: self
                    .inner
                    .names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("message id {id}")),
            }),
            None => Err(VppError::Decode {
                msg: expected,
                reason: "empty message".to_owned(),
            }),
        }
    }
}

/// Sends `sockclnt_create` (fixed id 15) and reads its reply.
async fn handshake(stream: &mut UnixStream, name: &str) -> Result<SockclntCreateReply, VppError> {
    const CONTEXT: u32 = 0x7863_6e66; // "xcnf"
    let req = SockclntCreate {
        name: name.to_owned(),
    }
    .encode(CONTEXT)?;
    stream
        .write_all(&wire::frame(&req).map_err(VppError::Io)?)
        .await
        .map_err(VppError::Io)?;
    let payload =
        read_frame(stream)
            .await
            .map_err(VppError::Io)?
            .ok_or(VppError::Disconnected {
                msg: SockclntCreate::NAME,
            })?;
    let id = wire::msg_id(&payload);
    if id != Some(SOCKCLNT_CREATE_ID + 1) {
        return Err(VppError::UnexpectedReply {
            msg: SockclntCreate::NAME,
            expected: SockclntCreateReply::NAME,
            got: format!("message id {id:?}"),
        });
    }
    let reply = SockclntCreateReply::decode(&payload)?;
    if reply.response < 0 {
        return Err(VppError::Handshake {
            response: reply.response,
        });
    }
    if reply.context != CONTEXT {
        return Err(VppError::Decode {
            msg: SockclntCreateReply::NAME,
            reason: format!("context {:#x}, sent {CONTEXT:#x}", reply.context),
        });
    }
    Ok(reply)
}

/// Maps each message of `used` to its id in VPP's `table` (keys
/// `<name>_<crc>`). The first message missing is the error: with the CRC VPP
/// has for it if VPP knows the name, else as missing altogether.
pub fn check_table(
    table: &HashMap<String, u16>,
    used: &[MsgRef],
) -> Result<HashMap<&'static str, u16>, VppError> {
    used.iter()
        .map(|m| match table.get(&m.name_crc()) {
            Some(id) => Ok((m.name, *id)),
            None => Err(match crc_of(table, m.name) {
                Some(vpp) => VppError::CrcMismatch {
                    msg: m.name,
                    expected: m.crc,
                    vpp,
                },
                None => VppError::MissingMessage {
                    msg: m.name,
                    crc: m.crc,
                    api: m.api,
                },
            }),
        })
        .collect()
}

/// The CRC VPP's table has for `name`, if it has the name at all.
fn crc_of(table: &HashMap<String, u16>, name: &str) -> Option<u32> {
    table.keys().find_map(|k| {
        let crc = k.strip_prefix(name)?.strip_prefix('_')?;
        (crc.len() == 8)
            .then(|| u32::from_str_radix(crc, 16).ok())
            .flatten()
    })
}

async fn read_loop(mut read: OwnedReadHalf, shared: Arc<Shared>) {
    let reason = loop {
        match read_frame(&mut read).await {
            Ok(Some(payload)) => shared.deliver(payload),
            Ok(None) => break "VPP closed the API socket".to_owned(),
            Err(e) => break format!("reading the VPP API socket: {e}"),
        }
    };
    tracing::warn!(%reason, "VPP API connection lost");
    shared.close(reason);
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut inbox: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = inbox.recv().await {
        if let Err(e) = write.write_all(&bytes).await {
            shared.close(format!("writing to the VPP API socket: {e}"));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpp::msg::{memif::MemifCreateV2, nat44::Nat44UserDump};

    fn table(entries: &[&str]) -> HashMap<String, u16> {
        entries
            .iter()
            .zip(1u16..)
            .map(|(n, i)| ((*n).to_owned(), i))
            .collect()
    }

    #[test]
    fn table_check_names_the_message_and_both_crcs() {
        let used = [MsgRef::of::<MemifCreateV2>()];
        let e = check_table(&table(&["memif_create_v2_deadbeef"]), &used)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "VPP's memif_create_v2 has CRC deadbeef but xcnf was written for 8c7de5f7: \
                 this VPP version's API is incompatible"
            )
        );
    }

    #[test]
    fn table_check_names_a_missing_plugin() {
        let used = [MsgRef::of::<Nat44UserDump>()];
        // A prefix of another name is not the same message.
        let e = check_table(&table(&["nat44_user_dump_v2_51077d14"]), &used)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "VPP has no message nat44_user_dump_51077d14 (from nat44_ed.api): the plugin \
                 providing it is not loaded, or this VPP's API differs"
            )
        );
    }

    #[test]
    fn table_check_maps_ids() {
        let used = [MsgRef::of::<MemifCreateV2>(), MsgRef::of::<Nat44UserDump>()];
        let ids = check_table(
            &table(&["nat44_user_dump_51077d14", "memif_create_v2_8c7de5f7"]),
            &used,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids.get("nat44_user_dump"), Some(&1));
        assert_eq!(ids.get("memif_create_v2"), Some(&2));
    }
}
