//! Keep-alive HTTP/1.1 connections to the upstream, one pool per proxy worker.
//!
//! Deliberately small: a LIFO list of connections behind a mutex that only its own worker thread
//! takes (so it is never contended), no per-request task, no hashing. A connection goes back on
//! the list as soon as its response headers arrive and is skipped until hyper reports it ready
//! again (its response body finished). The general-purpose client in hyper-util spent about a
//! tenth of a worker's instructions on its own bookkeeping here.

use std::{
    future::poll_fn,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{Method, Request, Response, Uri};
use http_body::Body;
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use super::UpstreamBody;

/// A request on a connection idle at least this long keeps a copy for a replay (see `send`).
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Largest read buffer per upstream connection: one read can take this much of a blob.
const MAX_READ_BUFFER: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream connection failed: {0}")]
    Send(#[source] hyper::Error),
}

/// A copy of a bodyless `GET`/`HEAD`, to send again if its connection dies under it.
fn replayable(request: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    if !(request.method() == Method::GET || request.method() == Method::HEAD)
        || !request.body().is_end_stream()
    {
        return None;
    }
    let mut copy = Request::new(UpstreamBody::Empty);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// The connection closed before any answer: what an upstream closing an idle connection looks
/// like from here.
fn lost_on_close(error: &hyper::Error) -> bool {
    error.is_incomplete_message() || error.is_canceled() || error.is_closed()
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// What the connector dials (scheme, host, port).
    origin: Uri,
    connections: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            origin,
            connections: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// A pool to the same origin with the same settings and no connections.
    pub fn empty_twin(&self) -> Self {
        Self::new(
            self.connector.clone(),
            self.origin.clone(),
            self.max_idle,
            self.idle_timeout,
        )
    }

    /// Sends `request` (origin-form URI, `Host` set) on a pooled or new connection.
    ///
    /// A kept-alive connection can be closed by the upstream just as a request goes out on it.
    /// Then the request is sent again, once, on a fresh connection: always when hyper hands it
    /// back unsent, and for a bodyless `GET`/`HEAD` also when it was sent but no answer came,
    /// since repeating those changes nothing (nginx's `proxy_next_upstream error` does the same).
    /// Servers close kept-alive connections on idle timeouts, so the copy needed for that replay
    /// is only made for connections that sat idle for [`REPLAY_AFTER_IDLE`].
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let Some((mut sender, idle)) = self.checkout() else {
            return self.send_on(self.connect().await?, request).await;
        };
        let replay = if idle >= REPLAY_AFTER_IDLE {
            replayable(&request)
        } else {
            None
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                self.checkin(sender);
                Ok(response)
            }
            Err(mut error) => {
                let retry = match (error.take_message(), replay) {
                    (Some(unsent), _) => unsent,
                    (None, Some(replay)) if lost_on_close(error.error()) => replay,
                    _ => return Err(UpstreamError::Send(error.into_error())),
                };
                tracing::debug!(error = %error.error(), "upstream closed a kept-alive connection; retrying");
                self.send_on(self.connect().await?, retry).await
            }
        }
    }

    async fn send_on(
        &self,
        mut sender: SendRequest<UpstreamBody>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let response = sender
            .try_send_request(request)
            .await
            .map_err(|e| UpstreamError::Send(e.into_error()))?;
        self.checkin(sender);
        Ok(response)
    }

    /// The most recently used connection that is ready for a request, and how long it sat idle;
    /// drops closed ones.
    fn checkout(&self) -> Option<(SendRequest<UpstreamBody>, Duration)> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = connections.len();
        while index > 0 {
            index -= 1;
            let connection = &connections[index];
            if connection.sender.is_closed() {
                connections.swap_remove(index);
            } else if connection.sender.is_ready() {
                let idle = connections.remove(index);
                return Some((idle.sender, idle.since.elapsed()));
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if connections.len() >= self.max_idle {
            // The oldest goes; a connection still streaming a body finishes that first.
            connections.remove(0);
        }
        connections.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes connections idle longer than the idle timeout (and forgets closed ones).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|c| {
            let idle_too_long =
                c.sender.is_ready() && now.duration_since(c.since) > self.idle_timeout;
            !(c.sender.is_closed() || idle_too_long)
        });
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(MAX_READ_BUFFER)
            .handshake(io)
            .await
            .map_err(UpstreamError::Send)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}
