//! Body wrappers that observe streams without copying them. Each forwards `poll_frame` to the
//! inner body, so hyper's pull-based backpressure holds end to end; nothing here buffers. The
//! streams that wait on a peer carry an idle deadline: it runs only while the body waits for
//! data that does not come (a client or upstream that stopped sending), never while the other
//! side is slow to read.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use crate::telemetry::{self, Value};
pub use crate::upstream::body::BodyError;
use crate::upstream::body::{IdleTimer, ResponseBody, poll_watched, poll_whole};

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
        let method = self.method.as_str();
        let repository = self.repository.as_deref().unwrap_or("");
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let written = telemetry::request_line(&[
            ("method", Value::Str(method)),
            ("route", Value::Str(self.route)),
            ("repository", Value::Str(repository)),
            ("status", Value::U64(self.status.into())),
            ("bytes_in", Value::U64(received)),
            ("bytes_out", Value::U64(sent)),
            ("duration_us", Value::U64(duration_us)),
            ("outcome", Value::Str(outcome)),
        ]);
        if !written {
            tracing::info!(
                target: "regkeeper::request",
                method,
                route = self.route,
                repository,
                status = self.status,
                bytes_in = received,
                bytes_out = sent,
                duration_us,
                outcome,
            );
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body sent to the client: the upstream's body, or a small local one (errors).
    #[project = ClientBodyProj]
    pub enum ClientBody {
        Upstream { #[pin] body: ResponseBody, timer: IdleTimer },
        Local { body: Full<Bytes> },
    }
}

impl ClientBody {
    /// The upstream's `body`; an upstream that sends nothing for `idle` mid-body fails it
    /// ([`BodyError::UpstreamIdle`]), which closes both connections.
    pub fn upstream(body: ResponseBody, idle: Duration) -> Self {
        ClientBody::Upstream {
            body,
            timer: IdleTimer::new(idle),
        }
    }
}

impl From<Bytes> for ClientBody {
    fn from(data: Bytes) -> Self {
        ClientBody::Local {
            body: Full::new(data),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ClientBodyProj::Upstream { body, timer } => poll_watched(
                body,
                timer,
                cx,
                std::convert::identity,
                BodyError::UpstreamIdle,
            ),
            ClientBodyProj::Local { body } => poll_whole(body, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Upstream { body, .. } => body.is_end_stream(),
            ClientBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Upstream { body, .. } => body.size_hint(),
            ClientBody::Local { body } => body.size_hint(),
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
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
            Some(Err(error)) => {
                *this.outcome = match error {
                    BodyError::UpstreamIdle(_) => "upstream-idle",
                    _ => "upstream-error",
                };
                crate::metrics::upstream_error(this.outcome);
                let record = this.record.as_ref();
                tracing::warn!(
                    route = record.map_or("", |r| r.route),
                    repository = record.and_then(|r| r.repository.as_deref()).unwrap_or(""),
                    cause = *this.outcome,
                    %error,
                    "upstream response cut off mid-body; the client's connection is closed"
                );
            }
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
