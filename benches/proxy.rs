//! Proxy benchmark: regkeeper against direct access to the same local Distribution, interleaved in
//! one run so machine noise hits both sides alike, plus regkeeper's own capacity against nginx
//! (one worker, `proxy_buffering off`, upstream keepalive) in front of a fast in-bench upstream.
//!
//! Measures, per round (median reported):
//! - 256 MiB blob push, monolithic (`POST` + `PUT ?digest=` with the body) and chunked (`PATCH`
//!   with `Transfer-Encoding: chunked`, then `PUT ?digest=`);
//! - 256 MiB blob pull;
//! - manifest `HEAD` with keep-alive over 64 concurrent connections (requests/s);
//! - capacity: `GET` of a fixed manifest from a fast upstream through regkeeper vs nginx;
//! - regkeeper's peak RSS while 8 uploads of 256 MiB run at once.
//!
//! Run: `cargo bench --bench proxy` (`-- --quick` for a short smoke run). Needs `docker-registry`;
//! nginx (Debian `nginx-light`) for the capacity comparison.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use support::{
    Registry, Regkeeper,
    http::{HttpClient, chunked, empty, full},
    image::{noise, sha256},
    process::{Guard, free_port, wait_for_port},
};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

struct Settings {
    blob_bytes: usize,
    rounds: usize,
    small_duration: Duration,
    concurrency: usize,
    rss_uploads: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings {
            blob_bytes: 32 * MIB,
            rounds: 1,
            small_duration: Duration::from_secs(1),
            concurrency: 64,
            rss_uploads: 8,
        }
    } else {
        Settings {
            blob_bytes: 256 * MIB,
            rounds: 5,
            small_duration: Duration::from_secs(4),
            concurrency: 64,
            rss_uploads: 8,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

async fn run(settings: Settings) {
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(
        &registry.url(),
        "log:\n  level: info\n  requests: true\n",
    );
    let fast = FastUpstream::start();
    let fast_proxy = Regkeeper::start_with(&fast.url(), "log:\n  level: info\n  requests: true\n");
    let nginx = Nginx::start(registry.addr, fast.addr);
    let client = HttpClient::default();
    let direct = registry.url();
    let proxied = proxy.url();

    let blob = Bytes::from(noise(settings.blob_bytes, 42));
    let digest = sha256(&blob);
    let size_mib = settings.blob_bytes as f64 / MIB as f64;
    println!(
        "regkeeper proxy benchmark: blob {size_mib:.0} MiB, {} rounds, {} connections for small requests",
        settings.rounds, settings.concurrency
    );

    // Peak RSS first, while the process is fresh, so the high-water mark is this phase's.
    let rss = concurrent_uploads_peak_rss(&proxied, proxy.pid(), &blob, &digest, &settings)
        .await;

    let mut table = Table::default();
    for round in 0..settings.rounds {
        for (side, base) in [("direct", &direct), ("proxy", &proxied)] {
            let repo = format!("bench/mono-{side}-{round}");
            let secs = push_monolithic(&client, base, &repo, &blob, &digest).await;
            table.add("push monolithic (MiB/s)", side, size_mib / secs);
            let repo = format!("bench/chunk-{side}-{round}");
            let secs = push_chunked(&client, base, &repo, &blob, &digest).await;
            table.add("push chunked (MiB/s)", side, size_mib / secs);
        }
        for (side, base) in [("direct", &direct), ("proxy", &proxied)] {
            let secs = pull(base, &format!("bench/mono-direct-{round}"), &digest).await;
            table.add("pull (MiB/s)", side, size_mib / secs);
        }
        if let Some(nginx) = &nginx {
            let secs = pull(&nginx.registry_url(), &format!("bench/mono-direct-{round}"), &digest).await;
            table.add("pull (MiB/s)", "nginx", size_mib / secs);
        }
    }
    let manifest_path = push_small_manifest(&client, &direct).await;
    for _ in 0..settings.rounds {
        for (side, base) in [("direct", registry.addr), ("proxy", proxy.addr)] {
            let rate = hammer(base, Method::HEAD, &manifest_path, &settings).await;
            table.add("manifest HEAD 64 conns (req/s)", side, rate);
        }
    }
    let capacity_path = "/v2/fast/app/manifests/latest";
    for _ in 0..settings.rounds {
        let rate = hammer(fast.addr, Method::GET, capacity_path, &settings).await;
        table.add("capacity GET, fast upstream (req/s)", "direct", rate);
        let rate = hammer(fast_proxy.addr, Method::GET, capacity_path, &settings).await;
        table.add("capacity GET, fast upstream (req/s)", "proxy", rate);
        if let Some(nginx) = &nginx {
            let rate = hammer(nginx.fast_addr, Method::GET, capacity_path, &settings).await;
            table.add("capacity GET, fast upstream (req/s)", "nginx", rate);
        }
    }
    table.print();
    println!(
        "\nregkeeper peak RSS during {} concurrent {size_mib:.0} MiB uploads: {:.1} MiB (sampled max), VmHWM {:.1} MiB",
        settings.rss_uploads,
        rss.sampled as f64 / MIB as f64,
        rss.hwm as f64 / MIB as f64
    );
    if nginx.is_none() {
        println!("nginx not found: install Debian's nginx-light for the capacity comparison");
    }
}

/// Median per (measure, side), printed with proxy/direct and proxy/nginx ratios.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<(String, Vec<f64>)>)>,
}

impl Table {
    fn add(&mut self, measure: &str, side: &str, value: f64) {
        let row = match self.rows.iter().position(|(m, _)| m == measure) {
            Some(i) => &mut self.rows[i].1,
            None => {
                self.rows.push((measure.to_string(), Vec::new()));
                &mut self.rows.last_mut().unwrap().1
            }
        };
        match row.iter_mut().find(|(s, _)| s == side) {
            Some((_, values)) => values.push(value),
            None => row.push((side.to_string(), vec![value])),
        }
    }

    fn print(&self) {
        println!(
            "\n{:<38} {:>11} {:>11} {:>11} {:>13} {:>12}",
            "measure (median)", "direct", "proxy", "nginx", "proxy/direct", "proxy/nginx"
        );
        for (measure, sides) in &self.rows {
            let median = |side: &str| {
                sides.iter().find(|(s, _)| s == side).map(|(_, v)| {
                    let mut v = v.clone();
                    v.sort_by(|a, b| a.total_cmp(b));
                    v[v.len() / 2]
                })
            };
            let (d, p, n) = (median("direct"), median("proxy"), median("nginx"));
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.3}x", a / b),
                _ => "-".into(),
            };
            println!(
                "{measure:<38} {:>11} {:>11} {:>11} {:>13} {:>12}",
                cell(d),
                cell(p),
                cell(n),
                ratio(p, d),
                ratio(p, n)
            );
        }
    }
}

async fn start_upload(client: &HttpClient, base: &str, repo: &str) -> String {
    let answer = client
        .send(Method::POST, &format!("{base}/v2/{repo}/blobs/uploads/"), &[], empty())
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let location = answer.header("location").to_string();
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    }
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

async fn push_monolithic(client: &HttpClient, base: &str, repo: &str, blob: &Bytes, digest: &str) -> f64 {
    let started = Instant::now();
    let url = start_upload(client, base, repo).await;
    let answer = client
        .send(Method::PUT, &with_digest(&url, digest), &[], full(blob.clone()))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    started.elapsed().as_secs_f64()
}

async fn push_chunked(client: &HttpClient, base: &str, repo: &str, blob: &Bytes, digest: &str) -> f64 {
    let started = Instant::now();
    let url = start_upload(client, base, repo).await;
    let chunks: Vec<Bytes> = (0..blob.len())
        .step_by(MIB)
        .map(|i| blob.slice(i..(i + MIB).min(blob.len())))
        .collect();
    let answer = client.send(Method::PATCH, &url, &[], chunked(chunks)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let location = answer.header("location").to_string();
    let url = if location.starts_with('/') { format!("{base}{location}") } else { location };
    let answer = client.send(Method::PUT, &with_digest(&url, digest), &[], empty()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    started.elapsed().as_secs_f64()
}

/// Streams the blob, counting bytes without keeping them.
async fn pull(base: &str, repo: &str, digest: &str) -> f64 {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let started = Instant::now();
    let request = Request::get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(received > 0);
    secs
}

struct Rss {
    sampled: u64,
    hwm: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
        * 1024
}

async fn concurrent_uploads_peak_rss(
    base: &str,
    pid: u32,
    blob: &Bytes,
    digest: &str,
    settings: &Settings,
) -> Rss {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let uploads: Vec<_> = (0..settings.rss_uploads)
        .map(|i| {
            let (base, blob, digest) = (base.to_string(), blob.clone(), digest.to_string());
            tokio::spawn(async move {
                let client = HttpClient::default();
                push_monolithic(&client, &base, &format!("bench/rss-{i}"), &blob, &digest).await
            })
        })
        .collect();
    for upload in uploads {
        upload.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    Rss {
        sampled: peak.load(Ordering::Relaxed),
        hwm: status_kib(pid, "VmHWM:"),
    }
}

/// Pushes a small OCI manifest directly and returns its path by tag.
async fn push_small_manifest(client: &HttpClient, base: &str) -> String {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);
    let url = start_upload(client, base, "bench/small").await;
    let answer = client
        .send(Method::PUT, &with_digest(&url, &config_digest), &[], full(config.to_vec()))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let answer = client
        .send(
            Method::PUT,
            &format!("{base}/v2/bench/small/manifests/latest"),
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            full(manifest),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    "/v2/bench/small/manifests/latest".to_string()
}

/// Requests/s over `concurrency` keep-alive connections for `small_duration`.
async fn hammer(addr: SocketAddr, method: Method, path: &str, settings: &Settings) -> f64 {
    let deadline = Instant::now() + settings.small_duration;
    let count = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..settings.concurrency)
        .map(|_| {
            let (method, path, count) = (method.clone(), path.to_string(), count.clone());
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                while Instant::now() < deadline {
                    let request = Request::builder()
                        .method(method.clone())
                        .uri(&path)
                        .header("host", addr.to_string())
                        .header("accept", "application/vnd.oci.image.manifest.v1+json")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    let _ = response.into_body().collect().await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        worker.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A tiny upstream answering every request with the same small manifest, on its own thread.
struct FastUpstream {
    addr: SocketAddr,
}

impl FastUpstream {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let manifest = Bytes::from_static(
                    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#,
                );
                let digest = sha256(&manifest);
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let _ = stream.set_nodelay(true);
                    let (manifest, digest) = (manifest.clone(), digest.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                            let response = http::Response::builder()
                                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                                .header("docker-content-digest", digest.as_str())
                                .header("docker-distribution-api-version", "registry/2.0")
                                .body(Full::new(manifest.clone()))
                                .unwrap();
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Self { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// nginx with one worker: one server in front of the registry, one in front of the fast upstream.
struct Nginx {
    registry_addr: SocketAddr,
    fast_addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Guard,
}

impl Nginx {
    fn start(registry: SocketAddr, fast: SocketAddr) -> Option<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let registry_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let fast_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let root = running_as_root();
        let d = dir.path().display();
        let conf = format!(
            r#"{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream registry {{ server {registry}; keepalive 64; }}
  upstream fast {{ server {fast}; keepalive 64; }}
  server {{
    listen {registry_addr};
    client_max_body_size 0;
    location / {{
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
  server {{
    listen {fast_addr};
    location / {{
      proxy_pass http://fast;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"#,
            user = if root { "user root;" } else { "" }
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let log = dir.path().join("stderr.log");
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .ok()?;
        wait_for_port(fast_addr, &mut child, "nginx", &log);
        Some(Self {
            registry_addr,
            fast_addr,
            _dir: dir,
            _child: Guard(child),
        })
    }

    fn registry_url(&self) -> String {
        format!("http://{}", self.registry_addr)
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
