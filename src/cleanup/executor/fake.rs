//! An in-memory registry for the executor's unit tests: manifests by digest, tags, every call
//! recorded in order, and the faults a test asks for (a tag `DELETE` that is unsupported, a
//! busy answer with `Retry-After`).

use std::{
    collections::BTreeMap,
    future::{Future, ready},
    sync::Mutex,
};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::{
    cleanup::upstream::Registry,
    manifest::sha256_digest,
    registry::{FetchedManifest, RegistryError, TagDeletion},
};

#[derive(Default)]
pub struct FakeRegistry {
    state: Mutex<State>,
    /// Whether a tag `DELETE` removes the tag alone (else it is unsupported, as on Distribution 2).
    pub removes_tags_alone: bool,
    tag_deletion: OnceCell<bool>,
}

#[derive(Default)]
struct State {
    manifests: BTreeMap<(String, String), Bytes>,
    tags: BTreeMap<(String, String), String>,
    calls: Vec<String>,
    /// Calls answered 429 with `Retry-After: 0` before answering.
    busy: usize,
}

impl FakeRegistry {
    /// A registry whose tag `DELETE` removes the tag alone.
    pub fn deleting_tags() -> Self {
        Self {
            removes_tags_alone: true,
            ..Self::default()
        }
    }

    /// Puts `body` as a manifest under each of `tags`; its digest.
    pub fn put(&self, repository: &str, tags: &[&str], body: &str) -> String {
        let digest = sha256_digest(body.as_bytes());
        let mut state = self.state.lock().unwrap();
        state.manifests.insert(
            (repository.into(), digest.clone()),
            Bytes::from(body.to_string()),
        );
        for tag in tags {
            state
                .tags
                .insert((repository.into(), tag.to_string()), digest.clone());
        }
        digest
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn tag(&self, repository: &str, tag: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.tags.get(&(repository.into(), tag.into())).cloned()
    }

    pub fn has(&self, repository: &str, digest: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .manifests
            .contains_key(&(repository.into(), digest.into()))
    }

    /// The next `calls` calls are answered busy (429, `Retry-After: 0`).
    pub fn busy_for(&self, calls: usize) {
        self.state.lock().unwrap().busy = calls;
    }

    /// Records `call`; the busy answer when one is due.
    fn call(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, RegistryError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(call.clone());
        if state.busy > 0 {
            state.busy -= 1;
            return Err(RegistryError::Busy {
                what: call,
                status: 429,
                retry_after: Some(0),
            });
        }
        Ok(state)
    }

    fn resolve(state: &State, repository: &str, reference: &str) -> Option<String> {
        if reference.contains(':') {
            state
                .manifests
                .contains_key(&(repository.into(), reference.into()))
                .then(|| reference.to_string())
        } else {
            state
                .tags
                .get(&(repository.into(), reference.into()))
                .cloned()
        }
    }
}

impl Registry for FakeRegistry {
    fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<FetchedManifest>, RegistryError>> + Send {
        let answer = self
            .call(format!("GET {repository}:{reference}"))
            .map(|state| {
                Self::resolve(&state, repository, reference).map(|digest| FetchedManifest {
                    body: state.manifests[&(repository.into(), digest.clone())].clone(),
                    digest,
                    media_type: crate::manifest::OCI_MANIFEST.into(),
                })
            });
        ready(answer)
    }

    fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send {
        let answer = self
            .call(format!("HEAD {repository}:{reference}"))
            .map(|state| Self::resolve(&state, repository, reference));
        ready(answer)
    }

    fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send {
        let answer = self
            .call(format!("DELETE {repository}@{digest}"))
            .map(|mut state| {
                state
                    .tags
                    .retain(|(r, _), d| !(r == repository && d == digest));
                state
                    .manifests
                    .remove(&(repository.into(), digest.into()))
                    .is_some()
            });
        ready(answer)
    }

    fn delete_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> impl Future<Output = Result<TagDeletion, RegistryError>> + Send {
        let alone = self.removes_tags_alone;
        let answer = self
            .call(format!("DELETE {repository}:{tag}"))
            .map(|mut state| {
                if !alone {
                    return TagDeletion::Unsupported;
                }
                match state.tags.remove(&(repository.into(), tag.into())) {
                    Some(_) => TagDeletion::Deleted,
                    None => TagDeletion::Gone,
                }
            });
        ready(answer)
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        _media_type: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send {
        let answer = self
            .call(format!("PUT {repository}:{reference}"))
            .map(|mut state| {
                let digest = sha256_digest(&body);
                state
                    .manifests
                    .insert((repository.into(), digest.clone()), body);
                state
                    .tags
                    .insert((repository.into(), reference.into()), digest.clone());
                digest
            });
        ready(answer)
    }

    fn upload_blob(
        &self,
        repository: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send {
        let answer = self
            .call(format!("BLOB {repository}"))
            .map(|_| sha256_digest(&body));
        ready(answer)
    }

    fn tags(
        &self,
        repository: &str,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send {
        let answer = self.call(format!("LIST {repository}")).map(|state| {
            state
                .tags
                .keys()
                .filter(|(r, _)| r == repository)
                .map(|(_, t)| t.clone())
                .collect()
        });
        ready(answer)
    }

    fn tag_deletion(&self) -> &OnceCell<bool> {
        &self.tag_deletion
    }
}
