//! The client's HTTP/1.1 connection as regkeeper serves it: request heads are read here, and a
//! bodyless `GET`/`HEAD` (the pulls: nearly all of a registry's traffic) is answered without
//! hyper, its head and the upstream's passed on as bytes. hyper's server side, and the header
//! maps it builds both ways, were the larger part of a proxied pull's instructions
//! (benches/callgrind.sh). At the first request of any other kind, or any head `httparse`
//! refuses, the connection and the bytes read so far go to hyper, which serves the rest of it
//! as before.
//!
//! Bounds as hyper's: a head is read within `headerReadTimeout` (counted from when the
//! connection waits for it, idle time included) and `maxHeaderBytes`; a draining worker closes
//! idle connections and ends busy ones after their answer.
//!
//! Owns: the client connection's loop. May call: `upstream` (the pool), the proxy's route, tap,
//! bodies and error rendering.

mod deadline;
mod pull;
mod request;
mod respond;
mod rewind;

use std::{future::poll_fn, pin::Pin, task::Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::listener::{ConnectionLimits, Drain, Served, serve_http1};
use deadline::Deadline;
use request::Parsed;

/// What one read of a request head asks for at least.
const READ: usize = 8 * 1024;

enum Next {
    Pull(request::Pull),
    /// For hyper.
    Other,
    /// The connection is over: closed, timed out, failed, or idle while draining.
    Done,
}

/// One client connection, from its first byte.
struct Connection<I> {
    io: I,
    buffer: BytesMut,
    /// The head for the upstream, rewritten per request.
    upstream_head: BytesMut,
    out: BytesMut,
    head_deadline: Deadline,
    answer_deadline: Deadline,
}

/// Serves `io` until it closes, handing it to hyper at the first request not served here.
pub async fn serve<I>(io: I, served: Served, mut drain: Drain) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        ref proxy,
        info,
        ref limits,
    } = served;
    let mut connection = Connection {
        io,
        buffer: BytesMut::with_capacity(READ),
        upstream_head: BytesMut::new(),
        out: BytesMut::new(),
        head_deadline: Deadline::new(limits.header_read_timeout),
        answer_deadline: Deadline::new(proxy.upstream.response_timeout),
    };
    let host = proxy.upstream.host_header.as_bytes();
    loop {
        let request = match connection.next(host, limits, &mut drain).await {
            Next::Pull(request) => request,
            Next::Done => return connection.close(limits).await,
            Next::Other => {
                let Connection { io, buffer, .. } = connection;
                let io = rewind::Rewind::new(buffer.freeze(), io);
                return serve_http1(hyper_util::rt::TokioIo::new(io), served, drain).await;
            }
        };
        let close = request.close || drain.is_draining();
        let exchange = pull::Exchange {
            io: &mut connection.io,
            buffer: &connection.buffer,
            upstream_head: &connection.upstream_head,
            out: &mut connection.out,
            answer_deadline: &mut connection.answer_deadline,
            connection: info,
            close,
        };
        if !pull::serve(proxy, &request, exchange).await {
            return connection.close(limits).await;
        }
        connection.buffer.advance(request.length);
    }
}

impl<I: AsyncWrite + Unpin> Connection<I> {
    /// Ends the connection as hyper did: a TCP `FIN`, a TLS `close_notify` before it. Bounded:
    /// a client that reads nothing cannot hold the task.
    async fn close(mut self, limits: &ConnectionLimits) -> Result<(), hyper::Error> {
        let _ = tokio::time::timeout(limits.header_read_timeout, self.io.shutdown()).await;
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> Connection<I> {
    /// Reads until the buffer starts with a whole request head.
    async fn next(&mut self, host: &[u8], limits: &ConnectionLimits, drain: &mut Drain) -> Next {
        let began = tokio::time::Instant::now();
        loop {
            if !self.buffer.is_empty() {
                match request::parse(&self.buffer, host, &mut self.upstream_head) {
                    Parsed::Pull(request) => return Next::Pull(request),
                    Parsed::Other => return Next::Other,
                    // hyper answers a head over the limit with its `431`.
                    Parsed::Partial if self.buffer.len() >= limits.max_header_bytes => {
                        return Next::Other;
                    }
                    Parsed::Partial => {}
                }
            }
            if self.buffer.capacity() - self.buffer.len() < READ / 2 {
                self.buffer.reserve(READ);
            }
            // Between requests a drain ends the connection; mid-head the request is served.
            let idle = self.buffer.is_empty();
            let read = poll_fn(|cx| {
                if idle && drain.poll_draining(cx) {
                    return Poll::Ready(Ok(0));
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buffer) {
                    Poll::Pending if self.head_deadline.expired(cx, began) => {
                        Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                    }
                    other => other,
                }
            })
            .await;
            match read {
                Ok(0) => return Next::Done,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "client connection ended while reading a request head");
                    return Next::Done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
