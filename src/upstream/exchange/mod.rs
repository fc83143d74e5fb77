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

pub mod framed;
mod stream;
#[cfg(test)]
mod tests;

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
    header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Parameters of a kept-alive connection (RFC 2068 §19.7.1), hop-by-hop.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Field names remembered per thread, as the upstream spells them.
const NAMES_KEPT: usize = 32;
/// Longer names are parsed each time (nothing an upstream sends on every answer is this long).
const NAME_KEPT_UP_TO: usize = 48;

std::thread_local! {
    static NAMES: std::cell::RefCell<Vec<(Box<[u8]>, HeaderName)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The field name `bytes` spells. An upstream sends the same dozen names on every answer, and
/// parsing one (validated, lowercased, looked up among the standard names) cost more than
/// finding it among those already seen by its exact bytes; the first [`NAMES_KEPT`] names
/// seen are kept, so an upstream sending ever new names changes nothing but their speed.
fn field_name(bytes: &[u8]) -> Result<HeaderName, ExchangeError> {
    NAMES.with_borrow_mut(|names| {
        if let Some((_, name)) = names.iter().find(|(seen, _)| **seen == *bytes) {
            return Ok(name.clone());
        }
        let name =
            HeaderName::from_bytes(bytes).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
        if names.len() < NAMES_KEPT && bytes.len() <= NAME_KEPT_UP_TO {
            names.push((bytes.into(), name.clone()));
        }
        Ok(name)
    })
}

pub use framed::Framing;
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
    pub response: Response<()>,
    pub framing: Framing,
    /// Bytes read after the head: the start of the body.
    pub buffer: BytesMut,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
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
        while let Some(answer) = parse(&mut buffer, method)? {
            match answer {
                Parsed::Informational => continue,
                Parsed::Final(answer) => return Ok(answer),
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

enum Parsed {
    /// A `1xx` (such as `103 Early Hints`), taken off the buffer: the answer follows.
    Informational,
    Final(Answer),
}

/// Where a header's name and value lie in the head.
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// A complete head at the start of `buffer`, taken off it; `None` while it is still partial.
fn parse(buffer: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, ExchangeError> {
    // Uninitialised: zeroing a hundred entries per answer cost more than parsing it.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buffer,
        &mut headers,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(ExchangeError::Malformed(error.to_string())),
    };
    let code = response.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        let _ = buffer.split_to(length);
        return Ok(Some(Parsed::Informational));
    }
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| *s != StatusCode::SWITCHING_PROTOCOLS)
        .ok_or_else(|| ExchangeError::Malformed(format!("status {code}")))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets first: the header slices borrow the buffer that is frozen below.
    let base = buffer.as_ptr() as usize;
    let offset = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start, start + part.len())
    };
    let fields: Vec<Field> = response
        .headers
        .iter()
        .map(|header| Field {
            name: offset(header.name.as_bytes()),
            value: offset(header.value),
        })
        .collect();
    let head = buffer.split_to(length).freeze();
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut connection = Connection::default();
    for field in &fields {
        let name = field_name(&head[field.name.0..field.name.1])?;
        let value = &head[field.value.0..field.value.1];
        // What only manages this connection is consumed here (the proxy strips it anyway);
        // a `Connection` that names other fields stays for the proxy to strip those too.
        if name == CONNECTION && connection.read(value) || name == KEEP_ALIVE {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1))
            .map_err(|e| ExchangeError::Malformed(e.to_string()))?;
        map.append(name, value);
    }
    let (framing, reusable_framing) = framing(&map, status, method)?;
    let keep_alive = reusable_framing && connection.persistent(version);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Some(Parsed::Final(Answer {
        response,
        framing,
        buffer: std::mem::take(buffer),
        keep_alive,
    })))
}

/// How the body is delimited (RFC 9112 §6.3), and whether the connection can outlive it.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    method: &Method,
) -> Result<(Framing, bool), ExchangeError> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        // A length beside a coding is a message that could be read two ways: read it the
        // one way RFC 9112 allows, and use the connection for nothing else.
        let alone = !headers.contains_key(CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked, alone)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let parsed = std::str::from_utf8(part)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| ExchangeError::Malformed("invalid content-length".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(ExchangeError::Malformed(
                    "conflicting content-length".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(length) => (Framing::Length(length), true),
        None => (Framing::Close, false),
    })
}

/// The `Connection` header's connection options, as far as they concern reuse.
#[derive(Default)]
struct Connection {
    close: bool,
    keep_alive: bool,
}

impl Connection {
    /// Takes in one `Connection` value; whether it holds nothing but `close`/`keep-alive`.
    fn read(&mut self, value: &[u8]) -> bool {
        let mut only_options = true;
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                only_options = false;
            }
        }
        only_options
    }

    /// Whether the upstream keeps the connection open after this answer.
    fn persistent(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}
