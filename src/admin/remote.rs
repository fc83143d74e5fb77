//! The other end of the admin listener: how the commands ask a running `serve` (which holds
//! the index, single-writer) — the read-only views, plans, and the operator's `apply` and
//! `restore`.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A plan over a large registry takes a while.
const TIMEOUT: Duration = Duration::from_secs(600);

/// `GET path` on the admin listener at `addr`, as JSON, with the read token when one is
/// configured. Errors are sentences for the operator.
pub async fn get_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    let body = get_text(addr, path, token).await?;
    serde_json::from_str(&body).map_err(|e| format!("the admin listener answered non-JSON: {e}"))
}

/// `GET path` on the admin listener at `addr`: the body of a 200, or the `error` it gave.
pub async fn get_text(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<String, String> {
    exchange(addr, Method::GET, path, token, Bytes::new(), TIMEOUT).await
}

/// `POST path` with a JSON body and a bearer token, waiting up to `timeout` (a cleanup run
/// lasts up to its deadline): the JSON of a 200, or the `error` it gave.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let body = Bytes::from(body.to_string());
    let text = exchange(addr, Method::POST, path, Some(token), body, timeout).await?;
    serde_json::from_str(&text).map_err(|e| format!("the admin listener answered non-JSON: {e}"))
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Bytes,
    timeout: Duration,
) -> Result<String, String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string());
        if let Some(token) = token {
            request = request
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let why = value["error"].as_str().unwrap_or("no reason given");
            return Err(format!("{why} (admin listener answered {status})"));
        }
        Ok(text)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("the admin listener at {addr} did not answer within {timeout:?}"))?
}
