//! Read-only views of the index on the admin listener, so `regkeeper tags`, `inspect` and
//! `history` work while `serve` holds the index: `GET /api/v1/tags[?repository=R]`,
//! `GET /api/v1/inspect?reference=R:T|R@D` and `GET /api/v1/history`. Same JSON as the
//! commands' `--output json`; the lists are streamed a page at a time.

use std::sync::Arc;

use http::{Response, StatusCode, header};
use tokio::sync::OwnedSemaphorePermit;

use super::{
    answer,
    stream::{self, AdminBody},
};
use crate::{
    cleanup::history::HistoryPages,
    index::Index,
    inspect::{self, InspectError},
};

/// `GET /api/v1/tags[?repository=R][&all=true]`, streamed (see `stream`).
pub async fn tags(
    index: &Arc<dyn Index>,
    query: Option<&str>,
    slot: OwnedSemaphorePermit,
) -> Response<AdminBody> {
    let repository = param(query, "repository");
    let all = param(query, "all").is_some_and(|v| v == "1" || v == "true");
    stream_pages(
        index,
        slot,
        move |index| inspect::TagPages::new(index, repository.as_deref(), all),
        |pages, index| pages.next(index),
    )
    .await
}

/// How a page source gives its next page (`None`: no more).
type NextPage<P, T, F> = fn(&mut P, &dyn Index) -> Result<Option<Vec<T>>, F>;

/// Streams the pages `open` starts (on a blocking thread: its failure is a 500, before anything
/// is sent) and `next` continues.
async fn stream_pages<P, T, E, F>(
    index: &Arc<dyn Index>,
    slot: OwnedSemaphorePermit,
    open: impl FnOnce(&dyn Index) -> Result<P, E> + Send + 'static,
    next: NextPage<P, T, F>,
) -> Response<AdminBody>
where
    P: Send + 'static,
    T: serde::Serialize + 'static,
    E: std::fmt::Display + Send + 'static,
    F: std::fmt::Display + 'static,
{
    let opened = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || open(index.as_ref())).await
    };
    let mut pages = match opened {
        Ok(Ok(pages)) => pages,
        Ok(Err(error)) => return answer(failed(error.to_string())),
        Err(error) => return answer(failed(error.to_string())),
    };
    let index = index.clone();
    streamed(stream::json_array(
        move || {
            let page = next(&mut pages, index.as_ref()).map_err(|e| e.to_string())?;
            Ok(page.map(|items| items.iter().map(element).collect()))
        },
        slot,
    ))
}

fn element(value: &impl serde::Serialize) -> Vec<u8> {
    // These plain structs always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

fn streamed(body: AdminBody) -> Response<AdminBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
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

/// `GET /api/v1/history?repository=R&since=MS`: the cleanup audit log (read-only), streamed.
pub async fn history(
    index: &Arc<dyn Index>,
    query: Option<&str>,
    slot: OwnedSemaphorePermit,
) -> Response<AdminBody> {
    let repository = param(query, "repository");
    let since = match param(query, "since").map(|s| s.parse::<u64>()) {
        Some(Ok(ms)) => Some(crate::index::UnixMillis(ms)),
        Some(Err(_)) => {
            return answer((
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "since: milliseconds since the epoch" }),
            ));
        }
        None => None,
    };
    stream_pages(
        index,
        slot,
        move |index| HistoryPages::new(index, repository.as_deref(), since),
        |pages, index| pages.next(index),
    )
    .await
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
