//! The crawl of one sync run: the catalog, each repository's tags (asked for their digest with
//! `HEAD`), each manifest fetched once per run by digest, each config once per config digest,
//! and the writes that record what the index lacks.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures_util::{StreamExt, stream};
use tokio::sync::{OnceCell, Semaphore};

use super::{CATALOG_PAGE, Counters, MAX_NESTING, SyncError};
use crate::{
    configs::{self, ConfigCache},
    events::{EventSender, RegistryEvent},
    index::{ConfigFacts, Index, ManifestKind, ManifestRecord, UnixMillis, Write},
    linking::Linker,
    manifest,
    registry::{CatalogFrom, FetchedManifest, RegistryClient, RegistryError},
};

/// One run's shared state.
pub(super) struct Crawl<'a> {
    pub(super) client: &'a RegistryClient,
    pub(super) index: &'a dyn Index,
    pub(super) events: &'a EventSender,
    pub(super) linker: &'a Linker,
    pub(super) requests: Semaphore,
    pub(super) counters: Counters,
    pub(super) configs: &'a ConfigCache,
}

/// Manifests of one repository fetched in this run, by digest: the first tag on a digest
/// fetches and records it, the other tags on it wait for that and only add themselves.
type Fetches = Mutex<HashMap<String, Arc<OnceCell<ManifestRecord>>>>;

impl Crawl<'_> {
    /// Every repository in the catalog (after `after`, when resuming), in catalog order.
    pub(super) async fn catalog(&self, after: Option<&str>) -> Result<Vec<String>, SyncError> {
        let mut repositories = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0usize;
        loop {
            let from = match (&next, after) {
                (Some(next), _) => CatalogFrom::Next(next),
                (None, Some(after)) => CatalogFrom::After(after),
                (None, None) => CatalogFrom::Start,
            };
            let page = {
                let _slot = self.requests.acquire().await;
                self.client.catalog_page(from, CATALOG_PAGE).await
            }
            .map_err(SyncError::Catalog)?;
            let progressed = page.repositories.last().cloned();
            repositories.extend(page.repositories);
            pages += 1;
            match page.next {
                Some(_) if pages >= crate::registry::MAX_PAGES => {
                    return Err(SyncError::Catalog(RegistryError::Malformed {
                        what: "list repositories (/v2/_catalog)".into(),
                        why: format!("more than {} pages", crate::registry::MAX_PAGES),
                    }));
                }
                // A page that adds nothing must not be followed forever.
                Some(link) if progressed.is_some() && next.as_ref() != Some(&link) => {
                    next = Some(link);
                }
                _ => break,
            }
        }
        // Registries list in lexical order; resuming relies on it, so make sure of it.
        repositories.sort();
        repositories.dedup();
        Ok(repositories)
    }

    /// Records what the index lacks of one repository. Failures are counted and logged; the
    /// next run tries again.
    pub(super) async fn repository(&self, repository: &str) {
        let listed_at = UnixMillis::now();
        let listed = {
            let _slot = self.requests.acquire().await;
            self.client.tags(repository).await
        };
        let tags = match listed {
            Ok(tags) => tags,
            Err(error) => {
                Counters::add(&self.counters.errors, 1);
                tracing::warn!(%error, repository, "sync skipped a repository");
                return;
            }
        };
        Counters::add(&self.counters.tags, tags.len() as u64);
        let known = match self.index.tags(repository) {
            Ok(known) => known,
            Err(error) => {
                Counters::add(&self.counters.errors, 1);
                tracing::error!(%error, repository, "sync cannot read the index");
                return;
            }
        };
        let upstream: HashSet<&str> = tags.iter().map(String::as_str).collect();
        let gone: Vec<Write> = known
            .iter()
            .filter(|t| !upstream.contains(t.tag.as_str()))
            .map(|t| Write::ForgetTag {
                repository: repository.to_string(),
                tag: t.tag.clone(),
                listed: listed_at,
            })
            .collect();
        if !gone.is_empty() {
            Counters::add(&self.counters.tags_gone, gone.len() as u64);
            self.events.send_or_wait(RegistryEvent::Record(gone)).await;
        }
        let known: HashMap<&str, &str> = known
            .iter()
            .map(|t| (t.tag.as_str(), t.digest.as_str()))
            .collect();
        let todo: Vec<String> = tags
            .into_iter()
            .filter(|tag| {
                known
                    .get(tag.as_str())
                    .is_none_or(|digest| !self.fully_known(repository, digest))
            })
            .collect();
        let fetches = Fetches::default();
        let fetches = &fetches;
        stream::iter(todo)
            .for_each_concurrent(None, |tag: String| async move {
                match self.tag(repository, &tag, fetches).await {
                    Ok(true) => Counters::add(&self.counters.tags_recorded, 1),
                    Ok(false) => {}
                    Err(error) => {
                        Counters::add(&self.counters.errors, 1);
                        tracing::warn!(%error, repository, tag, "sync skipped a tag");
                    }
                }
            })
            .await;
    }

    /// The index has a complete record of this manifest (and its config, for an image).
    fn fully_known(&self, repository: &str, digest: &str) -> bool {
        matches!(
            self.index.manifest(repository, digest),
            Ok(Some(m)) if !m.needs_reading(manifest::understood)
        )
    }

    /// Records one tag; false when it vanished meanwhile. The tag is asked for its digest
    /// (`HEAD`); the manifest is fetched by digest, once per run however many tags name it.
    async fn tag(
        &self,
        repository: &str,
        tag: &str,
        fetches: &Fetches,
    ) -> Result<bool, RegistryError> {
        let digest = {
            let _slot = self.requests.acquire().await;
            Counters::add(&self.counters.manifest_heads, 1);
            self.client.manifest_digest(repository, tag).await?
        };
        let Some(digest) = digest else {
            return Ok(false);
        };
        let at = UnixMillis::now();
        let tag_writes = |record: &ManifestRecord| {
            // The manifest's own links come with its record; the tag adds pattern links.
            let mut writes: Vec<Write> = self
                .linker
                .tag_links(repository, &record.digest, tag, at)
                .into_iter()
                .map(Write::LinkCommit)
                .collect();
            writes.push(Write::PushTag {
                repository: repository.to_string(),
                tag: tag.to_string(),
                digest: record.digest.clone(),
                at,
                only_if_unknown: true,
            });
            writes
        };
        let cell = fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        let mut first = false;
        let fetched = cell
            .get_or_try_init(|| async {
                first = true;
                let Some(fetched) = self.fetch(repository, &digest).await? else {
                    return Err(None);
                };
                let mut writes = Vec::new();
                let record = self
                    .manifest(repository, &fetched, at, 0, &mut writes)
                    .await?;
                // The first tag goes in the same batch as the record it names.
                writes.extend(tag_writes(&record));
                self.events
                    .send_or_wait(RegistryEvent::Record(writes))
                    .await;
                Ok::<_, Option<RegistryError>>(record)
            })
            .await;
        match fetched {
            Ok(_) if first => Ok(true),
            Ok(record) => {
                // Sent after the batch holding the record (the writer keeps the order).
                self.events
                    .send_or_wait(RegistryEvent::Record(tag_writes(record)))
                    .await;
                Ok(true)
            }
            // Deleted between the HEAD and the GET.
            Err(None) => Ok(false),
            Err(Some(error)) => Err(error),
        }
    }

    pub(super) async fn fetch(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let _slot = self.requests.acquire().await;
        let fetched = self.client.manifest(repository, reference).await;
        Counters::add(&self.counters.manifests_fetched, 1);
        fetched
    }

    /// The writes recording `fetched` (its config read, its children fetched when the index
    /// lacks them), pushed onto `writes`; returns its record.
    pub(super) async fn manifest(
        &self,
        repository: &str,
        fetched: &FetchedManifest,
        at: UnixMillis,
        depth: usize,
        writes: &mut Vec<Write>,
    ) -> Result<ManifestRecord, RegistryError> {
        if let Ok(Some(known)) = self.index.manifest(repository, &fetched.digest)
            && !known.needs_reading(manifest::understood)
        {
            return Ok(known);
        }
        let record = manifest::parse(
            repository,
            &fetched.digest,
            &fetched.media_type,
            &fetched.body,
            at,
        )
        .unwrap_or_else(|| {
            manifest::unreadable(
                repository,
                &fetched.digest,
                &fetched.media_type,
                fetched.body.len() as u64,
                "the manifest is not valid JSON".into(),
                at,
            )
        });
        // Written after the record, in the same batch, exactly as the config reader would.
        let mut config_writes = Vec::new();
        if let Some(config_digest) = record
            .config_digest
            .clone()
            .filter(|_| record.needs_config())
            && let Some(facts) = self.config(repository, &config_digest).await
        {
            config_writes = configs::writes_for(repository, &record.digest, facts, at);
        }
        writes.extend(
            self.linker
                .manifest_links(&record, None, at)
                .into_iter()
                .map(Write::LinkCommit),
        );
        if record.kind == ManifestKind::Index && depth < MAX_NESTING {
            for child in &record.children {
                if self.fully_known(repository, child) {
                    continue;
                }
                match self.fetch(repository, child).await? {
                    Some(fetched) => {
                        Box::pin(self.manifest(repository, &fetched, at, depth + 1, writes))
                            .await?;
                    }
                    None => tracing::warn!(
                        repository,
                        index = record.digest,
                        child,
                        "an index lists a child manifest the upstream does not have"
                    ),
                }
            }
        }
        writes.push(Write::PutManifest(record.clone()));
        writes.extend(config_writes);
        Ok(record)
    }

    /// The config's facts, read once per run; `None` when the upstream could not be asked.
    async fn config(&self, repository: &str, config_digest: &str) -> Option<ConfigFacts> {
        let facts = {
            let _slot = self.requests.acquire().await;
            self.configs
                .facts(self.client, repository, config_digest)
                .await
        };
        self.counters
            .configs_read
            .store(self.configs.fetched(), std::sync::atomic::Ordering::Relaxed);
        facts
    }
}
