//! Cleanup on a schedule inside `serve`: every `cleanup.interval` after the last run ended (a
//! restart does not postpone it), evaluated over `serve`'s in-memory mirror of the index.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    config::Config,
    index::{Index, UnixMillis},
    mirror::Mirror,
    planning::Source,
    registry::RegistryClient,
};

/// Lets the proxy come up, and the mirror be read, before a first run.
const FIRST_RUN_DELAY: Duration = Duration::from_secs(30);
/// After a failed run, the next attempt waits at least this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(600);

pub struct Schedule {
    pub config: Arc<Config>,
    pub mirror: Arc<Mirror>,
    pub client: Arc<RegistryClient>,
}

/// Runs cleanups until `stop` turns true. A run under way is abandoned there; the next start
/// settles what it left (see `recovery`).
pub async fn run_periodic(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    let interval = schedule.config.cleanup.interval.0;
    if interval.is_zero() {
        return;
    }
    let mut wait = first_wait(schedule.mirror.as_ref(), interval);
    loop {
        tracing::debug!(seconds = wait.as_secs(), "next scheduled cleanup");
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let index: &dyn Index = schedule.mirror.as_ref();
        let run = super::run_once(
            &schedule.config,
            Source::Mirror(&schedule.mirror),
            index,
            &schedule.client,
            schedule.config.cleanup.mode,
            false,
        );
        let result = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            result = run => result,
        };
        wait = match result {
            Ok(report) if report.succeeded() => interval,
            Ok(report) => {
                tracing::error!(run = report.run, tripped = ?report.tripped, counts = ?report.counts, "scheduled cleanup did not complete");
                interval.min(RETRY_AFTER_FAILURE)
            }
            Err(error) => {
                tracing::error!(%error, "scheduled cleanup failed");
                interval.min(RETRY_AFTER_FAILURE)
            }
        };
    }
}

fn first_wait(index: &dyn Index, interval: Duration) -> Duration {
    match index.last_cleanup() {
        Ok(Some(last)) => {
            let since = UnixMillis::now().0.saturating_sub(last.finished.0);
            interval
                .saturating_sub(Duration::from_millis(since))
                .max(FIRST_RUN_DELAY)
        }
        _ => FIRST_RUN_DELAY.min(interval),
    }
}
