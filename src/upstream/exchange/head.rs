//! An answer's head as the upstream sent it: the status, the fields by their place in the bytes
//! read, and what the head says of the body's framing and of the connection's reuse. Nothing is
//! copied or validated beyond what `httparse` checks: the proxy passes the fields on as they are,
//! and [`Head::to_response`] builds an `http::Response` only for those who want one.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};

use super::{
    ExchangeError, Framing, MAX_HEADERS,
    connection::{ConnectionOption, connection_options},
};

/// Where one field's name and value lie in [`Head::bytes`].
#[derive(Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// A parsed response head.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
    bytes: Bytes,
    /// The end-to-end fields, and any `Connection` that names others (for the proxy to strip
    /// those): the `Connection` options and `Keep-Alive` that only manage this connection are
    /// consumed here.
    fields: Vec<Field>,
}

pub(super) enum Parsed {
    /// A `1xx` (such as `103 Early Hints`), taken off the buffer: the answer follows.
    Informational,
    Final(Head),
}

impl Head {
    /// The final head at the start of `bytes`, informational ones skipped; `None` when it is
    /// not complete. The exchange reads heads off a connection; this reads one from bytes.
    pub fn parse(bytes: &[u8], method: &Method) -> Result<Option<Head>, ExchangeError> {
        let mut buffer = BytesMut::from(bytes);
        while let Some(parsed) = parse(&mut buffer, method)? {
            if let Parsed::Final(head) = parsed {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }

    /// The fields as `(name, value, line)`, in the upstream's order and spelling; `line` is
    /// the field as written, from its name to the end of its value (without the line's end).
    pub fn lines(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8], &[u8])> {
        self.fields.iter().map(|field| {
            let (name, value) = (field.name, field.value);
            (
                &self.bytes[name.0 as usize..name.1 as usize],
                &self.bytes[value.0 as usize..value.1 as usize],
                &self.bytes[name.0 as usize..value.1 as usize],
            )
        })
    }

    /// The fields as `(name, value)`.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.lines().map(|(name, value, _)| (name, value))
    }

    /// `part` of the head (a name or value it yielded) as shared bytes, without a copy.
    pub(super) fn shared(&self, part: &[u8]) -> Bytes {
        self.bytes.slice_ref(part)
    }
}

/// A complete head at the start of `buffer`, taken off it; `None` while it is still partial.
pub(super) fn parse(
    buffer: &mut BytesMut,
    method: &Method,
) -> Result<Option<Parsed>, ExchangeError> {
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
    // Offsets, not slices: the slices borrow the buffer that is frozen below. A head is at
    // most `MAX_HEAD_BYTES`, so they fit in `u32`.
    let base = buffer.as_ptr() as usize;
    let offset = |part: &[u8]| {
        let start = (part.as_ptr() as usize - base) as u32;
        (start, start + part.len() as u32)
    };
    let mut connection = Connection::default();
    let mut framing = FramingFields::default();
    let mut fields = Vec::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") && connection.read(header.value)
            || name.eq_ignore_ascii_case(b"keep-alive")
        {
            continue;
        }
        framing.read(name, header.value);
        fields.push(Field {
            name: offset(name),
            value: offset(header.value),
        });
    }
    let (framing, reusable_framing) = framing.framing(status, method)?;
    Ok(Some(Parsed::Final(Head {
        status,
        version,
        framing,
        keep_alive: reusable_framing && connection.persistent(version),
        bytes: buffer.split_to(length).freeze(),
        fields,
    })))
}

/// What the fields say of the body's length (RFC 9112 §6.3).
#[derive(Default)]
struct FramingFields {
    /// The last transfer coding named, if any field named one: whether it is `chunked`.
    chunked: Option<bool>,
    length: Option<u64>,
    /// A length field that does not parse: refused unless a coding makes lengths moot.
    bad_length: Option<&'static str>,
}

impl FramingFields {
    fn read(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|b| *b == b',') {
                let part = part.trim_ascii();
                let parsed = std::str::from_utf8(part)
                    .ok()
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| p.parse::<u64>().ok());
                match parsed {
                    None => self.bad_length = Some("invalid content-length"),
                    Some(parsed) if self.length.is_some_and(|l| l != parsed) => {
                        self.bad_length = Some("conflicting content-length");
                    }
                    Some(parsed) => self.length = Some(parsed),
                }
            }
        }
    }

    /// How the body is delimited, and whether the connection can outlive it.
    fn framing(
        &self,
        status: StatusCode,
        method: &Method,
    ) -> Result<(Framing, bool), ExchangeError> {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Framing::Empty, true));
        }
        if let (None, Some(error)) = (self.chunked, self.bad_length) {
            return Err(ExchangeError::Malformed(error.into()));
        }
        Ok(match (self.chunked, self.length) {
            // A length beside a coding is a message that could be read two ways: read it the
            // one way RFC 9112 allows, and use the connection for nothing else.
            (Some(true), length) => (Framing::Chunked, length.is_none()),
            (Some(false), _) => (Framing::Close, false),
            (None, Some(length)) => (Framing::Length(length), true),
            (None, None) => (Framing::Close, false),
        })
    }
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
        for option in connection_options(value) {
            match option {
                ConnectionOption::Close => self.close = true,
                ConnectionOption::KeepAlive => self.keep_alive = true,
                ConnectionOption::Names(_) => only_options = false,
            }
        }
        only_options
    }

    /// Whether the upstream keeps the connection open after this answer.
    fn persistent(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}
