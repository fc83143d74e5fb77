//! Sync benchmark: `regkeeper sync` (the real binary) against a local Distribution holding
//! `--tags` tags (default 10,000 in 100 repositories, each tag its own manifest and config with
//! a revision label), from an empty index and again with everything known; the registry's own
//! manifest-GET capacity at the same concurrency as the ceiling; and the same crawl against a
//! fast in-bench registry serving the same shape from memory, which shows regkeeper's own limit.
//!
//! Run: `cargo bench --bench sync` (`-- --tags 2000` for a quicker run). Needs `docker-registry`.

// The shared test support re-exports more than this bench uses.
#[allow(unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use support::{
    Registry,
    http::{HttpClient, full},
    image::sha256,
    regkeeper::{cli_config, run_cli},
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One image: its config and manifest bytes.
struct Image {
    repository: String,
    tag: String,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn images(tags: usize, repositories: usize) -> Vec<Image> {
    (0..tags)
        .map(|i| {
            let config = format!(
                r#"{{"architecture":"amd64","os":"linux","created":"2026-11-01T00:00:00Z","config":{{"Labels":{{"org.opencontainers.image.revision":"{i:040x}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            )
            .into_bytes();
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
                sha256(&config),
                config.len()
            )
            .into_bytes();
            Image {
                repository: format!("bench/repo-{:04}", i % repositories),
                tag: format!("build-{i:06}"),
                config,
                manifest,
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tags = support::process::usize_arg("--tags", 10_000);
    let repositories = support::process::usize_arg("--repos", 100).min(tags).max(1);
    let images = Arc::new(images(tags, repositories));
    println!("sync benchmark: {tags} tags in {repositories} repositories");

    let registry = Registry::start();
    let started = Instant::now();
    fill(&registry.url(), images.clone()).await;
    println!(
        "filled the registry directly in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let ceiling = manifest_get_rate(registry.addr, &images, 8, Duration::from_secs(3)).await;
    println!("registry ceiling: {ceiling:.0} manifest GETs/s at 8 connections");

    let mut rows = Vec::new();
    for concurrency in [8usize, 32] {
        let (fresh, again) = sync_twice(&registry.url(), concurrency, tags);
        rows.push((
            format!("Distribution 2.8, concurrency {concurrency}"),
            fresh,
            again,
        ));
    }
    let fast = FastRegistry::start(images.clone());
    for concurrency in [8usize, 32] {
        let (fresh, again) = sync_twice(&fast.url, concurrency, tags);
        rows.push((
            format!("in-bench static registry, concurrency {concurrency}"),
            fresh,
            again,
        ));
    }
    println!();
    println!("| upstream | empty index (tags/s) | everything known (tags/s) |");
    println!("|---|---|---|");
    for (name, fresh, again) in rows {
        println!("| {name} | {fresh:.0} | {again:.0} |");
    }
    println!(
        "(each fresh tag costs a manifest GET and a config GET upstream; the registry's ceiling is {ceiling:.0} GETs/s)"
    );
}

/// Runs `regkeeper sync` on an empty index, then again; tags per second of each run (wall time
/// of the whole process, start-up included).
fn sync_twice(upstream: &str, concurrency: usize, tags: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), upstream, "log:\n  level: warn\n");
    let concurrency = concurrency.to_string();
    let env = [("REGKEEPER_SYNC_CONCURRENCY", concurrency.as_str())];
    let mut rates = [0.0; 2];
    for rate in &mut rates {
        let started = Instant::now();
        let report = run_cli(&config, &["sync", "--output", "json"], &env).expect_ok();
        let seconds = started.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["tags"], tags, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        *rate = tags as f64 / seconds;
    }
    (rates[0], rates[1])
}

/// Pushes every image directly (config blob, then manifest by tag), 16 at a time.
async fn fill(base: &str, images: Arc<Vec<Image>>) {
    let client = HttpClient::default();
    stream::iter(0..images.len())
        .for_each_concurrent(16, |i| {
            let (client, images) = (&client, &images);
            async move {
                let image = &images[i];
                client
                    .push_blob(base, &image.repository, &image.config)
                    .await;
                let put = client
                    .send(
                        Method::PUT,
                        &format!("{base}/v2/{}/manifests/{}", image.repository, image.tag),
                        &[("content-type", OCI_MANIFEST)],
                        full(image.manifest.clone()),
                    )
                    .await;
                assert_eq!(put.status, StatusCode::CREATED);
            }
        })
        .await;
}

/// Manifest GETs by tag per second the registry answers over `connections` keep-alive
/// connections.
async fn manifest_get_rate(
    addr: SocketAddr,
    images: &Arc<Vec<Image>>,
    connections: usize,
    duration: Duration,
) -> f64 {
    let deadline = Instant::now() + duration;
    let counts = stream::iter(0..connections)
        .map(|c| {
            let images = images.clone();
            async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let mut done = 0usize;
                while Instant::now() < deadline {
                    let image = &images[(c * 7919 + done) % images.len()];
                    let request =
                        Request::get(format!("/v2/{}/manifests/{}", image.repository, image.tag))
                            .header("host", addr.to_string())
                            .header("accept", OCI_MANIFEST)
                            .body(Empty::<Bytes>::new())
                            .unwrap();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.unwrap();
                    done += 1;
                }
                done
            }
        })
        .buffer_unordered(connections)
        .collect::<Vec<usize>>()
        .await;
    counts.iter().sum::<usize>() as f64 / duration.as_secs_f64()
}

/// A registry serving the images from memory, as fast as hyper on one thread goes.
struct FastRegistry {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Content {
    repositories: Vec<String>,
    tags: HashMap<String, Vec<String>>,
    /// `repository/tag` and `repository/digest` → (media type, digest, bytes).
    objects: HashMap<String, (&'static str, String, Bytes)>,
}

impl FastRegistry {
    fn start(images: Arc<Vec<Image>>) -> Self {
        let mut content = Content {
            repositories: Vec::new(),
            tags: HashMap::new(),
            objects: HashMap::new(),
        };
        for image in images.iter() {
            content
                .tags
                .entry(image.repository.clone())
                .or_default()
                .push(image.tag.clone());
            let digest = sha256(&image.manifest);
            let manifest = (
                OCI_MANIFEST,
                digest.clone(),
                Bytes::from(image.manifest.clone()),
            );
            content.objects.insert(
                format!("{}/manifests/{}", image.repository, image.tag),
                manifest.clone(),
            );
            content
                .objects
                .insert(format!("{}/manifests/{digest}", image.repository), manifest);
            let config_digest = sha256(&image.config);
            content.objects.insert(
                format!("{}/blobs/{config_digest}", image.repository),
                (
                    "application/octet-stream",
                    config_digest,
                    Bytes::from(image.config.clone()),
                ),
            );
        }
        content.repositories = content.tags.keys().cloned().collect();
        content.repositories.sort();
        let content = Arc::new(content);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let content = content.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                let content = content.clone();
                                async move { Ok::<_, Infallible>(answer(&content, &request)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Self { url, _stop: stop }
    }
}

fn answer<B>(content: &Content, request: &Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let json = |value: serde_json::Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .unwrap()
    };
    if path == "/v2/_catalog" {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(100);
        let last = param("last").map(|l| l.replace("%2F", "/"));
        let start = match &last {
            Some(last) => content.repositories.partition_point(|r| r <= last),
            None => 0,
        };
        let page: Vec<&String> = content.repositories.iter().skip(start).take(n).collect();
        let mut response = json(serde_json::json!({ "repositories": page }));
        if let Some(last) = page
            .last()
            .filter(|_| start + n < content.repositories.len())
        {
            let link = format!(
                "</v2/_catalog?last={}&n={n}>; rel=\"next\"",
                last.replace('/', "%2F")
            );
            response.headers_mut().insert("link", link.parse().unwrap());
        }
        return response;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return json(serde_json::json!({}));
    };
    if let Some(repository) = rest.strip_suffix("/tags/list") {
        return json(
            serde_json::json!({ "name": repository, "tags": content.tags.get(repository) }),
        );
    }
    match content.objects.get(rest) {
        Some((media_type, digest, bytes)) => Response::builder()
            .header("content-type", *media_type)
            .header("docker-content-digest", digest.as_str())
            .body(Full::new(bytes.clone()))
            .unwrap(),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    }
}
