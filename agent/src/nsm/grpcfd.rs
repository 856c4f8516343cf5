//! NSM's fd passing (grpcfd) on a unix socket, wire-compatible with
//! edwarnicke/grpcfd: a file travels as `inode://<dev>/<ino>` inside the
//! gRPC message and as an SCM_RIGHTS descriptor on the raw socket beside it.
//!
//! This is the raw layer: [`FdStream`] wraps the tokio `UnixStream` and is
//! what the TLS layer ([`super::security`]) sits on, so the descriptors
//! travel on the unix socket under TLS, as NSM sends them. Everything a
//! connection sent or received is in its [`FdShared`], which the
//! connection's owner keeps: the client next to its channel, the server in
//! the request's connect info, whatever wraps the stream.

use std::{
    collections::HashMap,
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::UnixStream,
    sync::Notify,
    time::Instant,
};
use xcnf_proto::nsm::connection::Mechanism;

/// The mechanism parameter that carries a file's URL (NSM `common.InodeURL`).
pub const INODE_URL: &str = "inodeURL";
/// At most this many descriptors go in one `sendmsg`, and a `recvmsg` has
/// room for this many (grpcfd's limit).
pub const MAX_FDS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("{url:?} is not a file:// URL")]
    NotFileUrl { url: String },
    #[error("{url:?} is not an inode://<dev>/<ino> URL")]
    NotInodeUrl { url: String },
    #[error("cannot open {path} to send it: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot stat {what}: {source}")]
    Stat { what: String, source: io::Error },
    #[error("the file for {url} did not arrive before the deadline")]
    Timeout { url: String },
}

/// A file's identity across processes: its device and inode.
pub type Inode = (u64, u64);

/// `inode://<dev>/<ino>`, decimal, as grpcfd writes it.
pub fn inode_url((dev, ino): Inode) -> String {
    format!("inode://{dev}/{ino}")
}

/// The (dev, ino) of an `inode://` URL.
pub fn parse_inode_url(url: &str) -> Option<Inode> {
    let rest = url.strip_prefix("inode://")?;
    let (dev, ino) = rest.split_once('/')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The path of a `file://` URL.
pub fn file_path(url: &str) -> Option<&str> {
    url.strip_prefix("file://").filter(|p| p.starts_with('/'))
}

fn fstat(fd: RawFd) -> io::Result<Inode> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out pointer; fstat fills it on success.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Opens `path` with O_PATH (no read access needed: the receiver reopens
/// it through /proc) and returns it with its inode.
pub fn open_path(path: &str) -> Result<(OwnedFd, Inode), FdError> {
    let c = std::ffi::CString::new(path).map_err(|e| FdError::Open {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(FdError::Open {
            path: path.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let inode = fstat(fd.as_raw_fd()).map_err(|source| FdError::Stat {
        what: path.to_owned(),
        source,
    })?;
    Ok((fd, inode))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The descriptors of one connection (or of every connection a client
/// channel makes): those queued for sending, those received (filed by
/// inode), and the URL rewrites to undo on the way back.
#[derive(Debug, Default)]
pub struct FdShared {
    outgoing: Mutex<Vec<OwnedFd>>,
    incoming: Mutex<HashMap<Inode, Arc<OwnedFd>>>,
    arrived: Notify,
    /// Rewritten URL -> the URL it replaced.
    rewritten: Mutex<HashMap<String, String>>,
}

impl FdShared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Opens the file of a `file://` URL, queues its descriptor for the next
    /// write on the socket and returns the `inode://` URL that replaces it
    /// in the message. [`FdShared::restore`] maps it back.
    pub fn send_file(&self, url: &str) -> Result<String, FdError> {
        let path = file_path(url).ok_or_else(|| FdError::NotFileUrl { url: url.into() })?;
        let (fd, inode) = open_path(path)?;
        lock(&self.outgoing).push(fd);
        let iu = inode_url(inode);
        lock(&self.rewritten).insert(iu.clone(), url.to_owned());
        Ok(iu)
    }

    /// Waits until the descriptor of an `inode://` URL has arrived on this
    /// connection (or `deadline` passes) and returns the
    /// `file:///proc/<pid>/fd/<n>` URL through which this process opens it.
    /// The descriptor stays open while the connection lives.
    pub async fn recv_file(&self, url: &str, deadline: Instant) -> Result<String, FdError> {
        let inode = parse_inode_url(url).ok_or_else(|| FdError::NotInodeUrl { url: url.into() })?;
        let fd = loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(fd) = lock(&self.incoming).get(&inode).cloned() {
                break fd;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(FdError::Timeout { url: url.into() });
            }
        };
        let local = format!("file:///proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
        lock(&self.rewritten).insert(local.clone(), url.to_owned());
        Ok(local)
    }

    /// The received descriptor of an inode, if it is here.
    pub fn received(&self, inode: Inode) -> Option<Arc<OwnedFd>> {
        lock(&self.incoming).get(&inode).cloned()
    }

    /// The URL a rewrite replaced, or `url` itself.
    pub fn restore(&self, url: &str) -> String {
        lock(&self.rewritten)
            .get(url)
            .cloned()
            .unwrap_or_else(|| url.to_owned())
    }

    /// [`FdShared::send_file`] on a mechanism's `inodeURL`, if it is a
    /// `file://` URL.
    pub fn send_mechanism(&self, m: &mut Mechanism) -> Result<(), FdError> {
        if let Some(url) = m
            .parameters
            .get(INODE_URL)
            .filter(|u| file_path(u).is_some())
        {
            let iu = self.send_file(&url.clone())?;
            m.parameters.insert(INODE_URL.into(), iu);
        }
        Ok(())
    }

    /// [`FdShared::recv_file`] on a mechanism's `inodeURL`, if it is an
    /// `inode://` URL.
    pub async fn recv_mechanism(
        &self,
        m: &mut Mechanism,
        deadline: Instant,
    ) -> Result<(), FdError> {
        if let Some(url) = m
            .parameters
            .get(INODE_URL)
            .filter(|u| u.starts_with("inode://"))
            .cloned()
        {
            let local = self.recv_file(&url, deadline).await?;
            m.parameters.insert(INODE_URL.into(), local);
        }
        Ok(())
    }

    /// Puts back the URL a mechanism's `inodeURL` had before a rewrite.
    pub fn restore_mechanism(&self, m: &mut Mechanism) {
        if let Some(url) = m.parameters.get(INODE_URL) {
            let orig = self.restore(url);
            m.parameters.insert(INODE_URL.into(), orig);
        }
    }

    fn file_received(&self, fd: OwnedFd) -> io::Result<()> {
        let inode = fstat(fd.as_raw_fd())?;
        lock(&self.incoming).insert(inode, Arc::new(fd));
        self.arrived.notify_waiters();
        Ok(())
    }
}

/// A unix stream that sends the queued descriptors of its [`FdShared`] as
/// SCM_RIGHTS on the first byte of the next write, and files every
/// descriptor it receives.
#[derive(Debug)]
pub struct FdStream {
    io: UnixStream,
    fds: Arc<FdShared>,
}

impl FdStream {
    pub fn new(io: UnixStream, fds: Arc<FdShared>) -> Self {
        Self { io, fds }
    }

    pub fn fds(&self) -> &Arc<FdShared> {
        &self.fds
    }

    /// The connected peer's process id, from SO_PEERCRED.
    pub fn peer_pid(&self) -> Option<i32> {
        self.io.peer_cred().ok().and_then(|c| c.pid())
    }
}

fn send_with_fds(sock: RawFd, byte: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let data_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: byte.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is CMSG_SPACE(data_len) bytes, aligned, so
    // the first header and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        std::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            raw.len(),
        );
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads into `buf`; returns the byte count and the descriptors that came
/// with them (close-on-exec).
fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within
    // msg_controllen; SCM_RIGHTS data is an array of fds now owned here.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                let count = len / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, fds))
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            let sock = this.io.as_raw_fd();
            let unfilled = buf.initialize_unfilled();
            match this
                .io
                .try_io(Interest::READABLE, || recv_with_fds(sock, unfilled))
            {
                Ok((n, fds)) => {
                    for fd in fds {
                        // A descriptor that cannot be stat'ed cannot be matched
                        // to a URL: dropping it (closing) is all there is to do.
                        let _ = this.fds.file_received(fd);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let queued = {
                let mut q = lock(&this.fds.outgoing);
                let n = q.len().min(MAX_FDS);
                q.drain(..n).collect::<Vec<_>>()
            };
            if queued.is_empty() {
                return Pin::new(&mut this.io).poll_write(cx, buf);
            }
            let ready = this.io.poll_write_ready(cx);
            let pending = ready.is_pending();
            let sock = this.io.as_raw_fd();
            let r = match ready {
                Poll::Ready(Ok(())) => this.io.try_io(Interest::WRITABLE, || {
                    send_with_fds(sock, &buf[..1], &queued)
                }),
                Poll::Ready(Err(e)) => Err(e),
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            };
            match r {
                // The descriptors are in the kernel's hands now: closing ours is right.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) => {
                    // Not sent: back to the front of the queue, in order.
                    let mut q = lock(&this.fds.outgoing);
                    let rest: Vec<OwnedFd> = q.drain(..).collect();
                    q.extend(queued);
                    q.extend(rest);
                    drop(q);
                    if e.kind() == io::ErrorKind::WouldBlock {
                        if pending {
                            return Poll::Pending;
                        }
                        continue;
                    }
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
