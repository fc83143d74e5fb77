//! The transparent proxy: one handler that parses the route, forwards the request upstream with
//! its body streaming, and streams the answer back.
//!
//! Owns: route parsing (`route`), header hygiene (`headers`), body observation (`body`), the
//! proxy's errors (`error`), the client-facing listener (`listener`) and the HTTP/1.1
//! connections it serves without hyper (`http1`).
//! May call: `upstream` (the pool), `oci_error` (error rendering), `events` (taps), `index` (model
//! types), `telemetry` (error chains). Later layers tap requests by
//! matching on the `OciRoute` in `Proxy::handle`, never by parsing paths themselves.

mod admit;
mod body;
mod error;
mod headers;
mod http1;
pub mod listener;
pub mod route;
mod tap;

use std::{
    convert::Infallible,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use http::{HeaderValue, Request, Response, Uri, Version, header::HOST};
use http_body::Body;
use hyper::body::Incoming;

pub use body::{ClientBody, LoggedBody};
pub use error::ProxyError;
pub use listener::{ClientScheme, serve_connections};
pub use route::{OciRoute, Reference};

use crate::{
    events::{EventSender, PullTally},
    upstream::{Upstream, UpstreamBody},
};

/// Shared by every connection of the proxy listener.
pub struct Proxy {
    pub upstream: Upstream,
    /// Write one log line per request.
    pub log_requests: bool,
    /// Where pushes, deletes and pulls are reported (none: nothing is recorded).
    pub events: Option<EventSender>,
    /// This worker's pull counts, handed to `events` by [`Proxy::hand_over_pulls`].
    pulls: PullTally,
}

/// How the client reached the proxy: needed to give it back URLs it can use.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo {
    pub scheme: ClientScheme,
    pub local: std::net::SocketAddr,
}

impl Proxy {
    pub fn new(upstream: Upstream, log_requests: bool, events: Option<EventSender>) -> Self {
        Self {
            upstream,
            log_requests,
            events,
            pulls: PullTally::default(),
        }
    }

    /// Hands the pulls counted since the last call to the index writer (the worker's
    /// housekeeping calls this periodically and at shutdown).
    pub fn hand_over_pulls(&self) {
        if let Some(events) = &self.events {
            self.pulls.hand_over(events);
        }
    }

    /// Serves one request. Never fails: every error becomes an OCI-shaped response here.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Result<Response<LoggedBody>, Infallible> {
        let admitted = match OciRoute::parse(request.uri().path()) {
            Ok(route) => self.admit(&route, request.method(), request.headers(), Instant::now()),
            Err(error) => return Ok(rejected(request.uri().path(), error).into_response()),
        };
        // Counted for the log line and the byte metrics.
        let received = (!request.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));

        // Boxed: the forward future is large, and moving it through the layers above costs more
        // than one allocation.
        let capture = admitted.tap.capture();
        match Box::pin(self.forward(request, connection, received.clone(), capture)).await {
            Ok(response) => {
                let record =
                    admitted.answered(self, response.status(), response.headers(), received);
                Ok(response.map(|body| LoggedBody::new(body, Some(record))))
            }
            Err(error) => Ok(admitted.failed(&error, received.as_deref()).into_response()),
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        connection: ConnectionInfo,
        received: Option<Arc<AtomicU64>>,
        capture: Option<Arc<tap::Capture>>,
    ) -> Result<Response<ClientBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        // HTTP/2 clients name the host in the URI authority, HTTP/1 clients in `Host`.
        let client_host = parts
            .headers
            .insert(HOST, self.upstream.host_header.clone())
            .or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        headers::strip_hop_by_hop(&mut parts.headers);
        // Origin form (`/v2/…?…`): the connection already names the upstream.
        parts.uri = parts
            .uri
            .into_parts()
            .path_and_query
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        parts.version = Version::HTTP_11;
        let upstream_request = Request::from_parts(
            parts,
            UpstreamBody::client(
                body,
                received,
                capture.map(|c| c as Arc<dyn crate::upstream::Observe>),
                self.upstream.client_body_idle,
            ),
        );

        let timeout = self.upstream.response_timeout;
        let response = tokio::time::timeout(timeout, self.upstream.pool.send(upstream_request))
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(timeout))?
            .map_err(ProxyError::from_send)?;

        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if parts.headers.contains_key(http::header::LOCATION)
            || parts.headers.contains_key(http::header::LINK)
        {
            let origin = client_origin(connection, client_host.as_ref());
            headers::rewrite_upstream_urls(&mut parts.headers, &self.upstream.names, &origin);
        }
        Ok(Response::from_parts(
            parts,
            ClientBody::upstream(body, self.upstream.upstream_body_idle),
        ))
    }
}

/// `scheme://host[:port]` as the client addressed the proxy; the listener's own address when the
/// client sent no host (HTTP/1.0).
fn client_origin(connection: ConnectionInfo, host: Option<&HeaderValue>) -> String {
    client_origin_of(connection, host.and_then(|h| h.to_str().ok()))
}

fn client_origin_of(connection: ConnectionInfo, host: Option<&str>) -> String {
    let scheme = connection.scheme.as_str();
    match host.filter(|h| !h.is_empty()) {
        Some(host) => format!("{scheme}://{host}"),
        None => format!("{scheme}://{}", connection.local),
    }
}

/// The answer to a path that is not a valid OCI route.
#[cold]
fn rejected(path: &str, error: route::RouteError) -> crate::oci_error::OciError {
    let error = ProxyError::from(error);
    tracing::debug!(path, cause = error.cause(), "rejected");
    error.to_oci()
}
