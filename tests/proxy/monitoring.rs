//! The alerts and the dashboard against a real Prometheus: `promtool` checks and unit-tests the
//! rules; then Prometheus scrapes a regkeeper that proxied a push and pulls and ran a plan, and
//! every dashboard query and every alert expression goes through its HTTP API. Each must parse;
//! the core panels must return data — a metric renamed in code breaks this test.

use std::{path::PathBuf, process::Command, time::Duration};

use http::Method;
use serde_json::Value;

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, empty},
    image::{ImageSpec, Layout, resolves, skopeo_copy},
    process::require_tool,
    prometheus::Prometheus,
};

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

#[test]
fn promtool_checks_and_unit_tests_the_alerts() {
    require_tool("promtool");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let output = Command::new("promtool")
            .args(&args)
            .current_dir(monitoring())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Panels that must show data once regkeeper proxied traffic and planned.
const CORE: [&str; 6] = [
    "Requests by route",
    "Latency p99 by route",
    "Responses by status",
    "Index size",
    "Commit-linked ratio",
    "Tags kept by rule",
];

async fn query(client: &HttpClient, prometheus: &Prometheus, expr: &str) -> Value {
    let url = format!(
        "http://{}/api/v1/query?query={}",
        prometheus.addr,
        regkeeper::registry::query_escape(expr)
    );
    client.send(Method::GET, &url, &[], empty()).await.json()
}

#[tokio::test]
async fn every_dashboard_query_and_alert_runs_against_a_real_prometheus() {
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(
        &registry.url(),
        "retention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n      lastPerRepository: 1\n",
    );
    let layout_dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(layout_dir.path());
    let image = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "abcdef1234567")],
        ..ImageSpec::default()
    });
    layout.tag("image", &image);
    let host = proxy.addr.to_string();
    skopeo_copy(
        &format!("oci:{}:image", layout.dir.display()),
        &format!("docker://{host}/team/app:v1"),
        &[],
    );
    let prometheus = Prometheus::start(&[proxy.admin]);
    let client = HttpClient::default();
    // Traffic over several scrapes, so rates have two samples; then a plan sets its gauges.
    for _ in 0..4 {
        assert!(resolves(&format!("docker://{host}/team/app:v1")));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    proxy
        .admin_until("/api/v1/plan?format=json", |v| v.is_object())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap(),
    )
    .unwrap();
    let alerts: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(monitoring().join("alerts.yaml")).unwrap())
            .unwrap();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for rule in alerts["groups"][0]["rules"].as_array().unwrap() {
        exprs.push((
            rule["alert"].as_str().unwrap().to_string(),
            rule["expr"].as_str().unwrap().to_string(),
        ));
    }
    assert!(exprs.len() > 20);
    for title in CORE {
        assert!(exprs.iter().any(|(t, _)| t == title), "no panel {title}");
    }
    // Core panels get a few seconds more for the scrape after the plan.
    let mut missing = Vec::new();
    for (title, expr) in &exprs {
        let mut answer = query(&client, &prometheus, expr).await;
        assert_eq!(
            answer["status"],
            "success",
            "{title}: {expr}: {answer}\n{}",
            prometheus.log()
        );
        if CORE.contains(&title.as_str()) {
            for _ in 0..20 {
                if !answer["data"]["result"].as_array().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                answer = query(&client, &prometheus, expr).await;
            }
            if answer["data"]["result"].as_array().unwrap().is_empty() {
                missing.push(format!("{title}: {expr}"));
            }
        }
    }
    assert!(missing.is_empty(), "no data for: {missing:#?}");
    // The alerts loaded and were evaluated (none fires on this healthy proxy).
    let rules = client
        .send(
            Method::GET,
            &format!("http://{}/api/v1/rules", prometheus.addr),
            &[],
            empty(),
        )
        .await
        .json();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(
        loaded.len(),
        alerts["groups"][0]["rules"].as_array().unwrap().len()
    );
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}
