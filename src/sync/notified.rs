//! One push learned from outside the proxy — a registry's notification — recorded as `sync`
//! records a tag it finds: the manifest fetched by digest with regkeeper's own credentials (its
//! children and image config too, when the index lacks them), its commit links, and the tag.
//! Unlike `sync`, the tag is set even when the index knows it: a notification is a push, and a
//! push moves a tag.

use tokio::sync::Semaphore;

use super::{Counters, crawl::Crawl};
use crate::{
    configs::ConfigCache,
    events::EventSender,
    index::{Index, UnixMillis, Write},
    linking::Linker,
    registry::{RegistryClient, RegistryError},
};

/// What a notified push needs to be read.
pub struct Reader<'a> {
    pub client: &'a RegistryClient,
    pub index: &'a dyn Index,
    pub events: &'a EventSender,
    pub linker: &'a Linker,
    pub configs: &'a ConfigCache,
}

/// Upstream requests of one push at once (an index's children are fetched one by one).
const REQUESTS: usize = 4;

impl Reader<'_> {
    /// The writes recording a push of `digest` (tagged `tag`) to `repository` at `at`; `None`
    /// when the upstream no longer has the manifest (deleted since).
    pub async fn push(
        &self,
        repository: &str,
        digest: &str,
        tag: Option<&str>,
        at: UnixMillis,
    ) -> Result<Option<Vec<Write>>, RegistryError> {
        let crawl = Crawl {
            client: self.client,
            index: self.index,
            events: self.events,
            linker: self.linker,
            requests: Semaphore::new(REQUESTS),
            counters: Counters::default(),
            configs: self.configs,
        };
        let Some(fetched) = crawl.fetch(repository, digest).await? else {
            return Ok(None);
        };
        let mut writes = Vec::new();
        let record = crawl
            .manifest(repository, &fetched, at, 0, &mut writes)
            .await?;
        if let Some(tag) = tag {
            writes.extend(
                self.linker
                    .tag_links(repository, &record.digest, tag, at)
                    .into_iter()
                    .map(Write::LinkCommit),
            );
            writes.push(Write::push(
                repository.to_string(),
                tag.to_string(),
                record.digest,
                at,
            ));
        }
        Ok(Some(writes))
    }
}
