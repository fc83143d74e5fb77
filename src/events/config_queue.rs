//! The queue from the index writer to the image-config reader (`configs`): the writer offers
//! the images it recorded and never waits; a full queue drops and counts (`sync` repairs).
//! Kept here, beside the writer that fills it, so the reader depends on `events` and not the
//! other way round.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc;

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
