//! What the index writer holds between the channel and durable storage, so that index failures
//! heal: batches it could not apply yet (retried, oldest first, bounded — the oldest are dropped
//! and counted when the bound is reached), and batches applied since its last successful flush
//! (an engine that fails may lose them: after it is reopened they are applied again). A full
//! disk then costs writes only while it lasts, and every push after space comes back is
//! recorded without a restart.
//!
//! Owns: the retry queue, its backoff, and the index's write health. May call: `index`,
//! `metrics`, `calendar`.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::index::{Index, UnixMillis, Write};

/// Writes waiting for a failing index, at most (the oldest batches go first beyond it).
pub const MAX_PENDING_WRITES: usize = 100_000;
/// Applied writes kept for replay, at most: beyond it the writer flushes.
const MAX_UNFLUSHED_WRITES: usize = 20_000;
/// The writer flushes at least this often while writes come.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Whether the index takes writes, as `/readyz?verbose` and `/metrics` tell it.
#[derive(Clone, Default)]
pub struct IndexHealth(Arc<Mutex<HealthState>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Since when writes fail; `None`: they succeed.
    pub failing_since: Option<UnixMillis>,
    pub last_error: Option<String>,
    /// Writes waiting to be retried.
    pub pending: usize,
    /// Failed attempts (batches and flushes) since start.
    pub errors: u64,
    /// Writes dropped from the retry queue since start.
    pub dropped: u64,
}

impl IndexHealth {
    pub fn state(&self) -> HealthState {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut HealthState)) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        crate::metrics::index_write_state(state.failing_since.is_none(), state.pending);
    }

    /// One line for `/readyz?verbose`.
    pub fn describe(&self) -> String {
        let state = self.state();
        match (&state.failing_since, &state.last_error) {
            (Some(since), error) => format!(
                "index: not writable since {} ({}); {} writes waiting, {} dropped; retrying (the proxy serves meanwhile)",
                crate::calendar::format_millis(since.0),
                error.as_deref().unwrap_or("unknown error"),
                state.pending,
                state.dropped
            ),
            (None, _) => format!(
                "index: writable ({} failed attempts since start)",
                state.errors
            ),
        }
    }
}

/// The writer's journal.
pub struct Journal {
    pending: VecDeque<Vec<Write>>,
    pending_writes: usize,
    unflushed: VecDeque<Vec<Write>>,
    unflushed_writes: usize,
    last_flush: Instant,
    /// While failing: when to try again, and the current backoff.
    retry: Option<(Instant, Duration)>,
    health: IndexHealth,
}

/// What one [`Journal::write`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything queued is in the index.
    Written,
    /// The index failed (or is waiting to be tried again): writes are queued.
    Failing,
}

impl Journal {
    pub fn new(health: IndexHealth) -> Self {
        Self {
            pending: VecDeque::new(),
            pending_writes: 0,
            unflushed: VecDeque::new(),
            unflushed_writes: 0,
            last_flush: Instant::now(),
            retry: None,
            health,
        }
    }

    /// When a failing index should be tried again, if it is failing and writes wait.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry
            .filter(|_| !self.pending.is_empty() || !self.unflushed.is_empty())
            .map(|(at, _)| at)
    }

    /// Writes waiting for the index.
    pub fn pending(&self) -> usize {
        self.pending_writes
    }

    /// Queues the batches and applies everything queued, in order — unless a failing index is
    /// not due for another try (`force` tries anyway: shutdown).
    pub fn write(&mut self, index: &dyn Index, batches: Vec<Vec<Write>>, force: bool) -> Outcome {
        for writes in batches.into_iter().filter(|writes| !writes.is_empty()) {
            self.queue(writes);
        }
        if let Some((at, _)) = self.retry
            && Instant::now() < at
            && !force
        {
            return Outcome::Failing;
        }
        match self.attempt(index) {
            Ok(()) => {
                if self.retry.take().is_some() {
                    let state = self.health.state();
                    tracing::info!(
                        failed_attempts = state.errors,
                        "index writes recovered; what waited is recorded"
                    );
                    self.health.update(|s| {
                        s.failing_since = None;
                        s.pending = 0;
                    });
                }
                Outcome::Written
            }
            Err(error) => {
                crate::metrics::index_write_failed();
                let backoff = match self.retry {
                    None => {
                        tracing::error!(
                            %error,
                            "index writes fail; retrying with backoff, the proxy keeps serving"
                        );
                        FIRST_RETRY
                    }
                    Some((_, backoff)) => (backoff * 2).min(MAX_RETRY),
                };
                self.retry = Some((Instant::now() + backoff, backoff));
                let pending = self.pending_writes;
                self.health.update(|s| {
                    s.failing_since.get_or_insert_with(UnixMillis::now);
                    s.last_error = Some(error.to_string());
                    s.errors += 1;
                    s.pending = pending;
                });
                Outcome::Failing
            }
        }
    }

    fn queue(&mut self, writes: Vec<Write>) {
        self.pending_writes += writes.len();
        self.pending.push_back(writes);
        let mut dropped = 0;
        while self.pending_writes > MAX_PENDING_WRITES && self.pending.len() > 1 {
            if let Some(oldest) = self.pending.pop_front() {
                self.pending_writes -= oldest.len();
                dropped += oldest.len();
            }
        }
        if dropped > 0 {
            crate::metrics::dropped_writes(dropped);
            tracing::debug!(dropped, "index writes dropped while the index fails");
            self.health.update(|s| s.dropped += dropped as u64);
        }
    }

    fn attempt(&mut self, index: &dyn Index) -> Result<(), crate::index::IndexError> {
        if self.retry.is_some() {
            // The engine may have lost what it had not flushed: start over from disk and
            // apply that again, ahead of what waits.
            index.recover()?;
            while let Some(batch) = self.unflushed.pop_back() {
                self.pending_writes += batch.len();
                self.pending.push_front(batch);
            }
            self.unflushed_writes = 0;
        }
        if !self.pending.is_empty() {
            let started = Instant::now();
            let (done, result) = index.apply_each(self.pending.make_contiguous());
            let seconds = started.elapsed().as_secs_f64() / done.max(1) as f64;
            for batch in self.pending.drain(..done) {
                crate::metrics::index_batch(seconds);
                self.pending_writes -= batch.len();
                self.unflushed_writes += batch.len();
                self.unflushed.push_back(batch);
            }
            result?;
        }
        if self.unflushed_writes > MAX_UNFLUSHED_WRITES || self.last_flush.elapsed() >= FLUSH_EVERY
        {
            self.flush(index)?;
        }
        Ok(())
    }

    /// Makes what was applied durable; it is no longer kept for replay.
    pub fn flush(&mut self, index: &dyn Index) -> Result<(), crate::index::IndexError> {
        index.flush()?;
        self.unflushed.clear();
        self.unflushed_writes = 0;
        self.last_flush = Instant::now();
        Ok(())
    }
}
