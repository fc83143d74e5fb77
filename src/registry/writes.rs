//! The calls cleanup and restore make: HEAD a manifest or blob, DELETE a manifest by digest or
//! a tag, PUT a manifest, upload a small blob. Each is one authenticated exchange within the
//! response timeout; a 429 or 503 becomes [`RegistryError::Busy`] with the upstream's
//! `Retry-After`, for the caller's backoff.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header::LOCATION};

use super::{
    Call, MANIFEST_ACCEPT, RegistryClient, RegistryError, check_status, check_success, read_body,
};
use crate::manifest;

/// What a tag deletion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagDeletion {
    Deleted,
    /// The tag was not there.
    Gone,
    /// The upstream does not delete tags (Distribution 2 answers 400 `DIGEST_INVALID`; others
    /// 405 or `UNSUPPORTED`): use the tombstone method.
    Unsupported,
}

fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

fn delete_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push,delete")
}

impl RegistryClient {
    /// One exchange (no redirects: these calls go to the registry itself).
    async fn exchange(
        &self,
        path: &str,
        scope: &str,
        call: Call,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RegistryError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.origin)
        };
        let work = async {
            let response = self.send_authenticated(&url, scope, &call, what).await?;
            let status = response.status();
            let (parts, body) = response.into_parts();
            let body = read_body(body, 1 << 20, what).await?;
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let retry_after = parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                return Err(RegistryError::Busy {
                    what: what.to_string(),
                    status: status.as_u16(),
                    retry_after,
                });
            }
            Ok((status, parts.headers, body))
        };
        self.within_timeout(what, work).await
    }

    /// The digest `reference` points to now (HEAD with the full Accept list), `None` when it
    /// points nowhere.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let what = format!("head manifest {repository}:{reference}");
        let call = Call::bodiless(Method::HEAD, Some(MANIFEST_ACCEPT));
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (status, headers, body) = self
            .exchange(&path, &super::pull_scope(repository), call, &what)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(status, &body, &what)?;
        match headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(digest) => Ok(Some(digest.to_string())),
            // No digest header: read the manifest and compute it.
            None => Ok(self
                .manifest(repository, reference)
                .await?
                .map(|m| m.digest)),
        }
    }

    /// Deletes the manifest `digest` (and with it every tag on it). `false` when it was not
    /// there.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let what = format!("delete manifest {repository}@{digest}");
        let call = Call::bodiless(Method::DELETE, None);
        let path = format!("/v2/{repository}/manifests/{digest}");
        let (status, _, body) = self
            .exchange(&path, &delete_scope(repository), call, &what)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_success(status, &body, &what)?;
        Ok(true)
    }

    /// Deletes the tag only (OCI distribution 1.1), where the upstream supports it.
    pub async fn delete_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<TagDeletion, RegistryError> {
        let what = format!("delete tag {repository}:{tag}");
        let call = Call::bodiless(Method::DELETE, None);
        let path = format!("/v2/{repository}/manifests/{tag}");
        let (status, _, body) = self
            .exchange(&path, &delete_scope(repository), call, &what)
            .await?;
        let detail = super::error::oci_error_detail(&body);
        match status {
            s if s.is_success() => Ok(TagDeletion::Deleted),
            StatusCode::METHOD_NOT_ALLOWED => Ok(TagDeletion::Unsupported),
            StatusCode::BAD_REQUEST
                if detail.contains("DIGEST_INVALID") || detail.contains("UNSUPPORTED") =>
            {
                Ok(TagDeletion::Unsupported)
            }
            StatusCode::NOT_FOUND if detail.contains("UNSUPPORTED") => Ok(TagDeletion::Unsupported),
            StatusCode::NOT_FOUND => Ok(TagDeletion::Gone),
            _ => {
                check_success(status, &body, &what)?;
                Ok(TagDeletion::Deleted)
            }
        }
    }

    /// PUTs `body` as the manifest `reference` (a tag or its digest); returns the digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<String, RegistryError> {
        let what = format!("put manifest {repository}:{reference}");
        let digest = manifest::sha256_digest(&body);
        let call = Call::with_body(Method::PUT, media_type, body);
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (status, _, answer) = self
            .exchange(&path, &push_scope(repository), call, &what)
            .await?;
        check_success(status, &answer, &what)?;
        Ok(digest)
    }

    /// Whether the upstream holds blob `digest` in `repository`.
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let what = format!("head blob {repository}@{digest}");
        let call = Call::bodiless(Method::HEAD, None);
        let path = format!("/v2/{repository}/blobs/{digest}");
        let (status, _, body) = self
            .exchange(&path, &super::pull_scope(repository), call, &what)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_status(status, &body, &what)?;
        Ok(true)
    }

    /// Uploads a small blob (POST, then PUT with the digest: Distribution ignores a body on the
    /// POST), unless the upstream already has it.
    pub async fn upload_blob(
        &self,
        repository: &str,
        body: Bytes,
    ) -> Result<String, RegistryError> {
        let digest = manifest::sha256_digest(&body);
        if self.blob_exists(repository, &digest).await? {
            return Ok(digest);
        }
        let what = format!("upload blob {repository}@{digest}");
        let call = Call::bodiless(Method::POST, None);
        let path = format!("/v2/{repository}/blobs/uploads/");
        let (status, headers, answer) = self
            .exchange(&path, &push_scope(repository), call, &what)
            .await?;
        check_success(status, &answer, &what)?;
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Malformed {
                what: what.clone(),
                why: "no Location for the upload".into(),
            })?;
        let location = super::resolve(&format!("{}{path}", self.origin), location);
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!(
            "{location}{separator}digest={}",
            super::query_escape(&digest)
        );
        let call = Call::with_body(Method::PUT, "application/octet-stream", body);
        let (status, _, answer) = self
            .exchange(&target, &push_scope(repository), call, &what)
            .await?;
        check_success(status, &answer, &what)?;
        Ok(digest)
    }
}
