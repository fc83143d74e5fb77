//! What the proxy records as traffic passes: manifest pushes (201), deletes (202) and pulls
//! (manifest `GET`/`HEAD` 200). A tap only observes; whatever happens to the index, the client
//! gets exactly the upstream's answer. Events leave through `events`, never blocking.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, header::CONTENT_TYPE};

use super::route::{OciRoute, Reference};
use crate::{
    events::{EventSender, PullKey, PullTally, RegistryEvent},
    index::{UnixMillis, Write},
};

/// Manifests above this size pass through uncaptured and are marked for `sync`.
pub const MANIFEST_CAPTURE_LIMIT: usize = 4 << 20;

/// The bytes of a manifest `PUT` body, collected as they stream past, up to the limit.
#[derive(Default)]
pub struct Capture {
    data: Mutex<BytesMut>,
    overflowed: AtomicBool,
}

impl crate::upstream::Observe for Capture {
    fn observe(&self, chunk: &[u8]) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() + chunk.len() > MANIFEST_CAPTURE_LIMIT {
            self.overflowed.store(true, Ordering::Relaxed);
            *data = BytesMut::new();
        } else {
            data.extend_from_slice(chunk);
        }
    }
}

impl Capture {
    /// The whole body, unless it was over the limit.
    fn take(&self) -> Option<Bytes> {
        if self.overflowed.load(Ordering::Relaxed) {
            return None;
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *data).freeze())
    }
}

/// What to record about one request once its answer is known.
pub enum Tap {
    Nothing,
    Push {
        repository: String,
        tag: Option<String>,
        content_type: String,
        capture: Arc<Capture>,
    },
    Delete {
        repository: String,
        reference: OwnedReference,
    },
    Pull(PullKey),
}

pub enum OwnedReference {
    Tag(String),
    Digest(String),
}

impl Tap {
    pub fn of(route: &OciRoute<'_>, method: &Method, headers: &HeaderMap) -> Self {
        let OciRoute::Manifest { name, reference } = *route else {
            return Tap::Nothing;
        };
        match *method {
            Method::PUT => Tap::Push {
                repository: name.to_string(),
                tag: match reference {
                    Reference::Tag(tag) => Some(tag.to_string()),
                    Reference::Digest(_) => None,
                },
                content_type: headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                capture: Arc::default(),
            },
            Method::DELETE => Tap::Delete {
                repository: name.to_string(),
                reference: match reference {
                    Reference::Tag(tag) => OwnedReference::Tag(tag.to_string()),
                    Reference::Digest(digest) => OwnedReference::Digest(digest.to_string()),
                },
            },
            Method::GET | Method::HEAD => Tap::Pull(PullKey::new(name, reference.as_str())),
            _ => Tap::Nothing,
        }
    }

    /// The capture slot for the request body, if this request's body is wanted.
    pub fn capture(&self) -> Option<Arc<Capture>> {
        match self {
            Tap::Push { capture, .. } => Some(capture.clone()),
            _ => None,
        }
    }

    /// Sends the event the upstream's answer calls for, if any; pulls go to the worker's tally.
    pub fn record(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        events: &EventSender,
        pulls: &PullTally,
    ) {
        match self {
            Tap::Push {
                repository,
                tag,
                content_type,
                capture,
            } if status == StatusCode::CREATED => {
                let Some(digest) = headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                else {
                    tracing::info!(
                        repository,
                        "manifest push without Docker-Content-Digest; left to sync"
                    );
                    return;
                };
                events.send(RegistryEvent::ManifestPushed {
                    repository,
                    tag,
                    digest: digest.to_string(),
                    content_type,
                    body: capture.take(),
                    at: UnixMillis::now(),
                });
            }
            Tap::Delete {
                repository,
                reference,
            } if status == StatusCode::ACCEPTED => {
                let write = match reference {
                    OwnedReference::Digest(digest) => Write::DeleteManifest { repository, digest },
                    OwnedReference::Tag(tag) => Write::DeleteTag {
                        repository,
                        tag,
                        at: UnixMillis::now(),
                    },
                };
                events.send(RegistryEvent::Record(vec![write]));
            }
            Tap::Pull(key) if status == StatusCode::OK => pulls.add(key, UnixMillis::now()),
            _ => {}
        }
    }
}
