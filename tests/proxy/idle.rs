//! Bodies that stop mid-way: a client that stops sending its upload is answered `408` after
//! `timeouts.clientBodyIdle`, an upstream that stops sending its response has both connections
//! closed after `timeouts.upstreamBodyIdle`. A client's faults are counted as the client's,
//! never as upstream errors (which alerts watch).

use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use crate::support::{Registry, Regkeeper, http::HttpClient, process::wait_until};

/// The value of a series in a `/metrics` text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(proxy: &Regkeeper) -> String {
    proxy.admin_text("/metrics").1
}

/// Waits (up to 10 s) until `series` reads `value`.
fn wait_for_metric(proxy: &Regkeeper, series: &str, value: f64) {
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || metric(&metrics(proxy), series) == value,
        || format!("{series} never read {value}:\n{}", metrics(proxy)),
    );
}

/// Starts an upload through the proxy; the path of its `Location`.
fn start_upload(proxy: &Regkeeper) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let location = runtime.block_on(HttpClient::default().start_upload(&proxy.url(), "idle/app"));
    match location.find("/v2/") {
        Some(at) => location[at..].to_string(),
        None => location,
    }
}

#[test]
fn a_client_that_stops_sending_its_upload_gets_408_counted_as_its_own() {
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(&registry.url(), "timeouts:\n  clientBodyIdle: 1s\n");
    let path = start_upload(&proxy);
    let mut stream = proxy.raw_connection();
    stream
        .write_all(
            format!(
                "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .unwrap();
    // …and nothing more. The answer comes without the client closing anything.
    let mut answer = [0u8; 4096];
    let read = stream
        .read(&mut answer)
        .expect("answered, not left hanging");
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    let text = metrics(&proxy);
    assert_eq!(
        metric(
            &text,
            "regkeeper_client_errors_total{cause=\"client-idle\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "regkeeper_upstream_errors_total{cause=\"upstream-io\"}"
        ),
        0.0
    );
    // Log lines are written out every 100 ms.
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || proxy.logs().contains("client request failed"),
        || proxy.logs(),
    );
    assert!(!proxy.logs().contains("upstream request failed"));
}

#[test]
fn a_malformed_chunked_upload_is_the_clients_fault_not_the_upstreams() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let path = start_upload(&proxy);
    let mut stream = proxy.raw_connection();
    stream
        .write_all(
            format!(
                "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ-not-a-size\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    wait_for_metric(
        &proxy,
        "regkeeper_client_errors_total{cause=\"client-io\"}",
        1.0,
    );
    let text = metrics(&proxy);
    assert_eq!(
        metric(
            &text,
            "regkeeper_upstream_errors_total{cause=\"upstream-io\"}"
        ),
        0.0
    );
    assert!(!proxy.logs().contains("WARN"), "{}", proxy.logs());
}

#[test]
fn an_upstream_that_stops_mid_body_is_cut_off_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
                );
                std::thread::sleep(Duration::from_secs(60));
            });
        }
    });
    let proxy = Regkeeper::start_with(&upstream, "timeouts:\n  upstreamBodyIdle: 1s\n");
    let mut stream = proxy.raw_connection();
    let digest = format!("sha256:{}", "0".repeat(64));
    stream
        .write_all(
            format!("GET /v2/idle/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut answer = Vec::new();
    // Closed (not hanging until the read timeout) with the body short.
    let read = stream.read_to_end(&mut answer);
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    wait_for_metric(
        &proxy,
        "regkeeper_upstream_errors_total{cause=\"upstream-idle\"}",
        1.0,
    );
    assert!(proxy.logs().contains("upstream response cut off mid-body"));
}
