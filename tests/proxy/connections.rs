//! Client connections as regkeeper serves them itself (bodyless `GET`/`HEAD` in HTTP/1.1) and as
//! it hands them to hyper (everything else), on raw sockets against a real Distribution:
//! pipelined requests answered in order, a connection that changes hands mid-way, closes asked
//! for by the client or by a shutdown.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use crate::support::{Registry, Regkeeper};

/// One answer read off a connection.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the next answer (to a request made with `method`); `buffer` keeps what follows it.
fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>, method: &str) -> Answer {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(length) = response.parse(buffer).unwrap() {
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_string(), value)
                })
                .collect();
            let status = response.code.unwrap();
            let mut answer = Answer {
                status,
                headers,
                body: Vec::new(),
            };
            let size = match answer.header("content-length") {
                Some(size) if method != "HEAD" => size.parse::<usize>().unwrap(),
                _ => 0,
            };
            while buffer.len() < length + size {
                fill(stream, buffer);
            }
            answer.body = buffer[length..length + size].to_vec();
            buffer.drain(..length + size);
            return answer;
        }
        fill(stream, buffer);
    }
}

fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk).expect("the proxy answers in time");
    assert!(
        read > 0,
        "closed early: {}",
        String::from_utf8_lossy(buffer)
    );
    buffer.extend_from_slice(&chunk[..read]);
}

/// Whether the proxy closed the connection (all that was left read).
fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

#[test]
fn pipelined_pulls_then_a_push_on_one_connection_are_answered_in_order() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let mut stream = proxy.raw_connection();
    // Three heads in one write: served here, one after the other.
    stream
        .write_all(
            b"GET /v2/ HTTP/1.1\r\nHost: proxy.test\r\n\r\n\
              HEAD /v2/team/app/manifests/nope HTTP/1.1\r\nHost: proxy.test\r\n\r\n\
              GET /v2/Team/app/tags/list HTTP/1.1\r\nHost: proxy.test\r\n\r\n",
        )
        .unwrap();
    let mut buffer = Vec::new();
    let base = read_answer(&mut stream, &mut buffer, "GET");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let unknown = read_answer(&mut stream, &mut buffer, "HEAD");
    assert_eq!(unknown.status, 404);
    let invalid = read_answer(&mut stream, &mut buffer, "GET");
    assert_eq!(invalid.status, 404);
    assert!(
        String::from_utf8_lossy(&invalid.body).contains("NAME_INVALID"),
        "{}",
        String::from_utf8_lossy(&invalid.body)
    );
    assert!(invalid.header("date").is_some());

    // A push starts on the same connection: hyper takes it over with what was read.
    stream
        .write_all(
            b"POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: proxy.test\r\n\
              Content-Length: 0\r\n\r\n",
        )
        .unwrap();
    let started = read_answer(&mut stream, &mut buffer, "POST");
    assert_eq!(started.status, 202);
    let location = started.header("location").unwrap().to_string();
    assert!(
        location.starts_with("http://proxy.test/v2/team/app/blobs/uploads/"),
        "{location}"
    );
    let path = location.strip_prefix("http://proxy.test").unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\n\r\n").as_bytes())
        .unwrap();
    let status = read_answer(&mut stream, &mut buffer, "GET");
    assert_eq!(status.status, 204);
    assert!(
        status
            .header("location")
            .unwrap()
            .starts_with("http://proxy.test/v2/team/app/blobs/uploads/")
    );
    assert!(buffer.is_empty());
}

#[test]
fn a_location_in_a_pull_served_here_points_at_the_proxy() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let mut stream = proxy.raw_connection();
    let mut buffer = Vec::new();
    stream
        .write_all(
            b"POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: proxy.test\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let started = read_answer(&mut stream, &mut buffer, "POST");
    let location = started.header("location").unwrap().to_string();
    let path = location.strip_prefix("http://proxy.test").unwrap();
    // A fresh connection whose first request is a pull: served without hyper.
    let mut stream = proxy.raw_connection();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: other.test:5555\r\n\r\n").as_bytes())
        .unwrap();
    let status = read_answer(&mut stream, &mut buffer, "GET");
    assert_eq!(status.status, 204);
    let location = status.header("location").unwrap();
    assert!(
        location.starts_with("http://other.test:5555/v2/team/app/blobs/uploads/"),
        "{location}"
    );
    assert_eq!(status.header("range"), Some("0-0"));
}

#[test]
fn a_client_that_asks_to_close_gets_its_answer_and_the_close() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    for (request, status) in [
        (
            "GET /v2/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            "HEAD /v2/a/manifests/b HTTP/1.1\r\nConnection: close\r\n\r\n",
            404,
        ),
        ("GET /v2/ HTTP/1.0\r\n\r\n", 200),
    ] {
        let mut stream = proxy.raw_connection();
        stream.write_all(request.as_bytes()).unwrap();
        let method = request.split(' ').next().unwrap();
        let answer = read_answer(&mut stream, &mut Vec::new(), method);
        assert_eq!(answer.status, status, "{request}");
        assert!(closed(&mut stream), "{request}");
    }
}

#[test]
fn a_shutdown_closes_idle_connections_and_ends_busy_ones_after_their_answer() {
    let registry = Registry::start();
    // One worker: each worker drains on its own, and the idle connection's close must tell
    // that the busy one's worker is draining too.
    let mut proxy = Regkeeper::start_with(
        &registry.url(),
        "workers: 1\ntimeouts:\n  shutdownGrace: 60s\n",
    );
    let mut idle = proxy.raw_connection();
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle, &mut Vec::new(), "GET").status, 200);
    let mut busy = proxy.raw_connection();
    busy.write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.terminate();
    // Well within the grace period: the idle connection is closed, not waited for.
    assert!(closed(&mut idle));
    busy.write_all(b"\r\n").unwrap();
    let answer = read_answer(&mut busy, &mut Vec::new(), "GET");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut busy));
    assert!(proxy.wait());
}
