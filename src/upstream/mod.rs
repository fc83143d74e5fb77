//! The connection to the upstream registry: a keep-alive HTTP/1.1 pool (plain or rustls) used by
//! the proxy and the readiness probe.
//!
//! Owns: the connection pool and the upstream's identity (origin and the names it calls itself).
//! May call: `tls`, `config`, `telemetry` (error chains).

pub mod body;
pub mod exchange;
mod names;
mod pool;

use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, Uri, header::HOST, uri::PathAndQuery};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

pub use body::{BodyError, Observe, ResponseBody, UpstreamBody};
pub use exchange::{ConnectionOption, Framing, Head, connection_options};
pub use names::UpstreamNames;
pub use pool::{Pool, UpstreamError};

use crate::{
    config::{Config, UpstreamUrl},
    tls::TlsError,
};

/// How regkeeper reaches the upstream: TCP (or TLS over it) with its timeouts and options.
pub type Connector = HttpsConnector<HttpConnector>;

/// The one connector to the upstream: the proxy's pools and regkeeper's own registry client
/// each hold a clone (the TLS configuration is shared, not read again).
pub fn connector(config: &Config, tls: rustls::ClientConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeouts.connect.0));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_recv_buffer_size(Some(SOCKET_BUFFER_BYTES));
    http.set_send_buffer_size(Some(SOCKET_BUFFER_BYTES));
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Socket buffers large enough that one blob read from the upstream fills hyper's read buffer in
/// few syscalls.
const SOCKET_BUFFER_BYTES: usize = 1 << 20;

pub struct Upstream {
    pub url: UpstreamUrl,
    /// `Host` sent upstream: the configured authority.
    pub host_header: HeaderValue,
    pub names: UpstreamNames,
    pub pool: Pool,
    pub response_timeout: Duration,
    /// How long a request body may send nothing (`timeouts.clientBodyIdle`).
    pub client_body_idle: Duration,
    /// How long a response body may send nothing (`timeouts.upstreamBodyIdle`).
    pub upstream_body_idle: Duration,
}

impl Upstream {
    /// `tls` is [`tls::client_for_upstream`]'s result, read once.
    pub fn new(config: &Config, tls: rustls::ClientConfig) -> Result<Self, TlsError> {
        Self::with_connector(config, connector(config, tls))
    }

    /// Over a [`connector`] shared with regkeeper's own registry client: one way to reach the
    /// upstream (TLS roots, timeouts, socket options) for the proxy and for regkeeper's calls.
    pub fn with_connector(config: &Config, connector: Connector) -> Result<Self, TlsError> {
        let upstream = &config.upstream;
        let origin = Uri::builder()
            .scheme(upstream.url.scheme.clone())
            .authority(upstream.url.authority.clone())
            .path_and_query("/")
            .build()
            .expect("a validated upstream URL is a valid URI");
        let pool = Pool::new(
            connector,
            origin,
            upstream.pool_max_idle,
            config.timeouts.pool_idle.0,
        );
        let host_header = HeaderValue::from_str(upstream.url.authority.as_str())
            .expect("an http::uri::Authority is a valid header value");
        Ok(Self {
            names: UpstreamNames::new(
                upstream.url.authority.as_str(),
                upstream.url.port_default(),
                &upstream.advertised_hosts,
            ),
            url: upstream.url.clone(),
            host_header,
            pool,
            response_timeout: config.timeouts.upstream_response.0,
            client_body_idle: config.timeouts.client_body_idle.0,
            upstream_body_idle: config.timeouts.upstream_body_idle.0,
        })
    }

    /// The same upstream with its own empty pool: what each proxy worker gets. Shares the
    /// connector (TLS roots read once), so start-up does not repeat that work per worker.
    pub fn sibling(&self) -> Self {
        Self {
            url: self.url.clone(),
            host_header: self.host_header.clone(),
            names: self.names.clone(),
            pool: self.pool.empty_twin(),
            response_timeout: self.response_timeout,
            client_body_idle: self.client_body_idle,
            upstream_body_idle: self.upstream_body_idle,
        }
    }

    /// `GET /v2/` — the registry answers 200, or 401 when it wants credentials; both mean it is up.
    pub async fn probe(&self, timeout: Duration) -> Result<u16, String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(Uri::from(PathAndQuery::from_static("/v2/")))
            .header(HOST, self.host_header.clone())
            .body(UpstreamBody::Empty)
            .map_err(|e| e.to_string())?;
        let response: Response<ResponseBody> =
            tokio::time::timeout(timeout, self.pool.send(request))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?
                .map_err(|e| crate::telemetry::error_chain(&e))?;
        let status = response.status().as_u16();
        if status == 200 || status == 401 {
            Ok(status)
        } else {
            Err(format!("GET /v2/ answered {status}"))
        }
    }
}
