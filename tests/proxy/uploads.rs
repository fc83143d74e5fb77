//! Blob uploads, mounts, ranges, catalog paging and deletes through the proxy with raw requests,
//! the way registry clients send them.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, chunked, empty, full, with_digest},
    image::{noise, sha256},
};

/// The upload URL from a `Location` answer, checked to point at the proxy, not the upstream.
fn upload_url(proxy: &Regkeeper, location: &str) -> String {
    let base = proxy.url();
    assert!(
        location.starts_with(&format!("{base}/v2/")),
        "Location {location} should point at the proxy {base}"
    );
    location.to_string()
}

async fn start_upload(client: &HttpClient, proxy: &Regkeeper, repo: &str) -> String {
    upload_url(proxy, &client.start_upload(&proxy.url(), repo).await)
}

#[tokio::test]
async fn chunked_resumable_upload_then_range_reads() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    let blob = noise(3 << 20, 11);
    let digest = sha256(&blob);

    // First PATCH: chunked transfer encoding, several frames.
    let mut url = start_upload(&client, &proxy, "team/up").await;
    let first: Vec<Bytes> = blob[..2 << 20]
        .chunks(256 << 10)
        .map(Bytes::copy_from_slice)
        .collect();
    let answer = client.send(Method::PATCH, &url, &[], chunked(first)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.header("range"), format!("0-{}", (2 << 20) - 1));
    url = upload_url(&proxy, answer.header("location"));

    // Resume: ask where the upload stands, then send the rest with Content-Range.
    let status = client.get(&url, &[]).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), format!("0-{}", (2 << 20) - 1));
    let range = format!("{}-{}", 2 << 20, blob.len() - 1);
    let answer = client
        .send(
            Method::PATCH,
            &url,
            &[
                ("content-range", &range),
                ("content-type", "application/octet-stream"),
            ],
            full(blob[2 << 20..].to_vec()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    url = upload_url(&proxy, answer.header("location"));

    let answer = client
        .send(Method::PUT, &with_digest(&url, &digest), &[], empty())
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.header("docker-content-digest"), digest);

    let blob_url = format!("{}/v2/team/up/blobs/{digest}", proxy.url());
    let head = client.send(Method::HEAD, &blob_url, &[], empty()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), blob.len().to_string());
    let whole = client.get(&blob_url, &[]).await;
    assert_eq!(sha256(&whole.body), digest);
    let part = client.get(&blob_url, &[("range", "bytes=100-199")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part.body[..], &blob[100..200]);
}

#[tokio::test]
async fn monolithic_upload_mount_and_delete() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);

    // Monolithic: POST, then one PUT ?digest= carrying the whole blob.
    let url = start_upload(&client, &proxy, "team/src").await;
    let answer = client
        .send(
            Method::PUT,
            &with_digest(&url, &config_digest),
            &[("content-type", "application/octet-stream")],
            full(config.to_vec()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);

    // Cross-repository mount into another repository.
    let mount = client
        .send(
            Method::POST,
            &format!(
                "{}/v2/team/dst/blobs/uploads/?mount={config_digest}&from=team/src",
                proxy.url()
            ),
            &[],
            empty(),
        )
        .await;
    assert_eq!(mount.status, StatusCode::CREATED);
    assert!(
        mount.header("location").starts_with(&proxy.url()),
        "{}",
        mount.header("location")
    );
    let head = client
        .send(
            Method::HEAD,
            &format!("{}/v2/team/dst/blobs/{config_digest}", proxy.url()),
            &[],
            empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);

    // A manifest on top, then DELETE by digest passes through.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    let manifest_digest = sha256(manifest.as_bytes());
    let put = client
        .send(
            Method::PUT,
            &format!("{}/v2/team/dst/manifests/t1", proxy.url()),
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            full(manifest),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    assert_eq!(put.header("docker-content-digest"), manifest_digest);
    assert!(put.header("location").starts_with(&proxy.url()));

    let manifest_url = format!("{}/v2/team/dst/manifests/{manifest_digest}", proxy.url());
    let delete = client
        .send(Method::DELETE, &manifest_url, &[], empty())
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);
    let gone = client
        .get(
            &manifest_url,
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn catalog_pages_follow_link_through_the_proxy() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    for repo in ["a/one", "b/two", "c/three"] {
        let digest = client.push_blob(&proxy.url(), repo, b"{}").await;
        // A repository appears in the catalog once it has a manifest.
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":2}},"layers":[]}}"#
        );
        let put = client
            .send(
                Method::PUT,
                &format!("{}/v2/{repo}/manifests/latest", proxy.url()),
                &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
                full(manifest),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
    }

    let mut seen = Vec::new();
    let mut next = Some(format!("{}/v2/_catalog?n=1", proxy.url()));
    while let Some(url) = next.take() {
        let page = client.get(&url, &[]).await;
        assert_eq!(page.status, StatusCode::OK);
        for repo in page.json()["repositories"].as_array().unwrap() {
            seen.push(repo.as_str().unwrap().to_string());
        }
        if let Some(link) = page.headers.get("link") {
            let link = link.to_str().unwrap();
            let target = &link[link.find('<').unwrap() + 1..link.find('>').unwrap()];
            // Distribution sends a relative link; an absolute one would name the proxy.
            assert!(
                target.starts_with("/v2/_catalog?") || target.starts_with(&proxy.url()),
                "{link}"
            );
            next = Some(if target.starts_with('/') {
                format!("{}{target}", proxy.url())
            } else {
                target.to_string()
            });
        }
    }
    assert_eq!(seen, ["a/one", "b/two", "c/three"]);
}

#[tokio::test]
async fn non_api_paths_get_oci_errors_without_reaching_upstream() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    for (path, code) in [
        ("/", "UNSUPPORTED"),
        ("/api/v2.0/projects", "UNSUPPORTED"),
        ("/v2/UPPER/case/manifests/x", "NAME_INVALID"),
        ("/v2/app/blobs/not-a-digest", "DIGEST_INVALID"),
    ] {
        let answer = client.get(&format!("{}{path}", proxy.url()), &[]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.json()["errors"][0]["code"], code, "{path}");
    }
    let base = client.get(&format!("{}/v2/", proxy.url()), &[]).await;
    assert_eq!(base.status, StatusCode::OK);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        "registry/2.0"
    );
}
