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
//! `manifest`, `linking`, `configs`, `config`, `tls`.

pub mod progress;
pub mod schedule;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::{StreamExt, stream};
use tokio::sync::{OnceCell, Semaphore};

pub use progress::{Counters, ProgressStyle};

use crate::{
    config::Config,
    configs::{self, ConfigCache},
    events::{EventSender, RegistryEvent},
    index::{
        ConfigFacts, Index, IndexError, ManifestKind, ManifestRecord, SyncState, UnixMillis, Write,
    },
    linking::Linker,
    manifest,
    registry::{CatalogFrom, FetchedManifest, RegistryClient, RegistryError},
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
    let index: Arc<dyn Index> = Arc::new(crate::index::open_sled(&config.index.path)?);
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

/// One run's shared state.
struct Crawl<'a> {
    client: &'a RegistryClient,
    index: &'a dyn Index,
    events: &'a EventSender,
    linker: &'a Linker,
    requests: Semaphore,
    counters: Counters,
    configs: ConfigCache,
}

/// Manifests of one repository fetched in this run, by digest: the first tag on a digest
/// fetches and records it, the other tags on it wait for that and only add themselves.
type Fetches = Mutex<HashMap<String, Arc<OnceCell<ManifestRecord>>>>;

/// Runs one sync to the end (or resumes an interrupted one).
pub async fn run(
    client: &RegistryClient,
    index: Arc<dyn Index>,
    events: &EventSender,
    linker: &Linker,
    options: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
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
    let mut state = SyncState {
        started: run_started,
        done_through: resumed_after.clone(),
        finished: None,
        last_finished,
    };
    events
        .send_or_wait(RegistryEvent::Record(vec![Write::SyncProgress(
            state.clone(),
        )]))
        .await;
    if let Some(after) = &resumed_after {
        tracing::info!(after, "sync resumes an interrupted run");
    }

    let crawl = Crawl {
        client,
        index: index.as_ref(),
        events,
        linker,
        requests: Semaphore::new(options.concurrency.max(1)),
        counters: Counters::default(),
        configs: ConfigCache::new(CONFIG_CACHE),
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

    // Repositories the index knows that the upstream no longer lists: their tags are gone.
    let listed: HashSet<&str> = repositories.iter().map(String::as_str).collect();
    let mut forget = Vec::new();
    for repository in index.repositories()? {
        let covered = resumed_after
            .as_deref()
            .is_none_or(|after| repository.as_str() > after);
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
    Counters::add(&crawl.counters.tags_gone, forget.len() as u64);
    let now = UnixMillis::now();
    state.finished = Some(now);
    state.last_finished = Some(now);
    forget.push(Write::SyncProgress(state));
    events.send_or_wait(RegistryEvent::Record(forget)).await;

    let c = &crawl.counters;
    let report = SyncReport {
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
    };
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

impl Crawl<'_> {
    /// Every repository in the catalog (after `after`, when resuming), in catalog order.
    async fn catalog(&self, after: Option<&str>) -> Result<Vec<String>, SyncError> {
        let mut repositories = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0usize;
        loop {
            let from = match (&next, after) {
                (Some(next), _) => CatalogFrom::Next(next),
                (None, Some(after)) => CatalogFrom::After(after),
                (None, None) => CatalogFrom::Start,
            };
            let page = {
                let _slot = self.requests.acquire().await;
                self.client.catalog_page(from, CATALOG_PAGE).await
            }
            .map_err(SyncError::Catalog)?;
            let progressed = page.repositories.last().cloned();
            repositories.extend(page.repositories);
            pages += 1;
            match page.next {
                Some(_) if pages >= crate::registry::MAX_PAGES => {
                    return Err(SyncError::Catalog(RegistryError::Malformed {
                        what: "list repositories (/v2/_catalog)".into(),
                        why: format!("more than {} pages", crate::registry::MAX_PAGES),
                    }));
                }
                // A page that adds nothing must not be followed forever.
                Some(link) if progressed.is_some() && next.as_ref() != Some(&link) => {
                    next = Some(link);
                }
                _ => break,
            }
        }
        // Registries list in lexical order; resuming relies on it, so make sure of it.
        repositories.sort();
        repositories.dedup();
        Ok(repositories)
    }

    /// Records what the index lacks of one repository. Failures are counted and logged; the
    /// next run tries again.
    async fn repository(&self, repository: &str) {
        let listed_at = UnixMillis::now();
        let listed = {
            let _slot = self.requests.acquire().await;
            self.client.tags(repository).await
        };
        let tags = match listed {
            Ok(tags) => tags,
            Err(error) => {
                Counters::add(&self.counters.errors, 1);
                tracing::warn!(%error, repository, "sync skipped a repository");
                return;
            }
        };
        Counters::add(&self.counters.tags, tags.len() as u64);
        let known = match self.index.tags(repository) {
            Ok(known) => known,
            Err(error) => {
                Counters::add(&self.counters.errors, 1);
                tracing::error!(%error, repository, "sync cannot read the index");
                return;
            }
        };
        let upstream: HashSet<&str> = tags.iter().map(String::as_str).collect();
        let gone: Vec<Write> = known
            .iter()
            .filter(|t| !upstream.contains(t.tag.as_str()))
            .map(|t| Write::ForgetTag {
                repository: repository.to_string(),
                tag: t.tag.clone(),
                listed: listed_at,
            })
            .collect();
        if !gone.is_empty() {
            Counters::add(&self.counters.tags_gone, gone.len() as u64);
            self.events.send_or_wait(RegistryEvent::Record(gone)).await;
        }
        let known: HashMap<&str, &str> = known
            .iter()
            .map(|t| (t.tag.as_str(), t.digest.as_str()))
            .collect();
        let todo: Vec<String> = tags
            .into_iter()
            .filter(|tag| {
                known
                    .get(tag.as_str())
                    .is_none_or(|digest| !self.fully_known(repository, digest))
            })
            .collect();
        let fetches = Fetches::default();
        let fetches = &fetches;
        stream::iter(todo)
            .for_each_concurrent(None, |tag: String| async move {
                match self.tag(repository, &tag, fetches).await {
                    Ok(true) => Counters::add(&self.counters.tags_recorded, 1),
                    Ok(false) => {}
                    Err(error) => {
                        Counters::add(&self.counters.errors, 1);
                        tracing::warn!(%error, repository, tag, "sync skipped a tag");
                    }
                }
            })
            .await;
    }

    /// The index has a complete record of this manifest (and its config, for an image).
    fn fully_known(&self, repository: &str, digest: &str) -> bool {
        matches!(
            self.index.manifest(repository, digest),
            Ok(Some(m)) if !m.needs_reading(manifest::understood)
        )
    }

    /// Records one tag; false when it vanished meanwhile. The tag is asked for its digest
    /// (`HEAD`); the manifest is fetched by digest, once per run however many tags name it.
    async fn tag(
        &self,
        repository: &str,
        tag: &str,
        fetches: &Fetches,
    ) -> Result<bool, RegistryError> {
        let digest = {
            let _slot = self.requests.acquire().await;
            Counters::add(&self.counters.manifest_heads, 1);
            self.client.manifest_digest(repository, tag).await?
        };
        let Some(digest) = digest else {
            return Ok(false);
        };
        let at = UnixMillis::now();
        let tag_writes = |record: &ManifestRecord| {
            // The manifest's own links come with its record; the tag adds pattern links.
            let mut writes: Vec<Write> = self
                .linker
                .tag_links(repository, &record.digest, tag, at)
                .into_iter()
                .map(Write::LinkCommit)
                .collect();
            writes.push(Write::PushTag {
                repository: repository.to_string(),
                tag: tag.to_string(),
                digest: record.digest.clone(),
                at,
                only_if_unknown: true,
            });
            writes
        };
        let cell = fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        let mut first = false;
        let fetched = cell
            .get_or_try_init(|| async {
                first = true;
                let Some(fetched) = self.fetch(repository, &digest).await? else {
                    return Err(None);
                };
                let mut writes = Vec::new();
                let record = self
                    .manifest(repository, &fetched, at, 0, &mut writes)
                    .await?;
                // The first tag goes in the same batch as the record it names.
                writes.extend(tag_writes(&record));
                self.events
                    .send_or_wait(RegistryEvent::Record(writes))
                    .await;
                Ok::<_, Option<RegistryError>>(record)
            })
            .await;
        match fetched {
            Ok(_) if first => Ok(true),
            Ok(record) => {
                // Sent after the batch holding the record (the writer keeps the order).
                self.events
                    .send_or_wait(RegistryEvent::Record(tag_writes(record)))
                    .await;
                Ok(true)
            }
            // Deleted between the HEAD and the GET.
            Err(None) => Ok(false),
            Err(Some(error)) => Err(error),
        }
    }

    async fn fetch(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let _slot = self.requests.acquire().await;
        let fetched = self.client.manifest(repository, reference).await;
        Counters::add(&self.counters.manifests_fetched, 1);
        fetched
    }

    /// The writes recording `fetched` (its config read, its children fetched when the index
    /// lacks them), pushed onto `writes`; returns its record.
    async fn manifest(
        &self,
        repository: &str,
        fetched: &FetchedManifest,
        at: UnixMillis,
        depth: usize,
        writes: &mut Vec<Write>,
    ) -> Result<ManifestRecord, RegistryError> {
        if let Ok(Some(known)) = self.index.manifest(repository, &fetched.digest)
            && !known.needs_reading(manifest::understood)
        {
            return Ok(known);
        }
        let record = manifest::parse(
            repository,
            &fetched.digest,
            &fetched.media_type,
            &fetched.body,
            at,
        )
        .unwrap_or_else(|| {
            manifest::unreadable(
                repository,
                &fetched.digest,
                &fetched.media_type,
                fetched.body.len() as u64,
                "the manifest is not valid JSON".into(),
                at,
            )
        });
        // Written after the record, in the same batch, exactly as the config reader would.
        let mut config_writes = Vec::new();
        if let Some(config_digest) = record
            .config_digest
            .clone()
            .filter(|_| record.needs_config())
            && let Some(facts) = self.config(repository, &config_digest).await
        {
            config_writes = configs::writes_for(repository, &record.digest, facts, at);
        }
        writes.extend(
            self.linker
                .manifest_links(&record, None, at)
                .into_iter()
                .map(Write::LinkCommit),
        );
        if record.kind == ManifestKind::Index && depth < MAX_NESTING {
            for child in &record.children {
                if self.fully_known(repository, child) {
                    continue;
                }
                match self.fetch(repository, child).await? {
                    Some(fetched) => {
                        Box::pin(self.manifest(repository, &fetched, at, depth + 1, writes))
                            .await?;
                    }
                    None => tracing::warn!(
                        repository,
                        index = record.digest,
                        child,
                        "an index lists a child manifest the upstream does not have"
                    ),
                }
            }
        }
        writes.push(Write::PutManifest(record.clone()));
        writes.extend(config_writes);
        Ok(record)
    }

    /// The config's facts, read once per run; `None` when the upstream could not be asked.
    async fn config(&self, repository: &str, config_digest: &str) -> Option<ConfigFacts> {
        let facts = {
            let _slot = self.requests.acquire().await;
            self.configs
                .facts(self.client, repository, config_digest)
                .await
        };
        self.counters
            .configs_read
            .store(self.configs.fetched(), std::sync::atomic::Ordering::Relaxed);
        facts
    }
}
