//! regkeeper's own client of the upstream registry, for what regkeeper asks itself: image
//! configs after a recorded push, `sync`'s crawl, and cleanup's checks, deletions and restores. It authenticates with
//! regkeeper's configured credentials, never a client's.
//!
//! Owns: the Distribution API calls regkeeper makes, authentication (anonymous, Basic, the
//! Bearer token flow), the full manifest `Accept` list, digest checks and size caps on answers.
//! May call: `config`, `manifest` (media types and digests), `upstream` (the connector),
//! `telemetry` (error chains).

mod auth;
mod error;
mod reads;
mod writes;

use std::time::Duration;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, WWW_AUTHENTICATE},
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

pub use auth::{Challenge, parse_challenge};
pub use error::RegistryError;
use error::{check_status, check_success, malformed};
pub use writes::TagDeletion;

use crate::{config::Config, manifest};

/// Every manifest media type regkeeper understands, so the upstream never down-converts (a
/// Docker v2s2 manifest fetched without it comes back as schema 1 with another digest) and
/// never hides OCI manifests (Distribution answers 404 without the OCI types).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.artifact.manifest.v1+json;q=0.9, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5, application/json;q=0.4";
/// Manifests larger than this are not read (Distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Catalog and tag-list pages larger than this are refused.
const MAX_LIST_BYTES: usize = 64 << 20;
/// Pages of one list followed at most.
pub const MAX_PAGES: usize = 100_000;
/// Redirects followed for one blob (storage back ends answer 307 to a signed URL).
const MAX_REDIRECTS: usize = 3;

/// A manifest as the upstream serves it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// Verified against the body.
    pub digest: String,
    pub media_type: String,
    pub body: Bytes,
}

/// One page of `/v2/_catalog`.
#[derive(Debug)]
pub struct CatalogPage {
    pub repositories: Vec<String>,
    /// Path and query of the next page (from the `Link` header), if there is one.
    pub next: Option<String>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One request's method, headers and body (kept for the resend after a 401 challenge).
struct Call {
    method: Method,
    accept: Option<&'static str>,
    content_type: Option<String>,
    body: Bytes,
}

impl Call {
    fn get(accept: Option<&'static str>) -> Self {
        Self::bodiless(Method::GET, accept)
    }

    fn bodiless(method: Method, accept: Option<&'static str>) -> Self {
        Self {
            method,
            accept,
            content_type: None,
            body: Bytes::new(),
        }
    }

    fn with_body(method: Method, content_type: &str, body: Bytes) -> Self {
        Self {
            method,
            accept: None,
            content_type: Some(content_type.to_string()),
            body,
        }
    }
}

fn own_user_agent() -> HeaderValue {
    let mut id = [0u8; 16];
    let _ = getrandom::fill(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!(
        "regkeeper/{} (id={id})",
        env!("CARGO_PKG_VERSION")
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("regkeeper"))
}

pub struct RegistryClient {
    http: HttpClient,
    /// `scheme://authority` of the upstream.
    origin: String,
    auth: auth::Authenticator,
    timeout: Duration,
    /// Whether the upstream removes a tag alone on a tag `DELETE`, once cleanup has probed it.
    tag_deletion: tokio::sync::OnceCell<bool>,
    /// `regkeeper/VERSION (id=…)`, the id random per client: the registry's notifications
    /// name it for regkeeper's own reads, which no client can then pass off as its own.
    user_agent: HeaderValue,
}

impl RegistryClient {
    /// What cleanup learned of the upstream's tag deletion, kept for this client's life (one
    /// client per upstream).
    pub fn tag_deletion(&self) -> &tokio::sync::OnceCell<bool> {
        &self.tag_deletion
    }

    /// The `User-Agent` this client sends (unique to it).
    pub fn user_agent(&self) -> &str {
        self.user_agent.to_str().unwrap_or_default()
    }

    /// `tls` is `tls::client_for_upstream`'s result (shared with the proxy's upstream pool).
    pub fn new(config: &Config, tls: rustls::ClientConfig) -> Result<Self, RegistryError> {
        Self::with_connector(config, crate::upstream::connector(config, tls))
    }

    /// Over the connector the proxy uses too ([`crate::upstream::connector`]).
    pub fn with_connector(
        config: &Config,
        connector: crate::upstream::Connector,
    ) -> Result<Self, RegistryError> {
        let upstream = &config.upstream;
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.timeouts.pool_idle.0)
            .pool_max_idle_per_host(config.sync.concurrency.max(4))
            .build(connector);
        let credentials = match &upstream.credentials {
            Some(c) => Some((
                c.username.clone(),
                c.password()
                    .map_err(|e| RegistryError::Credentials(e.to_string()))?,
            )),
            None => None,
        };
        Ok(Self {
            http,
            origin: format!("{}://{}", upstream.url.scheme, upstream.url.authority),
            auth: auth::Authenticator::new(credentials).map_err(RegistryError::Credentials)?,
            timeout: config.timeouts.upstream_response.0,
            tag_deletion: tokio::sync::OnceCell::new(),
            user_agent: own_user_agent(),
        })
    }

    /// A GET with authentication and redirects handled and the body read (up to `limit`),
    /// within the response timeout.
    async fn get(
        &self,
        path: &str,
        scope: &str,
        accept: Option<&'static str>,
        limit: usize,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RegistryError> {
        let work = async {
            let mut url = format!("{}{path}", self.origin);
            let mut redirects = 0;
            loop {
                let call = Call::get(accept);
                let response = self.send_authenticated(&url, scope, &call, what).await?;
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .filter(|_| response.status().is_redirection() && redirects < MAX_REDIRECTS);
                if let Some(location) = location {
                    url = resolve(&url, location);
                    redirects += 1;
                    continue;
                }
                let status = response.status();
                let (parts, body) = response.into_parts();
                let body = read_body(body, limit, what).await?;
                return Ok((status, parts.headers, body));
            }
        };
        self.within_timeout(what, work).await
    }

    /// `work` within the upstream response timeout.
    async fn within_timeout<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| RegistryError::Timeout {
                what: what.to_string(),
                seconds: self.timeout.as_secs(),
            })?
    }

    /// Sends with what the authenticator knows for `scope`; on a 401 challenge, authenticates
    /// and sends once more.
    async fn send_authenticated(
        &self,
        url: &str,
        scope: &str,
        call: &Call,
        what: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        // Credentials go to the upstream only, never to a storage back end we are redirected to.
        let ours = url.starts_with(&self.origin) && url[self.origin.len()..].starts_with('/');
        let response = self
            .send(
                url,
                call,
                ours.then(|| self.auth.authorization(scope)).flatten(),
                what,
            )
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || !ours {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let auth_error = |why: String| RegistryError::Auth {
            what: what.to_string(),
            why,
        };
        match challenge {
            Some(Challenge::Basic) => self.auth.use_basic().map_err(auth_error)?,
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let token_url = auth::token_url(
                    &realm,
                    service.as_deref(),
                    asked.as_deref().unwrap_or(scope),
                );
                let token_what = format!("get a token from {realm}");
                let answer = self
                    .send(&token_url, &Call::get(None), self.auth.basic(), &token_what)
                    .await?;
                let status = answer.status();
                let body = read_body(answer.into_body(), 1 << 20, &token_what).await?;
                if status != StatusCode::OK {
                    let hint = if self.auth.basic().is_some() {
                        "it refused regkeeper's credentials (check upstream.credentials)"
                    } else {
                        "it refuses anonymous access; set upstream.credentials"
                    };
                    return Err(auth_error(format!(
                        "the token endpoint {realm} answered {status}: {hint}"
                    )));
                }
                self.auth.store_token(scope, &body).map_err(auth_error)?;
            }
            None => {
                return Err(auth_error(
                    "401 without a usable WWW-Authenticate challenge".into(),
                ));
            }
        }
        let retried = self
            .send(url, call, self.auth.authorization(scope), what)
            .await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            return Err(auth_error(
                "the upstream refused regkeeper's credentials (check upstream.credentials)".into(),
            ));
        }
        Ok(retried)
    }

    async fn send(
        &self,
        url: &str,
        call: &Call,
        authorization: Option<HeaderValue>,
        what: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        let uri: Uri = url.parse().map_err(|e| RegistryError::Malformed {
            what: what.to_string(),
            why: format!("bad URL {url:?}: {e}"),
        })?;
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(http::header::USER_AGENT, self.user_agent.clone());
        if let Some(accept) = call.accept {
            request = request.header(ACCEPT, HeaderValue::from_static(accept));
        }
        if let Some(content_type) = &call.content_type {
            request = request.header(CONTENT_TYPE, content_type.as_str());
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request =
            request
                .body(Full::new(call.body.clone()))
                .map_err(|e| RegistryError::Malformed {
                    what: what.to_string(),
                    why: e.to_string(),
                })?;
        self.http
            .request(request)
            .await
            .map_err(|e| RegistryError::Transport {
                what: what.to_string(),
                cause: crate::telemetry::error_chain(&e),
            })
    }
}

/// Where a catalog listing starts.
#[derive(Clone, Copy, Debug)]
pub enum CatalogFrom<'a> {
    Start,
    /// After this repository (resuming an interrupted sync).
    After(&'a str),
    /// A `next` path from the previous page.
    Next(&'a str),
}

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

async fn read_body(body: Incoming, limit: usize, what: &str) -> Result<Bytes, RegistryError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(RegistryError::TooLarge {
                what: what.to_string(),
                limit,
            })
        }
        Err(error) => Err(RegistryError::Transport {
            what: what.to_string(),
            cause: error.to_string(),
        }),
    }
}

/// For writes: any 2xx (202 Accepted for deletes, 201 Created for PUTs and uploads).
/// The `rel="next"` target of a `Link` header, as a path and query.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().find_map(|value| {
        let value = value.to_str().ok()?;
        value.split(',').find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let is_next = params.split(';').any(|p| {
                p.trim()
                    .replace(' ', "")
                    .eq_ignore_ascii_case("rel=\"next\"")
                    || p.trim().eq_ignore_ascii_case("rel=next")
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let path = match target.parse::<Uri>() {
                Ok(uri) if uri.scheme().is_some() => uri.path_and_query()?.to_string(),
                _ => target.to_string(),
            };
            (is_next && path.starts_with("/v2/")).then_some(path)
        })
    })
}

/// A `Location` value resolved against the URL it answered.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}{}", &base[..origin_end], location)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_paths_whatever_form_the_upstream_uses() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/_catalog?last=team%2Fapp&n=1>; rel="next""#),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/_catalog?last=team%2Fapp&n=1")
        );
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://r.example.com/v2/a/tags/list?last=b&n=100>; rel=next"#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/a/tags/list?last=b&n=100")
        );
        headers.insert(LINK, HeaderValue::from_static(r#"</x>; rel="prev""#));
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn locations_resolve_against_their_origin() {
        assert_eq!(
            resolve("http://a:5000/v2/x/blobs/sha256:1", "/storage/1"),
            "http://a:5000/storage/1"
        );
        assert_eq!(
            resolve("http://a/v2/", "https://s3.example.com/b?sig=1"),
            "https://s3.example.com/b?sig=1"
        );
    }
}
