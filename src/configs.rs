//! Reading image configs, for their labels (commit links) and `created` time. After a push the
//! proxy recorded, the config is fetched here — off the request path, with regkeeper's own
//! credentials — and the facts go back to the index through the event writer. `sync` reads
//! configs with the same function.
//!
//! Owns: the worker draining the config queue (`events::config_queue`, which the index writer
//! fills) and the config cache. May call: `registry`, `manifest`, `linking`, `events`, `index`
//! (model), `telemetry`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{OnceCell, Semaphore, mpsc};

pub use crate::events::config_queue::{ConfigJob, ConfigQueue, queue};

use crate::{
    events::{EventSender, RegistryEvent},
    index::{ConfigFacts, UnixMillis, Write},
    linking, manifest,
    registry::{RegistryClient, RegistryError},
};

/// Image configs larger than this are not read (real ones are a few KiB; a long history can
/// reach a few hundred).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Config facts remembered by the proxy's reader (a digest names immutable content; facts are a
/// few hundred bytes at most, see `manifest::Kept`).
const READER_CACHE: usize = 4096;

/// Reads queued configs, `concurrency` at a time, until the queue's senders are gone. Manifests
/// sharing a config (every push of one build to several tags or repositories) read it once.
pub async fn run_reader(
    mut jobs: mpsc::Receiver<ConfigJob>,
    client: Arc<RegistryClient>,
    events: EventSender,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let cache = Arc::new(ConfigCache::new(READER_CACHE));
    let mut running = tokio::task::JoinSet::new();
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, events, cache) = (client.clone(), events.clone(), cache.clone());
        running.spawn(async move {
            let _slot = slot;
            if let Some(facts) = cache
                .facts(&client, &job.repository, &job.config_digest)
                .await
            {
                let writes = writes_for(&job.repository, &job.digest, facts, UnixMillis::now());
                events.send_or_wait(RegistryEvent::Record(writes)).await;
            }
        });
        // Reap finished readers so the set stays small.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Config facts by config digest, shared by concurrent readers: while one reader fetches a
/// config the others asking for it wait for that fetch instead of making their own. Bounded: a
/// full cache starts over. A config the upstream could not be asked for, or that was missing
/// from the asked repository, is not remembered.
pub struct ConfigCache {
    cells: Mutex<HashMap<String, Arc<OnceCell<ConfigFacts>>>>,
    capacity: usize,
    fetched: AtomicU64,
}

impl ConfigCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            fetched: AtomicU64::new(0),
        }
    }

    /// What the config says; `None` when the upstream could not be asked (`sync` retries).
    pub async fn facts(
        &self,
        client: &RegistryClient,
        repository: &str,
        config_digest: &str,
    ) -> Option<ConfigFacts> {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
            if cells.len() >= self.capacity && !cells.contains_key(config_digest) {
                cells.clear();
            }
            cells.entry(config_digest.to_string()).or_default().clone()
        };
        let fetched = cell
            .get_or_try_init(|| async {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                match fetch(client, repository, config_digest).await {
                    Fetched::Content(facts) => Ok(facts),
                    Fetched::Missing(facts) => Err(Some(facts)),
                    Fetched::Unreachable => Err(None),
                }
            })
            .await;
        match fetched {
            Ok(facts) => Some(facts.clone()),
            Err(uncached) => uncached,
        }
    }

    /// Configs fetched from the upstream so far.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }
}

/// One config fetch's outcome.
enum Fetched {
    /// What the content says (including that it is malformed or too large: true anywhere).
    Content(ConfigFacts),
    /// Not in this repository.
    Missing(ConfigFacts),
    /// Down, timeout, refused.
    Unreachable,
}

async fn fetch(client: &RegistryClient, repository: &str, config_digest: &str) -> Fetched {
    match client
        .blob(repository, config_digest, MAX_CONFIG_BYTES)
        .await
    {
        Ok(Some(body)) => Fetched::Content(manifest::parse_config(&body)),
        Ok(None) => Fetched::Missing(problem(format!(
            "the image config {config_digest} is missing upstream"
        ))),
        Err(error @ (RegistryError::TooLarge { .. } | RegistryError::Malformed { .. })) => {
            Fetched::Content(problem(error.to_string()))
        }
        Err(error) => {
            tracing::warn!(%error, repository, config_digest, "image config not read; `sync` retries");
            Fetched::Unreachable
        }
    }
}

/// Config facts as index writes: the facts and the label links.
pub fn writes_for(
    repository: &str,
    digest: &str,
    facts: ConfigFacts,
    at: UnixMillis,
) -> Vec<Write> {
    let mut writes: Vec<Write> = linking::label_links(digest, &facts.labels, at)
        .into_iter()
        .map(Write::LinkCommit)
        .collect();
    writes.push(Write::SetConfig {
        repository: repository.to_string(),
        digest: digest.to_string(),
        facts,
    });
    writes
}

fn problem(why: String) -> ConfigFacts {
    ConfigFacts {
        problem: Some(why),
        ..ConfigFacts::default()
    }
}
