//! One bodyless `GET`/`HEAD` served without hyper: the route checked and tapped as
//! [`Proxy::handle`] does, the head sent upstream through the pool's exchange, the upstream's
//! head passed on as written ([`respond`]) and its body streamed as the client takes it, logged
//! and counted by the same [`LoggedBody`] as hyper's responses.

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{
    deadline::Deadline,
    request::Pull,
    respond::{self, Sent},
};
use crate::{
    oci_error::OciError,
    proxy::{
        ClientBody, ConnectionInfo, LoggedBody, OciRoute, Proxy, ProxyError, client_origin_of,
        rejected,
    },
};

/// Body bytes gathered with the head (or with each other) into one write.
const GATHER: usize = 64 * 1024;

/// What one pull needs from its connection.
pub struct Exchange<'c, I> {
    pub io: &'c mut I,
    /// The client's head, at the start.
    pub buffer: &'c [u8],
    /// The head to send upstream.
    pub upstream_head: &'c [u8],
    /// Where the answer is written before it goes out.
    pub out: &'c mut BytesMut,
    pub answer_deadline: &'c mut Deadline,
    pub connection: ConnectionInfo,
    /// The connection ends after this answer.
    pub close: bool,
}

/// Serves `request`; whether the connection can carry another.
pub async fn serve<I: AsyncWrite + Unpin>(
    proxy: &Proxy,
    request: &Pull,
    exchange: Exchange<'_, I>,
) -> bool {
    let started = Instant::now();
    let head_only = request.method == Method::HEAD;
    let path = request.path(exchange.buffer);
    let admitted = match OciRoute::parse(path) {
        // A pull's tap needs no request fields.
        Ok(route) => proxy.admit(&route, &request.method, &HeaderMap::new(), started),
        Err(error) => return write_local(exchange, rejected(path, error), head_only).await,
    };
    let upstream = &proxy.upstream;
    let asked = tokio::time::Instant::from_std(started);
    let answered = exchange
        .answer_deadline
        .run(
            asked,
            upstream.pool.pull(exchange.upstream_head, &request.method),
        )
        .await;
    let (head, body) = match answered {
        Some(Ok(answer)) => answer,
        failure => {
            let error = match failure {
                Some(Err(error)) => ProxyError::from_send(error),
                _ => ProxyError::UpstreamTimeout(upstream.response_timeout),
            };
            return write_local(exchange, admitted.failed(&error, None), head_only).await;
        }
    };
    let client_host = request.host.clone().map(|host| &exchange.buffer[host]);
    let origin = || {
        let host = client_host.and_then(|h| std::str::from_utf8(h).ok());
        client_origin_of(exchange.connection, host)
    };
    let sent = respond::upstream_head(
        exchange.out,
        &head,
        &upstream.names,
        &origin,
        exchange.close,
    );
    // A pull's tap reads only the status.
    let record = admitted.answered(proxy, head.status, &HeaderMap::new(), None);
    let body = LoggedBody::new(
        ClientBody::upstream(body, upstream.upstream_body_idle),
        Some(record),
    );
    stream(exchange.io, exchange.out, body, sent).await && !exchange.close
}

/// Writes `out` (the head) and the body after it, gathering what is at hand into few writes;
/// whether the body went out whole.
pub(super) async fn stream<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    mut body: LoggedBody,
    sent: Sent,
) -> bool {
    loop {
        let frame = match poll_now(&mut body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing at hand: what is gathered goes out before waiting.
                if !flush(io, out).await {
                    return false;
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => {
                if sent == Sent::Chunked {
                    respond::chunk(out, &[]);
                }
                return flush(io, out).await;
            }
            // The upstream failed mid-body (logged by `LoggedBody`): the client learns it
            // from the connection's close.
            Some(Err(_)) => return false,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        if !put(io, out, data, sent).await {
            return false;
        }
    }
}

/// Adds `data` to what goes out, or writes both when they are large.
async fn put<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    data: Bytes,
    sent: Sent,
) -> bool {
    if out.len() + data.len() <= GATHER {
        match sent {
            Sent::Chunked => respond::chunk(out, &data),
            Sent::AsIs => out.put_slice(&data),
        }
        return true;
    }
    if sent == Sent::Chunked {
        respond::chunk_size(out, data.len());
    }
    if !(flush(io, out).await && io.write_all(&data).await.is_ok()) {
        return false;
    }
    if sent == Sent::Chunked {
        out.put_slice(b"\r\n");
    }
    true
}

/// The next frame if the body has one at hand.
fn poll_now(
    body: &mut LoggedBody,
) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::body::BodyError>>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
}

/// Writes what is gathered and flushes the connection (a TLS stream holds what it could not
/// send yet until flushed).
async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut BytesMut) -> bool {
    let written = (out.is_empty() || io.write_all(out).await.is_ok()) && io.flush().await.is_ok();
    out.clear();
    written
}

async fn write_local<I: AsyncWrite + Unpin>(
    exchange: Exchange<'_, I>,
    answer: OciError,
    head_only: bool,
) -> bool {
    let response: Response<Bytes> = answer.into_response();
    respond::local(exchange.out, &response, head_only, exchange.close);
    flush(exchange.io, exchange.out).await && !exchange.close
}
