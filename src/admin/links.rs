//! `POST /api/v1/links`: an explicit commit link, for pipelines that reuse an existing image for a
//! new commit (content-based tags), so no push carries that commit.
//!
//! ```sh
//! curl -X POST http://127.0.0.1:9090/api/v1/links \
//!   -H "Authorization: Bearer $REGKEEPER_ADMIN_LINK_TOKEN" \
//!   -d '{"repository":"team/app","tag":"build-42","commit":"3f2a9c1d…"}'
//! ```

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::request::{Answer, authorized_json, error};

use crate::{
    events::{EventSender, RegistryEvent},
    index::{CommitLink, Index, LinkSource, UnixMillis, Write},
    proxy::route::{is_content_digest, is_valid_repository_name, is_valid_tag},
};

pub struct LinkApi {
    pub token: String,
    pub index: Arc<dyn Index>,
    pub events: EventSender,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    repository: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    commit: String,
}

impl LinkApi {
    /// One index read off the async workers; an unreadable index answers 503.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Index) -> Result<T, crate::index::IndexError> + Send + 'static,
    ) -> Result<T, Answer> {
        let index = self.index.clone();
        match tokio::task::spawn_blocking(move || read(index.as_ref())).await {
            Ok(Ok(found)) => Ok(found),
            _ => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the index cannot be read",
            )),
        }
    }

    /// The digest (and tag, if one was named) the link is about. Evidence from a tag is about
    /// that tag; a digest named here is about that digest in that repository — never every
    /// repository holding the digest.
    async fn subject(
        &self,
        repository: &str,
        tag: Option<String>,
        digest: Option<String>,
    ) -> Result<(String, Option<String>), Answer> {
        let repository = repository.to_string();
        match (tag, digest) {
            (Some(tag), None) if is_valid_tag(&tag) => {
                let wanted = tag.clone();
                match self
                    .read(move |index| index.tag(&repository, &wanted))
                    .await?
                {
                    Some(record) => Ok((record.digest, Some(tag))),
                    None => Err(error(
                        StatusCode::NOT_FOUND,
                        "the index does not know that tag",
                    )),
                }
            }
            (None, Some(digest)) if is_content_digest(&digest) => {
                let wanted = digest.clone();
                match self
                    .read(move |index| index.manifest(&repository, &wanted))
                    .await?
                {
                    Some(_) => Ok((digest, None)),
                    None => Err(error(
                        StatusCode::NOT_FOUND,
                        "the index does not hold that digest in that repository",
                    )),
                }
            }
            (None, Some(_)) => Err(error(
                StatusCode::BAD_REQUEST,
                "`digest` must be sha256:<64 hex digits> or sha512:<128 hex digits>",
            )),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of a valid `tag` or `digest`",
            )),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Answer {
        let link: LinkRequest = match authorized_json(request, &self.token, "admin.linkToken").await
        {
            Ok(Some(link)) => link,
            Ok(None) => return error(StatusCode::BAD_REQUEST, "bad JSON: empty body"),
            Err(answer) => return answer,
        };
        if !is_valid_repository_name(&link.repository) {
            return error(StatusCode::BAD_REQUEST, "invalid repository name");
        }
        let commit_ok = (7..=64).contains(&link.commit.len())
            && link.commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !commit_ok {
            return error(StatusCode::BAD_REQUEST, "commit must be 7 to 64 hex digits");
        }
        let (digest, tag) = match self.subject(&link.repository, link.tag, link.digest).await {
            Ok(subject) => subject,
            Err(answer) => return answer,
        };
        let commit = link.commit.to_ascii_lowercase();
        self.events
            .send_or_wait(RegistryEvent::Record(vec![Write::LinkCommit(CommitLink {
                digest: digest.clone(),
                commit: commit.clone(),
                source: LinkSource::Api,
                learned_at: UnixMillis::now(),
                repository: Some(link.repository.clone()),
                tag: tag.clone(),
            })]))
            .await;
        tracing::info!(
            repository = link.repository,
            digest,
            commit,
            "commit link recorded through the API"
        );
        (
            StatusCode::CREATED,
            serde_json::json!({ "repository": link.repository, "tag": tag, "digest": digest, "commit": commit }),
        )
    }
}
