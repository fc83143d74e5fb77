//! Accepting client connections: plain TCP or TLS (rustls, ALPN `h2`/`http/1.1`). HTTP/1.1 is
//! served by [`super::http1`] (which hands what it does not serve itself to hyper), HTTP/2 by
//! hyper; both with a header-read deadline and a head-size limit, and tracked for a graceful
//! shutdown ([`Shutdown`]).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use tokio::{
    net::TcpListener,
    sync::{Notify, futures::OwnedNotified, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{ConnectionInfo, Proxy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientScheme {
    Http,
    Https,
}

impl ClientScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientScheme::Http => "http",
            ClientScheme::Https => "https",
        }
    }
}

/// Connection-level limits, from the config.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// The shortest header line (`a:` and CRLF): no head within `maxHeaderBytes` has more lines
/// than that allows.
const SHORTEST_HEADER_LINE: usize = 4;
/// hyper parses each request head into two tables of this many entries (32 bytes each,
/// uninitialised, on the heap above its default of 100), allocated and freed per request. 1,024
/// entries make 32 KiB tables, the largest size jemalloc's thread cache serves: with the
/// earlier 16,384 (the count 64 KiB of shortest lines allows) each request took and gave back
/// two 512 KiB extents, a fifth of a proxied `GET`'s instructions (benches/callgrind.sh:
/// ~50k -> ~41k). Ten times the 100 Envoy and HAProxy stop at; no real client comes near it.
const MAX_HEADER_COUNT: usize = 1024;

impl ConnectionLimits {
    /// How many header lines a request may have: as many as `maxHeaderBytes` can hold (so the
    /// byte limit is what decides, not hyper's default count of 100), up to
    /// [`MAX_HEADER_COUNT`].
    pub fn max_headers(&self) -> usize {
        (self.max_header_bytes / SHORTEST_HEADER_LINE).clamp(100, MAX_HEADER_COUNT)
    }
}

/// The open connections of one listener, told together to finish.
pub struct Shutdown {
    signal: Arc<Signal>,
    /// Each connection holds a receiver: their count is the open connections, and the channel
    /// closes when the last one ends. Never sent on.
    open: watch::Sender<()>,
}

/// What a drain tells the connections.
struct Signal {
    draining: AtomicBool,
    wake: Arc<Notify>,
}

/// One connection's view of its listener's [`Shutdown`]: it lives as long as the connection.
pub struct Drain {
    signal: Arc<Signal>,
    _open: watch::Receiver<()>,
    /// Made once per connection and polled between its requests: making and dropping a waiter
    /// per request cost more than the rest of reading a request head.
    woken: Option<Pin<Box<OwnedNotified>>>,
}

impl Shutdown {
    fn new() -> Self {
        Self {
            signal: Arc::new(Signal {
                draining: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
            }),
            open: watch::Sender::new(()),
        }
    }

    fn watcher(&self) -> Drain {
        Drain {
            signal: Arc::clone(&self.signal),
            _open: self.open.subscribe(),
            woken: None,
        }
    }

    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.open.receiver_count()
    }

    /// Tells every connection to finish (idle ones close, busy ones after their answer) and
    /// waits until all have.
    pub async fn shutdown(self) {
        self.signal.draining.store(true, Ordering::Release);
        self.signal.wake.notify_waiters();
        self.open.closed().await;
    }
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.signal.draining.load(Ordering::Acquire)
    }

    /// Whether the listener drains; when not, the task is woken when it does.
    pub fn poll_draining(&mut self, cx: &mut Context<'_>) -> bool {
        // The waiter exists before the flag is read: a drain after the read wakes it.
        let woken = self
            .woken
            .get_or_insert_with(|| Box::pin(Arc::clone(&self.signal.wake).notified_owned()));
        if self.signal.draining.load(Ordering::Acquire) {
            return true;
        }
        woken.as_mut().poll(cx).is_ready()
    }

    /// Ready once the listener drains.
    pub async fn draining(&mut self) {
        std::future::poll_fn(|cx| {
            if self.poll_draining(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Runs hyper's `connection`, shutting it down gracefully once the listener drains.
    async fn watch<C: GracefulConnection>(&mut self, connection: C) -> C::Output {
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            output = connection.as_mut() => return output,
            () = self.draining() => {}
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }
}

/// What each connection of a listener is served with.
#[derive(Clone)]
pub(super) struct Served {
    pub proxy: Arc<Proxy>,
    pub info: ConnectionInfo,
    pub limits: ConnectionLimits,
}

/// Accepts on `listener` until `stop` flips, serving each connection with `proxy`. Returns the
/// tracker of connections still open, for the caller to drain with a deadline.
pub async fn serve_connections(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> Shutdown {
    let graceful = Shutdown::new();
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "listener has no local address");
            return graceful;
        }
    };
    let scheme = if tls.is_some() {
        ClientScheme::Https
    } else {
        ClientScheme::Http
    };
    let info = ConnectionInfo { scheme, local };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let served = Served {
            proxy: proxy.clone(),
            info,
            limits,
        };
        let graceful = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => super::http1::serve(stream, served, graceful).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_http2(TokioIo::new(stream), served, graceful).await
                    } else {
                        super::http1::serve(stream, served, graceful).await
                    }
                }
            }
            .map_err(|error| tracing::debug!(%peer, %error, "connection ended with an error"))
            .ok();
        });
    }
    tracing::info!(%local, open = graceful.count(), "stopped accepting connections");
    graceful
}

/// Serves `io` with hyper's HTTP/1.1.
pub(super) async fn serve_http1<I>(
    io: TokioIo<I>,
    served: Served,
    mut drain: Drain,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        proxy,
        info,
        limits,
    } = served;
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { proxy.handle(request, info).await }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers())
        .keep_alive(true)
        .serve_connection(io, service);
    drain.watch(connection).await
}

async fn serve_http2<I>(
    io: TokioIo<I>,
    served: Served,
    mut drain: Drain,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        proxy,
        info,
        limits,
    } = served;
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { proxy.handle(request, info).await }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .serve_connection(io, service);
    drain.watch(connection).await
}
