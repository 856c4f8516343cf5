//! The connection type [`super::Security`] hands to gRPC: TLS or plain, with
//! the verified peer attached so tonic servers see it in each request's
//! extensions (as [`SecureConnectInfo`]).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsStream, client, server};
use tonic::transport::server::Connected;

use super::tls::PeerId;

/// A secured (or, in insecure mode, plain) connection.
#[derive(Debug)]
pub struct SecureStream<S> {
    inner: Inner<S>,
    peer: Option<PeerId>,
}

#[derive(Debug)]
enum Inner<S> {
    Tls(Box<TlsStream<S>>),
    Plain(S),
}

impl<S> SecureStream<S> {
    pub(super) fn client(tls: client::TlsStream<S>, peer: PeerId) -> Self {
        Self {
            inner: Inner::Tls(Box::new(TlsStream::Client(tls))),
            peer: Some(peer),
        }
    }

    pub(super) fn server(tls: server::TlsStream<S>, peer: PeerId) -> Self {
        Self {
            inner: Inner::Tls(Box::new(TlsStream::Server(tls))),
            peer: Some(peer),
        }
    }

    pub(super) fn plain(io: S) -> Self {
        Self {
            inner: Inner::Plain(io),
            peer: None,
        }
    }

    /// The verified peer (`None` in insecure mode).
    pub fn peer(&self) -> Option<&PeerId> {
        self.peer.as_ref()
    }

    /// The transport underneath (e.g. the grpcfd stream, for its fds).
    pub fn get_ref(&self) -> &S {
        match &self.inner {
            Inner::Tls(t) => t.get_ref().0,
            Inner::Plain(s) => s,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tls(t) => t.is_write_vectored(),
            Inner::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What a tonic server sees of the connection a request came on: the
/// verified peer (for `prev_token_signed`) and the transport's own info.
#[derive(Clone, Debug)]
pub struct SecureConnectInfo<I> {
    pub peer: Option<PeerId>,
    pub inner: I,
}

impl<S> Connected for SecureStream<S>
where
    S: Connected,
{
    type ConnectInfo = SecureConnectInfo<S::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        SecureConnectInfo {
            peer: self.peer.clone(),
            inner: self.get_ref().connect_info(),
        }
    }
}
