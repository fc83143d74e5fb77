//! Memory and disk are bounded by regkeeper, not by what clients push: an image config with
//! tens of thousands of labels, referred to by hundreds of tiny manifests, costs its size once.

use http::{Method, StatusCode};
use regkeeper::{index, manifest::KEPT_KEYS};
use serde_json::{Map, Value, json};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, full},
    image::{OCI_MANIFEST, sha256},
};

/// The peak resident set of a process, from `/proc` (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// Bytes under `dir`, recursively.
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_usage(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_90000_labels_under_300_manifests_costs_its_size_once() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    // How the index is doing is told without touching readiness, and its counters exist at 0.
    let ready = client
        .get(&format!("http://{}/readyz?verbose", proxy.admin), &[])
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    let ready = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(ready.contains("index: writable"), "{ready}");
    let metrics = client
        .get(&format!("http://{}/metrics", proxy.admin), &[])
        .await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    for series in [
        "regkeeper_index_write_errors_total 0",
        "regkeeper_index_writable 1",
        "regkeeper_index_dropped_events_total{queue=\"retry\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    for gauge in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(gauge) && !l.ends_with(" 0")),
            "{gauge} missing:\n{metrics}"
        );
    }

    // 90,000 labels (~3.9 MB), among them a kept key with an oversized value and one that fits.
    let mut labels = Map::new();
    for n in 0..90_000 {
        labels.insert(format!("label-{n:05}"), json!(format!("value-{n:020}")));
    }
    labels.insert("vcs-ref".into(), json!("0123456789abcdef0123"));
    labels.insert(KEPT_KEYS[0].into(), json!("f".repeat(200_000)));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": labels },
    }))
    .unwrap();
    assert!(config.len() > 3_900_000 && config.len() < 4 << 20);
    let config_digest = client.push_blob(&proxy.url(), "attack/app", &config).await;

    // 300 tiny manifests referring to it, each with a few hundred annotations of its own.
    let annotations: Map<String, Value> = (0..300)
        .map(|n| (format!("note-{n}"), json!("x".repeat(40))))
        .collect();
    let mut digests = Vec::new();
    for n in 0..300 {
        let mut annotations = annotations.clone();
        annotations.insert("n".into(), json!(n.to_string()));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
            "annotations": annotations,
        }))
        .unwrap();
        let put = client
            .send(
                Method::PUT,
                &format!("{}/v2/attack/app/manifests/t{n}", proxy.url()),
                &[("content-type", OCI_MANIFEST)],
                full(manifest.clone()),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
        digests.push(sha256(&manifest));
    }
    // Every config read and recorded.
    for n in [0, 150, 299] {
        proxy
            .admin_until(&format!("/api/v1/inspect?reference=attack/app:t{n}"), |v| {
                v["manifest"]["config_read"] == true
            })
            .await;
    }
    let tags = proxy
        .admin_until("/api/v1/tags?repository=attack/app", |v| {
            v.as_array().is_some_and(|t| t.len() == 300)
        })
        .await;
    let rss = peak_rss(proxy.pid());
    eprintln!("peak RSS after 300 pushes: {} KiB", rss / 1024);
    assert!(rss < 100 * MIB, "peak RSS {} MiB", rss / MIB);
    drop(tags);

    proxy.terminate();
    let mut proxy = proxy;
    assert!(proxy.wait(), "{}", proxy.logs());
    let size = disk_usage(&proxy.index_path());
    eprintln!("index on disk: {} KiB", size / 1024);
    assert!(size < 20 * MIB, "index {} MiB", size / MIB);
    let index = index::open_sled(&proxy.index_path()).unwrap();
    use regkeeper::index::Index as _;
    for digest in [&digests[0], &digests[299]] {
        let record = index.manifest("attack/app", digest).unwrap().unwrap();
        assert!(record.config_read);
        assert_eq!(
            record.labels.keys().collect::<Vec<_>>(),
            ["vcs-ref"],
            "only the kept labels that fit"
        );
        assert!(record.annotations.is_empty(), "{:?}", record.annotations);
        let problem = record.problem.expect("the dropped label is said");
        assert!(problem.contains(KEPT_KEYS[0]), "{problem}");
    }
    // The label that fits still links the commit.
    let links = index.commit_links(&digests[42]).unwrap();
    assert!(
        links.iter().any(|l| l.commit == "0123456789abcdef0123"),
        "{links:?}"
    );
}

/// The current resident set of a process (`VmRSS`), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status")
        * 1024
}

/// Resets the peak resident set (`VmHWM`) to the current one.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// A GET on the admin listener whose body is read as it comes: (status, lines of the body).
/// `read` false: the headers only, the body left unread (a client that stalls).
async fn admin_get(
    admin: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (
    http::StatusCode,
    hyper::body::Incoming,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::get(path).header(http::header::HOST, admin.to_string());
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(
            request
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    (status, response.into_body(), connection)
}

/// Reads a streamed JSON array (one element per line) to its end, holding one line at a time:
/// the number of elements, each checked to be a tag view.
async fn count_elements(mut body: hyper::body::Incoming) -> usize {
    use http_body_util::BodyExt;
    let (mut carry, mut count, mut lines) = (Vec::new(), 0, 0);
    let mut check = |line: &[u8]| {
        lines += 1;
        let line = line.strip_suffix(b",").unwrap_or(line);
        if line.starts_with(b"{") {
            count += 1;
            if count % 10_000 == 1 {
                let view: Value = serde_json::from_slice(line).expect("an element is JSON");
                assert!(
                    view["tag"].is_string() && view["digest"].is_string(),
                    "{view}"
                );
            }
        } else {
            assert!(
                line == b"[" || line == b"]",
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the stream completes");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        carry.extend_from_slice(&data);
        while let Some(end) = carry.iter().position(|b| *b == b'\n') {
            check(&carry[..end]);
            carry.drain(..=end);
        }
    }
    assert!(carry.is_empty());
    assert!(lines >= 2);
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_tags_are_streamed_in_bounded_memory_behind_the_read_token() {
    let tags: usize = std::env::var("REGKEEPER_TEST_TAGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let registry = Registry::start();
    let index_dir = tempfile::tempdir().unwrap();
    let index_path = index_dir.path().join("index");
    {
        use regkeeper::index::{Index as _, UnixMillis, Write};
        let index = index::open_sled(&index_path).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        for chunk in (0..tags).collect::<Vec<_>>().chunks(20_000) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|n| Write::PushTag {
                    repository: format!("team/app{}", n % 3),
                    tag: format!("build-{n:07}"),
                    digest: digest.clone(),
                    at: UnixMillis(1_700_000_000_000 + *n as u64),
                    only_if_unknown: false,
                })
                .collect();
            index.apply(&writes).unwrap();
        }
        index.flush().unwrap();
    }
    let token = "read-token-0123456789";
    let proxy = Regkeeper::start_full(
        &registry.url(),
        "log:\n  level: info\n",
        &[
            ("REGKEEPER_INDEX_PATH", index_path.to_str().unwrap()),
            ("REGKEEPER_ADMIN_READ_TOKEN", token),
        ],
    );
    let admin = proxy.admin;

    // Without the token: refused; health, readiness and metrics stay open.
    let (status, _, _) = admin_get(admin, "/api/v1/tags", None).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    let (status, _, _) = admin_get(admin, "/api/v1/tags", Some("wrong-token-0123456789")).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/metrics"] {
        let (status, _, _) = admin_get(admin, open, None).await;
        assert_eq!(status, http::StatusCode::OK, "{open}");
    }

    // The first whole read warms what reading the index costs once, whoever reads it: sled's
    // page table and cache (a plan's mirror reads it all too). What must not grow with the
    // request is what each answer costs beyond that: measured on as many concurrent answers as
    // are allowed.
    let before = rss(proxy.pid());
    let (status, body, _) = admin_get(admin, "/api/v1/tags", Some(token)).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(count_elements(body).await, tags);
    let warm = rss(proxy.pid());
    reset_peak(proxy.pid());
    let streams = (0..regkeeper::admin::VIEWS_AT_ONCE).map(|_| async {
        let (status, body, _) = admin_get(admin, "/api/v1/tags", Some(token)).await;
        assert_eq!(status, http::StatusCode::OK);
        count_elements(body).await
    });
    let counts = futures_util::future::join_all(streams).await;
    assert!(counts.iter().all(|n| *n == tags), "{counts:?}");
    let growth = peak_rss(proxy.pid()).saturating_sub(warm);
    eprintln!(
        "{tags} tags: RSS {} MiB at start, {} MiB after the first read; {} concurrent streams grew it {} MiB",
        before / MIB,
        warm / MIB,
        counts.len(),
        growth / MIB
    );
    assert!(growth < 64 * MIB, "RSS grew {} MiB", growth / MIB);
    let (status, body, _) = admin_get(admin, "/api/v1/tags?repository=none", Some(token)).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(count_elements(body).await, 0, "an empty answer is `[]`");

    // Clients that stop reading hold the views' slots; one more is told to come back.
    let mut stalled = Vec::new();
    for _ in 0..regkeeper::admin::VIEWS_AT_ONCE {
        let (status, body, connection) = admin_get(admin, "/api/v1/tags", Some(token)).await;
        assert_eq!(status, http::StatusCode::OK);
        stalled.push((body, connection));
    }
    let (status, _, _) = admin_get(admin, "/api/v1/tags?repository=team/app1", Some(token)).await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    // Once they hang up, their slots come back.
    for (body, connection) in stalled {
        drop(body);
        connection.abort();
    }
    let mut served = false;
    for _ in 0..100 {
        let (status, body, _) = admin_get(
            admin,
            "/api/v1/inspect?reference=team/app1:build-0000001",
            Some(token),
        )
        .await;
        if status == http::StatusCode::OK {
            use http_body_util::BodyExt;
            let body = body.collect().await.unwrap().to_bytes();
            let inspection: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(inspection["tags"][0]["tag"], "build-0000001");
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "the slots never came back\n{}", proxy.logs());

    // The commands show serve the token they are configured with.
    let index_env = ("REGKEEPER_INDEX_PATH", index_path.to_str().unwrap());
    let refused = proxy.cli(&["inspect", "team/app1:build-0000001"], &[index_env]);
    assert!(
        !refused.ok && refused.stderr.contains("admin.readToken"),
        "{}",
        refused.stderr
    );
    let json = proxy
        .cli(
            &["inspect", "team/app1:build-0000001"],
            &[index_env, ("REGKEEPER_ADMIN_READ_TOKEN", token)],
        )
        .expect_ok();
    assert!(json.contains("build-0000001"), "{json}");
}
