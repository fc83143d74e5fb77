//! `sync`: crawls the upstream (catalog, tag lists, manifests with a full `Accept` list, image
//! configs) and records what the index does not know — pushes that bypassed the proxy, events
//! the proxy dropped, manifests it could not capture. Tags the index knows are left as they are;
//! unknown ones get the moment sync first saw them as their push time. Tags the index knows
//! but the upstream no longer lists are forgotten.
//!
//! Resumable: progress ("every repository through X is done") goes through the same event
//! writer as the findings, after them, so an interrupted run resumes after the last repository
//! it completely recorded.
//!
//! Owns: the crawl and its progress. May call: `registry`, `index` (reads), `events` (writes),
//! `manifest`, `linking`, `configs`, `config`, `tls`, `backend` (opening the index), `leader`
//! (only the leader syncs on schedule).

mod crawl;
pub mod notified;
pub mod progress;
pub mod schedule;

use std::{collections::HashSet, sync::Arc, time::Instant};

use futures_util::{StreamExt, stream};
use tokio::sync::Semaphore;

use crawl::Crawl;
pub use progress::{Counters, ProgressStyle};

use crate::{
    config::Config,
    configs::ConfigCache,
    events::{EventSender, RegistryEvent},
    index::{Index, IndexError, SyncState, UnixMillis, Write},
    linking::Linker,
    registry::{RegistryClient, RegistryError},
};

/// Findings queued ahead of the index writer (sync waits when it is full; nothing is dropped).
const WRITE_QUEUE: usize = 4096;
/// Catalog page size asked for.
const CATALOG_PAGE: usize = 1000;
/// Repositories crawled at once (their requests share `concurrency`).
const REPOSITORIES_IN_FLIGHT: usize = 4;
/// Index manifests nest this deep at most (an index of indexes is already unusual).
const MAX_NESTING: usize = 2;
/// Config facts remembered within a run (images sharing a config are read once).
const CONFIG_CACHE: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync cannot list the upstream's repositories: {0}")]
    Catalog(RegistryError),
    #[error("sync cannot read the index: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Setup(String),
}

/// `regkeeper sync`: one run against the configured upstream and index, with its own writer.
pub async fn once(config: &Config, progress: ProgressStyle) -> Result<SyncReport, SyncError> {
    let linker = Linker::new(&config.index.tag_patterns)
        .map_err(|e| SyncError::Setup(format!("index.tagPatterns: {e}")))?;
    let tls =
        crate::tls::client_for_upstream(config).map_err(|e| SyncError::Setup(e.to_string()))?;
    let client = RegistryClient::new(config, tls).map_err(|e| SyncError::Setup(e.to_string()))?;
    let index: Arc<dyn Index> = crate::backend::open(config)?;
    // One sync at a time across the processes sharing the index.
    let leadership = crate::backend::leadership(config, index.clone());
    if leadership.claim()?.is_none() {
        return Err(SyncError::Setup(
            "another regkeeper process sharing the index leads, and syncs on its schedule; this sync did not start".into(),
        ));
    }
    let (events, receiver) = crate::events::channel(WRITE_QUEUE);
    let (_finish, finish) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(crate::events::run_writer(
        receiver,
        index.clone(),
        crate::events::BatchPolicy::default(),
        crate::events::Recorder::default(),
        finish,
    ));
    let options = SyncOptions {
        concurrency: config.sync.concurrency,
        progress,
    };
    let report = run(&client, index, &events, &linker, &options).await;
    leadership.resign();
    drop(events);
    let stats = writer
        .await
        .map_err(|e| SyncError::Setup(format!("index writer failed: {e}")))?;
    if stats.lost_writes > 0 {
        return Err(SyncError::Setup(format!(
            "{} index writes could not be recorded (the index failed {} times); see the log",
            stats.lost_writes, stats.failed_batches
        )));
    }
    report
}

#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Requests to the upstream in flight at once.
    pub concurrency: usize,
    pub progress: ProgressStyle,
}

/// What a finished run did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SyncReport {
    /// The run picked up after this repository (an interrupted earlier run).
    pub resumed_after: Option<String>,
    pub repositories: u64,
    pub tags: u64,
    pub tags_recorded: u64,
    /// Manifest bodies fetched (each digest once per run).
    pub manifests_fetched: u64,
    /// Tags asked for their digest (`HEAD`, no body).
    pub manifest_heads: u64,
    /// Image configs fetched (each config digest once per run).
    pub configs_read: u64,
    pub tags_gone: u64,
    /// Repositories or tags that could not be read; they are tried again by the next run.
    pub errors: u64,
    pub seconds: f64,
}

/// Runs one sync to the end (or resumes an interrupted one).
/// Where this run starts: a new run, or the interrupted one resumed after the last repository
/// it finished.
fn starting_state(index: &dyn Index) -> Result<(SyncState, Option<String>), SyncError> {
    let previous = index.sync_state()?;
    let resume = previous
        .as_ref()
        .filter(|s| s.finished.is_none())
        .and_then(|s| s.done_through.clone().map(|through| (s.started, through)));
    let last_finished = previous.as_ref().and_then(|s| s.last_finished);
    let (run_started, resumed_after) = match resume {
        Some((run_started, through)) => (run_started, Some(through)),
        None => (UnixMillis::now(), None),
    };
    let state = SyncState {
        started: run_started,
        done_through: resumed_after.clone(),
        finished: None,
        last_finished,
    };
    Ok((state, resumed_after))
}

/// Repositories the index knows that the upstream no longer lists: their tags are gone.
fn gone(
    index: &dyn Index,
    repositories: &[String],
    resumed_after: Option<&str>,
    listed_at: UnixMillis,
) -> Result<Vec<Write>, SyncError> {
    let listed: HashSet<&str> = repositories.iter().map(String::as_str).collect();
    let mut forget = Vec::new();
    for repository in index.repositories()? {
        let covered = resumed_after.is_none_or(|after| repository.as_str() > after);
        if covered && !listed.contains(repository.as_str()) {
            for tag in index.tags(&repository)? {
                forget.push(Write::ForgetTag {
                    repository: repository.clone(),
                    tag: tag.tag,
                    listed: listed_at,
                });
            }
        }
    }
    Ok(forget)
}

impl SyncReport {
    fn of(c: &Counters, resumed_after: Option<String>, started: Instant) -> Self {
        Self {
            resumed_after,
            repositories: Counters::get(&c.repositories_done),
            tags: Counters::get(&c.tags),
            tags_recorded: Counters::get(&c.tags_recorded),
            manifests_fetched: Counters::get(&c.manifests_fetched),
            manifest_heads: Counters::get(&c.manifest_heads),
            configs_read: Counters::get(&c.configs_read),
            tags_gone: Counters::get(&c.tags_gone),
            errors: Counters::get(&c.errors),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

pub async fn run(
    client: &RegistryClient,
    index: Arc<dyn Index>,
    events: &EventSender,
    linker: &Linker,
    options: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let (mut state, resumed_after) = starting_state(index.as_ref())?;
    events
        .send_or_wait(RegistryEvent::Record(vec![Write::SyncProgress(
            state.clone(),
        )]))
        .await;
    if let Some(after) = &resumed_after {
        tracing::info!(after, "sync resumes an interrupted run");
    }

    let configs = ConfigCache::new(CONFIG_CACHE);
    let crawl = Crawl {
        client,
        index: index.as_ref(),
        events,
        linker,
        requests: Semaphore::new(options.concurrency.max(1)),
        counters: Counters::default(),
        configs: &configs,
    };
    let listed_at = UnixMillis::now();
    let repositories = crawl.catalog(resumed_after.as_deref()).await?;
    Counters::add(
        &crawl.counters.repositories_total,
        repositories.len() as u64,
    );

    let work = async {
        let crawl = &crawl;
        // Owned names: borrowed ones make this future's `Send` bound unprovable for spawn.
        let mut done = stream::iter(repositories.clone())
            .map(|repository: String| async move {
                crawl.repository(&repository).await;
                repository
            })
            .buffered(REPOSITORIES_IN_FLIGHT);
        while let Some(repository) = done.next().await {
            Counters::add(&crawl.counters.repositories_done, 1);
            state.done_through = Some(repository);
            events
                .send_or_wait(RegistryEvent::Record(vec![Write::SyncProgress(
                    state.clone(),
                )]))
                .await;
        }
    };
    progress::show(options.progress, &crawl.counters, started, work).await;

    let mut forget = gone(
        index.as_ref(),
        &repositories,
        resumed_after.as_deref(),
        listed_at,
    )?;
    Counters::add(&crawl.counters.tags_gone, forget.len() as u64);
    let now = UnixMillis::now();
    state.finished = Some(now);
    state.last_finished = Some(now);
    forget.push(Write::SyncProgress(state));
    events.send_or_wait(RegistryEvent::Record(forget)).await;

    let report = SyncReport::of(&crawl.counters, resumed_after, started);
    tracing::info!(
        repositories = report.repositories,
        tags = report.tags,
        recorded = report.tags_recorded,
        gone = report.tags_gone,
        errors = report.errors,
        seconds = format!("{:.1}", report.seconds),
        "sync finished"
    );
    Ok(report)
}
