//! Body wrappers that observe streams without copying them. Each forwards `poll_frame` to the
//! inner body, so hyper's pull-based backpressure holds end to end; nothing here buffers.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::tap::Capture;

pin_project_lite::pin_project! {
    /// The request body sent upstream: the client's body (counted), or nothing.
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        Client {
            #[pin] body: Incoming,
            received: Option<Arc<AtomicU64>>,
            capture: Option<Arc<Capture>>,
        },
        Empty,
    }
}

impl UpstreamBody {
    /// Forwards `body`; counts the bytes that pass into `received` and copies them into
    /// `capture` (a manifest being pushed), when set.
    pub fn client(
        body: Incoming,
        received: Option<Arc<AtomicU64>>,
        capture: Option<Arc<Capture>>,
    ) -> Self {
        UpstreamBody::Client {
            body,
            received,
            capture,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            UpstreamBodyProj::Client {
                body,
                received,
                capture,
            } => {
                let frame = ready!(body.poll_frame(cx));
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    if let Some(received) = received {
                        received.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if let Some(capture) = capture {
                        capture.observe(data);
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

/// What the request log line says once the response body is done (or abandoned).
pub struct RequestRecord {
    /// Write the request log line (metrics are recorded either way).
    pub log: bool,
    pub method: Method,
    pub route: &'static str,
    pub repository: Option<Box<str>>,
    pub status: u16,
    pub started: Instant,
    pub received: Option<Arc<AtomicU64>>,
}

impl RequestRecord {
    fn emit(&self, sent: u64, outcome: &'static str) {
        let received = self
            .received
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed));
        let elapsed = self.started.elapsed();
        crate::metrics::proxy_request(
            self.route,
            &self.method,
            self.status,
            elapsed.as_secs_f64(),
            received,
            sent,
        );
        if !self.log {
            return;
        }
        tracing::info!(
            target: "regkeeper::request",
            method = self.method.as_str(),
            route = self.route,
            repository = self.repository.as_deref().unwrap_or(""),
            status = self.status,
            bytes_in = received,
            bytes_out = sent,
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            outcome,
        );
    }
}

pin_project_lite::pin_project! {
    /// The response body sent to the client: the upstream's body, or a small local one (errors).
    #[project = ClientBodyProj]
    pub enum ClientBody {
        Upstream { #[pin] body: Incoming },
        Local { data: Option<Bytes> },
    }
}

impl From<Bytes> for ClientBody {
    fn from(data: Bytes) -> Self {
        ClientBody::Local { data: Some(data) }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ClientBodyProj::Upstream { body } => body.poll_frame(cx),
            ClientBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Upstream { body } => body.is_end_stream(),
            ClientBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Upstream { body } => body.size_hint(),
            ClientBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `ClientBody` plus the request log: counts bytes sent and writes the log line when the body
    /// ends, fails, or is dropped because the client went away.
    pub struct LoggedBody {
        #[pin]
        inner: ClientBody,
        record: Option<RequestRecord>,
        sent: u64,
        outcome: &'static str,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                record.emit(*this.sent, this.outcome);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: ClientBody, record: Option<RequestRecord>) -> Self {
        let outcome = if inner.is_end_stream() {
            "complete"
        } else {
            "aborted"
        };
        Self {
            inner,
            record,
            sent: 0,
            outcome,
        }
    }
}

impl From<Bytes> for LoggedBody {
    fn from(data: Bytes) -> Self {
        Self::new(ClientBody::from(data), None)
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.sent += data.len() as u64;
                }
                // hyper may stop polling once a sized body is complete, before the final `None`.
                if this.inner.is_end_stream() {
                    *this.outcome = "complete";
                }
            }
            Some(Err(_)) => *this.outcome = "upstream-error",
            None => *this.outcome = "complete",
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
