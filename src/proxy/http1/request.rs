//! The client's request head, read for the one kind of request served without hyper: a
//! bodyless `GET`/`HEAD` in HTTP/1.1 with an origin-form target. Parsing it also writes the head
//! sent upstream (hop-by-hop fields and `Host` replaced), so the fields are walked once. Any other
//! request, and any head `httparse` refuses, is left to hyper, which answers it as it always has
//! (a `400`, a `431`, a streamed upload).

use std::{mem::MaybeUninit, ops::Range};

use bytes::{BufMut, BytesMut};
use http::Method;

use crate::{
    proxy::headers::is_hop_by_hop,
    upstream::{ConnectionOption, connection_options},
};

/// Fields read here; a head with more goes to hyper, whose limit is the configured one.
const FIELDS: usize = 64;
/// Field names a `Connection` header may list; more go to hyper.
const LISTED: usize = 8;

/// A request served here.
pub struct Pull {
    pub method: Method,
    /// The head's length in the buffer.
    pub length: usize,
    /// Where the target (path and query) lies in the buffer.
    pub target: Range<usize>,
    /// Where the client's `Host` value lies in the buffer.
    pub host: Option<Range<usize>>,
    /// The client asked to close the connection after this answer.
    pub close: bool,
}

impl Pull {
    /// The path, without the query.
    pub fn path<'b>(&self, buffer: &'b [u8]) -> &'b str {
        let target = &buffer[self.target.clone()];
        let path = target.split(|b| *b == b'?').next().unwrap_or_default();
        // httparse allows only visible ASCII in a target.
        std::str::from_utf8(path).unwrap_or_default()
    }
}

pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Pull(Pull),
    /// For hyper.
    Other,
}

/// Whether the target has a byte that `http` may refuse in a URI (hyper answers those `400`)
/// or that no registry path needs: such requests are left to hyper. Checking the few bytes
/// here costs a tenth of parsing the target into an `http::uri::PathAndQuery`.
fn unusual(target: &[u8]) -> bool {
    const UNUSUAL: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            table[byte] = byte >= 0x80
                || matches!(byte as u8, b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}');
            byte += 1;
        }
        table
    };
    target.iter().any(|&b| UNUSUAL[usize::from(b)])
}

/// Parses the head at the start of `buffer`. For a [`Pull`], `upstream` receives the head to
/// send (`Host: upstream_host`).
pub fn parse(buffer: &[u8], upstream_host: &[u8], upstream: &mut BytesMut) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buffer,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match request.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let target = request.path.unwrap_or_default();
    if request.version != Some(1) || !target.starts_with('/') || unusual(target.as_bytes()) {
        return Parsed::Other;
    }
    let base = buffer.as_ptr() as usize;
    let place = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let mut listed: [&[u8]; LISTED] = [&[]; LISTED];
    let mut listed_count = 0;
    let mut close = false;
    let mut host = None;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case(b"host") {
            host.get_or_insert_with(|| place(field.value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in connection_options(field.value) {
                match option {
                    ConnectionOption::Close => close = true,
                    ConnectionOption::KeepAlive => {}
                    ConnectionOption::Names(named) => {
                        let Some(slot) = listed.get_mut(listed_count) else {
                            return Parsed::Other;
                        };
                        *slot = named;
                        listed_count += 1;
                    }
                }
            }
        }
    }
    upstream_head(
        upstream,
        &method,
        target,
        upstream_host,
        request.headers,
        &listed[..listed_count],
    );
    Parsed::Pull(Pull {
        target: place(target.as_bytes()),
        method,
        length,
        host,
        close,
    })
}

/// Writes the head sent upstream: the request line, `Host: upstream_host`, and the client's
/// fields but for `Host`, the hop-by-hop ones and those its `Connection` lists.
fn upstream_head(
    upstream: &mut BytesMut,
    method: &Method,
    target: &str,
    upstream_host: &[u8],
    fields: &[httparse::Header<'_>],
    listed: &[&[u8]],
) {
    upstream.clear();
    upstream.put_slice(method.as_str().as_bytes());
    upstream.put_u8(b' ');
    upstream.put_slice(target.as_bytes());
    upstream.put_slice(b" HTTP/1.1\r\nhost: ");
    upstream.put_slice(upstream_host);
    upstream.put_slice(b"\r\n");
    for field in fields {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host")
            || is_hop_by_hop(name)
            || listed.iter().any(|l| l.eq_ignore_ascii_case(name))
        {
            continue;
        }
        upstream.put_slice(name);
        upstream.put_slice(b": ");
        upstream.put_slice(field.value);
        upstream.put_slice(b"\r\n");
    }
    upstream.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(head: &str) -> (Pull, String) {
        let mut upstream = BytesMut::new();
        match parse(head.as_bytes(), b"registry:5000", &mut upstream) {
            Parsed::Pull(pull) => (pull, String::from_utf8(upstream.to_vec()).unwrap()),
            Parsed::Partial => panic!("partial: {head}"),
            Parsed::Other => panic!("other: {head}"),
        }
    }

    #[test]
    fn a_pull_goes_upstream_with_its_host_replaced_and_hop_by_hop_fields_gone() {
        let head = "GET /v2/app/manifests/latest?x=1 HTTP/1.1\r\nHost: proxy:8080\r\n\
                    Connection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\n\
                    TE: trailers\r\nProxy-Authorization: Basic eA==\r\nAuthorization: Bearer t\r\n\
                    Accept: application/vnd.oci.image.index.v1+json\r\n\r\nGET /next";
        let (pull, upstream) = pull(head);
        assert_eq!(pull.method, Method::GET);
        assert_eq!(pull.length, head.len() - "GET /next".len());
        assert_eq!(&head[pull.target.clone()], "/v2/app/manifests/latest?x=1");
        assert_eq!(pull.path(head.as_bytes()), "/v2/app/manifests/latest");
        assert_eq!(&head[pull.host.unwrap()], "proxy:8080");
        assert!(!pull.close);
        assert_eq!(
            upstream,
            "GET /v2/app/manifests/latest?x=1 HTTP/1.1\r\nhost: registry:5000\r\n\
             Authorization: Bearer t\r\nAccept: application/vnd.oci.image.index.v1+json\r\n\r\n"
        );
    }

    #[test]
    fn a_head_request_that_asks_to_close_is_served_here_and_closes() {
        let (pull, upstream) = pull("HEAD /v2/ HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert_eq!(pull.method, Method::HEAD);
        assert!(pull.close);
        assert!(pull.host.is_none());
        assert_eq!(
            upstream,
            "HEAD /v2/ HTTP/1.1\r\nhost: registry:5000\r\n\r\n"
        );
    }

    /// Every target served here is one `http` takes (so hyper would not have refused it).
    #[test]
    fn a_target_served_here_is_a_valid_uri_in_path_and_query() {
        for byte in 0x21u8..=0x7e {
            let c = byte as char;
            for target in [format!("/v2/a{c}b"), format!("/v2/a?b{c}d")] {
                if !unusual(target.as_bytes()) {
                    assert!(
                        http::uri::PathAndQuery::try_from(target.as_str()).is_ok(),
                        "{target}"
                    );
                }
            }
        }
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for head in [
            "PUT /v2/a/manifests/t HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "GET /v2/ HTTP/1.0\r\n\r\n",
            "GET http://proxy/v2/ HTTP/1.1\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nConnection: a, b, c, d, e, f, g, h, i\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nBad Name: 1\r\n\r\n",
            "GET /v2/a<b HTTP/1.1\r\n\r\n",
            "GET /v2/a`b HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let mut upstream = BytesMut::new();
            assert!(
                matches!(parse(head.as_bytes(), b"r", &mut upstream), Parsed::Other),
                "{head}"
            );
        }
        let many = format!(
            "GET /v2/ HTTP/1.1\r\n{}\r\n",
            "X-A: 1\r\n".repeat(FIELDS + 1)
        );
        let mut upstream = BytesMut::new();
        assert!(matches!(
            parse(many.as_bytes(), b"r", &mut upstream),
            Parsed::Other
        ));
        assert!(matches!(
            parse(b"GET /v2/ HTTP/1.1\r\nHost: a", b"r", &mut upstream),
            Parsed::Partial
        ));
    }
}
