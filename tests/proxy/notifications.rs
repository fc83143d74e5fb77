//! Sidecar mode: `serve --no-proxy` next to a real Distribution whose `notifications.endpoints`
//! point at regkeeper's admin listener. Pushes, pulls and deletes made straight at the registry
//! reach the index; a delivery regkeeper cannot record yet is answered 503 and, retried by
//! Distribution, counted once. (Harbor's webhook is read from recorded real-shaped payloads in
//! the unit tests: no Harbor runs here.)

use std::net::SocketAddr;

use http::Method;
use regkeeper::index::{self, Index};

use crate::support::{
    Registry, Regkeeper,
    gate::Gate,
    http::{HttpClient, full},
    image::{ImageSpec, Layout, remote_digest, resolves, skopeo, skopeo_copy, tar_gz_layer},
    process::free_port,
};

const TOKEN: &str = "notifications-0123456789";

fn loopback() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A Distribution that notifies regkeeper's admin listener at `admin` (before regkeeper runs).
fn registry_notifying(admin: SocketAddr) -> Registry {
    Registry::start_logging_with(&format!(
        "notifications:\n  endpoints:\n    - name: regkeeper\n      url: http://{admin}/api/v1/notifications\n      headers:\n        Authorization: [\"Bearer {TOKEN}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 300ms\n"
    ))
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(admin: SocketAddr) -> String {
    let answer = HttpClient::default()
        .get(&format!("http://{admin}/metrics"), &[])
        .await;
    String::from_utf8_lossy(&answer.body).into_owned()
}

const RETRIED: &str = "regkeeper_notification_events_total{outcome=\"retry\"}";

#[tokio::test]
async fn pushes_pulls_and_deletes_at_the_registry_reach_the_index_through_its_notifications() {
    let admin = loopback();
    let registry = registry_notifying(admin);
    // regkeeper reads pushed manifests through this gate: closed at first.
    let mut gate = Gate::closed(loopback(), registry.addr);
    let mut sidecar = Regkeeper::start_sidecar(
        admin,
        &gate.url(),
        "",
        &[("REGKEEPER_ADMIN_NOTIFICATION_TOKEN", TOKEN)],
    );
    let layout_dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(layout_dir.path());
    let built = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "abcdef1234567")],
        ..ImageSpec::default()
    });
    let doomed = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("doomed.txt", b"to be deleted\n", false)],
        ..ImageSpec::default()
    });
    layout.tag("built", &built);
    layout.tag("doomed", &doomed);
    let host = registry.addr.to_string();
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    skopeo_copy(&src("built"), &format!("docker://{host}/team/app:v1"), &[]);
    skopeo_copy(&src("doomed"), &format!("docker://{host}/team/app:v2"), &[]);
    // Pulls straight at the registry while regkeeper cannot read the pushed manifest: their
    // events queue behind the push Distribution retries.
    for _ in 0..3 {
        assert!(resolves(&format!("docker://{host}/team/app:v1")));
    }
    let started = std::time::Instant::now();
    while metric(&metrics(admin).await, RETRIED) < 1.0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "no delivery answered 503: {}",
            sidecar.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    gate.open();

    let tags = sidecar
        .admin_until("/api/v1/tags?repository=team/app", |v| {
            v.as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let v1 = &tags.as_array().unwrap()[0];
    assert_eq!(v1["tag"], "v1");
    assert_eq!(
        v1["digest"],
        remote_digest(&format!("docker://{host}/team/app:v1"))
    );
    assert_eq!(v1["commits"][0]["commit"], "abcdef1234567");
    assert_eq!(v1["manifest"]["config_read"], true);

    // Every manifest GET by tag the registry answered is one pull; none twice, though the
    // deliveries were retried; regkeeper's own reads (by digest) are none.
    let pulled_by_tag = || {
        registry
            .requests()
            .iter()
            .filter(|(method, uri)| method == "GET" && uri == "/v2/team/app/manifests/v1")
            .count() as u64
    };
    let expected = pulled_by_tag();
    assert!(expected >= 3, "{expected} GETs of v1");
    sidecar
        .admin_until("/api/v1/tags?repository=team/app", |v| {
            v[0]["pulls"]["count"].as_u64() == Some(expected)
        })
        .await;

    // A delete at the registry takes the tag out of the index.
    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{host}/team/app:v2"),
    ]);
    sidecar
        .admin_until("/api/v1/tags?repository=team/app", |v| {
            v.as_array().is_some_and(|t| t.len() == 1)
        })
        .await;

    sidecar.terminate();
    assert!(sidecar.wait(), "{}", sidecar.logs());
    let index = index::open_sled(&sidecar.index_path()).unwrap();
    assert_eq!(
        index.pulls("team/app", "v1").unwrap().unwrap().count,
        pulled_by_tag()
    );
    assert!(index.tag("team/app", "v2").unwrap().is_none());
}

/// The endpoint's own answers: a retried delivery counts once, a bad one is refused with its
/// reason and changes nothing, a body over the cap is 413, and the token is required.
#[tokio::test]
async fn deliveries_are_idempotent_and_bad_ones_change_nothing() {
    let registry = Registry::start();
    let admin = loopback();
    let mut sidecar = Regkeeper::start_sidecar(
        admin,
        &registry.url(),
        "",
        &[("REGKEEPER_ADMIN_NOTIFICATION_TOKEN", TOKEN)],
    );
    let client = HttpClient::default();
    let url = format!("http://{admin}/api/v1/notifications");
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        (
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        ),
    ];
    let digest = "sha256:5ae06c26b0e9bd7c1e5d1a1c43dd6aeb7ee1c9e1c0a0f3a4e1b4b83fd2b8c6a1";
    let pull = |id: &str| {
        format!(
            r#"{{"events":[{{"id":"{id}","timestamp":"2026-12-01T00:00:00Z","action":"pull","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"team/app","tag":"v1","digest":"{digest}"}},"request":{{"useragent":"containerd/1.7"}}}}]}}"#
        )
    };
    for (body, status) in [
        (pull("first"), 200),
        (pull("first"), 200), // Distribution retrying: the same id
        (pull("second"), 200),
    ] {
        let answer = client.send(Method::POST, &url, &headers, full(body)).await;
        assert_eq!(answer.status, status);
    }
    let bad = pull("third").replace("team/app", "Team/App");
    let answer = client.send(Method::POST, &url, &headers, full(bad)).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid repository name")
    );
    let answer = client
        .send(
            Method::POST,
            &url,
            &headers,
            full(vec![b' '; 1024 * 1024 + 1]),
        )
        .await;
    assert_eq!(answer.status, 413);
    let answer = client
        .send(Method::POST, &url, &[], full(pull("fourth")))
        .await;
    assert_eq!(answer.status, 401);

    // A push notified for an image the registry has, then a delete the registry does not
    // confirm: the index records the push and keeps the tag.
    let layout_dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(layout_dir.path());
    let image = layout.add_image(&ImageSpec::default());
    layout.tag("image", &image);
    let reference = format!("docker://{}/team/app:kept", registry.addr);
    skopeo_copy(
        &format!("oci:{}:image", layout.dir.display()),
        &reference,
        &[],
    );
    let pushed = remote_digest(&reference);
    let event = |id: &str, action: &str| {
        format!(
            r#"{{"events":[{{"id":"{id}","action":"{action}","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"team/app","tag":"kept","digest":"{pushed}","url":"http://registry/v2/team/app/manifests/{pushed}"}}}}]}}"#
        )
    };
    for (id, action) in [("push-1", "push"), ("delete-1", "delete")] {
        let answer = client
            .send(Method::POST, &url, &headers, full(event(id, action)))
            .await;
        assert_eq!(answer.status, 200, "{action}: {:?}", answer.body);
    }

    assert_eq!(
        metric(
            &metrics(admin).await,
            "regkeeper_notification_events_total{outcome=\"duplicate\"}"
        ),
        1.0
    );
    sidecar.terminate();
    assert!(sidecar.wait(), "{}", sidecar.logs());
    let index = index::open_sled(&sidecar.index_path()).unwrap();
    assert_eq!(index.pulls("team/app", "v1").unwrap().unwrap().count, 2);
    let kept = index
        .tag("team/app", "kept")
        .unwrap()
        .expect("the tag stays");
    assert_eq!(kept.digest, pushed);
}
