//! Answers sent as they are read: a JSON array, one element per line, produced a page at a
//! time off the runtime and sent before the next page is read. However many elements there
//! are, memory holds one page and a few chunks in flight; a client that stops reading for
//! [`IDLE`] is dropped, and with it the view's slot.
//!
//! Owns: the admin listener's response body and the array framing. May call: nothing else.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// The admin listener's response body: whole, or streamed.
pub type AdminBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Chunks queued ahead of a slow client.
const IN_FLIGHT: usize = 4;
/// A client that reads nothing for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);

pub fn whole(bytes: impl Into<Bytes>) -> AdminBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// One page of elements, each already serialized; `None` when there are no more.
pub type Page = Result<Option<Vec<Vec<u8>>>, String>;

/// Streams `[`, the elements `next_page` gives (called on a blocking thread until it gives
/// `None`), `]`. `slot` is held until the last byte is sent or the client is gone. A failure
/// part-way is logged and cuts the response short, so the client sees a broken body, never a
/// well-formed partial answer.
pub fn json_array<P>(next_page: P, slot: OwnedSemaphorePermit) -> AdminBody
where
    P: FnMut() -> Page + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::spawn(async move {
        let _slot = slot;
        let send = |chunk: Result<Bytes, std::io::Error>| {
            let tx = tx.clone();
            async move { tx.send_timeout(chunk, IDLE).await.is_ok() }
        };
        if !send(Ok(Bytes::from_static(b"["))).await {
            return;
        }
        let mut first = true;
        // The producer travels to the blocking thread and back with each page.
        let mut producer = Some(next_page);
        loop {
            let Some(mut next_page) = producer.take() else {
                return;
            };
            let read = tokio::task::spawn_blocking(move || {
                let page = next_page();
                (next_page, page)
            })
            .await;
            let page = match read {
                Ok((rest, page)) => {
                    producer = Some(rest);
                    page
                }
                Err(error) => Err(error.to_string()),
            };
            match page {
                Ok(Some(elements)) => {
                    let mut chunk = Vec::new();
                    for element in elements {
                        chunk.extend_from_slice(if first { b"\n" } else { b",\n" });
                        first = false;
                        chunk.extend_from_slice(&element);
                    }
                    if !send(Ok(Bytes::from(chunk))).await {
                        tracing::info!("admin view dropped: the client stopped reading");
                        return;
                    }
                }
                Ok(None) => break,
                Err(why) => {
                    tracing::error!(why, "admin view failed part-way; the answer is cut short");
                    send(Err(std::io::Error::other(why))).await;
                    return;
                }
            }
        }
        send(Ok(Bytes::from_static(b"\n]\n"))).await;
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    StreamBody::new(frames).boxed_unsync()
}
