//! Registry notifications as a way in, besides the proxy: `POST /api/v1/notifications` on the
//! admin listener takes CNCF Distribution's envelope and Harbor's webhook, behind its own bearer
//! token (`admin.notificationToken`). Pushes are recorded through the same writer as the
//! proxy's taps, the manifests and configs read with regkeeper's own credentials (as `sync`
//! does); pulls feed `pulledWithin`; deletes update the index once the upstream confirms them:
//! a notification saying a tag is gone, while the registry still serves it, must not turn the
//! tag's image into an untagged manifest a cleanup could remove.
//!
//! A delivery is recorded whole or not at all: when a pushed manifest cannot be read, the answer
//! is 503 and nothing of the delivery is kept, so the sender's retry records it once. Events
//! already recorded (a retry whose first answer was lost) are recognised by their id and not
//! counted again.
//!
//! May call: `sync` (reading a notified push), `events`, `index`, `registry`, `linking`,
//! `configs`, `proxy` (the name grammar), `manifest` (media types).

mod payload;
mod recent;

use std::sync::{Arc, Mutex};

use http::StatusCode;

pub use payload::{Deleted, Delivery, Event, Notice, PayloadError, read};
use recent::Recent;

use crate::{
    configs::ConfigCache,
    events::{EventSender, PullCount, RegistryEvent},
    index::{Index, UnixMillis, Write},
    linking::Linker,
    registry::RegistryClient,
    sync::notified::Reader,
};

/// Largest delivery read: Distribution sends a few events at a time, Harbor one artifact.
pub const MAX_BODY: usize = 1024 * 1024;
/// Event ids remembered, so a delivery retried after its answer was lost counts once.
const REMEMBERED: usize = 100_000;
/// Image configs remembered across deliveries.
const CONFIG_CACHE: usize = 4096;

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    pub recorded: usize,
    pub duplicates: usize,
    pub skipped: usize,
}

/// Why a delivery was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("{repository}:{reference} cannot be checked at the upstream: {cause}")]
    Upstream {
        repository: String,
        reference: String,
        cause: String,
    },
}

impl NotificationError {
    /// What the sender is told: its payload is wrong (do not retry), or retry later.
    pub fn status(&self) -> StatusCode {
        match self {
            NotificationError::Payload(_) => StatusCode::BAD_REQUEST,
            NotificationError::Upstream { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

pub struct Notifications {
    pub token: String,
    client: Arc<RegistryClient>,
    index: Arc<dyn Index>,
    events: EventSender,
    linker: Arc<Linker>,
    configs: ConfigCache,
    recent: Mutex<Recent>,
}

impl Notifications {
    pub fn new(
        token: String,
        client: Arc<RegistryClient>,
        index: Arc<dyn Index>,
        events: EventSender,
        linker: Arc<Linker>,
    ) -> Self {
        Self {
            token,
            client,
            index,
            events,
            linker,
            configs: ConfigCache::new(CONFIG_CACHE),
            recent: Mutex::new(Recent::new(REMEMBERED)),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one delivery's body.
    pub async fn deliver(&self, body: &[u8]) -> Result<Outcome, NotificationError> {
        let delivery = read(body, UnixMillis::now(), self.client.user_agent())?;
        let delivery_len = delivery.events.len();
        // Claimed before any await: the same events delivered twice at once count once.
        let mut fresh = delivery.events;
        {
            let mut recent = self.recent();
            fresh.retain(|event| recent.claim(&event.id));
        }
        let (writes, pulls) = match self.writes(&fresh).await {
            Ok(found) => found,
            Err(error) => {
                // Nothing kept: the retry must find these events new.
                let mut recent = self.recent();
                for event in &fresh {
                    recent.release(&event.id);
                }
                return Err(error);
            }
        };
        if !writes.is_empty() {
            self.events
                .send_or_wait(RegistryEvent::Record(writes))
                .await;
        }
        if !pulls.is_empty() {
            // The writer sums pulls per reference, as it does the proxy's tallies.
            self.events.send_or_wait(RegistryEvent::Pulls(pulls)).await;
        }
        Ok(Outcome {
            recorded: fresh.len(),
            duplicates: delivery_len - fresh.len(),
            skipped: delivery.skipped,
        })
    }

    /// The write a notified delete makes, once the upstream confirms the manifest or tag is
    /// gone; `None` when it still serves it (pushed again since, or the notice is wrong).
    async fn confirmed_delete(
        &self,
        repository: &str,
        target: &Deleted,
        at: UnixMillis,
    ) -> Result<Option<Write>, NotificationError> {
        let reference = target.reference();
        let found = self
            .client
            .manifest_digest(repository, reference)
            .await
            .map_err(|error| NotificationError::Upstream {
                repository: repository.to_string(),
                reference: reference.to_string(),
                cause: error.to_string(),
            })?;
        if found.is_some() {
            tracing::info!(
                repository,
                reference,
                "a notified delete is not confirmed by the upstream; the index keeps it"
            );
            return Ok(None);
        }
        let repository = repository.to_string();
        Ok(Some(match target {
            Deleted::Digest(digest) => Write::DeleteManifest {
                repository,
                digest: digest.clone(),
            },
            Deleted::Tag(tag) => Write::DeleteTag {
                repository,
                tag: tag.clone(),
                at,
            },
        }))
    }

    /// The delivery's writes, in its order, and its pulls.
    async fn writes(
        &self,
        events: &[Event],
    ) -> Result<(Vec<Write>, Vec<PullCount>), NotificationError> {
        let reader = Reader {
            client: &self.client,
            index: self.index.as_ref(),
            events: &self.events,
            linker: &self.linker,
            configs: &self.configs,
        };
        let mut writes = Vec::new();
        let mut pulls = Vec::new();
        for event in events {
            match &event.notice {
                Notice::Push {
                    repository,
                    digest,
                    tag,
                    at,
                } => match reader.push(repository, digest, tag.as_deref(), *at).await {
                    Ok(Some(found)) => writes.extend(found),
                    // Deleted since it was pushed: its delete event follows.
                    Ok(None) => {}
                    Err(error) => {
                        return Err(NotificationError::Upstream {
                            repository: repository.clone(),
                            reference: digest.clone(),
                            cause: error.to_string(),
                        });
                    }
                },
                Notice::Pull {
                    repository,
                    reference,
                    at,
                } => pulls.push(PullCount {
                    repository: repository.clone(),
                    reference: reference.clone(),
                    count: 1,
                    last: *at,
                }),
                Notice::Delete {
                    repository,
                    target,
                    at,
                } => writes.extend(self.confirmed_delete(repository, target, *at).await?),
            }
        }
        Ok((writes, pulls))
    }
}
