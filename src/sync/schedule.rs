//! Periodic sync inside `serve`: catches pushes that bypassed the proxy. An index that never
//! finished a sync (a new install in front of a full registry), or whose last run was
//! interrupted, is synced shortly after start; otherwise one interval after the last run ended.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{ProgressStyle, SyncOptions};
use crate::{
    events::EventSender,
    index::{Index, UnixMillis},
    linking::Linker,
    registry::RegistryClient,
};

/// Lets the proxy come up (and answer readiness) before a first sync adds load.
const FIRST_RUN_DELAY: Duration = Duration::from_secs(5);
/// After a failed run, the next attempt waits at least this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

pub struct Schedule {
    pub client: Arc<RegistryClient>,
    pub index: Arc<dyn Index>,
    pub events: EventSender,
    pub linker: Linker,
    pub interval: Duration,
    pub concurrency: usize,
    /// Only the leader of the processes sharing the index syncs.
    pub leadership: Arc<crate::leader::Leadership>,
}

/// Runs syncs on schedule until `stop` turns true (a run in progress is abandoned there and
/// resumed by the next start).
pub async fn run_periodic(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    if schedule.interval.is_zero() {
        return;
    }
    let options = SyncOptions {
        concurrency: schedule.concurrency,
        progress: ProgressStyle::Quiet,
    };
    let mut wait = first_wait(schedule.index.as_ref(), schedule.interval);
    loop {
        tracing::debug!(seconds = wait.as_secs(), "next periodic sync");
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(wait) => {}
        }
        match schedule.leadership.claim() {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::debug!("another process sharing the index leads; it syncs");
                wait = schedule.interval;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot tell who leads (the index is unreachable); sync waits");
                wait = schedule.interval.min(RETRY_AFTER_FAILURE);
                continue;
            }
        }
        let run = super::run(
            &schedule.client,
            schedule.index.clone(),
            &schedule.events,
            &schedule.linker,
            &options,
        );
        let result = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            result = run => result,
        };
        wait = match result {
            Ok(_) => schedule.interval,
            Err(error) => {
                tracing::error!(%error, "periodic sync failed");
                schedule.interval.min(RETRY_AFTER_FAILURE)
            }
        };
    }
}

fn first_wait(index: &dyn Index, interval: Duration) -> Duration {
    let last = match index.sync_state() {
        Ok(Some(state)) if state.finished.is_some() => state.last_finished,
        _ => None,
    };
    match last {
        Some(UnixMillis(last)) => {
            let since = UnixMillis::now().0.saturating_sub(last);
            interval
                .saturating_sub(Duration::from_millis(since))
                .max(FIRST_RUN_DELAY)
        }
        None => FIRST_RUN_DELAY,
    }
}
