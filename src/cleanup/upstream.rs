//! What the executor asks of the registry it cleans, as a trait: the real
//! `registry::RegistryClient`, or an in-memory registry in tests, so the module that can delete
//! data is tested call by call without a network. Static dispatch: the executor is generic over
//! it, and the real client costs nothing extra.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::registry::{FetchedManifest, RegistryClient, RegistryError, TagDeletion};

pub trait Registry: Sync {
    /// The manifest `reference` (tag or digest) names, `None` when there is none.
    fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<FetchedManifest>, RegistryError>> + Send;
    /// The digest `reference` names (`HEAD`), `None` when there is none.
    fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send;
    /// `DELETE` by digest; false when it was not there.
    fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;
    /// `DELETE` of a tag.
    fn delete_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> impl Future<Output = Result<TagDeletion, RegistryError>> + Send;
    /// `PUT` of a manifest under `reference`; its digest.
    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send;
    /// A blob uploaded (unless already there); its digest.
    fn upload_blob(
        &self,
        repository: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send;
    /// Every tag of the repository.
    fn tags(
        &self,
        repository: &str,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send;
    /// Whether this registry removes a tag alone, once probed.
    fn tag_deletion(&self) -> &OnceCell<bool>;
}

impl Registry for RegistryClient {
    fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<FetchedManifest>, RegistryError>> + Send {
        RegistryClient::manifest(self, repository, reference)
    }

    fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send {
        RegistryClient::manifest_digest(self, repository, reference)
    }

    fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send {
        RegistryClient::delete_manifest(self, repository, digest)
    }

    fn delete_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> impl Future<Output = Result<TagDeletion, RegistryError>> + Send {
        RegistryClient::delete_tag(self, repository, tag)
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send {
        RegistryClient::put_manifest(self, repository, reference, media_type, body)
    }

    fn upload_blob(
        &self,
        repository: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send {
        RegistryClient::upload_blob(self, repository, body)
    }

    fn tags(
        &self,
        repository: &str,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send {
        RegistryClient::tags(self, repository)
    }

    fn tag_deletion(&self) -> &OnceCell<bool> {
        RegistryClient::tag_deletion(self)
    }
}
