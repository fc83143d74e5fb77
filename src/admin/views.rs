//! Read-only views of the index on the admin listener, so `regkeeper tags` and `inspect` work
//! while `serve` holds the index: `GET /api/v1/tags[?repository=R]` and
//! `GET /api/v1/inspect?reference=R:T|R@D`. Same JSON as the commands' `--output json`.

use std::sync::Arc;

use http::StatusCode;

use crate::{
    index::Index,
    inspect::{self, InspectError},
};

pub async fn tags(index: &Arc<dyn Index>, query: Option<&str>) -> (StatusCode, serde_json::Value) {
    let repository = param(query, "repository");
    let index = index.clone();
    let read = tokio::task::spawn_blocking(move || {
        inspect::tags(index.as_ref(), repository.as_deref()).map(serde_json::to_value)
    })
    .await;
    match read {
        Ok(Ok(Ok(value))) => (StatusCode::OK, value),
        Ok(Ok(Err(error))) => failed(error.to_string()),
        Ok(Err(error)) => failed(error.to_string()),
        Err(error) => failed(error.to_string()),
    }
}

pub async fn inspect(
    index: &Arc<dyn Index>,
    query: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let Some(reference) = param(query, "reference") else {
        return (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "give ?reference=REPOSITORY:TAG or REPOSITORY@DIGEST" }),
        );
    };
    let index = index.clone();
    let read =
        tokio::task::spawn_blocking(move || inspect::inspect(index.as_ref(), &reference)).await;
    match read {
        Ok(Ok(inspection)) => match serde_json::to_value(inspection) {
            Ok(value) => (StatusCode::OK, value),
            Err(error) => failed(error.to_string()),
        },
        Ok(Err(error @ InspectError::Reference(_))) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": error.to_string() }),
        ),
        Ok(Err(error @ InspectError::Unknown(_))) => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": error.to_string() }),
        ),
        Ok(Err(error)) => failed(error.to_string()),
        Err(error) => failed(error.to_string()),
    }
}

fn failed(why: String) -> (StatusCode, serde_json::Value) {
    tracing::error!(why, "admin index view failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({ "error": format!("the index cannot be read: {why}") }),
    )
}

/// The percent-decoded value of `name` in a query string.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /api/v1/history?repository=R&since=MS`: the cleanup audit log (read-only).
pub async fn history(
    index: &Arc<dyn Index>,
    query: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let repository = param(query, "repository");
    let since = match param(query, "since").map(|s| s.parse::<u64>()) {
        Some(Ok(ms)) => Some(crate::index::UnixMillis(ms)),
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "since: milliseconds since the epoch" }),
            );
        }
        None => None,
    };
    let index = index.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::cleanup::history::timeline(index.as_ref(), repository.as_deref(), since)
            .map(|entries| serde_json::to_value(entries).unwrap_or_default())
    })
    .await;
    match read {
        Ok(Ok(value)) => (StatusCode::OK, value),
        Ok(Err(error)) => failed(error.to_string()),
        Err(error) => failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let query = Some("x=1&reference=team%2Fapp%3Av1&empty");
        assert_eq!(param(query, "reference").as_deref(), Some("team/app:v1"));
        assert_eq!(param(query, "empty").as_deref(), Some(""));
        assert_eq!(param(query, "missing"), None);
        assert_eq!(param(Some("r=a%2"), "r").as_deref(), Some("a%2"));
        assert_eq!(param(Some("r=%zz"), "r").as_deref(), Some("%zz"));
    }
}
