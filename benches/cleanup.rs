//! Deletion throughput: a local Distribution holding `--tags` deletable tags (default 10,000 in
//! 10 repositories, each its own manifest over one shared config), recorded in the index as
//! `sync` would record them; one cleanup run in dry-run, then one in enforce, at the default
//! `cleanup.concurrency` (8). Steps per second of each whole run (plan, the per-repository
//! upstream listing, the audited steps), next to the registry's own DELETE rate at the same
//! concurrency as its ceiling; then the same runs against an in-bench registry serving from
//! memory, which shows regkeeper's own limit.
//!
//! Run: `cargo bench --bench cleanup` (`-- --tags 2000` for a quicker run). Needs `docker-registry`.

// The shared test support re-exports more than this bench uses.
#[allow(unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use futures_util::{StreamExt, stream};
use http::{Method, StatusCode};
use regkeeper::{
    cleanup,
    config::{CleanupMode, Config},
    index::{Index, UnixMillis, Write},
    planning::Source,
    registry::RegistryClient,
};
use support::{
    Registry,
    http::{HttpClient, empty, full},
    image::sha256,
    memory_registry::{MemoryRegistry, TagDelete, recorded_push},
    regkeeper::cli_config,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONCURRENCY: usize = 8;

/// PUTs `tags` distinct manifests (over one config blob) into `repositories` repositories;
/// returns each as pushed.
async fn fill(base: &str, tags: usize, repositories: usize) -> Vec<Pushed> {
    let http = HttpClient::default();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    for r in 0..repositories {
        http.push_blob(base, &format!("bench/app-{r}"), config)
            .await;
    }
    let config_digest = sha256(config);
    stream::iter(0..tags)
        .map(|i| {
            let http = &http;
            let config_digest = &config_digest;
            async move {
                let repository = format!("bench/app-{}", i % repositories);
                let tag = format!("old-{i}");
                let manifest = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[],"annotations":{{"n":"{i}"}}}}"#,
                    config.len()
                );
                let put = http
                    .send(
                        Method::PUT,
                        &format!("{base}/v2/{repository}/manifests/{tag}"),
                        &[("content-type", OCI_MANIFEST)],
                        full(manifest.clone().into_bytes()),
                    )
                    .await;
                assert_eq!(put.status, StatusCode::CREATED);
                let digest = sha256(manifest.as_bytes());
                (repository, tag, digest, manifest.into_bytes())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// One image as pushed: (repository, tag, digest, manifest bytes).
type Pushed = (String, String, String, Vec<u8>);

fn main() {
    let tags = support::process::usize_arg("--tags", 10_000);
    let repositories = support::process::usize_arg("--repos", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("cleanup benchmark: {tags} deletable tags in {repositories} repositories");
    let mut rows = Vec::new();

    let registry = Registry::start();
    let base = format!("http://{}", registry.addr);
    let started = Instant::now();
    let images = runtime.block_on(fill(&base, tags, repositories));
    println!(
        "Distribution filled in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (mode, rate) in measure(&runtime, &registry.url(), &images) {
        rows.push((format!("Distribution 2.8, {mode}"), rate));
    }
    // The registry's own ceiling: DELETE by digest at the same concurrency, on a fresh fill of
    // the same shape (Distribution's DELETE gets slower with more tags in the repository).
    let ceiling = runtime.block_on(delete_rate(&base, tags, repositories));
    rows.push((
        format!("Distribution 2.8: its own DELETE by digest, concurrency {CONCURRENCY}"),
        ceiling,
    ));

    let memory = runtime.block_on(MemoryRegistry::start(TagDelete::Unsupported));
    for (repository, tag, _, manifest) in &images {
        memory.put(repository, tag, manifest);
    }
    for (mode, rate) in measure(&runtime, &memory.url, &images) {
        rows.push((format!("in-bench registry, {mode}"), rate));
    }
    println!();
    println!("| upstream, mode | steps/s |");
    println!("|---|---|");
    for (name, rate) in rows {
        println!("| {name} | {rate:.0} |");
    }
}

/// One dry run, then one enforcing run, over a fresh index that records `images` as `sync`
/// would; steps per second of each.
fn measure(
    runtime: &tokio::runtime::Runtime,
    upstream: &str,
    images: &[Pushed],
) -> Vec<(&'static str, f64)> {
    let work = tempfile::tempdir().unwrap();
    let config_path = cli_config(
        work.path(),
        upstream,
        "log:\n  level: warn\nretention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n      pushedWithin: 0s\n      untracked:\n        maxAge: 0s\ncleanup:\n  maxDeletions: 1000000\n  maxFraction: 1.0\n",
    );
    let config = Config::load(&config_path).unwrap();
    let index = std::sync::Arc::new(regkeeper::index::open_sled(&config.index.path).unwrap());
    let leadership = regkeeper::backend::leadership(&config, index.clone());
    // What `sync` records for these pushes, written directly (sync's own speed is its bench).
    let at = UnixMillis(UnixMillis::now().0 - 86_400_000);
    let writes: Vec<Write> = images
        .iter()
        .flat_map(|(repository, tag, digest, manifest)| {
            recorded_push(repository, tag, digest, manifest.len() as u64, at)
        })
        .collect();
    for batch in writes.chunks(10_000) {
        index.apply(batch).unwrap();
    }
    index.flush().unwrap();
    let client = RegistryClient::new(
        &config,
        regkeeper::tls::client_for_upstream(&config).unwrap(),
    )
    .unwrap();
    let mut rates = Vec::new();
    for (mode, name, expected) in [
        (
            CleanupMode::DryRun,
            "dry-run",
            cleanup::StepOutcome::WouldDelete,
        ),
        (
            CleanupMode::Enforce,
            "enforce",
            cleanup::StepOutcome::Deleted,
        ),
    ] {
        let started = Instant::now();
        let report = runtime
            .block_on(cleanup::run_once(
                &config,
                Source::Index(index.as_ref()),
                index.as_ref(),
                &client,
                &leadership,
                mode,
                false,
            ))
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert!(report.succeeded(), "{:?}", report.counts);
        assert_eq!(
            report.counts.get(&expected),
            Some(&images.len()),
            "{:?}",
            report.counts
        );
        rates.push((name, report.steps.len() as f64 / seconds));
    }
    rates
}

async fn delete_rate(base: &str, tags: usize, repositories: usize) -> f64 {
    let images = fill(base, tags, repositories).await;
    let http = HttpClient::default();
    let started = Instant::now();
    stream::iter(images)
        .map(|(repository, _, digest, _)| {
            let http = &http;
            async move {
                let answer = http
                    .send(
                        Method::DELETE,
                        &format!("{base}/v2/{repository}/manifests/{digest}"),
                        &[],
                        empty(),
                    )
                    .await;
                assert_eq!(answer.status, StatusCode::ACCEPTED);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .count()
        .await as f64
        / started.elapsed().as_secs_f64()
}
