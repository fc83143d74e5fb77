//! Kubernetes and Helm usage through the real `kube` client against local servers answering
//! with real-shaped API JSON (tests/fixtures/kube): paginated lists, every workload kind,
//! finished Jobs ignored, Helm release secrets decoded, and 403/500 answers failing closed —
//! across several clusters.

use std::{
    convert::Infallible,
    io::Write as _,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use regkeeper::{
    config::RetentionConfig,
    policy::{ImageRef, InUse},
    sources::usage,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthy,
    /// RBAC forbids listing Deployments.
    ForbiddenDeployments,
    /// The API server fails listing Secrets (Helm releases).
    BrokenSecrets,
    /// Healthy, but every answer takes 1.5 s.
    Slow,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// Helm's encoding of a release: JSON → gzip → base64 (the API adds its own base64 on top).
fn release_secret(name: &str, namespace: &str, version: u64, image: &str) -> serde_json::Value {
    let manifest = format!(
        "---\n# Source: {name}/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: \"{image}\"\n"
    );
    let release = serde_json::json!({
        "name": name, "namespace": namespace, "version": version,
        "info": {"status": "superseded"}, "manifest": manifest,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes()).unwrap();
    let helm_encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    serde_json::json!({
        "metadata": {
            "name": format!("sh.helm.release.v1.{name}.v{version}"),
            "namespace": namespace,
            "labels": {"owner": "helm", "name": name, "version": version.to_string(), "status": "superseded"},
        },
        "type": "helm.sh/release.v1",
        "data": {"release": base64::engine::general_purpose::STANDARD.encode(helm_encoded)},
    })
}

fn answer(mode: Mode, request: &Request<Incoming>) -> (StatusCode, String) {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let ok = |name: &str| (StatusCode::OK, fixture(name));
    match path {
        "/api/v1/pods" if query.contains("continue=") => ok("pods-page2.json"),
        "/api/v1/pods" => ok("pods-page1.json"),
        "/apis/apps/v1/deployments" if mode == Mode::ForbiddenDeployments => {
            (StatusCode::FORBIDDEN, fixture("forbidden.json"))
        }
        "/apis/apps/v1/deployments" => ok("deployments.json"),
        "/apis/apps/v1/statefulsets" => ok("statefulsets.json"),
        "/apis/apps/v1/daemonsets" => ok("daemonsets.json"),
        "/apis/apps/v1/replicasets" => ok("replicasets.json"),
        "/api/v1/replicationcontrollers" => ok("replicationcontrollers.json"),
        "/apis/batch/v1/jobs" => ok("jobs.json"),
        "/apis/batch/v1/cronjobs" => ok("cronjobs.json"),
        "/api/v1/secrets" if mode == Mode::BrokenSecrets => (
            StatusCode::INTERNAL_SERVER_ERROR,
            fixture("internal-error.json"),
        ),
        "/api/v1/secrets" => {
            let items: Vec<serde_json::Value> = (39..=41)
                .map(|v| {
                    release_secret(
                        "api",
                        "prod",
                        v,
                        &format!("registry.example.com/team/api:{v}"),
                    )
                })
                .collect();
            let list = serde_json::json!({
                "kind": "SecretList", "apiVersion": "v1",
                "metadata": {"resourceVersion": "81234"}, "items": items,
            });
            (StatusCode::OK, list.to_string())
        }
        _ => (
            StatusCode::NOT_FOUND,
            fixture("internal-error.json").replace("500", "404"),
        ),
    }
}

/// A fake API server; returns its URL and the request lines it saw.
async fn api_server(mode: Mode) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    log.lock().unwrap().push(request.uri().to_string());
                    let (status, body) = answer(mode, &request);
                    async move {
                        if mode == Mode::Slow {
                            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

fn kubeconfig(dir: &std::path::Path, name: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: regkeeper\ncurrent-context: {name}\nusers:\n- name: regkeeper\n  user:\n    token: test-token\n"
        ),
    )
    .unwrap();
    path
}

fn uses(list: &[InUse], repository: &str) -> Vec<(ImageRef, String)> {
    list.iter()
        .filter(|u| u.repository == repository)
        .map(|u| (u.image.clone(), u.by.clone()))
        .collect()
}

#[tokio::test]
async fn workloads_and_releases_of_several_clusters_fail_closed_per_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (prod, prod_seen) = api_server(Mode::Healthy).await;
    let (locked, _) = api_server(Mode::ForbiddenDeployments).await;
    let (flaky, _) = api_server(Mode::BrokenSecrets).await;
    let yaml = format!(
        "kubernetes:\n  registryHosts: [\"registry.example.com\", \"127.0.0.1:5050\"]\n  clusters:\n    - name: prod\n      kubeconfig: {}\n    - name: locked\n      kubeconfig: {}\n    - name: flaky\n      kubeconfig: {}\n    - name: gone\n      kubeconfig: {}\nhelm:\n  revisions: 2\n",
        kubeconfig(dir.path(), "prod", &prod).display(),
        kubeconfig(dir.path(), "locked", &locked).display(),
        kubeconfig(dir.path(), "flaky", &flaky).display(),
        kubeconfig(dir.path(), "gone", "http://127.0.0.1:9").display(),
    );
    let retention: RetentionConfig = serde_saphyr::from_str(&yaml).unwrap();
    retention.validate().unwrap();
    let usage = usage::collect(&retention).await;

    // Healthy clusters (prod, and flaky whose workloads list fine) contribute their workloads.
    let api = uses(&usage.kubernetes, "team/api");
    let tag = |t: &str| ImageRef::Tag(t.into());
    let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    assert!(
        api.contains(&(tag("41"), "prod/Deployment/api container app".into())),
        "{api:#?}"
    );
    assert!(api.contains(&(
        tag("41"),
        "prod/Pod/api-7d9f8b6c5-x2x9z container app".into()
    )));
    assert!(api.contains(&(
        ImageRef::Digest(d1.into()),
        "prod/Pod/api-7d9f8b6c5-x2x9z container app".into()
    )));
    assert!(api.contains(&(
        tag("40"),
        "prod/ReplicaSet/api-6c4b9d7f8 container app".into()
    )));
    for (repository, expected) in [
        ("team/migrate", tag("7")),
        ("team/proxy-sidecar", tag("3")),
        ("team/postgres", tag("16")),
        ("team/legacy", tag("1")),
        ("team/backfill", tag("9")),
        ("team/report", tag("2")),
        ("tools/debug", tag("2")),
        (
            "platform/agent",
            ImageRef::Digest(
                "sha256:4444444444444444444444444444444444444444444444444444444444444444".into(),
            ),
        ),
    ] {
        assert!(
            uses(&usage.kubernetes, repository)
                .iter()
                .any(|(i, _)| *i == expected),
            "{repository}: {:#?}",
            usage.kubernetes
        );
    }
    // Another spelling of the registry host (case, trailing dot, default port) is the same
    // registry: its images are in use.
    let spelled = uses(&usage.kubernetes, "team/spelled");
    assert!(spelled.iter().any(|(i, _)| *i == tag("v1")), "{spelled:#?}");
    assert!(
        spelled.iter().any(|(i, _)| *i
            == ImageRef::Digest(
                "sha256:5555555555555555555555555555555555555555555555555555555555555555".into()
            )),
        "{spelled:#?}"
    );
    // A finished Job keeps nothing; images of other registries are not ours.
    assert!(
        !uses(&usage.kubernetes, "team/migrate")
            .iter()
            .any(|(i, _)| *i == tag("5"))
    );
    assert!(uses(&usage.kubernetes, "library/busybox").is_empty());
    // The second page of pods was asked for with the continue token.
    assert!(
        prod_seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("/api/v1/pods") && r.contains("continue="))
    );
    assert!(
        prod_seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("/api/v1/secrets") && r.contains("labelSelector=owner%3Dhelm"))
    );

    // Helm: the last 2 revisions of prod/api, from prod (locked lists secrets fine too).
    let helm = uses(&usage.helm, "team/api");
    assert!(
        helm.contains(&(tag("41"), "release prod/api revision 41".into())),
        "{helm:#?}"
    );
    assert!(helm.contains(&(tag("40"), "release prod/api revision 40".into())));
    assert!(
        !helm.iter().any(|(i, _)| *i == tag("39")),
        "only the last 2 revisions"
    );

    // Failures are per cluster and name the cause.
    let unavailable = usage.kubernetes_unavailable.join("\n");
    assert!(
        unavailable.contains("locked: listing deployments: 403"),
        "{unavailable}"
    );
    assert!(unavailable.contains("gone:"), "{unavailable}");
    assert!(
        !unavailable.contains("prod:") && !unavailable.contains("flaky:"),
        "{unavailable}"
    );
    let helm_unavailable = usage.helm_unavailable.join("\n");
    assert!(
        helm_unavailable.contains("flaky: listing secrets: 500"),
        "{helm_unavailable}"
    );
}

/// A server that accepts connections, reads what comes, and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    url
}

#[tokio::test]
async fn a_silent_cluster_is_given_up_at_its_connect_timeout_a_slow_one_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let silent = silent_server().await;
    let (slow, slow_seen) = api_server(Mode::Slow).await;
    let (slow_too, _) = api_server(Mode::Slow).await;
    // `silent` would hold the evaluation for its whole 10-minute timeout without the
    // connect/first-byte timeout; `slow` answers each request in 1.5 s (every kind at once:
    // the pods' two pages take the longest); `hurried` gives the same server 2 s in all.
    let yaml = format!(
        "kubernetes:\n  registryHosts: [\"registry.example.com\"]\n  clusters:\n    - name: silent\n      kubeconfig: {}\n      connectTimeout: 1s\n    - name: slow\n      kubeconfig: {}\n      connectTimeout: 5s\n      timeout: 60s\n    - name: hurried\n      kubeconfig: {}\n      timeout: 2s\n",
        kubeconfig(dir.path(), "silent", &silent).display(),
        kubeconfig(dir.path(), "slow", &slow).display(),
        kubeconfig(dir.path(), "hurried", &slow_too).display(),
    );
    let retention: RetentionConfig = serde_saphyr::from_str(&yaml).unwrap();
    retention.validate().unwrap();
    let usage = usage::collect(&retention).await;

    let unavailable = usage.kubernetes_unavailable.join("\n");
    let line = |name: &str| {
        usage
            .kubernetes_unavailable
            .iter()
            .find(|l| l.starts_with(&format!("{name}:")))
            .cloned()
    };
    // Given up by the first-byte timeout, not the cluster's deadline.
    let silent_line = line("silent").expect("silent is unavailable");
    assert!(!silent_line.contains("within timeout"), "{silent_line}");
    assert!(
        usage
            .helm_unavailable
            .iter()
            .any(|l| l.starts_with("silent:"))
    );
    // Read whole, every kind and the releases.
    assert!(line("slow").is_none(), "{unavailable}");
    assert!(
        uses(&usage.kubernetes, "team/api")
            .iter()
            .any(|(_, by)| by.starts_with("prod/Deployment")),
        "{:#?}",
        usage.kubernetes
    );
    assert!(!uses(&usage.helm, "team/api").is_empty());
    assert!(
        slow_seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("continue="))
    );
    // Out of time as a whole: unavailable, saying so.
    let hurried = line("hurried").expect("hurried is unavailable");
    assert!(hurried.contains("within timeout 2s"), "{hurried}");
}
