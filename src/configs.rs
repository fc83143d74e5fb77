//! Reading image configs, for their labels (commit links) and `created` time. After a push the
//! proxy recorded, the config is fetched here — off the request path, with regkeeper's own
//! credentials — and the facts go back to the index through the event writer. `sync` reads
//! configs with the same function.
//!
//! Owns: the config-reading queue (bounded; a full queue drops and counts, `sync` repairs) and
//! the worker draining it. May call: `registry`, `manifest`, `linking`, `events`, `index` (model).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::{Semaphore, mpsc};

use crate::{
    events::{EventSender, RegistryEvent},
    index::{ConfigFacts, UnixMillis, Write},
    linking, manifest,
    registry::{RegistryClient, RegistryError},
};

/// Image configs larger than this are not read (real ones are a few KiB; a long history can
/// reach a few hundred).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// An image whose config should be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigJob {
    pub repository: String,
    pub digest: String,
    pub config_digest: String,
}

/// The writer's end of the queue: never waits.
#[derive(Clone)]
pub struct ConfigQueue {
    tx: mpsc::Sender<ConfigJob>,
    dropped: Arc<AtomicU64>,
}

impl ConfigQueue {
    pub fn offer(&self, job: ConfigJob) {
        if self.tx.try_send(job).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            crate::metrics::dropped_event("configs");
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "image config not read (queue full or reader stopped); `regkeeper sync` reads it later"
                );
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub fn queue(capacity: usize) -> (ConfigQueue, mpsc::Receiver<ConfigJob>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ConfigQueue {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        },
        rx,
    )
}

/// Reads queued configs, `concurrency` at a time, until the queue's senders are gone.
pub async fn run_reader(
    mut jobs: mpsc::Receiver<ConfigJob>,
    client: Arc<RegistryClient>,
    events: EventSender,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, events) = (client.clone(), events.clone());
        running.spawn(async move {
            let _slot = slot;
            if let Some(writes) = read(&client, &job, UnixMillis::now()).await {
                events.send_or_wait(RegistryEvent::Record(writes)).await;
            }
        });
        // Reap finished readers so the set stays small.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// The writes for one config: its facts and the commits its labels name. `None` when the
/// upstream could not be asked (down, timeout, refused): nothing is recorded, `sync` retries.
pub async fn read(client: &RegistryClient, job: &ConfigJob, at: UnixMillis) -> Option<Vec<Write>> {
    let facts = fetch(client, &job.repository, &job.config_digest).await?;
    Some(writes_for(&job.repository, &job.digest, facts, at))
}

/// What the config says; `None` on a failure worth retrying later.
pub async fn fetch(
    client: &RegistryClient,
    repository: &str,
    config_digest: &str,
) -> Option<ConfigFacts> {
    match client
        .blob(repository, config_digest, MAX_CONFIG_BYTES)
        .await
    {
        Ok(Some(body)) => Some(manifest::parse_config(&body)),
        Ok(None) => Some(problem(format!(
            "the image config {config_digest} is missing upstream"
        ))),
        Err(error @ (RegistryError::TooLarge { .. } | RegistryError::Malformed { .. })) => {
            Some(problem(error.to_string()))
        }
        Err(error) => {
            tracing::warn!(%error, repository, config_digest, "image config not read; `sync` retries");
            None
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
