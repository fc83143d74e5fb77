//! Index write throughput through the batching writer, into sled and into PostgreSQL (a real
//! server started here, fsync on; skipped when Debian's `postgresql` is not installed). Each
//! record is what one recorded push writes: the manifest, its tag and a commit link. Targets:
//! sled ≥ 20,000 records/s, PostgreSQL ≥ 50,000. Run: `cargo bench --bench index`
//! (`-- --records N`, `-- --only sled|postgres`). `-- --pushed` sends what the proxy sends
//! instead: each push a manifest body the writer verifies and parses, and whose image config it
//! then asks the index about.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

#[path = "../src/index/postgres/testing.rs"]
mod testing;

use regkeeper::{
    events::{self, BatchPolicy, RegistryEvent},
    index::{self, CommitLink, Index, LinkSource, ManifestKind, ManifestRecord, UnixMillis, Write},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .windows(2)
        .find(|w| w[0] == "--records")
        .map_or(100_000, |w| w[1].parse().expect("--records N"));
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
    let pushed = args.iter().any(|a| a == "--pushed");
    let dir = tempfile::tempdir().unwrap();
    let sled_rate = wanted("sled").then(|| {
        let sled: Arc<dyn Index> = Arc::new(index::open_sled(&dir.path().join("index")).unwrap());
        write(sled, records, "sled", pushed)
    });
    if !wanted("postgres") {
        return;
    }
    let Some(_) = testing::server_binaries() else {
        println!("postgresql not installed: the PostgreSQL side is skipped");
        return;
    };
    let server = testing::TestPostgres::start_durable();
    let url = server.fresh_database();
    let options =
        regkeeper::backend::options(&regkeeper::config::PostgresConfig::new(url)).unwrap();
    let postgres: Arc<dyn Index> = Arc::new(index::open_postgres(&options).unwrap());
    let postgres_rate = write(postgres, records, "postgres", pushed);
    if let Some(sled_rate) = sled_rate {
        println!("postgres / sled: {:.2}x", postgres_rate / sled_rate);
    }
}

/// Records `records` pushes through the batching writer into `index`; records/s.
fn write(index: Arc<dyn Index>, records: u64, name: &str, pushed: bool) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Made before the clock starts: building and hashing the test data is not the writer's work
    // (in `serve` the proxy's threads hand over what they captured).
    let events: Vec<RegistryEvent> = (0..records)
        .map(|i| {
            if pushed {
                pushed_event(i)
            } else {
                recorded_event(i)
            }
        })
        .collect();
    // The queue `serve` gives its writer.
    let (sender, receiver) = events::channel(regkeeper::server::EVENT_QUEUE);
    let started = Instant::now();
    let stats = runtime.block_on(async {
        let (_finish, finish_rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn(events::run_writer(
            receiver,
            index.clone(),
            BatchPolicy::default(),
            events::Recorder::default(),
            finish_rx,
        ));
        for event in events {
            // Waits when the writer is behind, as `sync` does (the proxy drops instead).
            sender.send_or_wait(event).await;
        }
        drop(sender);
        writer.await.unwrap()
    });
    index.flush().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let name = if pushed {
        format!("{name}, as pushed")
    } else {
        name.to_string()
    };
    println!(
        "index write ({name}): {records} manifest records in {secs:.2}s = {:.0} records/s ({} batches, {} failed)",
        records as f64 / secs,
        stats.batches,
        stats.failed_batches
    );
    records as f64 / secs
}

/// Push `i` as `sync` records it: the manifest record made, its tag, its commit link.
fn recorded_event(i: u64) -> RegistryEvent {
    let digest = format!("sha256:{i:064x}");
    let repository = format!("team/app-{}", i % 50);
    let manifest = ManifestRecord {
        repository: repository.clone(),
        digest: digest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        kind: ManifestKind::Image,
        total_size: 50_000_000 + i,
        config_digest: Some(format!("sha256:{:064x}", i + 1)),
        children: Vec::new(),
        subject: None,
        artifact_type: None,
        created: Some("2026-11-27T00:00:00Z".into()),
        annotations: BTreeMap::from([(
            "org.opencontainers.image.revision".into(),
            format!("{i:040x}"),
        )]),
        labels: BTreeMap::new(),
        recorded_at: UnixMillis(i),
        untagged_at: None,
        complete: true,
        config_read: false,
        problem: None,
    };
    RegistryEvent::Record(vec![
        Write::PutManifest(manifest),
        Write::push(
            repository,
            format!("build-{i}"),
            digest.clone(),
            UnixMillis(i),
        ),
        Write::LinkCommit(CommitLink {
            digest,
            commit: format!("{i:040x}"),
            source: LinkSource::Annotation,
            learned_at: UnixMillis(i),
            repository: None,
            tag: None,
        }),
    ])
}

/// Push `i` as the proxy records it: the manifest body as pushed, its digest, its tag.
fn pushed_event(i: u64) -> RegistryEvent {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{:064x}", i + 1),
            "size": 1234
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{:064x}", i + 2),
            "size": 50_000_000 + i
        }],
        "annotations": {
            "org.opencontainers.image.revision": format!("{i:040x}"),
            "org.opencontainers.image.created": "2026-11-27T00:00:00Z"
        }
    })
    .to_string();
    RegistryEvent::ManifestPushed {
        repository: format!("team/app-{}", i % 50),
        tag: Some(format!("build-{i}")),
        digest: regkeeper::manifest::sha256_digest(body.as_bytes()),
        content_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: Some(body.into()),
        at: UnixMillis(i),
    }
}
