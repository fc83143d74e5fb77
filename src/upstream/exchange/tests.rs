//! The exchange against a scripted upstream on a loopback socket: each framing, split at awkward
//! places, and each malformed answer it must refuse.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header::HOST};
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{
    Answer, ExchangeError, Framing, Stream, exchange,
    framed::{FramedBody, Home},
    request_head,
};

enum Step {
    /// Read one request head.
    Request,
    Send(&'static [u8]),
    /// Let the bytes sent so far arrive alone.
    Pause,
}

/// A connection to an upstream that plays `script`, then closes; its handle yields the request
/// heads it read.
async fn upstream(script: Vec<Step>) -> (Stream, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut heads = Vec::new();
        for step in script {
            match step {
                Step::Request => {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if socket.read(&mut byte).await.unwrap() == 0 {
                            return heads;
                        }
                        head.push(byte[0]);
                    }
                    heads.push(String::from_utf8(head).unwrap());
                }
                Step::Send(bytes) => socket.write_all(bytes).await.unwrap(),
                Step::Pause => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        heads
    });
    let stream = Stream::Plain(TcpStream::connect(addr).await.unwrap());
    (stream, server)
}

fn get(method: Method) -> Bytes {
    let request = Request::builder()
        .method(method)
        .uri("/v2/app/manifests/latest?x=1")
        .header(HOST, "registry:5000")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .body(())
        .unwrap();
    request_head(&request)
}

/// Where a connection read to its end went.
#[derive(Default)]
struct Kennel(Mutex<Vec<Stream>>);

impl Home for Kennel {
    fn take_back(&self, stream: Stream) {
        self.0.lock().unwrap().push(stream);
    }
}

async fn ask(stream: &mut Stream, method: Method) -> Result<Answer, ExchangeError> {
    exchange(stream, &get(method.clone()), &method).await
}

/// The answer's fields as an `http` header map.
fn fields(answer: &Answer) -> http::HeaderMap {
    answer.head.to_response().unwrap().headers().clone()
}

/// The whole body of `answer` read through a [`FramedBody`], and whether the connection came back.
async fn read_body(stream: Stream, answer: Answer) -> (Result<Bytes, std::io::Error>, bool) {
    let kennel = Arc::new(Kennel::default());
    let home = answer
        .head
        .keep_alive
        .then(|| Arc::clone(&kennel) as Arc<dyn Home>);
    let body = FramedBody::new(stream, answer.buffer, answer.head.framing, home);
    let data = body.collect().await.map(|c| c.to_bytes());
    let back = !kennel.0.lock().unwrap().is_empty();
    (data, back)
}

#[test]
fn the_request_head_is_the_method_target_and_headers() {
    assert_eq!(
        &get(Method::GET)[..],
        b"GET /v2/app/manifests/latest?x=1 HTTP/1.1\r\nhost: registry:5000\r\naccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    );
}

#[tokio::test]
async fn a_length_body_split_across_reads_is_read_exactly_and_the_connection_reused() {
    let (mut stream, server) = upstream(vec![
        Step::Request,
        Step::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nDocker-Content-Digest: sha256:ab\r\n\r\nhel",
        ),
        Step::Pause,
        Step::Send(b"lo wor"),
        Step::Pause,
        Step::Send(b"ld"),
        Step::Request,
        Step::Send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"),
    ])
    .await;
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert_eq!(answer.head.status, StatusCode::OK);
    assert_eq!(fields(&answer)["docker-content-digest"], "sha256:ab");
    assert_eq!(answer.head.framing, Framing::Length(11));
    let kennel = Arc::new(Kennel::default());
    let body = FramedBody::new(
        stream,
        answer.buffer,
        answer.head.framing,
        Some(Arc::clone(&kennel) as Arc<dyn Home>),
    );
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
    let mut stream = kennel
        .0
        .lock()
        .unwrap()
        .pop()
        .expect("the connection came back");
    assert!(stream.is_reusable());
    let second = ask(&mut stream, Method::GET).await.unwrap();
    assert_eq!(second.head.status, StatusCode::NOT_FOUND);
    assert_eq!(&second.buffer[..], b"{}");
    assert_eq!(server.await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_is_decoded_byte_by_byte() {
    let (mut stream, _server) = upstream(vec![
        Step::Request,
        Step::Send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=val"),
        Step::Pause,
        Step::Send(b"ue\r\nhel"),
        Step::Pause,
        Step::Send(b"lo\r"),
        Step::Pause,
        Step::Send(b"\nA\r\n, chunked!\r\n0\r\nX-Trailer: 1\r"),
        Step::Pause,
        Step::Send(b"\n\r\n"),
    ])
    .await;
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert_eq!(answer.head.framing, Framing::Chunked);
    let (data, back) = read_body(stream, answer).await;
    assert_eq!(data.unwrap(), "hello, chunked!");
    assert!(back, "a chunked body read to its end frees the connection");
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_it_and_the_connection_not_reused() {
    let (mut stream, _server) = upstream(vec![
        Step::Request,
        Step::Send(b"HTTP/1.1 200 OK\r\n\r\nall of"),
        Step::Pause,
        Step::Send(b" it"),
    ])
    .await;
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert_eq!(answer.head.framing, Framing::Close);
    assert!(!answer.head.keep_alive);
    let (data, back) = read_body(stream, answer).await;
    assert_eq!(data.unwrap(), "all of it");
    assert!(!back);
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_whatever_they_announce() {
    for (method, answer) in [
        (
            Method::HEAD,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 527\r\n\r\n"[..],
        ),
        (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        ),
    ] {
        let (mut stream, _server) = upstream(vec![Step::Request, Step::Send(answer)]).await;
        let parsed = ask(&mut stream, method).await.unwrap();
        assert_eq!(parsed.head.framing, Framing::Empty);
        assert!(parsed.head.keep_alive);
        let (data, back) = read_body(stream, parsed).await;
        assert!(data.unwrap().is_empty());
        assert!(back);
    }
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let (mut stream, _server) = upstream(vec![
        Step::Request,
        Step::Send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
        Step::Pause,
        Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    ])
    .await;
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert_eq!(answer.head.status, StatusCode::OK);
    assert!(!fields(&answer).contains_key("link"));
    assert!(!answer.head.keep_alive, "Connection: close is honoured");
    assert!(!fields(&answer).contains_key("connection"));
}

#[tokio::test]
async fn connection_options_are_consumed_and_a_connection_naming_fields_is_kept() {
    let (mut stream, _server) = upstream(vec![
        Step::Request,
        Step::Send(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"),
        Step::Request,
        Step::Send(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n"),
    ])
    .await;
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert!(
        answer.head.keep_alive,
        "HTTP/1.0 with keep-alive stays open"
    );
    assert!(!fields(&answer).contains_key("keep-alive"));
    assert_eq!(fields(&answer)["content-length"], "0");
    assert!(!fields(&answer).contains_key("connection"));
    let answer = ask(&mut stream, Method::GET).await.unwrap();
    assert!(answer.head.keep_alive);
    assert_eq!(fields(&answer)["connection"], "keep-alive, X-Hop");
    assert_eq!(fields(&answer)["x-hop"], "1");
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    let many: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: 1\r\n".repeat(super::MAX_HEADERS + 1)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let long: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Long: {}",
            "a".repeat(super::MAX_HEAD_BYTES)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    // (answer, whether it is refused for its size rather than its form)
    let cases: [(&[u8], bool); 6] = [
        (b"HTTP/1.1 2000 OK\r\n\r\n", false),
        (b"SMTP ready\r\n\r\n", false),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false),
        (many, false),
        (long, true),
    ];
    for (answer, too_large) in cases {
        let (mut stream, _server) = upstream(vec![Step::Request, Step::Send(answer)]).await;
        let error = ask(&mut stream, Method::GET).await.err().expect("refused");
        match error {
            ExchangeError::HeadTooLarge => assert!(too_large),
            ExchangeError::Malformed(_) => assert!(!too_large),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_upstream_that_closes_before_answering_lost_the_request_and_mid_head_failed_it() {
    let (mut stream, _server) = upstream(vec![Step::Request]).await;
    let error = ask(&mut stream, Method::GET).await.err().unwrap();
    assert!(matches!(error, ExchangeError::Lost(_)), "{error:?}");

    let (mut stream, _server) =
        upstream(vec![Step::Request, Step::Send(b"HTTP/1.1 200 OK\r\nCont")]).await;
    let error = ask(&mut stream, Method::GET).await.err().unwrap();
    assert!(matches!(error, ExchangeError::Io(_)), "{error:?}");
}

#[tokio::test]
async fn bodies_cut_short_or_misframed_fail_and_the_connection_is_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let (mut stream, _server) = upstream(vec![Step::Request, Step::Send(answer)]).await;
        let parsed = ask(&mut stream, Method::GET).await.unwrap();
        let (data, back) = read_body(stream, parsed).await;
        assert!(data.is_err(), "{}", String::from_utf8_lossy(answer));
        assert!(!back);
    }
}

#[tokio::test]
async fn a_connection_with_unasked_bytes_or_closed_is_not_reusable() {
    let (mut stream, _server) = upstream(vec![
        Step::Request,
        Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        Step::Pause,
        Step::Send(b"HTTP/1.1 408 Request Timeout\r\n\r\n"),
        Step::Pause,
        Step::Pause,
    ])
    .await;
    ask(&mut stream, Method::GET).await.unwrap();
    assert!(stream.is_reusable(), "idle and clean");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!stream.is_reusable(), "an answer nobody asked for");

    let (mut stream, server) = upstream(vec![Step::Request]).await;
    stream.write_all(&get(Method::GET)).await.unwrap();
    server.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!stream.is_reusable(), "closed by the upstream");
}

/// Names are remembered by their exact bytes: each spelling parses to its one name, a thread
/// that has seen more names than it keeps still parses new ones, and a malformed name is
/// refused however many were seen.
#[test]
fn field_names_are_the_same_remembered_or_parsed() {
    std::thread::spawn(|| {
        for round in 0..2 {
            for spelling in ["Content-Type", "content-type", "CONTENT-TYPE"] {
                assert_eq!(
                    super::map::field_name(spelling.as_bytes()).unwrap(),
                    http::header::CONTENT_TYPE,
                    "round {round}"
                );
            }
            let custom = super::map::field_name(b"Docker-Content-Digest").unwrap();
            assert_eq!(custom.as_str(), "docker-content-digest");
        }
        for n in 0..100 {
            let name = format!("X-Field-{n}");
            assert_eq!(
                super::map::field_name(name.as_bytes()).unwrap().as_str(),
                name.to_ascii_lowercase()
            );
        }
        let long = "x".repeat(100);
        assert_eq!(
            super::map::field_name(long.as_bytes()).unwrap().as_str(),
            long
        );
        for bad in [&b"bad name"[..], b"", b"colon:", b"\xff"] {
            assert!(super::map::field_name(bad).is_err());
            assert!(
                super::map::field_name(bad).is_err(),
                "refused again, not remembered"
            );
        }
        let (kept, most) = super::map::names_kept();
        assert_eq!(kept, most);
    })
    .join()
    .unwrap();
}
