//! The double's side of grpcfd, written apart from the agent's so that a
//! bug in one does not hide in the other. The double only ever receives
//! descriptors (a client's netns, an endpoint's listen socket and netns):
//! every `recvmsg` files what came with the bytes by (dev, ino).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::UnixStream,
    sync::Notify,
};

/// Descriptors received on one connection, by (dev, ino).
#[derive(Default, Debug)]
pub struct Received {
    files: Mutex<HashMap<(u64, u64), Arc<OwnedFd>>>,
    notify: Notify,
}

impl Received {
    /// Waits for the descriptor named by `inode://dev/ino` and returns it.
    pub async fn take(&self, url: &str, wait: Duration) -> Result<Arc<OwnedFd>, String> {
        let (dev, ino) = url
            .strip_prefix("inode://")
            .and_then(|r| r.split_once('/'))
            .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("{url:?} is not an inode URL"))?;
        let end = tokio::time::Instant::now() + wait;
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if let Some(f) = self.files.lock().unwrap().get(&(dev, ino)) {
                return Ok(f.clone());
            }
            if tokio::time::timeout_at(end, n).await.is_err() {
                return Err(format!("no descriptor for {url} arrived"));
            }
        }
    }
}

/// `/proc/<this pid>/fd/<n>`: how another process (`ip`, `nsenter`) or this
/// one opens a received descriptor.
pub fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
}

/// A unix stream that collects the descriptors arriving with its bytes.
pub struct RecvStream {
    pub sock: UnixStream,
    pub received: Arc<Received>,
}

fn recv(sock: i32, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // Room for 64 descriptors, as grpcfd's reader has.
    let mut control = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = control.len() as _;
    let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !c.is_null() {
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (len - header) / 4;
            let data = unsafe { libc::CMSG_DATA(c) };
            for i in 0..count {
                let mut raw = [0u8; 4];
                unsafe { std::ptr::copy_nonoverlapping(data.add(i * 4), raw.as_mut_ptr(), 4) };
                out.push(unsafe { OwnedFd::from_raw_fd(i32::from_ne_bytes(raw)) });
            }
        }
        c = unsafe { libc::CMSG_NXTHDR(&hdr, c) };
    }
    Ok((n as usize, out))
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            match me.sock.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let raw = me.sock.as_raw_fd();
            let space = buf.initialize_unfilled();
            match me.sock.try_io(Interest::READABLE, || recv(raw, space)) {
                Ok((n, fds)) => {
                    if !fds.is_empty() {
                        let mut files = me.received.files.lock().unwrap();
                        for fd in fds {
                            let mut st: libc::stat = unsafe { std::mem::zeroed() };
                            if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0 {
                                files.insert((st.st_dev, st.st_ino), Arc::new(fd));
                            }
                        }
                        drop(files);
                        me.received.notify.notify_waiters();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for RecvStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().sock).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().sock).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().sock).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for RecvStream {
    type ConnectInfo = Arc<Received>;
    fn connect_info(&self) -> Arc<Received> {
        self.received.clone()
    }
}
