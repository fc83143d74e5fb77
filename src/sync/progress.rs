//! How far a sync is: counters shared by the crawl's tasks, shown as a redrawn line on a
//! terminal or as periodic log lines otherwise.

use std::{
    io::{IsTerminal, Write as _},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Counters of one sync run.
#[derive(Debug, Default)]
pub struct Counters {
    pub repositories_total: AtomicU64,
    pub repositories_done: AtomicU64,
    /// Tags listed upstream.
    pub tags: AtomicU64,
    /// Tags the index did not know (or knew without a readable manifest), now recorded.
    pub tags_recorded: AtomicU64,
    pub manifests_fetched: AtomicU64,
    pub manifest_heads: AtomicU64,
    pub configs_read: AtomicU64,
    /// Tags the index knew that the upstream no longer has.
    pub tags_gone: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn line(&self, elapsed: Duration) -> String {
        let tags = Self::get(&self.tags);
        let rate = tags as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "repositories {}/{}, tags {} ({:.0}/s), recorded {}, manifests fetched {}, configs read {}, gone {}, errors {}",
            Self::get(&self.repositories_done),
            Self::get(&self.repositories_total),
            tags,
            rate,
            Self::get(&self.tags_recorded),
            Self::get(&self.manifests_fetched),
            Self::get(&self.configs_read),
            Self::get(&self.tags_gone),
            Self::get(&self.errors),
        )
    }
}

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A line redrawn in place on stderr (a terminal).
    Bar,
    /// An info log line every few seconds.
    Log,
    /// Nothing until the end (periodic sync inside `serve`).
    Quiet,
}

impl ProgressStyle {
    /// `Bar` when stderr is a terminal, else `Log`.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Log
        }
    }
}

/// Shows `counters` until `done` resolves.
pub async fn show(
    style: ProgressStyle,
    counters: &Counters,
    started: Instant,
    done: impl std::future::Future<Output = ()>,
) {
    let period = match style {
        ProgressStyle::Bar => Duration::from_millis(250),
        ProgressStyle::Log => Duration::from_secs(10),
        ProgressStyle::Quiet => {
            done.await;
            return;
        }
    };
    tokio::pin!(done);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            () = &mut done => break,
            _ = ticks.tick() => match style {
                ProgressStyle::Bar => {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2Ksync: {}", counters.line(started.elapsed()));
                    let _ = err.flush();
                }
                _ => tracing::info!("sync: {}", counters.line(started.elapsed())),
            },
        }
    }
    if style == ProgressStyle::Bar {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
