//! Registry events: the only way the proxy talks to the index.
//!
//! The proxy sends [`RegistryEvent`]s into a bounded channel and never waits: when the channel is
//! full the event is dropped, counted and logged (`sync` repairs what was missed), so a slow or
//! broken index can never slow or fail a push. One writer task drains the channel in batches,
//! folds pulls of the same reference into one counter update, and applies each batch atomically.
//!
//! May call: `index`, `manifest`, `linking`.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::mpsc;

pub mod config_queue;
pub mod journal;
mod writer;

pub use journal::IndexHealth;
pub use writer::{BatchPolicy, Recorder, WriterStats, run_writer};

use crate::index::{UnixMillis, Write};

/// Something the proxy saw that the index should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryEvent {
    /// Facts to record as they are: a push, a delete, a commit link.
    Record(Vec<Write>),
    /// A manifest `PUT` answered 201. `body` is the manifest as the client sent it, or `None`
    /// when it was over the capture cap; it is parsed and checked by the writer, not the proxy.
    ManifestPushed {
        repository: String,
        tag: Option<String>,
        digest: String,
        content_type: String,
        body: Option<bytes::Bytes>,
        at: UnixMillis,
    },
    /// Manifest `GET`/`HEAD`s answered 200 (by tag or digest), tallied by a proxy worker since
    /// its last hand-over.
    Pulls(Vec<PullCount>),
}

/// Pulls of one reference counted by a [`PullTally`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullCount {
    pub repository: String,
    pub reference: String,
    pub count: u64,
    pub last: UnixMillis,
}

/// Counts pulls in the proxy worker that saw them; the worker hands the counts to the writer
/// periodically. One event per request would wake the writer's thread for every pull.
#[derive(Default)]
pub struct PullTally {
    /// `repository NUL reference` → (count, last pull). Only its own worker thread locks it.
    /// Seeded per map: the keys are names clients chose.
    counts: std::sync::Mutex<HashMap<String, (u64, UnixMillis), foldhash::fast::RandomState>>,
}

/// The tally's key for one pulled reference, built once per request (one allocation).
pub struct PullKey(String);

impl PullKey {
    pub fn new(repository: &str, reference: &str) -> Self {
        let mut key = String::with_capacity(repository.len() + 1 + reference.len());
        key.push_str(repository);
        key.push('\0');
        key.push_str(reference);
        Self(key)
    }
}

impl PullTally {
    pub fn add(&self, key: PullKey, at: UnixMillis) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(key.0.as_str()) {
            Some((count, last)) => {
                *count += 1;
                *last = (*last).max(at);
            }
            None => {
                counts.insert(key.0, (1, at));
            }
        }
    }

    /// Hands everything counted so far to the writer.
    pub fn hand_over(&self, events: &EventSender) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        if counts.is_empty() {
            return;
        }
        let pulls = counts
            .into_iter()
            .filter_map(|(key, (count, last))| {
                let (repository, reference) = key.split_once('\0')?;
                Some(PullCount {
                    repository: repository.to_string(),
                    reference: reference.to_string(),
                    count,
                    last,
                })
            })
            .collect();
        events.send(RegistryEvent::Pulls(pulls));
    }
}

/// The proxy's end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<RegistryEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// Queues `event`; drops it (and counts the drop) when the writer is behind.
    pub fn send(&self, event: RegistryEvent) {
        if let Err(error) = self.tx.try_send(event) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            crate::metrics::dropped_event("events");
            // One line per power of two keeps a storm of drops from flooding the log.
            if dropped.is_power_of_two() {
                let why = match error {
                    mpsc::error::TrySendError::Full(_) => "the index writer is behind",
                    mpsc::error::TrySendError::Closed(_) => "the index writer stopped",
                };
                tracing::warn!(
                    dropped,
                    why,
                    "index event dropped; `regkeeper sync` repairs the index"
                );
            }
        }
    }

    /// Queues `event`, waiting while the channel is full: for bulk producers like `sync`, which
    /// must not lose events and are not on a client's request path.
    pub async fn send_or_wait(&self, event: RegistryEvent) {
        if self.tx.send(event).await.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::dropped_event("events");
            tracing::warn!("index event dropped: the index writer stopped");
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer's end.
pub struct EventReceiver {
    rx: mpsc::Receiver<RegistryEvent>,
}

pub fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        EventSender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        },
        EventReceiver { rx },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{writer::fold, *};
    use crate::{
        index::{Index, in_memory},
        linking::Linker,
    };

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn pulled(reference: &str, at: u64) -> RegistryEvent {
        RegistryEvent::Pulls(vec![PullCount {
            repository: "a".into(),
            reference: reference.into(),
            count: 1,
            last: UnixMillis(at),
        }])
    }

    #[test]
    fn pulls_fold_into_one_update_per_reference() {
        let (writes, _) = fold(
            vec![
                pulled("latest", 5),
                pulled("v1", 3),
                pulled("latest", 9),
                pulled("latest", 7),
            ],
            &Linker::default(),
        );
        assert_eq!(
            writes,
            [
                Write::RecordPulls {
                    repository: "a".into(),
                    reference: "latest".into(),
                    count: 3,
                    last: UnixMillis(9)
                },
                Write::RecordPulls {
                    repository: "a".into(),
                    reference: "v1".into(),
                    count: 1,
                    last: UnixMillis(3)
                },
            ]
        );
    }

    #[tokio::test]
    async fn writer_batches_everything_sent_and_stops_with_the_senders() {
        let index: Arc<dyn Index> = Arc::new(in_memory());
        let (sender, receiver) = channel(10_000);
        let (_finish, finish_rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn(run_writer(
            receiver,
            index.clone(),
            BatchPolicy::default(),
            Recorder::default(),
            finish_rx,
        ));
        sender.send(push("latest"));
        for i in 0..5_000 {
            sender.send(pulled("latest", i));
        }
        assert_eq!(sender.dropped(), 0);
        drop(sender);
        let stats = writer.await.unwrap();
        assert_eq!(stats.events, 5_001);
        assert!(stats.batches < 100, "pulls must be batched: {stats:?}");
        assert_eq!(stats.failed_batches, 0);
        assert_eq!(index.tag("a", "latest").unwrap().unwrap().digest, D1);
        let pulls = index.pulls("a", "latest").unwrap().unwrap();
        assert_eq!((pulls.count, pulls.last_pulled), (5_000, UnixMillis(4_999)));
    }

    #[tokio::test]
    async fn tallied_pulls_arrive_as_one_event_with_their_counts() {
        let (sender, mut receiver) = channel(16);
        let tally = PullTally::default();
        for at in [3, 9, 5] {
            tally.add(PullKey::new("team/app", "latest"), UnixMillis(at));
        }
        tally.add(PullKey::new("team/app", "sha256:abc"), UnixMillis(4));
        tally.hand_over(&sender);
        tally.hand_over(&sender);
        let Some(RegistryEvent::Pulls(mut pulls)) = receiver.rx.recv().await else {
            panic!("expected one Pulls event");
        };
        pulls.sort_by(|a, b| a.reference.cmp(&b.reference));
        assert_eq!(pulls.len(), 2);
        assert_eq!(
            (pulls[0].reference.as_str(), pulls[0].count, pulls[0].last),
            ("latest", 3, UnixMillis(9))
        );
        assert_eq!(
            (pulls[1].reference.as_str(), pulls[1].count),
            ("sha256:abc", 1)
        );
        assert!(
            receiver.rx.try_recv().is_err(),
            "an empty tally sends nothing"
        );
        let (writes, _) = fold(vec![RegistryEvent::Pulls(pulls)], &Linker::default());
        assert!(writes.contains(&Write::RecordPulls {
            repository: "team/app".into(),
            reference: "latest".into(),
            count: 3,
            last: UnixMillis(9)
        }));
    }

    #[tokio::test]
    async fn finish_applies_what_is_queued_even_while_a_sender_lives() {
        let index: Arc<dyn Index> = Arc::new(in_memory());
        let (sender, receiver) = channel(100);
        let (finish, finish_rx) = tokio::sync::oneshot::channel();
        for i in 0..10 {
            sender.send(pulled("latest", i));
        }
        let writer = tokio::spawn(run_writer(
            receiver,
            index.clone(),
            BatchPolicy::default(),
            Recorder::default(),
            finish_rx,
        ));
        finish.send(()).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer must end although `sender` is alive")
            .unwrap();
        assert_eq!(stats.events, 10);
        assert_eq!(index.pulls("a", "latest").unwrap().unwrap().count, 10);
        drop(sender);
    }

    #[tokio::test]
    async fn a_full_channel_drops_and_counts_instead_of_waiting() {
        let (sender, receiver) = channel(2);
        for i in 0..5 {
            sender.send(pulled("latest", i));
        }
        assert_eq!(sender.dropped(), 3);
        drop(receiver);
        sender.send(pulled("latest", 9));
        assert_eq!(sender.dropped(), 4, "a stopped writer drops too");
    }

    fn push(tag: &str) -> RegistryEvent {
        RegistryEvent::Record(vec![Write::push("a", tag, D1, UnixMillis(1))])
    }

    /// Waits (up to 20 s) until `ready` holds.
    async fn until(what: &str, ready: impl Fn() -> bool) {
        for _ in 0..200 {
            if ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never happened: {what}");
    }

    type FaultyStore = crate::index::Store<crate::index::faulty::FaultyKv>;

    /// A writer over a store whose disk can be filled (flushed once, so the schema survives).
    struct FaultyWriter {
        store: Arc<FaultyStore>,
        index: Arc<dyn Index>,
        health: IndexHealth,
        sender: EventSender,
        finish: tokio::sync::oneshot::Sender<()>,
        writer: tokio::task::JoinHandle<WriterStats>,
    }

    fn faulty_writer() -> FaultyWriter {
        let store = Arc::new(FaultyStore::new(Default::default()).unwrap());
        store.flush().unwrap();
        let index: Arc<dyn Index> = store.clone();
        let health = IndexHealth::default();
        let (sender, receiver) = channel(1000);
        let (finish, finish_rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn(run_writer(
            receiver,
            index.clone(),
            BatchPolicy::default(),
            Recorder {
                health: health.clone(),
                ..Recorder::default()
            },
            finish_rx,
        ));
        FaultyWriter {
            store,
            index,
            health,
            sender,
            finish,
            writer,
        }
    }

    #[tokio::test]
    async fn a_full_disk_costs_writes_only_while_it_lasts_and_heals_without_a_restart() {
        let FaultyWriter {
            store,
            index,
            health,
            sender,
            finish,
            writer,
        } = faulty_writer();
        // Applied, not yet flushed when the disk fills: the engine loses it on reopen.
        sender.send(push("before"));
        until("before is recorded", || {
            index.tag("a", "before").unwrap().is_some()
        })
        .await;
        store.kv_for_tests().set_full(true);
        sender.send(push("during-1"));
        until("the failure shows", || {
            health.state().failing_since.is_some()
        })
        .await;
        sender.send(push("during-2"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let failing = health.state();
        assert!(failing.errors >= 1 && failing.pending >= 1, "{failing:?}");
        assert!(
            health.describe().contains("not writable"),
            "{}",
            health.describe()
        );
        assert!(failing.last_error.unwrap().contains("No space left"));

        // Space comes back: what waited, what the engine lost, and every new push land.
        store.kv_for_tests().set_full(false);
        until("writes recover", || health.state().failing_since.is_none()).await;
        for n in 0..20 {
            sender.send(push(&format!("after-{n}")));
        }
        until("the pushes after the free are recorded", || {
            index.tag("a", "after-19").unwrap().is_some()
        })
        .await;
        for tag in ["before", "during-1", "during-2"] {
            assert!(index.tag("a", tag).unwrap().is_some(), "{tag} was lost");
        }
        assert!(health.describe().starts_with("index: writable"));
        finish.send(()).unwrap();
        let stats = writer.await.unwrap();
        assert_eq!(stats.lost_writes, 0, "{stats:?}");
        assert!(stats.failed_batches >= 1, "{stats:?}");
        // Durable: a reopen now keeps everything.
        store.recover().unwrap();
        assert_eq!(index.tags("a").unwrap().len(), 23);
    }

    #[tokio::test]
    async fn while_the_index_fails_the_oldest_waiting_writes_are_dropped_and_counted() {
        let FaultyWriter {
            store,
            index,
            health,
            sender,
            finish: _finish,
            writer,
        } = faulty_writer();
        store.kv_for_tests().set_full(true);
        sender.send(push("oldest"));
        until("the failure shows", || {
            health.state().failing_since.is_some()
        })
        .await;
        let flood: Vec<Write> = (0..journal::MAX_PENDING_WRITES)
            .map(|n| Write::push("b", format!("t{n}"), D1, UnixMillis(2)))
            .collect();
        sender.send(RegistryEvent::Record(flood));
        until("the oldest is dropped", || health.state().dropped == 1).await;
        store.kv_for_tests().set_full(false);
        drop(sender);
        let stats = writer.await.unwrap();
        assert_eq!(stats.lost_writes, 1, "{stats:?}");
        assert!(index.tag("a", "oldest").unwrap().is_none());
        assert_eq!(index.tags("b").unwrap().len(), journal::MAX_PENDING_WRITES);
    }
}
