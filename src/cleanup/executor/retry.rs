//! Calls to a busy or failing upstream, again: `Retry-After` honoured, backoff otherwise,
//! always within the run's deadline.

use std::time::{Duration, Instant};

use super::Executor;
use crate::{cleanup::upstream::Registry, registry::RegistryError};

/// Attempts per call when the upstream is busy or fails with 5xx.
const ATTEMPTS: u32 = 4;
/// Longest wait honoured from a `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl<R: Registry> Executor<'_, R> {
    /// Runs `call` again when the upstream is busy (429/503, honouring `Retry-After`) or fails
    /// with 5xx or a transport error, with exponential backoff, within the run's deadline.
    pub(super) async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut backoff = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let wait = match &error {
                RegistryError::Busy { retry_after, .. } => retry_after
                    .map(Duration::from_secs)
                    .unwrap_or(backoff)
                    .min(MAX_RETRY_AFTER),
                RegistryError::Status { status, .. } if *status >= 500 => backoff,
                RegistryError::Transport { .. } | RegistryError::Timeout { .. } => backoff,
                _ => return Err(error),
            };
            if attempt >= ATTEMPTS || Instant::now() + wait >= self.deadline {
                return Err(error);
            }
            tracing::debug!(%error, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}
