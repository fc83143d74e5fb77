//! A registry serving manifests from memory, for what a real Distribution cannot show: how
//! fast regkeeper itself goes when the registry costs nothing (benchmarks), and registries
//! that answer a tag `DELETE` differently (tests). Tag lists, manifests by tag or digest (HEAD,
//! GET, PUT, DELETE), and small blob uploads (POST, then PUT with the digest).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::image::sha256;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What `DELETE /v2/<name>/manifests/<tag>` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagDelete {
    /// 400 `UNSUPPORTED`, as OCI 1.0 registries answer.
    Unsupported,
    /// Removes the tag only (OCI 1.1, Distribution 3).
    RemovesTag,
    /// Deletes the manifest the tag points to, with every tag on it — what some registries did
    /// (zot before its fix): a tag delete there would take the kept tags along.
    DeletesManifest,
}

#[derive(Default)]
struct Repository {
    tags: BTreeMap<String, String>,
    manifests: HashMap<String, Bytes>,
    blobs: HashSet<String>,
}

#[derive(Default)]
struct State {
    repositories: HashMap<String, Repository>,
    /// (method, path) of every request, in order.
    log: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct MemoryRegistry {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl MemoryRegistry {
    /// Starts serving on a free loopback port, on the current tokio runtime.
    pub async fn start(tag_delete: TagDelete) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes());
                                let body = body.unwrap_or_default();
                                let path = parts.uri.path();
                                let query = parts.uri.query().unwrap_or_default();
                                let mut state = state.lock().unwrap();
                                state.log.push((parts.method.to_string(), path.to_string()));
                                let response = answer(
                                    &mut state,
                                    tag_delete,
                                    &parts.method,
                                    path,
                                    query,
                                    body,
                                );
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state }
    }

    /// Stores `manifest` (an OCI image manifest) under `repository:tag`; returns its digest.
    pub fn put(&self, repository: &str, tag: &str, manifest: &[u8]) -> String {
        let digest = sha256(manifest);
        let mut state = self.state.lock().unwrap();
        let repository = state.repositories.entry(repository.into()).or_default();
        repository.tags.insert(tag.into(), digest.clone());
        repository
            .manifests
            .insert(digest.clone(), Bytes::copy_from_slice(manifest));
        digest
    }

    /// Where `repository:tag` points, if anywhere.
    pub fn tag(&self, repository: &str, tag: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.repositories.get(repository)?.tags.get(tag).cloned()
    }

    pub fn has_manifest(&self, repository: &str, digest: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .repositories
            .get(repository)
            .is_some_and(|r| r.manifests.contains_key(digest))
    }

    /// Every tag of `repository`, by name.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .repositories
            .get(repository)
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }
}

/// What `sync` records of an OCI image manifest (`size` bytes) tagged `tag`, seen `at`: its
/// manifest record and the tag. Tests and benches write it straight into an index.
pub fn recorded_push(
    repository: &str,
    tag: &str,
    digest: &str,
    size: u64,
    at: regkeeper::index::UnixMillis,
) -> [regkeeper::index::Write; 2] {
    use regkeeper::index::{ManifestKind, ManifestRecord, Write};
    [
        Write::PutManifest(ManifestRecord {
            kind: ManifestKind::Image,
            total_size: size,
            complete: true,
            config_read: true,
            ..ManifestRecord::bare(repository, digest, OCI_MANIFEST, at)
        }),
        Write::push(repository, tag, digest, at),
    ]
}

fn reply(
    method: &Method,
    status: StatusCode,
    body: Bytes,
    digest: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    if let Some(digest) = digest {
        response = response
            .header("docker-content-digest", digest)
            .header("content-type", OCI_MANIFEST)
            .header("content-length", body.len());
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    response.body(Full::new(body)).unwrap()
}

fn error(method: &Method, status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let body = format!("{{\"errors\":[{{\"code\":\"{code}\"}}]}}");
    reply(method, status, Bytes::from(body), None)
}

fn answer(
    state: &mut State,
    tag_delete: TagDelete,
    method: &Method,
    path: &str,
    query: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(method, StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    if rest.is_empty() {
        return reply(method, StatusCode::OK, Bytes::from_static(b"{}"), None);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let Some(repository) = state.repositories.get(name) else {
            return error(method, StatusCode::NOT_FOUND, "NAME_UNKNOWN");
        };
        let tags: Vec<&String> = repository.tags.keys().collect();
        let body = serde_json::json!({ "name": name, "tags": tags }).to_string();
        return reply(method, StatusCode::OK, Bytes::from(body), None);
    }
    if let Some((name, _)) = rest.split_once("/blobs/uploads/") {
        let repository = state.repositories.entry(name.into()).or_default();
        if *method == Method::POST {
            let mut response = reply(method, StatusCode::ACCEPTED, Bytes::new(), None);
            response.headers_mut().insert(
                http::header::LOCATION,
                format!("/v2/{name}/blobs/uploads/1").parse().unwrap(),
            );
            return response;
        }
        let digest = query
            .split('&')
            .find_map(|p| p.strip_prefix("digest="))
            .map(|d| d.replace("%3A", ":").replace("%3a", ":"));
        return match digest {
            Some(digest) if digest == sha256(&body) => {
                repository.blobs.insert(digest);
                reply(method, StatusCode::CREATED, Bytes::new(), None)
            }
            _ => error(method, StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        };
    }
    if let Some((name, digest)) = rest.split_once("/blobs/") {
        let found = state
            .repositories
            .get(name)
            .is_some_and(|r| r.blobs.contains(digest));
        return if found {
            reply(method, StatusCode::OK, Bytes::new(), None)
        } else {
            error(method, StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
        };
    }
    let Some((name, reference)) = rest.rsplit_once("/manifests/") else {
        return error(method, StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    let by_digest = reference.contains(':');
    if *method == Method::PUT {
        let digest = sha256(&body);
        let repository = state.repositories.entry(name.into()).or_default();
        repository.manifests.insert(digest.clone(), body);
        if !by_digest {
            repository.tags.insert(reference.into(), digest.clone());
        }
        let mut response = reply(method, StatusCode::CREATED, Bytes::new(), None);
        response
            .headers_mut()
            .insert("docker-content-digest", digest.parse().unwrap());
        return response;
    }
    let Some(repository) = state.repositories.get_mut(name) else {
        return error(method, StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    };
    let digest = if by_digest {
        reference.to_string()
    } else {
        match repository.tags.get(reference) {
            Some(digest) => digest.clone(),
            None => return error(method, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        }
    };
    if *method == Method::DELETE {
        match (by_digest, tag_delete) {
            (false, TagDelete::Unsupported) => {
                return error(method, StatusCode::BAD_REQUEST, "UNSUPPORTED");
            }
            (false, TagDelete::RemovesTag) => {
                repository.tags.remove(reference);
                return reply(method, StatusCode::ACCEPTED, Bytes::new(), None);
            }
            _ => {}
        }
        if repository.manifests.remove(&digest).is_none() {
            return error(method, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        }
        repository.tags.retain(|_, d| *d != digest);
        return reply(method, StatusCode::ACCEPTED, Bytes::new(), None);
    }
    match repository.manifests.get(&digest) {
        Some(body) => reply(method, StatusCode::OK, body.clone(), Some(&digest)),
        None => error(method, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
    }
}
