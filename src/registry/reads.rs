//! The calls sync and the checks make to read the upstream: catalog pages, a repository's tags
//! (paginated, loops cut off), a manifest with the full `Accept` list (its digest checked
//! against the body), a blob (checked against its digest, refused above a limit).

use super::*;

impl RegistryClient {
    /// One catalog page: the first (`from` = None), the one after repository `after` (resuming),
    /// or a `next` path from an earlier page.
    pub async fn catalog_page(
        &self,
        from: CatalogFrom<'_>,
        page_size: usize,
    ) -> Result<CatalogPage, RegistryError> {
        let path = match from {
            CatalogFrom::Start => format!("/v2/_catalog?n={page_size}"),
            CatalogFrom::After(last) => {
                format!("/v2/_catalog?n={page_size}&last={}", query_escape(last))
            }
            CatalogFrom::Next(next) => next.to_string(),
        };
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let what = "list repositories (/v2/_catalog)";
        let (status, headers, body) = self
            .get(&path, "registry:catalog:*", None, MAX_LIST_BYTES, what)
            .await?;
        check_status(status, &body, what)?;
        let catalog: Catalog = serde_json::from_slice(&body).map_err(|e| malformed(what, e))?;
        Ok(CatalogPage {
            repositories: catalog.repositories.unwrap_or_default(),
            next: next_link(&headers),
        })
    }

    /// Every tag of `repository`, following pagination. A repository that is gone or whose
    /// tags were all deleted has none.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let scope = pull_scope(repository);
        let what = format!("list tags of {repository}");
        let mut path = format!("/v2/{repository}/tags/list");
        let mut tags = Vec::new();
        let mut pages = 0usize;
        loop {
            let response = self.get(&path, &scope, None, MAX_LIST_BYTES, &what).await?;
            let (status, headers, body) = response;
            if status == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            check_status(status, &body, &what)?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| malformed(&what, e))?;
            tags.extend(page.tags.unwrap_or_default());
            pages += 1;
            match next_link(&headers) {
                // An upstream whose links go round in circles is cut off, not followed forever.
                Some(_) if pages >= MAX_PAGES => {
                    return Err(RegistryError::Malformed {
                        what,
                        why: format!("more than {MAX_PAGES} pages of tags"),
                    });
                }
                Some(next) if next != path => path = next,
                _ => return Ok(tags),
            }
        }
    }

    /// The manifest `reference` (tag or digest) points to, `None` when there is none. The digest
    /// is checked against the body.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let what = format!("get manifest {repository}:{reference}");
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (status, headers, body) = self
            .get(
                &path,
                &pull_scope(repository),
                Some(MANIFEST_ACCEPT),
                MAX_MANIFEST_BYTES,
                &what,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(status, &body, &what)?;
        let computed = manifest::sha256_digest(&body);
        let announced = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let expected = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            announced
        };
        let digest = match expected {
            Some(d) if d.starts_with("sha256:") && d != computed => {
                return Err(RegistryError::Malformed {
                    what,
                    why: format!("the body's digest is {computed}, not {d}"),
                });
            }
            // Other algorithms (sha512) are taken as announced.
            Some(d) => d,
            None => computed,
        };
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Some(FetchedManifest {
            digest,
            media_type,
            body,
        }))
    }

    /// A blob's bytes, `None` when the upstream does not have it. Refused above `limit`.
    pub async fn blob(
        &self,
        repository: &str,
        digest: &str,
        limit: usize,
    ) -> Result<Option<Bytes>, RegistryError> {
        let what = format!("get blob {repository}@{digest}");
        let path = format!("/v2/{repository}/blobs/{digest}");
        let (status, _, body) = self
            .get(&path, &pull_scope(repository), None, limit, &what)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(status, &body, &what)?;
        if digest.starts_with("sha256:") && manifest::sha256_digest(&body) != digest {
            return Err(RegistryError::Malformed {
                what,
                why: "the blob's bytes do not match its digest".into(),
            });
        }
        Ok(Some(body))
    }
}
