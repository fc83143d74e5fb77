//! What a notification says, checked: CNCF Distribution's envelope
//! (`application/vnd.docker.distribution.events.v1+json`) and Harbor's webhook payload, both
//! read into [`Notice`]s. Every name, tag and digest goes through the proxy's own grammar, so a
//! notification can name nothing a client could not have pushed; one bad event refuses the
//! whole delivery (the sender keeps it and retries, nothing half-recorded). Blob events and
//! actions regkeeper has no use for are skipped and counted.

use serde::Deserialize;

use crate::{
    index::UnixMillis,
    proxy::route::{is_content_digest, is_valid_repository_name, is_valid_tag},
};

/// One thing that happened to a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A manifest was pushed, by tag or by digest.
    Push {
        repository: String,
        digest: String,
        tag: Option<String>,
        at: UnixMillis,
    },
    /// A manifest was pulled by `reference` (the tag when the pull named one, else the digest).
    Pull {
        repository: String,
        reference: String,
        at: UnixMillis,
    },
    /// A manifest (by digest) or a tag was deleted.
    Delete {
        repository: String,
        target: Deleted,
        at: UnixMillis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Digest(String),
    Tag(String),
}

impl Deleted {
    /// The manifest reference it names.
    pub fn reference(&self) -> &str {
        match self {
            Deleted::Digest(digest) => digest,
            Deleted::Tag(tag) => tag,
        }
    }
}

/// A notification event: what it says, and what names it (a retried delivery names it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub notice: Notice,
}

/// A delivery, read.
#[derive(Debug, Default)]
pub struct Delivery {
    pub events: Vec<Event>,
    /// Events with nothing to record (blobs, mounts, scans, …).
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("bad JSON: {0}")]
    Json(String),
    #[error("neither a Distribution envelope (`events`) nor a Harbor webhook (`type`)")]
    Unknown,
    #[error("event {index}: {why}")]
    Event { index: usize, why: String },
}

/// Reads a delivery; events from a request made with `own_agent` (regkeeper's own reads, e.g. of
/// a pushed manifest) are skipped: they are not pulls.
pub fn read(body: &[u8], now: UnixMillis, own_agent: &str) -> Result<Delivery, PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    if value.get("events").is_some() {
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| PayloadError::Json(e.to_string()))?;
        distribution(envelope, now, own_agent)
    } else if value.get("type").is_some() {
        let webhook: Webhook =
            serde_json::from_value(value).map_err(|e| PayloadError::Json(e.to_string()))?;
        harbor(webhook, body, now)
    } else {
        Err(PayloadError::Unknown)
    }
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
struct DistributionEvent {
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    action: String,
    target: Target,
    #[serde(default)]
    request: Option<RequestFacts>,
}

#[derive(Deserialize)]
struct RequestFacts {
    #[serde(default)]
    useragent: Option<String>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    repository: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

impl Target {
    /// Distribution reports blobs and manifests alike; the URL (or else the media type) tells.
    fn is_manifest(&self) -> bool {
        match &self.url {
            Some(url) => url.contains("/manifests/"),
            None => self
                .media_type
                .as_deref()
                .is_some_and(crate::manifest::understood),
        }
    }
}

fn distribution(
    envelope: Envelope,
    now: UnixMillis,
    own_agent: &str,
) -> Result<Delivery, PayloadError> {
    let mut delivery = Delivery::default();
    for (index, event) in envelope.events.into_iter().enumerate() {
        let bad = |why: String| PayloadError::Event { index, why };
        let own = event
            .request
            .as_ref()
            .and_then(|r| r.useragent.as_deref())
            .is_some_and(|agent| !own_agent.is_empty() && agent == own_agent);
        if own && event.action == "pull" {
            delivery.skipped += 1;
            continue;
        }
        if event.id.is_empty() || event.id.len() > 256 {
            return Err(bad("`id` must be 1 to 256 characters".into()));
        }
        let at = timestamp(event.timestamp.as_deref(), now);
        let target = &event.target;
        let repository = repository(&target.repository).map_err(bad)?;
        let digest = target.digest.as_deref().filter(|d| !d.is_empty());
        let tag = target.tag.as_deref().filter(|t| !t.is_empty());
        let notice = match event.action.as_str() {
            "push" if target.is_manifest() => Notice::Push {
                repository,
                digest: content_digest(digest).map_err(bad)?,
                tag: tag.map(checked_tag).transpose().map_err(bad)?,
                at,
            },
            "pull" if target.is_manifest() => Notice::Pull {
                repository,
                reference: match tag {
                    Some(tag) => checked_tag(tag).map_err(bad)?,
                    None => content_digest(digest).map_err(bad)?,
                },
                at,
            },
            // A deleted manifest and a deleted blob look alike (repository and digest): a
            // digest the index holds no manifest for changes nothing.
            "delete" => Notice::Delete {
                repository,
                target: match (tag, digest) {
                    (Some(tag), _) => Deleted::Tag(checked_tag(tag).map_err(bad)?),
                    (None, digest) => Deleted::Digest(content_digest(digest).map_err(bad)?),
                },
                at,
            },
            _ => {
                delivery.skipped += 1;
                continue;
            }
        };
        delivery.events.push(Event {
            id: event.id,
            notice,
        });
    }
    Ok(delivery)
}

#[derive(Deserialize)]
struct Webhook {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    occur_at: Option<i64>,
    #[serde(default)]
    event_data: Option<EventData>,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    resources: Vec<Resource>,
    repository: HarborRepository,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct HarborRepository {
    repo_full_name: String,
}

/// Harbor names no event: a delivery is named by its body, each resource by its place in it.
fn harbor(webhook: Webhook, body: &[u8], now: UnixMillis) -> Result<Delivery, PayloadError> {
    let mut delivery = Delivery::default();
    let kind = webhook.kind.as_str();
    if !matches!(kind, "PUSH_ARTIFACT" | "PULL_ARTIFACT" | "DELETE_ARTIFACT") {
        delivery.skipped += 1;
        return Ok(delivery);
    }
    let Some(data) = webhook.event_data else {
        return Err(PayloadError::Event {
            index: 0,
            why: "`event_data` is missing".into(),
        });
    };
    let at = match webhook.occur_at {
        Some(seconds) if seconds > 0 => UnixMillis((seconds as u64).saturating_mul(1000)).min(now),
        _ => now,
    };
    let body_id = crate::manifest::sha256_digest(body);
    for (index, resource) in data.resources.into_iter().enumerate() {
        let bad = |why: String| PayloadError::Event { index, why };
        let repository = repository(&data.repository.repo_full_name).map_err(bad)?;
        let digest =
            content_digest(resource.digest.as_deref().filter(|d| !d.is_empty())).map_err(bad)?;
        let tag = resource
            .tag
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(checked_tag)
            .transpose()
            .map_err(bad)?;
        let notice = match kind {
            "PUSH_ARTIFACT" => Notice::Push {
                repository,
                digest,
                tag,
                at,
            },
            "PULL_ARTIFACT" => Notice::Pull {
                repository,
                reference: tag.unwrap_or(digest),
                at,
            },
            _ => Notice::Delete {
                repository,
                target: Deleted::Digest(digest),
                at,
            },
        };
        delivery.events.push(Event {
            id: format!("harbor:{body_id}:{index}"),
            notice,
        });
    }
    Ok(delivery)
}

fn repository(name: &str) -> Result<String, String> {
    if is_valid_repository_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!("invalid repository name {:?}", shorten(name)))
    }
}

fn checked_tag(tag: &str) -> Result<String, String> {
    if is_valid_tag(tag) {
        Ok(tag.to_string())
    } else {
        Err(format!("invalid tag {:?}", shorten(tag)))
    }
}

fn content_digest(digest: Option<&str>) -> Result<String, String> {
    match digest {
        Some(digest) if is_content_digest(digest) => Ok(digest.to_string()),
        Some(digest) => Err(format!(
            "invalid digest {:?} (sha256:<64 hex> or sha512:<128 hex>)",
            shorten(digest)
        )),
        None => Err("the target names no digest".into()),
    }
}

/// A reason quotes at most this much of what it refuses.
fn shorten(text: &str) -> &str {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The event's time, never later than now: a time in the future would keep an image "recently
/// pushed" for as long as the sender liked.
fn timestamp(text: Option<&str>, now: UnixMillis) -> UnixMillis {
    text.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .map_or(now, |millis| UnixMillis(millis).min(now))
}

#[cfg(test)]
mod tests;
