//! Cleanup on a schedule inside `serve`: at the times of `cleanup.schedule` (cron, UTC), or
//! every `cleanup.interval` after the last run ended (a restart does not postpone it),
//! evaluated over `serve`'s in-memory mirror of the index.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    config::{Config, Cron},
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
    /// Only the leader of the processes sharing the index runs scheduled cleanups.
    pub leadership: Arc<crate::leader::Leadership>,
}

/// Runs cleanups until `stop` turns true. A run under way is abandoned there; the next start
/// settles what it left (see `recovery`).
pub async fn run_periodic(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    let cleanup = &schedule.config.cleanup;
    let when = match (&cleanup.schedule, cleanup.interval.0) {
        (Some(cron), _) => When::Cron(cron.clone()),
        (None, interval) if !interval.is_zero() => When::Every(interval),
        (None, _) => return,
    };
    let mut wait = when.first_wait(schedule.mirror.as_ref());
    loop {
        tracing::debug!(seconds = wait.as_secs(), "next scheduled cleanup");
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(wait) => {}
        }
        match schedule.leadership.claim() {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::debug!("another process sharing the index leads; it runs cleanup");
                wait = when.next_wait(false, UnixMillis::now());
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot tell who leads (the index is unreachable); cleanup waits");
                wait = when
                    .next_wait(false, UnixMillis::now())
                    .min(RETRY_AFTER_FAILURE);
                continue;
            }
        }
        let index: &dyn Index = schedule.mirror.as_ref();
        let run = super::run_once(
            &schedule.config,
            Source::Mirror(&schedule.mirror),
            index,
            &schedule.client,
            &schedule.leadership,
            schedule.config.cleanup.mode,
            false,
        );
        let result = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            result = run => result,
        };
        let succeeded = match result {
            Ok(report) if report.succeeded() => true,
            Ok(report) => {
                tracing::error!(run = report.run, tripped = ?report.tripped, counts = ?report.counts, "scheduled cleanup did not complete");
                false
            }
            Err(error) => {
                tracing::error!(%error, "scheduled cleanup failed");
                false
            }
        };
        wait = when.next_wait(succeeded, UnixMillis::now());
    }
}

/// When runs happen.
enum When {
    /// This long after the last run ended.
    Every(Duration),
    /// At the expression's times.
    Cron(Cron),
}

impl When {
    /// Before the first run of this process.
    fn first_wait(&self, index: &dyn Index) -> Duration {
        match self {
            Self::Every(interval) => match index.last_cleanup() {
                Ok(Some(last)) => {
                    let since = UnixMillis::now().0.saturating_sub(last.finished.0);
                    interval
                        .saturating_sub(Duration::from_millis(since))
                        .max(FIRST_RUN_DELAY)
                }
                _ => FIRST_RUN_DELAY.min(*interval),
            },
            // A run due while serve was down is not made up for: the next time comes soon
            // enough, and a restart loop must not become a cleanup loop.
            Self::Cron(_) => self.next_wait(true, UnixMillis::now()),
        }
    }

    /// After a run that ended at `now`: a failed one is tried again within
    /// [`RETRY_AFTER_FAILURE`] when the next scheduled time is further away.
    fn next_wait(&self, succeeded: bool, now: UnixMillis) -> Duration {
        let next = match self {
            Self::Every(interval) => *interval,
            Self::Cron(cron) => match cron.next_after(now.0) {
                Some(at) => Duration::from_millis(at.saturating_sub(now.0)),
                // Validated to fire; a horizon passed is not a reason to spin.
                None => Duration::from_secs(86_400),
            },
        };
        if succeeded {
            next
        } else {
            next.min(RETRY_AFTER_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_waits_until_the_next_time_and_failures_retry_sooner() {
        // 2026-11-29T01:27:00Z.
        let now = UnixMillis(20_786 * 86_400_000 + (60 + 27) * 60_000);
        let nightly = When::Cron("0 3 * * *".parse().unwrap());
        assert_eq!(
            nightly.next_wait(true, now),
            Duration::from_secs(93 * 60),
            "03:00 is 1h33m away"
        );
        assert_eq!(nightly.next_wait(false, now), RETRY_AFTER_FAILURE);
        let every = When::Every(Duration::from_secs(60));
        assert_eq!(every.next_wait(false, now), Duration::from_secs(60));
        assert_eq!(every.next_wait(true, now), Duration::from_secs(60));
    }
}
