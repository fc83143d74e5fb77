//! What the proxy knows of a request once its route parsed, the same whichever side serves it
//! (hyper's `Proxy::handle`, or `http1` for pulls): how it is logged, what it taps, and what
//! is recorded once the upstream answered or the request failed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use http::{HeaderMap, Method, StatusCode};

use super::{OciRoute, Proxy, ProxyError, body::RequestRecord, tap::Tap};
use crate::oci_error::OciError;
use crate::telemetry::error_chain;

pub(super) struct Admitted {
    pub method: Method,
    pub kind: &'static str,
    /// The repository, kept for the log line when requests are logged.
    pub repository: Option<Box<str>>,
    pub tap: Tap,
    pub started: Instant,
}

impl Proxy {
    /// `headers` are the request's: a push's tap keeps its content type (pulls read none).
    pub(super) fn admit(
        &self,
        route: &OciRoute<'_>,
        method: &Method,
        headers: &HeaderMap,
        started: Instant,
    ) -> Admitted {
        Admitted {
            method: method.clone(),
            kind: route.kind(),
            repository: self
                .log_requests
                .then(|| route.repository().map(Box::<str>::from))
                .flatten(),
            tap: match self.events {
                Some(_) => Tap::of(route, method, headers),
                None => Tap::Nothing,
            },
            started,
        }
    }
}

impl Admitted {
    /// The upstream answered with `status` and `headers` (a push's tap reads its digest; a
    /// pull's reads none): the tap records what that calls for, and the answer's body gets the
    /// record its log line and metrics are made from.
    pub fn answered(
        self,
        proxy: &Proxy,
        status: StatusCode,
        headers: &HeaderMap,
        received: Option<Arc<AtomicU64>>,
    ) -> RequestRecord {
        if let Some(events) = &proxy.events {
            self.tap.record(status, headers, events, &proxy.pulls);
        }
        RequestRecord {
            log: proxy.log_requests,
            method: self.method,
            route: self.kind,
            repository: self.repository,
            status: status.as_u16(),
            started: self.started,
            received,
        }
    }

    /// The request failed: counted and logged by whose fault it was, and what the client is
    /// told.
    #[cold]
    pub fn failed(&self, error: &ProxyError, received: Option<&AtomicU64>) -> OciError {
        let answer = error.to_oci();
        let elapsed = self.started.elapsed().as_secs_f64();
        let status = answer.status.as_u16();
        let (method, kind) = (&self.method, self.kind);
        let repository = self.repository.as_deref().unwrap_or("");
        if error.is_client_fault() {
            // The client's doing (it hung up, sent a broken body, or stopped sending): not an
            // upstream error, and not worth more than an info line.
            crate::metrics::client_error(error.cause());
            let received = received.map_or(0, |r| r.load(Ordering::Relaxed));
            crate::metrics::proxy_request(kind, method, status, elapsed, received, 0);
            tracing::info!(
                method = %method,
                route = kind,
                repository,
                cause = error.cause(),
                error = %error_chain(error),
                "client request failed"
            );
        } else {
            crate::metrics::upstream_error(error.cause());
            crate::metrics::proxy_request(kind, method, status, elapsed, 0, 0);
            tracing::warn!(
                method = %method,
                route = kind,
                repository,
                cause = error.cause(),
                error = %error_chain(error),
                "upstream request failed"
            );
        }
        answer
    }
}
