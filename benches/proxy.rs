//! Proxy benchmark: regkeeper against direct access to the same local Distribution, interleaved in
//! one run so machine noise hits both sides alike, plus regkeeper's own capacity against nginx
//! (one worker, `proxy_buffering off`, upstream keepalive) in front of a fast in-bench upstream.
//!
//! Measures, per round (median reported):
//! - 256 MiB blob push, monolithic (`POST` + `PUT ?digest=` with the body) and chunked (`PATCH`
//!   with `Transfer-Encoding: chunked`, then `PUT ?digest=`);
//! - 256 MiB blob pull;
//! - manifest `HEAD` with keep-alive over 64 concurrent connections (requests/s);
//! - capacity: `GET` of a fixed manifest from a fast upstream through regkeeper vs nginx, with
//!   two upstreams: the in-bench hyper server, and nginx serving the manifest as a static file
//!   (its own process); requests/s and requests per CPU-second of the proxy; and regkeeper
//!   recording into a real PostgreSQL (fsync on; when Debian's `postgresql` is installed)
//!   against recording off;
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
    http::{HttpClient, absolute, chunked, empty, full, with_digest},
    image::{noise, sha256},
    nginx::{nginx_binary, nginx_head, spawn_nginx},
    process::{Guard, free_port},
};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

struct Settings {
    /// Phases to run (`rss`, `transfer`, `small`, `capacity`); all when empty.
    only: Vec<String>,
    blob_bytes: usize,
    rounds: usize,
    small_duration: Duration,
    concurrency: usize,
    rss_uploads: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--only")
        .flat_map(|w| w[1].split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    let mut settings = if quick {
        Settings {
            only: Vec::new(),
            blob_bytes: 32 * MIB,
            rounds: 1,
            small_duration: Duration::from_secs(1),
            concurrency: 64,
            rss_uploads: 8,
        }
    } else {
        Settings {
            only: Vec::new(),
            blob_bytes: 256 * MIB,
            rounds: 7,
            small_duration: Duration::from_secs(3),
            concurrency: 64,
            rss_uploads: 8,
        }
    };
    settings.only = only;
    if let Some(seconds) = args.windows(2).find(|w| w[0] == "--seconds") {
        settings.small_duration = Duration::from_secs_f64(seconds[1].parse().expect("--seconds N"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

/// `--pin`: the bench (load generator, fast upstream, registry) on CPU 0 and each proxy under test
/// alone on the last CPU, regkeeper with one worker like nginx's one worker: capacity per core.
fn pinned() -> bool {
    std::env::args().any(|a| a == "--pin")
}

fn pin(pid: u32, cpu: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset {pid} {cpu}");
}

fn last_cpu() -> String {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) - 1).to_string()
}

async fn run(settings: Settings) {
    if pinned() {
        pin(std::process::id(), "0");
    }
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(&registry.url(), "log:\n  level: info\n  requests: true\n");
    let fast = FastUpstream::start();
    let workers = if pinned() { "workers: 1\n" } else { "" };
    let fast_proxy = Regkeeper::start_with(
        &fast.url(),
        &format!("{workers}log:\n  level: info\n  requests: true\n"),
    );
    // The same proxy with recording off: the cost of recording, measured in the same run.
    let fast_proxy_plain = Regkeeper::start_full(
        &fast.url(),
        &format!("{workers}log:\n  level: info\n  requests: true\n"),
        &[("REGKEEPER_INDEX_RECORD", "false")],
    );
    // The shared index: the same proxy recording into PostgreSQL instead of sled.
    let postgres = support::postgres::server_binaries()
        .map(|_| support::postgres::TestPostgres::start_durable());
    let fast_proxy_postgres = postgres.as_ref().map(|server| {
        let url = server.fresh_database();
        let overrides = support::postgres::shared_index(&url);
        let env: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Regkeeper::start_full(
            &fast.url(),
            &format!("{workers}log:\n  level: info\n  requests: true\n"),
            &env,
        )
    });
    let capacity_path = "/v2/fast/app/manifests/latest";
    // nginx as the static upstream, proxied by regkeeper and by nginx alike.
    let nginx_static = NginxStatic::start(capacity_path, FAST_MANIFEST);
    let static_proxy = nginx_static.as_ref().map(|upstream| {
        Regkeeper::start_with(
            &upstream.url(),
            &format!("{workers}log:\n  level: info\n  requests: true\n"),
        )
    });
    let nginx = nginx_static
        .as_ref()
        .and_then(|upstream| Nginx::start(registry.addr, fast.addr, upstream.addr));
    if pinned() {
        pin(fast_proxy.pid(), &last_cpu());
        if let Some(static_proxy) = &static_proxy {
            pin(static_proxy.pid(), &last_cpu());
        }
        if let Some(nginx) = &nginx {
            pin(nginx.pid(), &last_cpu());
        }
    }
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

    println!(
        "pids: proxy {} (registry), proxy {} (fast upstream)",
        proxy.pid(),
        fast_proxy.pid()
    );
    let phase = |name: &str| settings.only.is_empty() || settings.only.iter().any(|p| p == name);

    // Peak RSS first, while the process is fresh, so the high-water mark is this phase's.
    let rss = if phase("rss") {
        Some(concurrent_uploads_peak_rss(&proxied, proxy.pid(), &blob, &digest, &settings).await)
    } else {
        None
    };

    let mut table = Table::default();
    for round in (0..settings.rounds).filter(|_| phase("transfer")) {
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
            let secs = pull(
                &nginx.registry_url(),
                &format!("bench/mono-direct-{round}"),
                &digest,
            )
            .await;
            table.add("pull (MiB/s)", "nginx", size_mib / secs);
        }
    }
    let manifest_path = push_small_manifest(&client, &direct).await;
    for _ in (0..settings.rounds).filter(|_| phase("small")) {
        for (side, base) in [("direct", registry.addr), ("proxy", proxy.addr)] {
            let rate = hammer(base, Method::HEAD, &manifest_path, &settings).await;
            table.add("manifest HEAD 64 conns (req/s)", side, rate);
        }
    }
    for round in (0..settings.rounds).filter(|_| phase("capacity")) {
        let rate = hammer(fast.addr, Method::GET, capacity_path, &settings).await;
        table.add("capacity GET, fast upstream (req/s)", "direct", rate);
        // The PostgreSQL-recording proxy goes first in every other round: a ratio must not
        // carry the order the proxies were measured in.
        let shared_first = round % 2 == 1;
        let mut on_postgres = None;
        if shared_first && let Some(shared) = &fast_proxy_postgres {
            on_postgres = Some(
                hammer_counting_cpu(shared.addr, shared.pid(), capacity_path, &settings)
                    .await
                    .0,
            );
        }
        let (off, _) = hammer_counting_cpu(
            fast_proxy_plain.addr,
            fast_proxy_plain.pid(),
            capacity_path,
            &settings,
        )
        .await;
        table.add("capacity GET, recording off (req/s)", "proxy", off);
        let (rate, per_cpu) =
            hammer_counting_cpu(fast_proxy.addr, fast_proxy.pid(), capacity_path, &settings).await;
        table.add("capacity: recording on / off (ratio)", "proxy", rate / off);
        table.add("capacity GET, fast upstream (req/s)", "proxy", rate);
        table.add("capacity GET (req per proxy CPU-s)", "proxy", per_cpu);
        if !shared_first && let Some(shared) = &fast_proxy_postgres {
            on_postgres = Some(
                hammer_counting_cpu(shared.addr, shared.pid(), capacity_path, &settings)
                    .await
                    .0,
            );
        }
        if let Some(on_postgres) = on_postgres {
            table.add(
                "capacity: recording into PostgreSQL / off (ratio)",
                "proxy",
                on_postgres / off,
            );
        }
        if let Some(nginx) = &nginx {
            let (rate, per_cpu) =
                hammer_counting_cpu(nginx.fast_addr, nginx.pid(), capacity_path, &settings).await;
            table.add("capacity GET, fast upstream (req/s)", "nginx", rate);
            table.add("capacity GET (req per proxy CPU-s)", "nginx", per_cpu);
        }
        if let (Some(upstream), Some(static_proxy), Some(nginx)) =
            (&nginx_static, &static_proxy, &nginx)
        {
            let measure = "capacity GET, nginx static upstream (req/s)";
            let rate = hammer(upstream.addr, Method::GET, capacity_path, &settings).await;
            table.add(measure, "direct", rate);
            for (side, addr, pid) in [
                ("proxy", static_proxy.addr, static_proxy.pid()),
                ("nginx", nginx.static_addr, nginx.pid()),
            ] {
                let (rate, per_cpu) =
                    hammer_counting_cpu(addr, pid, capacity_path, &settings).await;
                table.add(measure, side, rate);
                table.add(
                    "capacity GET, nginx static (req per proxy CPU-s)",
                    side,
                    per_cpu,
                );
            }
        }
    }
    table.print();
    if let Some(rss) = rss {
        println!(
            "\nregkeeper peak RSS during {} concurrent {size_mib:.0} MiB uploads: {:.1} MiB (sampled max), VmHWM {:.1} MiB",
            settings.rss_uploads,
            rss.sampled as f64 / MIB as f64,
            rss.hwm as f64 / MIB as f64
        );
    }
    if nginx.is_none() {
        println!("nginx not found: install Debian's nginx-light for the capacity comparison");
    }
}

/// What the fast upstreams answer to the capacity `GET`.
const FAST_MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

/// Per (measure, side) the values of each round, in order. Printed as medians, with ratios taken
/// per round (proxy and its reference measured back to back) and then the median of those, so a
/// slow drift of the machine's speed cancels out.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<Series>)>,
}

/// One side's values (e.g. "proxy"), one per round.
type Series = (String, Vec<f64>);

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
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
            "measure (median of rounds)", "direct", "proxy", "nginx", "proxy/direct", "proxy/nginx"
        );
        for (measure, sides) in &self.rows {
            let values = |side: &str| {
                sides
                    .iter()
                    .find(|(s, _)| s == side)
                    .map(|(_, v)| v.as_slice())
            };
            let (d, p, n) = (values("direct"), values("proxy"), values("nginx"));
            let cell = |v: Option<&[f64]>| {
                v.and_then(median).map_or("-".to_string(), |v| {
                    if v < 10.0 {
                        format!("{v:.3}")
                    } else {
                        format!("{v:.0}")
                    }
                })
            };
            let ratio = |a: Option<&[f64]>, b: Option<&[f64]>| match (a, b) {
                (Some(a), Some(b)) => {
                    let per_round: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
                    median(&per_round).map_or("-".into(), |r| format!("{r:.3}x"))
                }
                _ => "-".into(),
            };
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                for (side, v) in sides {
                    let v: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
                    println!("    {side:<8} {}", v.join(" "));
                }
            }
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

async fn push_monolithic(
    client: &HttpClient,
    base: &str,
    repo: &str,
    blob: &Bytes,
    digest: &str,
) -> f64 {
    let started = Instant::now();
    let url = absolute(base, &client.start_upload(base, repo).await);
    let answer = client
        .send(
            Method::PUT,
            &with_digest(&url, digest),
            &[],
            full(blob.clone()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    started.elapsed().as_secs_f64()
}

async fn push_chunked(
    client: &HttpClient,
    base: &str,
    repo: &str,
    blob: &Bytes,
    digest: &str,
) -> f64 {
    let started = Instant::now();
    let url = absolute(base, &client.start_upload(base, repo).await);
    let chunks: Vec<Bytes> = (0..blob.len())
        .step_by(MIB)
        .map(|i| blob.slice(i..(i + MIB).min(blob.len())))
        .collect();
    let answer = client.send(Method::PATCH, &url, &[], chunked(chunks)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let location = answer.header("location").to_string();
    let url = absolute(base, &location);
    let answer = client
        .send(Method::PUT, &with_digest(&url, digest), &[], empty())
        .await;
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
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = client.push_blob(base, "bench/small", config).await;
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

/// CPU time (user + system) the process `pid` has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// `hammer` with GET, plus requests per CPU-second the process `pid` (the proxy) spent on them.
async fn hammer_counting_cpu(
    addr: SocketAddr,
    pid: u32,
    path: &str,
    settings: &Settings,
) -> (f64, f64) {
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let rate = hammer(addr, Method::GET, path, settings).await;
    let requests = rate * started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    (rate, requests / cpu)
}

/// Requests/s over `concurrency` keep-alive connections for `small_duration`: with `wrk` (one
/// thread) when installed, since a C load generator leaves more of the two cores to the servers
/// being compared; else with the in-bench hyper client.
async fn hammer(addr: SocketAddr, method: Method, path: &str, settings: &Settings) -> f64 {
    match wrk(addr, &method, path, settings) {
        Some(rate) => rate,
        None => hammer_hyper(addr, method, path, settings).await,
    }
}

fn wrk(addr: SocketAddr, method: &Method, path: &str, settings: &Settings) -> Option<f64> {
    // wrk waits for a body after a HEAD answer, so HEAD stays with the hyper generator.
    if *method == Method::HEAD
        || !std::path::Path::new("/usr/bin/wrk").exists()
        || std::env::var_os("BENCH_NO_WRK").is_some()
    {
        return None;
    }
    let script = std::env::temp_dir().join(format!("regkeeper-bench-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"{method}\"\nwrk.headers[\"Accept\"] = \"application/vnd.oci.image.manifest.v1+json\"\n"
        ),
    )
    .ok()?;
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{}", settings.concurrency)])
        .arg(format!("-d{}s", settings.small_duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors against {addr}:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

async fn hammer_hyper(addr: SocketAddr, method: Method, path: &str, settings: &Settings) -> f64 {
    let deadline = Instant::now() + settings.small_duration;
    let count = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..settings.concurrency)
        .map(|_| {
            let (method, path, count) = (method.clone(), path.to_string(), count.clone());
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                while Instant::now() < deadline {
                    if sender.ready().await.is_err() {
                        // The server closed the keep-alive connection: open another.
                        sender = connect(addr).await;
                    }
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

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
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
                let manifest = Bytes::from_static(FAST_MANIFEST);
                let digest = sha256(&manifest);
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let _ = stream.set_nodelay(true);
                    let (manifest, digest) = (manifest.clone(), digest.clone());
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |_request: Request<Incoming>| {
                                let response = http::Response::builder()
                                    .header(
                                        "content-type",
                                        "application/vnd.oci.image.manifest.v1+json",
                                    )
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
    /// Proxies the static nginx upstream (another process, see [`NginxStatic`]).
    static_addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Guard,
}

impl Nginx {
    fn start(registry: SocketAddr, fast: SocketAddr, upstream: SocketAddr) -> Option<Self> {
        let binary = nginx_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let registry_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let fast_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let static_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.path().display();
        let conf = format!(
            r#"{head}
  upstream registry {{ server {registry}; keepalive 64; }}
  upstream fast {{ server {fast}; keepalive 64; }}
  upstream static {{ server {upstream}; keepalive 64; }}
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
  server {{
    listen {static_addr};
    location / {{
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"#,
            head = nginx_head(&d.to_string(), &format!("{d}/access.log")),
        );
        let child = spawn_nginx(binary, dir.path(), &conf, static_addr)?;
        Some(Self {
            registry_addr,
            fast_addr,
            static_addr,
            _dir: dir,
            _child: child,
        })
    }

    fn pid(&self) -> u32 {
        self._child.0.id()
    }

    fn registry_url(&self) -> String {
        format!("http://{}", self.registry_addr)
    }
}

/// nginx serving the fast upstream's manifest as a static file, with the headers a registry
/// sends: the fastest upstream there is, in its own process so each proxy's CPU is its own.
struct NginxStatic {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Guard,
}

impl NginxStatic {
    fn start(path: &str, manifest: &[u8]) -> Option<Self> {
        let binary = nginx_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, manifest).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.path().display();
        let conf = format!(
            r#"{head}
  server {{
    listen {addr};
    root {d}/root;
    location / {{
      default_type application/vnd.oci.image.manifest.v1+json;
      add_header Docker-Content-Digest {digest};
      add_header Docker-Distribution-Api-Version registry/2.0;
      etag off;
    }}
  }}
}}
"#,
            head = nginx_head(&d.to_string(), "off"),
            digest = sha256(manifest),
        );
        let child = spawn_nginx(binary, dir.path(), &conf, addr)?;
        Some(Self {
            addr,
            _dir: dir,
            _child: child,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
