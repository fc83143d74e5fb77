//! The proxy under failure: upstream down, silent or resetting; abusive clients; shutdown with
//! uploads in flight. Fakes appear only where a real registry cannot produce the fault.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, empty},
    image::{noise, sha256},
};

#[tokio::test]
async fn upstream_down_gives_502_and_proxy_recovers_after_restart() {
    let mut registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    let base = format!("{}/v2/", proxy.url());
    assert_eq!(client.get(&base, &[]).await.status, StatusCode::OK);

    registry.stop();
    let answer = client.get(&base, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["errors"][0]["code"], "UNAVAILABLE");
    let ready = client
        .get(&format!("http://{}/readyz", proxy.admin), &[])
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    registry.restart();
    assert_eq!(client.get(&base, &[]).await.status, StatusCode::OK);
    let ready = client
        .get(&format!("http://{}/readyz", proxy.admin), &[])
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(proxy.logs().contains("upstream request failed"));
}

/// A TCP server that accepts and then does `behaviour` to every connection.
fn fake_upstream(behaviour: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || behaviour(stream));
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn silent_upstream_gives_504() {
    let upstream = fake_upstream(|mut stream| {
        let mut buf = [0; 1024];
        let _ = stream.read(&mut buf);
        std::thread::sleep(Duration::from_secs(30));
    });
    let proxy = Regkeeper::start_with(&upstream, "timeouts:\n  upstreamResponse: 1s\n");
    let answer = HttpClient::default()
        .get(&format!("{}/v2/", proxy.url()), &[])
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["errors"][0]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn resetting_upstream_gives_502_and_proxy_keeps_serving() {
    let upstream = fake_upstream(|mut stream| {
        let mut buf = [0; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.shutdown(Shutdown::Both);
    });
    let proxy = Regkeeper::start(&upstream);
    let client = HttpClient::default();
    for _ in 0..3 {
        let answer = client.get(&format!("{}/v2/", proxy.url()), &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.json()["errors"][0]["code"], "UNAVAILABLE");
    }
    let health = client
        .get(&format!("http://{}/healthz", proxy.admin), &[])
        .await;
    assert_eq!(health.status, StatusCode::OK);
}

/// Writes `request` as it is on a fresh connection and reads until the proxy closes it.
fn raw_exchange(proxy: &Regkeeper, request: &str) -> String {
    let mut stream = proxy.raw_connection();
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn oversized_request_head_is_refused() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let huge = "x".repeat(100 * 1024);
    let answer = raw_exchange(
        &proxy,
        &format!("GET /v2/ HTTP/1.1\r\nHost: a\r\nX-Huge: {huge}\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
}

#[test]
fn many_headers_within_the_byte_limit_pass_up_to_the_count_limit() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    // 1,000 headers, about 13 KiB: far below limits.maxHeaderBytes (64 KiB) and ten times
    // hyper's default count.
    let answer = raw_exchange(&proxy, &head_with_headers(1000));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    // 1,100 lines fit in 64 KiB but pass the 1,024 lines a head may have.
    let answer = raw_exchange(&proxy, &head_with_headers(1100));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
}

/// A `GET /v2/` head with `count` headers besides `Host` and `Connection`.
fn head_with_headers(count: usize) -> String {
    let headers: String = (0..count).map(|n| format!("X-N{n}: {n}\r\n")).collect();
    format!("GET /v2/ HTTP/1.1\r\nHost: a\r\n{headers}Connection: close\r\n\r\n")
}

#[test]
fn slow_request_head_is_cut_off() {
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(&registry.url(), "timeouts:\n  headerRead: 1s\n");
    let mut stream = proxy.raw_connection();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    // Never finish the head: the proxy must close the connection rather than wait forever.
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(
        read.is_ok(),
        "connection should be closed, not left hanging: {read:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_inflight_upload_finish() {
    let registry = Registry::start();
    let mut proxy = Regkeeper::start_with(&registry.url(), "timeouts:\n  shutdownGrace: 30s\n");
    let client = HttpClient::default();
    let start = client
        .send(
            Method::POST,
            &format!("{}/v2/team/drain/blobs/uploads/", proxy.url()),
            &[],
            empty(),
        )
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED);
    let location = start.header("location").to_string();
    let blob = noise(8 << 20, 3);
    let digest = sha256(&blob);
    let url = format!("{location}&digest={digest}");

    // A PUT whose body trickles in; SIGTERM arrives while it is being sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = http_body_util::StreamBody::new(futures_stream(rx));
    let upload = tokio::spawn(async move {
        HttpClient::default()
            .send(Method::PUT, &url, &[], http_body_util::BodyExt::boxed(body))
            .await
    });
    let mut chunks = blob.chunks(1 << 20);
    tx.send(Bytes::copy_from_slice(chunks.next().unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for chunk in chunks {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let answer = upload.await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.header("docker-content-digest"), digest);
    assert!(proxy.wait(), "regkeeper should exit cleanly after draining");
    // New connections are refused once shutdown began.
    assert!(TcpStream::connect(proxy.addr).is_err());
}

/// Frames from a channel, so a test controls when each part of a body is sent.
fn futures_stream(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures_core::Stream<Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    })
}

#[tokio::test]
async fn upstream_closing_an_idle_kept_alive_connection_costs_no_failed_request() {
    // Answers the first request on each connection, advertising keep-alive; when the next
    // request arrives (after the connection sat idle), it closes without answering: exactly what
    // a request racing the upstream's idle-timeout close sees. The proxy must send it again on a
    // new connection, not hand the client a 502.
    let upstream = fake_upstream(|mut stream| {
        let mut buf = [0; 4096];
        if stream.read(&mut buf).unwrap_or(0) == 0 {
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}",
        );
        let _ = stream.read(&mut buf);
        let _ = stream.shutdown(Shutdown::Both);
    });
    let proxy = Regkeeper::start_with(&upstream, "workers: 1\n");
    let client = HttpClient::default();
    for attempt in 0..4 {
        for method in [Method::GET, Method::HEAD] {
            let answer = client
                .send(
                    method.clone(),
                    &format!("{}/v2/", proxy.url()),
                    &[],
                    empty(),
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{method} {attempt}: {:?}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
}

#[tokio::test]
async fn chunked_and_close_delimited_upstream_bodies_reach_the_client_whole() {
    // Distribution answers with lengths; other registries and their front proxies chunk or
    // close. Each connection answers one pull chunked (in pieces, with a trailer), then one
    // delimited by its close.
    let upstream = fake_upstream(|mut stream| {
        let mut buf = [0; 4096];
        if stream.read(&mut buf).unwrap_or(0) == 0 {
            return;
        }
        for piece in [
            &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\""[..],
            b"\r\n3;x=y\r\n:1}\r\n0\r\nX-T: 1\r\n\r\n",
        ] {
            let _ = stream.write_all(piece);
            std::thread::sleep(Duration::from_millis(20));
        }
        if stream.read(&mut buf).unwrap_or(0) == 0 {
            return;
        }
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"b\":");
        std::thread::sleep(Duration::from_millis(20));
        let _ = stream.write_all(b"2}");
        let _ = stream.shutdown(Shutdown::Both);
    });
    let proxy = Regkeeper::start_with(&upstream, "workers: 1\n");
    let client = HttpClient::default();
    let url = format!("{}/v2/app/manifests/latest", proxy.url());
    for expected in [&b"{\"a\":1}"[..], b"{\"b\":2}"] {
        let answer = client.get(&url, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], expected);
    }
    // Each pull has its request line, with what was sent.
    crate::support::process::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            proxy.logs().matches(" INFO regkeeper::request: method=GET route=manifest repository=app status=200 bytes_in=0 bytes_out=7 duration_us=").count() == 2
        },
        || proxy.logs(),
    );
}
