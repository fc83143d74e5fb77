//! The client's head from the upstream's, as hyper's server side wrote it before: hop-by-hop
//! fields gone, the upstream's URLs pointed at the proxy, `Date` and the framing added.

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};

use super::*;
use crate::oci_error::{OciError, OciErrorCode};

/// The head written for the upstream's `answer` to `method`.
fn written(answer: &str, method: Method, close: bool) -> (String, Sent) {
    let head = Head::parse(answer.as_bytes(), &method).unwrap().unwrap();
    let names = UpstreamNames::new("127.0.0.1:5000", 80, &["registry.example.com".into()]);
    let mut out = BytesMut::new();
    let origin = || "https://proxy:8443".to_string();
    let sent = upstream_head(&mut out, &head, &names, &origin, close);
    (String::from_utf8(out.to_vec()).unwrap(), sent)
}

#[test]
fn end_to_end_fields_pass_as_written_and_hop_by_hop_ones_do_not() {
    let (head, sent) = written(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\n\
         Docker-Content-Digest:sha256:ab\r\nX-Empty:\r\nContent-Length: 2\r\n\
         Date: Tue, 01 Dec 2026 17:00:00 GMT\r\n\r\n",
        Method::GET,
        false,
    );
    assert_eq!(sent, Sent::AsIs);
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Docker-Content-Digest:sha256:ab\r\nX-Empty:\r\nContent-Length: 2\r\n\
         Date: Tue, 01 Dec 2026 17:00:00 GMT\r\n\r\n"
    );
}

#[test]
fn a_head_without_date_gets_one_and_a_closing_one_says_so() {
    let (head, _) = written(
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        Method::HEAD,
        true,
    );
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "HTTP/1.1 404 Not Found");
    assert_eq!(lines[1], "Content-Length: 0");
    let date = lines[2].strip_prefix("date: ").expect("a date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(&lines[3..], ["connection: close", "", ""]);
}

#[test]
fn a_body_of_unknown_length_goes_in_chunks_and_any_length_beside_a_coding_goes() {
    for answer in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: d\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nDate: d\r\n\r\n",
        "HTTP/1.0 200 OK\r\nDate: d\r\n\r\n",
    ] {
        let (head, sent) = written(answer, Method::GET, false);
        assert_eq!(sent, Sent::Chunked, "{answer}");
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nDate: d\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}

#[test]
fn locations_and_links_that_name_the_upstream_point_at_the_proxy() {
    let (head, _) = written(
        "HTTP/1.1 307 Temporary Redirect\r\nDate: d\r\n\
         Location: http://127.0.0.1:5000/v2/a/blobs/sha256:ab?x=1\r\n\
         Link: <https://registry.example.com/v2/_catalog?last=b&n=1>; rel=\"next\"\r\n\
         Link: </v2/_catalog?last=c>; rel=\"next\"\r\nContent-Length: 0\r\n\r\n",
        Method::GET,
        false,
    );
    assert_eq!(
        head,
        "HTTP/1.1 307 Temporary Redirect\r\nDate: d\r\n\
         Location: https://proxy:8443/v2/a/blobs/sha256:ab?x=1\r\n\
         Link: <https://proxy:8443/v2/_catalog?last=b&n=1>; rel=\"next\"\r\n\
         Link: </v2/_catalog?last=c>; rel=\"next\"\r\nContent-Length: 0\r\n\r\n"
    );
    let (head, _) = written(
        "HTTP/1.1 307 Temporary Redirect\r\nDate: d\r\n\
         Location: https://cdn.example.net/blob?sig=1\r\nContent-Length: 0\r\n\r\n",
        Method::GET,
        false,
    );
    assert!(head.contains("\r\nLocation: https://cdn.example.net/blob?sig=1\r\n"));
}

#[test]
fn a_local_answer_has_its_body_except_for_head() {
    let response: http::Response<Bytes> =
        OciError::new(StatusCode::BAD_GATEWAY, OciErrorCode::Unavailable, "down").into_response();
    let body = response.body().clone();
    let mut out = BytesMut::new();
    local(&mut out, &response, false, false);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    assert!(text.contains("\r\ndate: "));
    assert!(text.ends_with(&format!("\r\n\r\n{}", String::from_utf8_lossy(&body))));
    let mut out = BytesMut::new();
    local(&mut out, &response, true, true);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
}

#[test]
fn chunks_carry_their_size_in_hex_and_the_last_is_empty() {
    let mut out = BytesMut::new();
    chunk(&mut out, &[b'x'; 26]);
    chunk(&mut out, b"");
    assert_eq!(
        &out[..],
        format!("1a\r\n{}\r\n0\r\n\r\n", "x".repeat(26)).as_bytes()
    );
}
