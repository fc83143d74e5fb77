//! A raw HTTP/1.1 client for requests skopeo cannot express (chunked PATCH, ranges, mounts).

use std::{convert::Infallible, pin::Pin, task::Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A body sent as separate frames, with no length: hyper sends it `Transfer-Encoding: chunked`.
pub struct Chunks(pub Vec<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// An upload URL completed with `digest=` (the final `PUT` of a blob upload).
pub fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

/// A `Location` made absolute against `base` (`http://host:port`).
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(bytes.into()).boxed()
}

pub fn empty() -> BoxBody {
    full(Bytes::new())
}

pub fn chunked(chunks: Vec<Bytes>) -> BoxBody {
    Chunks(chunks).boxed()
}

pub struct HttpClient {
    client: Client<HttpConnector, BoxBody>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl HttpClient {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: BoxBody,
    ) -> Answer {
        self.exchange(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// `send`, but `None` when the server cannot be reached or the connection breaks.
    pub async fn try_send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: BoxBody,
    ) -> Option<Answer> {
        self.exchange(method, url, headers, body).await.ok()
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: BoxBody,
    ) -> Result<Answer, String> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST /v2/<repository>/blobs/uploads/`, checked to be 202; the `Location` exactly as
    /// answered (possibly relative: see [`absolute`]).
    pub async fn start_upload(&self, base: &str, repository: &str) -> String {
        let start = self
            .send(
                Method::POST,
                &format!("{base}/v2/{repository}/blobs/uploads/"),
                &[],
                empty(),
            )
            .await;
        assert_eq!(start.status, StatusCode::ACCEPTED, "{:?}", start.body);
        start.header("location").to_string()
    }

    /// Uploads `blob` to `repository` in two steps (POST, then PUT ?digest=) and returns its
    /// digest. `base` is `http://host:port`.
    pub async fn push_blob(&self, base: &str, repository: &str, blob: &[u8]) -> String {
        let digest = crate::support::image::sha256(blob);
        let url = absolute(base, &self.start_upload(base, repository).await);
        let put = self
            .send(
                Method::PUT,
                &with_digest(&url, &digest),
                &[],
                full(blob.to_vec()),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
        digest
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, url, headers, empty()).await
    }
}
