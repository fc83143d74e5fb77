//! Keep-alive HTTP/1.1 connections to the upstream, one pool per proxy worker.
//!
//! Deliberately small: LIFO lists of connections behind mutexes that only their own worker thread
//! takes (so they are never contended), no per-request task, no hashing. Bodyless `GET`/`HEAD`
//! (the pulls) go through regkeeper's own exchange ([`super::exchange`]) on connections of their
//! own list, which a body read to its end hands back. Requests with a body go through hyper's
//! client connections: such a connection goes back on its list as soon as its response headers
//! arrive and is skipped until hyper reports it ready again (its response body finished).

use std::{
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use http::{Method, Request, Response, Uri};
use http_body::Body;
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpStream;
use tower_service::Service;

use super::{
    UpstreamBody,
    body::ResponseBody,
    exchange::{
        self, Answer, ExchangeError, Framing, Head, Stream,
        framed::{FramedBody, Home},
    },
};

/// Largest read buffer per hyper upstream connection: one read can take this much of a blob.
const MAX_READ_BUFFER: usize = exchange::framed::MAX_READ;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream connection failed: {0}")]
    Send(#[source] hyper::Error),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// Idle connections, the most recently used last, at most `max` of them: one list for hyper's
/// connections and one for the exchange's.
struct IdleList<T> {
    entries: Mutex<Vec<(T, Instant)>>,
    max: usize,
}

impl<T> IdleList<T> {
    fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(T, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `connection` on the list as idle from now; the oldest goes when the list is full.
    fn put(&self, connection: T) {
        let mut entries = self.lock();
        if entries.len() >= self.max {
            entries.remove(0);
        }
        entries.push((connection, Instant::now()));
    }
}

/// The connections regkeeper's own exchange reads and writes, idle between requests.
type Streams = IdleList<Stream>;

impl Home for Streams {
    fn take_back(&self, stream: Stream) {
        self.put(stream);
    }
}

impl Streams {
    /// The most recently used connection still open and not idle longer than `idle_timeout`.
    fn checkout(&self, idle_timeout: Duration) -> Option<Stream> {
        let mut idle = self.lock();
        while let Some((mut stream, since)) = idle.pop() {
            if since.elapsed() <= idle_timeout && stream.is_reusable() {
                return Some(stream);
            }
        }
        None
    }

    fn sweep(&self, now: Instant, idle_timeout: Duration) {
        self.lock().retain_mut(|(stream, since)| {
            now.duration_since(*since) <= idle_timeout && stream.is_reusable()
        });
    }
}

pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// What the connector dials (scheme, host, port).
    origin: Uri,
    connections: IdleList<SendRequest<UpstreamBody>>,
    streams: Arc<Streams>,
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
            connections: IdleList::new(max_idle),
            streams: Arc::new(IdleList::new(max_idle)),
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
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let method = request.method();
        if (method == Method::GET || method == Method::HEAD) && request.body().is_end_stream() {
            return self.exchange(&request).await;
        }
        let response = match self.checkout() {
            None => self.send_on(self.connect().await?, request).await?,
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender);
                    response
                }
                Err(mut error) => {
                    let Some(unsent) = error.take_message() else {
                        return Err(UpstreamError::Send(error.into_error()));
                    };
                    tracing::debug!(error = %error.error(), "upstream closed a kept-alive connection; retrying");
                    self.send_on(self.connect().await?, unsent).await?
                }
            },
        };
        Ok(response.map(ResponseBody::from))
    }

    /// A bodyless `GET`/`HEAD` through regkeeper's own exchange.
    async fn exchange(
        &self,
        request: &Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let head = exchange::request_head(request);
        let (head, body) = self.pull(&head, request.method()).await?;
        Ok(head.to_response()?.map(|()| body))
    }

    /// Sends `request_head` (a bodyless `GET`/`HEAD` as written on the wire, `Host` naming
    /// the upstream) and reads the answer's head; the body follows as the caller polls it.
    pub async fn pull(
        &self,
        request_head: &[u8],
        method: &Method,
    ) -> Result<(Head, ResponseBody), UpstreamError> {
        if let Some(mut stream) = self.streams.checkout(self.idle_timeout) {
            match exchange::exchange(&mut stream, request_head, method).await {
                Ok(answer) => return Ok(self.answer(stream, answer)),
                Err(ExchangeError::Lost(error)) => {
                    tracing::debug!(%error, "upstream closed a kept-alive connection; retrying");
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut stream = Stream::from(self.dial().await?);
        let answer = exchange::exchange(&mut stream, request_head, method).await?;
        Ok(self.answer(stream, answer))
    }

    /// The body to hand on. One that came whole with the head (a manifest, nearly always)
    /// frees the connection at once; a longer one takes it along until read.
    fn answer(&self, stream: Stream, answer: Answer) -> (Head, ResponseBody) {
        let Answer { head, mut buffer } = answer;
        let whole = match head.framing {
            Framing::Empty => Some(None),
            Framing::Length(length) if buffer.len() as u64 >= length => Some(Some(
                buffer.split_to(buffer.len().min(length as usize)).freeze(),
            )),
            _ => None,
        };
        let body = match whole {
            Some(data) => {
                // Bytes beyond the body are an upstream out of step: the connection is dropped.
                if head.keep_alive && buffer.is_empty() {
                    self.streams.take_back(stream);
                }
                ResponseBody::whole(data)
            }
            None => {
                let home = head
                    .keep_alive
                    .then(|| Arc::clone(&self.streams) as Arc<dyn Home>);
                FramedBody::new(stream, buffer, head.framing, home).into()
            }
        };
        (head, body)
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

    /// The most recently used connection that is ready for a request; drops closed ones.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut connections = self.connections.lock();
        let mut index = connections.len();
        while index > 0 {
            index -= 1;
            let (sender, _) = &connections[index];
            if sender.is_closed() {
                connections.swap_remove(index);
            } else if sender.is_ready() {
                return Some(connections.remove(index).0);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        // When the list is full the oldest goes; one still streaming a body finishes that first.
        if !sender.is_closed() {
            self.connections.put(sender);
        }
    }

    /// Closes connections idle longer than the idle timeout (and forgets closed ones).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.streams.sweep(now, self.idle_timeout);
        self.connections.lock().retain(|(sender, since)| {
            let idle_too_long = sender.is_ready() && now.duration_since(*since) > self.idle_timeout;
            !(sender.is_closed() || idle_too_long)
        });
    }

    /// A new connection to the upstream (TLS set up when the upstream is `https`).
    async fn dial(&self) -> Result<MaybeHttpsStream<TokioIo<TcpStream>>, UpstreamError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.dial().await?;
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
