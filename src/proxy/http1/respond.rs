//! The answer's head as the client gets it, written straight from the upstream's: its fields in
//! its order and spelling, less the hop-by-hop ones (RFC 9110 §7.6.1) and those its `Connection`
//! names, with the upstream's URLs in `Location`/`Link` pointed at the proxy. What hyper's
//! server side added is added here too: `Date` when the upstream sent none, the chunked coding
//! when the length is unknown, `Connection: close` when the connection ends.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};

use crate::{
    proxy::headers::{is_hop_by_hop, rewrite_links, rewrite_url},
    upstream::{ConnectionOption, Framing, Head, UpstreamNames, connection_options},
};

/// How the body follows the head written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// No body, or one whose length the passed `Content-Length` gives.
    AsIs,
    /// In chunks: the upstream's length was not known up front.
    Chunked,
}

/// Writes the client's head for the upstream's `head` to `out`. `origin` gives where the
/// proxy's own URLs point; it is asked only for an answer that has one to rewrite.
pub fn upstream_head(
    out: &mut BytesMut,
    head: &Head,
    names: &UpstreamNames,
    origin: &dyn Fn() -> String,
    close: bool,
) -> Sent {
    status_line(out, head.status);
    let sent = match head.framing {
        Framing::Empty | Framing::Length(_) => Sent::AsIs,
        Framing::Chunked | Framing::Close => Sent::Chunked,
    };
    // A `Connection` left in the head names fields to drop (its options were consumed).
    let listed: Vec<&[u8]> = head
        .fields()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| connection_options(value))
        .filter_map(|option| match option {
            ConnectionOption::Names(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut dated = false;
    let mut client_origin = None;
    for (name, value, line) in head.lines() {
        if is_hop_by_hop(name)
            || listed.iter().any(|n| n.eq_ignore_ascii_case(name))
            || sent == Sent::Chunked && name.eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        let location = name.eq_ignore_ascii_case(b"location");
        let rewritten = if location || name.eq_ignore_ascii_case(b"link") {
            let origin = client_origin.get_or_insert_with(origin);
            std::str::from_utf8(value).ok().and_then(|text| {
                if location {
                    rewrite_url(text, names, origin)
                } else {
                    rewrite_links(text, names, origin)
                }
            })
        } else {
            None
        };
        match rewritten {
            Some(value) => field(out, name, value.as_bytes()),
            None => {
                out.put_slice(line);
                out.put_slice(b"\r\n");
            }
        }
    }
    if !dated {
        date(out);
    }
    if sent == Sent::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    end(out, close);
    sent
}

/// Writes a whole answer regkeeper made itself (an OCI error), its body unless `head_only`.
pub fn local(out: &mut BytesMut, response: &Response<Bytes>, head_only: bool, close: bool) {
    status_line(out, response.status());
    for (name, value) in response.headers() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    date(out);
    end(out, close);
    if !head_only {
        out.put_slice(response.body());
    }
}

fn status_line(out: &mut BytesMut, status: StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn end(out: &mut BytesMut, close: bool) {
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
}

std::thread_local! {
    /// The `Date` value of the current second, as hyper keeps it.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn date(out: &mut BytesMut) {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second || text.is_empty() {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        field(out, b"date", text.as_bytes());
    });
}

/// One chunk of a chunked body: size line, data, CRLF; the empty one ends the body.
pub fn chunk(out: &mut BytesMut, data: &[u8]) {
    chunk_size(out, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A chunk's size line, for data written after it and a CRLF after that.
pub fn chunk_size(out: &mut BytesMut, size: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{size:x}\r\n");
}

#[cfg(test)]
mod tests;
