//! What the admin API's write calls share: the answer shape, and reading a JSON body behind a
//! bearer token (the token compared whole, the body size-capped).

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024;

/// The answer: status and a JSON body.
pub type Answer = (StatusCode, serde_json::Value);

pub fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, serde_json::json!({ "error": message.into() }))
}

/// The body of `request` as `T`, once its bearer token is `token` (named `token_name` in the
/// refusal); `None` for an empty body, which some calls take as "all defaults".
pub async fn authorized_json<T: DeserializeOwned>(
    request: Request<Incoming>,
    token: &str,
    token_name: &str,
) -> Result<Option<T>, Answer> {
    let body = authorized_body(request, token, token_name, MAX_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

/// The body of `request`, at most `max` bytes (413 beyond), once its bearer token is `token`.
pub async fn authorized_body(
    request: Request<Incoming>,
    token: &str,
    token_name: &str,
    max: usize,
) -> Result<Bytes, Answer> {
    if !bearer_is(&request, token) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            format!("a valid bearer token ({token_name}) is required"),
        ));
    }
    match Limited::new(request.into_body(), max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {max} bytes"),
        )),
    }
}

/// Whether `request` carries `Authorization: Bearer <token>`.
pub fn bearer_is<B>(request: &Request<B>, token: &str) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes()))
}

/// Equal-length-independent comparison, so a token cannot be guessed byte by byte by timing.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
