//! The other end of the read-only views: how `regkeeper tags` and `inspect` ask a running
//! `serve` (which holds the index, single-writer) through its admin listener.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// A plan over a large registry takes a while.
const TIMEOUT: Duration = Duration::from_secs(600);

/// `GET path` on the admin listener at `addr`, as JSON. Errors are sentences for the operator.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let body = get_text(addr, path).await?;
    serde_json::from_str(&body).map_err(|e| format!("the admin listener answered non-JSON: {e}"))
}

/// `GET path` on the admin listener at `addr`: the body of a 200, or the `error` it gave.
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
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
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| format!("the admin listener at {addr} did not answer within {TIMEOUT:?}"))?
}
