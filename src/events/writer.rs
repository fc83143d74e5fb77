//! The index writer: drains the events channel in batches, folds pulls of one reference into
//! one counter update, parses pushed manifests off the async threads, and hands each batch to
//! the journal (which retries what the index refuses); offers recorded images to the config
//! reader.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{
    EventReceiver, RegistryEvent,
    config_queue::{ConfigJob, ConfigQueue},
    journal::{IndexHealth, Journal, Outcome},
};
use crate::{
    index::{Index, ManifestRecord, UnixMillis, Write},
    linking::Linker,
    manifest,
};

/// When the writer is behind, it takes up to this many batches of what waits at once: a shared
/// index builds the next while the one before commits.
const MAX_BATCHES_AT_ONCE: usize = 8;

/// How the writer batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    /// At most this many events per batch.
    pub max_events: usize,
    /// After the first event of a batch, wait at most this long for more.
    pub max_delay: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            // Per-batch costs (a commit's WAL flush, the writers' lock, the change log's row) are
            // a third of a PostgreSQL batch of 4,096: 8,192 took its writes from 41-45k to
            // 53-57k records/s (`cargo bench --bench index`). The delay bounds it when idle.
            max_events: 8192,
            max_delay: Duration::from_millis(50),
        }
    }
}

/// What the writer did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub events: u64,
    pub batches: u64,
    /// Attempts that failed (each retried until it succeeds or the bound drops it).
    pub failed_batches: u64,
    /// Writes never recorded: dropped while the index failed, or still waiting at shutdown.
    pub lost_writes: u64,
}

/// What the writer does beyond applying events: link pushes to commits by tag pattern, hand
/// recorded images to the config reader, and tell how writing goes.
#[derive(Clone, Default)]
pub struct Recorder {
    pub linker: Linker,
    pub configs: Option<ConfigQueue>,
    pub health: IndexHealth,
}

/// Applies events in batches until every sender is gone or `finish` fires; then applies what is
/// still queued (nothing new is accepted) and flushes. `finish` exists because a sender can
/// outlive its usefulness (an idle admin connection holding the link API). A batch the index
/// refuses is kept and retried (see [`journal`]), so the index heals when its cause goes away.
pub async fn run_writer(
    mut receiver: EventReceiver,
    index: Arc<dyn Index>,
    policy: BatchPolicy,
    recorder: Recorder,
    finish: tokio::sync::oneshot::Receiver<()>,
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut finish = Some(finish);
    let mut journal = Held::Here(Journal::new(recorder.health.clone()));
    loop {
        let retry_at = match &journal {
            Held::Here(journal) => journal.retry_at(),
            Held::Writing(_) => None,
        };
        let first = tokio::select! {
            biased;
            written = async {
                match &mut journal {
                    Held::Writing(writing) => writing.await,
                    Held::Here(_) => std::future::pending().await,
                }
            }, if matches!(journal, Held::Writing(_)) =>
            {
                journal = Held::Here(settle(written, &recorder, &mut stats));
                continue;
            }
            event = receiver.rx.recv() => event,
            _ = async { finish.as_mut().expect("polled only while set").await },
                if finish.is_some() =>
            {
                finish = None;
                receiver.rx.close();
                continue;
            }
            // A failing index is tried again even when nothing new comes.
            _ = tokio::time::sleep_until(retry_at.map_or_else(tokio::time::Instant::now, Into::into)),
                if retry_at.is_some() =>
            {
                let here = journal.back(&recorder, &mut stats).await;
                journal = Held::Writing(start(here, &index, Vec::new(), &mut stats));
                continue;
            }
        };
        let Some(first) = first else { break };
        let batches = collect(first, &mut receiver, &policy).await;
        stats.events += batches.iter().map(|b| b.len() as u64).sum::<u64>();
        // Parsed while the batches before are written.
        let linker = recorder.linker.clone();
        let folded = tokio::task::spawn_blocking(move || {
            batches
                .into_iter()
                .map(|events| fold(events, &linker))
                .collect::<Vec<_>>()
        })
        .await;
        let here = journal.back(&recorder, &mut stats).await;
        journal = match folded {
            Ok(folded) => Held::Writing(start(here, &index, folded, &mut stats)),
            Err(error) => {
                stats.failed_batches += 1;
                tracing::error!(%error, "index writer task failed; its batch is lost");
                Held::Here(here)
            }
        };
    }
    let mut journal = journal.back(&recorder, &mut stats).await;
    // One last try for what waits, then make it durable.
    let index_now = index.clone();
    let (lost, flushed) = tokio::task::spawn_blocking(move || {
        journal.write(index_now.as_ref(), Vec::new(), true);
        let flushed = journal.flush(index_now.as_ref());
        (journal.pending(), flushed)
    })
    .await
    .unwrap_or((0, Ok(())));
    if let Err(error) = flushed {
        tracing::error!(%error, "index flush on shutdown failed");
    }
    if lost > 0 {
        stats.lost_writes += lost as u64;
        tracing::error!(
            lost,
            "index writes still failing at shutdown; these are not recorded (`regkeeper sync` repairs)"
        );
    }
    stats.lost_writes += recorder.health.state().dropped;
    stats
}

/// One batch from `first` and what comes within the delay; behind, what already waits too, in
/// more batches (which a shared index overlaps).
async fn collect(
    first: RegistryEvent,
    receiver: &mut EventReceiver,
    policy: &BatchPolicy,
) -> Vec<Vec<RegistryEvent>> {
    let mut events = Vec::with_capacity(policy.max_events);
    events.push(first);
    let deadline = tokio::time::Instant::now() + policy.max_delay;
    while events.len() < policy.max_events {
        match tokio::time::timeout_at(deadline, receiver.rx.recv()).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) | Err(_) => break,
        }
    }
    let mut batches = vec![events];
    while batches.len() < MAX_BATCHES_AT_ONCE && batches[0].len() == policy.max_events {
        let mut more = Vec::with_capacity(policy.max_events);
        while more.len() < policy.max_events {
            match receiver.rx.try_recv() {
                Ok(event) => more.push(event),
                Err(_) => break,
            }
        }
        let full = more.len() == policy.max_events;
        if !more.is_empty() {
            batches.push(more);
        }
        if !full {
            break;
        }
    }
    batches
}

/// A write under way off the async threads: it hands back the journal, how it went, and the
/// recorded images whose configs are still to read.
type Writing = tokio::task::JoinHandle<(Journal, Outcome, Vec<ConfigJob>)>;

/// Where the writer's journal is: here, or with the write in flight.
enum Held {
    Here(Journal),
    Writing(Writing),
}

impl Held {
    /// The journal, once the write in flight (if any) handed it back.
    async fn back(self, recorder: &Recorder, stats: &mut WriterStats) -> Journal {
        match self {
            Held::Here(journal) => journal,
            Held::Writing(writing) => settle(writing.await, recorder, stats),
        }
    }
}

/// Hands folded batches to the journal off the async threads (the synchronous index stays
/// there), and asks which of the recorded images still need their config read.
fn start(
    mut journal: Journal,
    index: &Arc<dyn Index>,
    folded: Vec<(Vec<Write>, Vec<ConfigJob>)>,
    stats: &mut WriterStats,
) -> Writing {
    let index = index.clone();
    stats.batches += folded.len().max(1) as u64;
    tokio::task::spawn_blocking(move || {
        let (writes, jobs): (Vec<_>, Vec<_>) = folded.into_iter().unzip();
        let jobs: Vec<ConfigJob> = jobs.into_iter().flatten().collect();
        let outcome = journal.write(index.as_ref(), writes, false);
        // A config already read for this digest (an earlier push) is not read again.
        let jobs: Vec<ConfigJob> = match outcome {
            Outcome::Written => {
                let wanted: Vec<(&str, &str)> = jobs
                    .iter()
                    .map(|job| (job.repository.as_str(), job.digest.as_str()))
                    .collect();
                match index.manifests_of(&wanted) {
                    Ok(found) => jobs
                        .into_iter()
                        .zip(found)
                        .filter(|(_, known)| known.as_ref().is_some_and(|m| m.needs_config()))
                        .map(|(job, _)| job)
                        .collect(),
                    // `sync` reads them.
                    Err(_) => Vec::new(),
                }
            }
            // `sync` reads them once the index takes writes again.
            Outcome::Failing => Vec::new(),
        };
        (journal, outcome, jobs)
    })
}

/// A finished write: its counts, the configs to read; the journal back.
fn settle(
    result: Result<(Journal, Outcome, Vec<ConfigJob>), tokio::task::JoinError>,
    recorder: &Recorder,
    stats: &mut WriterStats,
) -> Journal {
    match result {
        Ok((journal, outcome, jobs)) => {
            if outcome == Outcome::Failing {
                stats.failed_batches += 1;
            }
            if let Some(configs) = &recorder.configs {
                jobs.into_iter().for_each(|job| configs.offer(job));
            }
            journal
        }
        Err(error) => {
            stats.failed_batches += 1;
            tracing::error!(%error, "index writer task failed; its batch is lost");
            Journal::new(recorder.health.clone())
        }
    }
}

/// Events → writes, in order, with all pulls of one reference folded into one update placed
/// after the batch's other writes; and the pushed images whose configs should be read.
pub(super) fn fold(events: Vec<RegistryEvent>, linker: &Linker) -> (Vec<Write>, Vec<ConfigJob>) {
    let mut writes = Vec::with_capacity(events.len());
    let mut jobs = Vec::new();
    let mut pulls: HashMap<(String, String), (u64, UnixMillis)> = HashMap::new();
    let mut pull_order = Vec::new();
    for event in events {
        match event {
            RegistryEvent::Record(records) => writes.extend(records),
            RegistryEvent::ManifestPushed {
                repository,
                tag,
                digest,
                content_type,
                body,
                at,
            } => {
                if let Some(job) = record_push(
                    &mut writes,
                    linker,
                    repository,
                    tag,
                    digest,
                    &content_type,
                    body,
                    at,
                ) {
                    jobs.push(job);
                }
            }
            RegistryEvent::Pulls(counts) => {
                for pull in counts {
                    let key = (pull.repository, pull.reference);
                    let entry = pulls.entry(key.clone()).or_insert_with(|| {
                        pull_order.push(key);
                        (0, pull.last)
                    });
                    entry.0 += pull.count;
                    entry.1 = entry.1.max(pull.last);
                }
            }
        }
    }
    for key in pull_order {
        if let Some((count, last)) = pulls.remove(&key) {
            writes.push(Write::RecordPulls {
                repository: key.0,
                reference: key.1,
                count,
                last,
            });
        }
    }
    (writes, jobs)
}

/// The writes for one pushed manifest: its record (complete when the body was captured, matches
/// the digest and parses; otherwise marked incomplete for `sync`), its tag, and its commit
/// links; and the config to read when it is an image.
#[allow(clippy::too_many_arguments)]
fn record_push(
    writes: &mut Vec<Write>,
    linker: &Linker,
    repository: String,
    tag: Option<String>,
    digest: String,
    content_type: &str,
    body: Option<bytes::Bytes>,
    at: UnixMillis,
) -> Option<ConfigJob> {
    let verified =
        body.filter(|b| manifest::sha256_digest(b) == digest || !digest.starts_with("sha256:"));
    let record = verified
        .as_deref()
        .and_then(|b| manifest::parse(&repository, &digest, content_type, b, at))
        .unwrap_or_else(|| {
            tracing::info!(
                repository,
                digest,
                "manifest not captured or not parsed; marked for sync"
            );
            ManifestRecord::bare(&repository, &digest, content_type, at)
        });
    writes.extend(
        linker
            .manifest_links(&record, tag.as_deref(), at)
            .into_iter()
            .map(Write::LinkCommit),
    );
    let job = record.needs_config().then(|| ConfigJob {
        repository: repository.clone(),
        digest: digest.clone(),
        config_digest: record.config_digest.clone().unwrap_or_default(),
    });
    writes.push(Write::PutManifest(record));
    if let Some(tag) = tag {
        writes.push(Write::push(repository, tag, digest, at));
    }
    job
}
