//! The request body sent upstream: the client's body as it streams (counted, shown to an
//! observer, cut off when the client stops sending), or nothing. Also the idle deadline the
//! proxy's response bodies share. Forwards `poll_frame` to the inner body, so hyper's pull-based
//! backpressure holds end to end; nothing here buffers.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::exchange::framed::FramedBody;

/// Something that sees the request body's bytes as they pass (the proxy's manifest capture):
/// the pool's body type does not change with what the proxy records.
pub trait Observe: Send + Sync {
    fn observe(&self, chunk: &[u8]);
}

/// Why a streamed body stopped: which side failed, so a client's fault is never counted as the
/// upstream's.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client's request body failed: {0}")]
    ClientIo(#[source] hyper::Error),
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientIdle(Duration),
    #[error("the upstream's response body failed: {0}")]
    UpstreamIo(#[source] hyper::Error),
    #[error("the upstream's response body failed: {0}")]
    UpstreamRead(#[source] std::io::Error),
    #[error("the upstream sent nothing of its response body for {0:?}")]
    UpstreamIdle(Duration),
}

/// A deadline that runs only while a body waits for data: armed on the first `Pending` after
/// data came, checked on every `Pending`. The timer is allocated only if a body ever waits.
pub(crate) struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            sleep: None,
            armed: false,
        }
    }

    /// The inner body had nothing: whether it has had nothing for too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.idle;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Data (or the end) came.
    fn progressed(&mut self) {
        self.armed = false;
    }
}

/// Polls `body`, turning a wait longer than `timer` allows into `idle_error`.
pub(crate) fn poll_watched<B: Body<Data = Bytes>>(
    body: Pin<&mut B>,
    timer: &mut IdleTimer,
    cx: &mut Context<'_>,
    io_error: fn(B::Error) -> BodyError,
    idle_error: fn(Duration) -> BodyError,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    match body.poll_frame(cx) {
        Poll::Ready(frame) => {
            timer.progressed();
            Poll::Ready(frame.map(|f| f.map_err(io_error)))
        }
        Poll::Pending if timer.expired(cx) => Poll::Ready(Some(Err(idle_error(timer.idle)))),
        Poll::Pending => Poll::Pending,
    }
}

pin_project_lite::pin_project! {
    /// The request body sent upstream: the client's body (counted), or nothing.
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        Client {
            #[pin] body: Incoming,
            received: Option<Arc<AtomicU64>>,
            observer: Option<Arc<dyn Observe>>,
            timer: IdleTimer,
        },
        Empty,
    }
}

impl UpstreamBody {
    /// Forwards `body`; counts the bytes that pass into `received` and shows them to
    /// `observer` (the proxy's manifest capture), when set. A client that sends nothing for
    /// `idle` mid-body fails it ([`BodyError::ClientIdle`]).
    pub fn client(
        body: Incoming,
        received: Option<Arc<AtomicU64>>,
        observer: Option<Arc<dyn Observe>>,
        idle: Duration,
    ) -> Self {
        UpstreamBody::Client {
            body,
            received,
            observer,
            timer: IdleTimer::new(idle),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            UpstreamBodyProj::Client {
                body,
                received,
                observer,
                timer,
            } => {
                let frame = ready!(poll_watched(
                    body,
                    timer,
                    cx,
                    BodyError::ClientIo,
                    BodyError::ClientIdle
                ));
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    if let Some(received) = received {
                        received.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if let Some(observer) = observer {
                        observer.observe(data);
                    }
                }
                Poll::Ready(frame)
            }
            UpstreamBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client { body, .. } => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client { body, .. } => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A body that is all there (it cannot fail), polled as one of the proxy's bodies.
pub fn poll_whole(
    body: &mut Full<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    Pin::new(body)
        .poll_frame(cx)
        .map(|frame| frame.map(|f| f.map_err(|never| match never {})))
}

pin_project_lite::pin_project! {
    /// The upstream's response body: hyper's, for requests sent with a body; for bodyless
    /// `GET`/`HEAD` ([`super::exchange`]) one that came whole with the head, or one read as the
    /// client takes it.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Hyper { #[pin] body: Incoming },
        Whole { body: Full<Bytes> },
        Framed { body: FramedBody },
    }
}

impl ResponseBody {
    pub fn whole(data: Option<Bytes>) -> Self {
        ResponseBody::Whole {
            body: Full::new(data.unwrap_or_default()),
        }
    }
}

impl From<Incoming> for ResponseBody {
    fn from(body: Incoming) -> Self {
        ResponseBody::Hyper { body }
    }
}

impl From<FramedBody> for ResponseBody {
    fn from(body: FramedBody) -> Self {
        ResponseBody::Framed { body }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ResponseBodyProj::Hyper { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BodyError::UpstreamIo))),
            ResponseBodyProj::Whole { body } => poll_whole(body, cx),
            ResponseBodyProj::Framed { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BodyError::UpstreamRead))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper { body } => body.is_end_stream(),
            ResponseBody::Whole { body } => body.is_end_stream(),
            ResponseBody::Framed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Hyper { body } => body.size_hint(),
            ResponseBody::Whole { body } => body.size_hint(),
            ResponseBody::Framed { body } => body.size_hint(),
        }
    }
}
