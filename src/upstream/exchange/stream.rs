//! One upstream connection as regkeeper's own exchange reads and writes it: plain TCP, or rustls
//! over it, as the shared connector dialled it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

type TlsStream = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl From<MaybeHttpsStream<TokioIo<TcpStream>>> for Stream {
    fn from(stream: MaybeHttpsStream<TokioIo<TcpStream>>) -> Self {
        match stream {
            MaybeHttpsStream::Http(tcp) => Stream::Plain(tcp.into_inner()),
            MaybeHttpsStream::Https(tls) => Stream::Tls(Box::new(tls.into_inner())),
        }
    }
}

impl Stream {
    /// Whether a kept-alive connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked (an answer that arrived for no request, such as a `408` before
    /// an idle close, must not be taken for the next request's). Looks without waiting.
    pub fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        matches!(Pin::new(self).poll_read(&mut cx, &mut probe), Poll::Pending)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
