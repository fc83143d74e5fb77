//! A bodyless `GET`/`HEAD` exchanged on one upstream connection by regkeeper itself: the request
//! head written at once, the response head read and parsed with `httparse`, the body framed by
//! [`framed`]. These are the pulls, and for them hyper's client dispatch (a connection task and a
//! channel each way) was a third of a proxied request's instructions (benches/callgrind.sh);
//! requests with a body stay with hyper.
//!
//! Everything read is bounded: a response head longer than [`MAX_HEAD_BYTES`] or with more than
//! [`MAX_HEADERS`] fields is refused, never buffered further.
//!
//! Owns: the wire format of a bodyless exchange. May call: nothing outside `upstream`.

mod connection;
pub mod framed;
mod head;
mod map;
mod stream;
#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use head::Parsed;

pub use connection::{ConnectionOption, connection_options};
pub use framed::Framing;
pub use head::Head;
pub use stream::Stream;

/// The longest response head read: Distribution's are under 1 KiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's client default).
pub const MAX_HEADERS: usize = 100;
/// What the first read of an answer asks for: a manifest and its head nearly always fit. Kept
/// in jemalloc's small size classes (up to 14 KiB), which its thread cache serves without
/// touching extents (16 KiB buffers showed up as extent bookkeeping under `perf`).
const FIRST_READ: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing came back: the connection failed or closed before any byte of an answer. On a
    /// kept-alive connection that is the upstream closing it as the request went out.
    #[error("the upstream connection closed before answering: {0}")]
    Lost(#[source] std::io::Error),
    #[error("the upstream connection failed mid-answer: {0}")]
    Io(#[source] std::io::Error),
    #[error("the upstream's response head is malformed: {0}")]
    Malformed(String),
    #[error("the upstream's response head exceeds {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
}

/// A bodyless request as sent: `METHOD path HTTP/1.1`, the headers as given, an empty line.
pub fn request_head<B>(request: &Request<B>) -> Bytes {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let headers = request.headers();
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target.len()
        + 32;
    let mut head = BytesMut::with_capacity(size);
    head.put_slice(request.method().as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(target.as_bytes());
    head.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// The upstream's answer, its body not yet read (beyond what came with the head).
pub struct Answer {
    pub head: Head,
    /// Bytes read after the head: the start of the body.
    pub buffer: BytesMut,
}

/// Sends `head` (a [`request_head`]) on `stream` and reads the answer's head.
pub async fn exchange(
    stream: &mut Stream,
    head: &[u8],
    method: &Method,
) -> Result<Answer, ExchangeError> {
    stream.write_all(head).await.map_err(ExchangeError::Lost)?;
    stream.flush().await.map_err(ExchangeError::Lost)?;
    let mut buffer = BytesMut::with_capacity(FIRST_READ);
    let mut answered = false;
    loop {
        let read = match stream.read_buf(&mut buffer).await {
            Ok(read) => read,
            Err(error) if !answered => return Err(ExchangeError::Lost(error)),
            Err(error) => return Err(ExchangeError::Io(error)),
        };
        if read == 0 {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(if answered {
                ExchangeError::Io(eof)
            } else {
                ExchangeError::Lost(eof)
            });
        }
        answered = true;
        while let Some(parsed) = head::parse(&mut buffer, method)? {
            if let Parsed::Final(head) = parsed {
                return Ok(Answer { head, buffer });
            }
        }
        if buffer.len() >= MAX_HEAD_BYTES {
            return Err(ExchangeError::HeadTooLarge);
        }
        if buffer.capacity() == buffer.len() {
            buffer.reserve(FIRST_READ);
        }
    }
}
