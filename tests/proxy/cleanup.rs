//! Cleanup against a real Distribution 2.8: images pushed directly with skopeo, recorded by
//! `regkeeper sync`, then `regkeeper apply`. Each safety property is its own test.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Registry,
    image::{ImageSpec, Layout, remote_digest, skopeo, skopeo_copy, tar_gz_layer},
    process::wait_until,
    regkeeper::{cli_config, run_cli},
};

/// Everything deletable unless kept by the `^keep` tag pattern: no push window, untracked
/// images (no commit link) deletable at once.
pub(crate) const RULES: &str = "retention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n      pushedWithin: 0s\n      tags: [\"^keep\"]\n      untracked:\n        maxAge: 0s\ncleanup:\n  maxFraction: 1.0\n";

struct Case {
    registry: Registry,
    work: tempfile::TempDir,
    config: std::path::PathBuf,
    layout: Layout,
}

impl Case {
    /// Images `names`, pushed in that order as `team/app:old-<name>`, then synced into the index.
    fn old_images(&mut self, names: &[&str]) {
        for name in names {
            self.image(name);
            self.push(name, &format!("team/app:old-{name}"));
        }
        self.regkeeper(&["sync"]).expect_ok();
    }

    fn new(registry: Registry, extra: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let config = cli_config(work.path(), &registry.url(), &format!("{RULES}{extra}"));
        let layout = Layout::new(&work.path().join("layout"));
        Self {
            registry,
            work,
            config,
            layout,
        }
    }

    /// A distinct image, tagged `tag` in the layout.
    fn image(&mut self, name: &str) {
        let image = self.layout.add_image(&ImageSpec {
            layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
            ..ImageSpec::default()
        });
        self.layout.tag(name, &image);
    }

    /// Pushes layout image `image` as `repository:tag`, straight to the registry.
    fn push(&self, image: &str, reference: &str) {
        skopeo_copy(
            &format!("oci:{}:{image}", self.layout.dir.display()),
            &format!("docker://{}/{reference}", self.registry.addr),
            &[],
        );
    }

    fn reference(&self, reference: &str) -> String {
        format!("docker://{}/{reference}", self.registry.addr)
    }

    /// Whether `repository:tag` resolves upstream.
    fn exists(&self, reference: &str) -> bool {
        crate::support::image::resolves(&self.reference(reference))
    }

    fn regkeeper(&self, args: &[&str]) -> crate::support::regkeeper::Cli {
        run_cli(&self.config, args, &[])
    }

    fn apply(&self, args: &[&str]) -> Value {
        let mut all = vec!["apply", "--output", "json"];
        all.extend_from_slice(args);
        let out = self.regkeeper(&all);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "apply printed no report ({e}):\n{}\n{}",
                out.stdout, out.stderr
            )
        })
    }
}

fn outcome_of<'a>(report: &'a Value, tag: &str) -> &'a str {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"].as_array().unwrap().iter().any(|t| t == tag))
        .and_then(|s| s["outcome"].as_str())
        .unwrap_or("none")
}

#[test]
fn dry_run_reports_everything_and_makes_no_write_call() {
    let mut case = Case::new(Registry::start_logging(), "");
    case.image("a");
    case.image("b");
    case.push("a", "team/app:keep-1");
    case.push("a", "team/app:old-a");
    case.push("b", "team/app:old-b");
    case.regkeeper(&["sync"]).expect_ok();
    let before = case.registry.requests().len();

    let report = case.apply(&[]);
    assert_eq!(report["mode"], "dry-run");
    assert_eq!(outcome_of(&report, "old-a"), "would-untag");
    assert_eq!(outcome_of(&report, "old-b"), "would-delete");
    assert_eq!(outcome_of(&report, "keep-1"), "none");
    assert_eq!(report["tags_removed"], 2);

    let during: Vec<(String, String)> = case.registry.requests()[before..].to_vec();
    assert!(
        !during.is_empty(),
        "the dry run re-checks the tags upstream"
    );
    let writes: Vec<&(String, String)> = during
        .iter()
        .filter(|(method, _)| !matches!(method.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(writes.is_empty(), "a dry run wrote upstream: {writes:?}");
    for tag in ["keep-1", "old-a", "old-b"] {
        assert!(case.exists(&format!("team/app:{tag}")), "{tag}");
    }
    // Nothing audited: nothing was done.
    let history = case.regkeeper(&["history", "--output", "json"]).expect_ok();
    assert_eq!(
        serde_json::from_str::<Value>(&history).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn two_tags_on_one_digest_the_kept_one_still_resolves_after_a_tombstone() {
    let mut case = Case::new(Registry::start(), "");
    case.image("a");
    case.image("b");
    case.push("a", "team/app:keep-1");
    case.push("a", "team/app:old-a");
    case.push("b", "team/app:old-b");
    let kept_digest = remote_digest(&case.reference("team/app:keep-1"));
    case.regkeeper(&["sync"]).expect_ok();

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-a"), "untagged", "{report:#}");
    assert_eq!(outcome_of(&report, "old-b"), "deleted", "{report:#}");
    let untag = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["outcome"] == "untagged")
        .unwrap();
    assert!(
        untag["detail"]
            .as_str()
            .unwrap()
            .starts_with("tombstone sha256:"),
        "Distribution 2.8 cannot delete tags: {untag}"
    );
    // The kept tag resolves to the same digest; the removed ones are gone.
    assert_eq!(
        remote_digest(&case.reference("team/app:keep-1")),
        kept_digest
    );
    assert!(!case.exists("team/app:old-a"));
    assert!(!case.exists("team/app:old-b"));
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &case.reference("team/app"),
    ]);
    let tags: Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["keep-1"]));

    // Every deletion is audited once, done; the history leaves out the manifests it recorded
    // (restore reads them from the index), so a long history streams in small pages.
    let history: Value =
        serde_json::from_str(&case.regkeeper(&["history", "--output", "json"]).expect_ok())
            .unwrap();
    let done: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "done")
        .collect();
    assert_eq!(done.len(), 2, "{history:#}");
    assert!(done.iter().all(|e| e.get("manifest_base64").is_none()));
    // With why no rule kept each: every rule's verdict in words.
    for entry in &done {
        let reasons: Vec<&str> = entry["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("untracked: no commit link, pushed"))
                && reasons.iter().any(|r| r.starts_with("pushed "))
                && reasons.iter().any(|r| r.contains("always-kept patterns")),
            "{entry:#}"
        );
    }
    let started = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "started")
        .count();
    assert_eq!(
        started, 0,
        "completed entries replace their `started` record"
    );

    // A second run finds nothing more to do.
    let again = case.apply(&["--mode", "enforce"]);
    assert_eq!(again["steps"], serde_json::json!([]), "{again:#}");
}

#[test]
fn restore_brings_a_deleted_tag_back_and_it_pulls() {
    let mut case = Case::new(Registry::start(), "");
    case.image("a");
    case.push("a", "team/app:old-a");
    let digest = remote_digest(&case.reference("team/app:old-a"));
    case.regkeeper(&["sync"]).expect_ok();
    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-a"), "deleted");
    assert!(!case.exists("team/app:old-a"));

    let out = case.regkeeper(&["restore", "team/app:old-a"]).expect_ok();
    assert!(out.contains("restored team/app:old-a"), "{out}");
    assert_eq!(remote_digest(&case.reference("team/app:old-a")), digest);
    let pulled = case.work.path().join("pulled");
    skopeo_copy(
        &case.reference("team/app:old-a"),
        &format!("oci:{}:back", pulled.display()),
        &[],
    );

    // It sticks: the next run keeps it (reason `restored`, naming the run it came back from).
    let run = report["run"].as_str().unwrap();
    let again = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&again, "old-a"), "none", "{again:#}");
    assert!(case.exists("team/app:old-a"));
    let explained = case.regkeeper(&["explain", "team/app:old-a"]).expect_ok();
    assert!(
        explained.contains("restored from run") && explained.contains(run),
        "{explained}"
    );
    // The restore is in the history, with the run it undid.
    let history: Value =
        serde_json::from_str(&case.regkeeper(&["history", "--output", "json"]).expect_ok())
            .unwrap();
    let restore = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "restore")
        .unwrap_or_else(|| panic!("{history:#}"));
    assert_eq!(restore["from_run"], run);
    assert_eq!(restore["tag"], "old-a");
    let table = case.regkeeper(&["history"]).expect_ok();
    assert!(table.contains("restore"), "{table}");

    // With the protection off, the rules decide again.
    let off = run_cli(
        &case.config,
        &["apply", "--mode", "enforce", "--output", "json"],
        &[("REGKEEPER_CLEANUP_RESTORE_PROTECTION", "0s")],
    )
    .expect_ok();
    let off: Value = serde_json::from_str(&off).unwrap();
    assert_eq!(outcome_of(&off, "old-a"), "deleted", "{off:#}");
}

#[test]
fn the_breaker_stops_a_run_that_would_delete_everything() {
    let mut case = Case::new(Registry::start(), "  maxDeletions: 1\n");
    case.old_images(&["a", "b", "c"]);
    let out = case.regkeeper(&["apply", "--mode", "enforce", "--output", "json"]);
    assert!(!out.ok, "a tripped run exits non-zero");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        report["tripped"]
            .as_str()
            .unwrap()
            .contains("cleanup.maxDeletions"),
        "{report:#}"
    );
    assert_eq!(report["steps"], serde_json::json!([]));
    for name in ["a", "b", "c"] {
        assert!(case.exists(&format!("team/app:old-{name}")));
    }
    // A dry run previews the whole plan and says an enforcing run would stop, with exit 3.
    let preview = case.regkeeper(&["apply", "--output", "json"]);
    assert_eq!(preview.code, Some(3), "{}", preview.stderr);
    let report: Value = serde_json::from_str(&preview.stdout).unwrap();
    assert!(
        report["tripped"]
            .as_str()
            .unwrap()
            .contains("cleanup.maxDeletions")
    );
    assert_eq!(report["counts"]["would-delete"], 3, "{report:#}");
    let table = case.regkeeper(&["apply"]);
    assert_eq!(table.code, Some(3));
    assert!(table.stdout.contains("would STOP"), "{}", table.stdout);
    assert!(table.stdout.contains("team/app:old-a"), "{}", table.stdout);
    // --force overrides it for one run.
    let forced = case.apply(&["--mode", "enforce", "--force"]);
    assert_eq!(forced["counts"]["deleted"], 3, "{forced:#}");
}

#[test]
fn a_tag_pushed_again_between_plan_and_delete_is_not_deleted() {
    use regkeeper::{
        cleanup::executor::{Executor, steps},
        config::{CleanupMode, Config},
        index::UnixMillis,
        planning::{self, Source},
        policy::Details,
        registry::RegistryClient,
    };
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b"]);

    let config = Config::load(&case.config).unwrap();
    let index = regkeeper::index::open_sled(&config.index.path).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let loaded = runtime
        .block_on(planning::load(&config, Source::Index(&index)))
        .unwrap();
    let plan = planning::plan(&config, &loaded, UnixMillis::now(), Details::All);
    let planned = steps(&plan);
    assert_eq!(planned.len(), 2, "{planned:?}");

    // CI pushes old-a again, to another image, after the plan was made.
    case.push("b", "team/app:old-a");
    let moved_to = remote_digest(&case.reference("team/app:old-a"));

    let tls = regkeeper::tls::client_for_upstream(&config).unwrap();
    let client = RegistryClient::new(&config, tls).unwrap();
    let executor = Executor::new(
        &client,
        &index,
        CleanupMode::Enforce,
        "test-run".into(),
        4,
        std::time::Instant::now() + std::time::Duration::from_secs(60),
        plan.at,
    );
    let reports = runtime.block_on(executor.run(planned));
    let old_a = reports.iter().find(|r| r.tags == ["old-a"]).unwrap();
    assert_eq!(old_a.outcome.as_str(), "skipped-changed", "{reports:?}");
    assert!(old_a.detail.contains("now points to"), "{}", old_a.detail);
    // Deleting old-b's digest would take old-a with it now: it must stay too.
    let old_b = reports.iter().find(|r| r.tags == ["old-b"]).unwrap();
    assert_eq!(old_b.outcome.as_str(), "skipped-changed", "{reports:?}");
    assert_eq!(remote_digest(&case.reference("team/app:old-a")), moved_to);
    assert!(case.exists("team/app:old-b"));
    // Both skips are in the audit log with their cause.
    let audit = regkeeper::index::Index::audit(&index).unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit
            .iter()
            .all(|e| e.state == regkeeper::index::AuditState::Skipped)
    );
}

/// `count` distinct images in `repository`, tagged `old-0…`: one pushed with skopeo, the rest
/// its manifest with a distinct annotation, PUT directly (fast, and each its own digest).
fn many_images(case: &mut Case, repository: &str, count: usize) -> Vec<String> {
    use crate::support::http::{HttpClient, full};
    case.image("base");
    case.push("base", &format!("{repository}:base"));
    let base = format!("http://{}", case.registry.addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = HttpClient::default();
        let manifest = http
            .get(
                &format!("{base}/v2/{repository}/manifests/base"),
                &[("accept", crate::support::image::OCI_MANIFEST)],
            )
            .await;
        let mut manifest: Value = manifest.json();
        let mut digests = Vec::new();
        for i in 0..count {
            manifest["annotations"] = serde_json::json!({ "n": i.to_string() });
            let body = manifest.to_string();
            let put = http
                .send(
                    http::Method::PUT,
                    &format!("{base}/v2/{repository}/manifests/old-{i}"),
                    &[("content-type", crate::support::image::OCI_MANIFEST)],
                    full(body.clone().into_bytes()),
                )
                .await;
            assert_eq!(put.status, http::StatusCode::CREATED);
            digests.push(crate::support::image::sha256(body.as_bytes()));
        }
        // `base` stays: kept by a pattern in the test's config.
        digests
    })
}

#[test]
fn a_run_killed_midway_is_finished_by_the_next_and_each_deletion_is_audited_once() {
    let mut case = Case::new(
        Registry::start_logging(),
        "  maxDeletions: 1000\n  concurrency: 1\n",
    );
    let digests = many_images(&mut case, "team/app", 60);
    // Keep `base` by pattern too, so the only steps are the 60 `old-*` digests.
    let config = std::fs::read_to_string(&case.config)
        .unwrap()
        .replace("tags: [\"^keep\"]", "tags: [\"^keep\", \"^base$\"]");
    std::fs::write(&case.config, config).unwrap();
    case.regkeeper(&["sync"]).expect_ok();

    let deletes = |registry: &Registry| {
        registry
            .requests()
            .iter()
            .filter(|(method, _)| method == "DELETE")
            .count()
    };
    let mut child = crate::support::process::Guard(
        std::process::Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .args(["apply", "--mode", "enforce", "--config"])
            .arg(&case.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(5),
        || deletes(&case.registry) >= 5,
        || "the run never started deleting".into(),
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let deleted_before = deletes(&case.registry);
    assert!(deleted_before < 60, "the run finished before the kill");

    // The next run settles the interrupted one and finishes the job.
    let report = case.apply(&["--mode", "enforce"]);
    assert!(report["counts"].get("failed").is_none(), "{report:#}");
    for i in 0..60 {
        assert!(!case.exists(&format!("team/app:old-{i}")), "old-{i}");
    }
    assert!(case.exists("team/app:base"));
    let history: Value =
        serde_json::from_str(&case.regkeeper(&["history", "--output", "json"]).expect_ok())
            .unwrap();
    let entries = history.as_array().unwrap();
    assert!(
        entries.iter().all(|e| e["state"] != "started"),
        "every step settled: {history:#}"
    );
    for digest in &digests {
        let done = entries
            .iter()
            .filter(|e| e["digest"] == *digest && e["state"] == "done")
            .count();
        assert_eq!(done, 1, "{digest} recorded done {done} times");
    }
    // No digest was deleted twice: one DELETE per digest in total.
    assert_eq!(deletes(&case.registry), 60);
}

#[test]
fn serve_runs_cleanups_on_its_schedule_over_what_it_recorded() {
    let registry = Registry::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = "registry.example.com";
    // A workload whose image nobody pushed: reported, and nothing it could use is deleted.
    let api = kube_api(
        &runtime,
        pod_list(&[format!("{host}/team/app:never-pushed")]),
        &[],
    );
    let work = tempfile::tempdir().unwrap();
    let rules = RULES.replace(
        "cleanup:\n",
        &format!("{}cleanup:\n", cluster(work.path(), &api, host)),
    );
    let proxy = crate::support::Regkeeper::start_with(
        &registry.url(),
        &format!("{rules}  mode: enforce\n  interval: 1s\n"),
    );
    let mut layout = Layout::new(&work.path().join("layout"));
    layout.add_named(&["a", "b"]);
    let src = |name: &str| format!("oci:{}:{name}", layout.dir.display());
    skopeo_copy(
        &src("a"),
        &format!("docker://{}/team/app:keep-a", proxy.host()),
        &[],
    );
    skopeo_copy(
        &src("b"),
        &format!("docker://{}/team/app:old-b", proxy.host()),
        &[],
    );
    let gone = |tag: &str| {
        !crate::support::image::resolves(&format!("docker://{}/team/app:{tag}", registry.addr))
    };
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || gone("old-b"),
        || format!("serve never cleaned up:\n{}", proxy.logs()),
    );
    assert!(!gone("keep-a"), "the kept tag stays");
    assert!(
        proxy.logs().contains("cleanup run finished"),
        "{}",
        proxy.logs()
    );

    // What Prometheus scrapes.
    let (status, metrics) = proxy.admin_text("/metrics");
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert!(
        value(r#"regkeeper_proxy_requests_total{route="manifest",method="PUT",status="2xx"}"#)
            >= 2.0
    );
    assert!(value(r#"regkeeper_proxy_bytes_total{direction="in"}"#) > 0.0);
    assert!(
        metrics.contains(r#"regkeeper_proxy_request_duration_seconds_bucket{route="manifest""#)
    );
    assert_eq!(value("regkeeper_cleanup_last_run_success"), 1.0);
    assert_eq!(
        value(r#"regkeeper_cleanup_tags_deleted_total{repository="team/app"}"#),
        1.0
    );
    assert!(value("regkeeper_cleanup_last_run_end_timestamp_seconds") > 1.7e9);
    assert!(value("regkeeper_index_tags") >= 1.0);
    assert_eq!(
        value(r#"regkeeper_source_up{kind="kubernetes",name="prod"}"#),
        1.0
    );
    assert_eq!(
        value(r#"regkeeper_workload_images_missing{namespace="prod",kind="Pod"}"#),
        1.0
    );
    // While serve holds the index, history asks it.
    let history: Value = serde_json::from_str(
        &proxy
            .cli(&["history", "--output", "json", "--repo", "team/app"], &[])
            .expect_ok(),
    )
    .unwrap();
    let done: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "done")
        .collect();
    assert_eq!(done.len(), 1, "{history:#}");
    assert_eq!(done[0]["tags"], serde_json::json!(["old-b"]));
    // The plan says so too.
    let plan = proxy.cli(&["plan", "--output", "json"], &[]).expect_ok();
    assert!(
        plan.contains("not in the registry") && plan.contains("team/app:never-pushed"),
        "{plan}"
    );
}

#[test]
fn serve_runs_cleanups_at_the_times_of_a_cron_schedule() {
    let registry = Registry::start();
    // Every minute: the first run comes at the next minute boundary (within 60 s).
    let proxy = crate::support::Regkeeper::start_with(
        &registry.url(),
        &format!("{RULES}  mode: enforce\n  schedule: \"* * * * *\"\n"),
    );
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("name.txt", b"b", false)],
        ..ImageSpec::default()
    });
    layout.tag("b", &image);
    skopeo_copy(
        &format!("oci:{}:b", layout.dir.display()),
        &format!("docker://{}/team/app:old-b", proxy.host()),
        &[],
    );
    wait_until(
        Duration::from_secs(150),
        Duration::from_millis(500),
        || !has_manifest(&registry, "team/app", &image.digest),
        || format!("no scheduled run deleted old-b:\n{}", proxy.logs()),
    );
    // The run logs its end after its last deletion.
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || proxy.logs().contains("cleanup run finished"),
        || proxy.logs(),
    );
}

/// Whether the registry still has manifest `digest` in `repository`.
pub(crate) fn has_manifest(registry: &Registry, repository: &str, digest: &str) -> bool {
    crate::support::image::resolves(&format!("docker://{}/{repository}@{digest}", registry.addr))
}

/// PUTs an SBOM referrer of `subject` (an OCI manifest with `subject`), tagged the cosign way.
fn push_referrer(
    registry: &Registry,
    repository: &str,
    subject: &crate::support::image::Blob,
) -> String {
    use crate::support::http::{HttpClient, full};
    let base = format!("http://{}", registry.addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = HttpClient::default();
        let config = http.push_blob(&base, repository, b"{}").await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::support::image::OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2 },
            "layers": [],
            "subject": subject.descriptor(),
        })
        .to_string();
        let tag = format!("{}.sbom", subject.digest.replace(':', "-"));
        let put = http
            .send(
                http::Method::PUT,
                &format!("{base}/v2/{repository}/manifests/{tag}"),
                &[("content-type", crate::support::image::OCI_MANIFEST)],
                full(manifest.clone().into_bytes()),
            )
            .await;
        assert_eq!(put.status, http::StatusCode::CREATED, "{:?}", put.body);
        crate::support::image::sha256(manifest.as_bytes())
    })
}

#[test]
fn indexes_take_their_children_and_referrers_follow_their_subject() {
    let mut case = Case::new(Registry::start(), "");
    let child = |layout: &Layout, arch: &'static str, name: &str| {
        layout.add_image(&ImageSpec {
            architecture: arch,
            layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
            ..ImageSpec::default()
        })
    };
    let old_children = [
        child(&case.layout, "amd64", "old-amd64"),
        child(&case.layout, "arm64", "old-arm64"),
    ];
    let kept_children = [
        child(&case.layout, "amd64", "kept-amd64"),
        child(&case.layout, "arm64", "kept-arm64"),
    ];
    let old_index = case.layout.add_index(&[
        (old_children[0].clone(), "amd64"),
        (old_children[1].clone(), "arm64"),
    ]);
    let kept_index = case.layout.add_index(&[
        (kept_children[0].clone(), "amd64"),
        (kept_children[1].clone(), "arm64"),
    ]);
    case.layout.tag("old", &old_index);
    case.layout.tag("kept", &kept_index);
    for (image, tag) in [("old", "old-multi"), ("kept", "keep-multi")] {
        skopeo_copy(
            &format!("oci:{}:{image}", case.layout.dir.display()),
            &case.reference(&format!("team/app:{tag}")),
            &["--multi-arch", "all"],
        );
    }
    let old_sbom = push_referrer(&case.registry, "team/app", &old_index);
    let kept_sbom = push_referrer(&case.registry, "team/app", &kept_index);
    case.regkeeper(&["sync"]).expect_ok();

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-multi"), "deleted", "{report:#}");
    let registry = &case.registry;
    assert!(!has_manifest(registry, "team/app", &old_index.digest));
    for child in &old_children {
        assert!(
            !has_manifest(registry, "team/app", &child.digest),
            "an untagged child of a deleted index goes with it: {report:#}"
        );
    }
    assert!(
        !has_manifest(registry, "team/app", &old_sbom),
        "the referrer follows its subject"
    );
    assert!(has_manifest(registry, "team/app", &kept_index.digest));
    for child in &kept_children {
        assert!(
            has_manifest(registry, "team/app", &child.digest),
            "a kept index keeps its children"
        );
    }
    assert!(
        has_manifest(registry, "team/app", &kept_sbom),
        "a kept subject keeps its referrer"
    );
    assert!(case.exists("team/app:keep-multi"));

    // Restoring the run puts back the children before the index, and the referrer.
    let run = report["run"].as_str().unwrap();
    let out = case.regkeeper(&["restore", "--run", run]).expect_ok();
    for child in &old_children {
        assert!(
            out.contains(&format!("restored team/app@{}", child.digest)),
            "{out}"
        );
        assert!(has_manifest(&case.registry, "team/app", &child.digest));
    }
    assert!(out.contains("restored team/app:old-multi"), "{out}");
    assert!(has_manifest(&case.registry, "team/app", &old_sbom));
    let pulled = case.work.path().join("pulled");
    skopeo_copy(
        &case.reference("team/app:old-multi"),
        &format!("oci:{}:back", pulled.display()),
        &["--multi-arch", "all"],
    );
}

/// A fake Kubernetes API server for the length of a test: every list is empty except Pods
/// (`pods`, a PodList JSON); `forbidden` paths answer 403 as RBAC does. Returns its URL; the
/// server stops with the runtime.
fn kube_api(
    runtime: &tokio::runtime::Runtime,
    pods: String,
    forbidden: &'static [&'static str],
) -> String {
    kube_api_over_time(runtime, vec![pods], forbidden)
}

/// [`kube_api`] whose n-th pod listing is answered with `pods[n]` (the last one from then on):
/// a cluster that changes while regkeeper looks.
fn kube_api_over_time(
    runtime: &tokio::runtime::Runtime,
    pods: Vec<String>,
    forbidden: &'static [&'static str],
) -> String {
    kube_api_with_secrets(runtime, pods, forbidden, None)
}

/// [`kube_api_over_time`] that answers Secrets (Helm releases) with `secrets`, a SecretList.
fn kube_api_with_secrets(
    runtime: &tokio::runtime::Runtime,
    pods: Vec<String>,
    forbidden: &'static [&'static str],
    secrets: Option<String>,
) -> String {
    let listings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    use http_body_util::Full;
    use hyper::{Request, Response, body::Incoming};
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let forbidden_body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kube/forbidden.json"
    ))
    .unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (pods, forbidden_body) = (pods.clone(), forbidden_body.clone());
            let (listings, secrets) = (listings.clone(), secrets.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let path = request.uri().path().to_string();
                    let (status, body) = if forbidden.contains(&path.as_str()) {
                        (403, forbidden_body.clone())
                    } else if path == "/api/v1/pods" {
                        let n = listings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (200, pods[n.min(pods.len() - 1)].clone())
                    } else if let (Some(secrets), "/api/v1/secrets") = (&secrets, path.as_str()) {
                        (200, secrets.clone())
                    } else {
                        let kind = path.rsplit('/').next().unwrap_or("items");
                        (
                            200,
                            serde_json::json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}).to_string(),
                        )
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(body)))
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
    url
}

/// The config section pointing regkeeper at one fake cluster.
fn cluster(work: &std::path::Path, server: &str, registry_host: &str) -> String {
    let kubeconfig = work.join("prod.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: {server}\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: regkeeper\ncurrent-context: prod\nusers:\n- name: regkeeper\n  user:\n    token: test-token\n"),
    )
    .unwrap();
    format!(
        "  kubernetes:\n    registryHosts: [\"{registry_host}\"]\n    clusters:\n      - name: prod\n        kubeconfig: {}\n",
        kubeconfig.display()
    )
}

fn pod_list(images: &[String]) -> String {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [{
            "metadata": {"name": "api-1", "namespace": "prod"},
            "spec": {"containers": containers},
            "status": {"phase": "Running"},
        }],
    })
    .to_string()
}

/// `RULES` with `extra` spliced into the `retention` section (before `cleanup:`).
fn with_retention(case: &Case, extra: &str) {
    let config = std::fs::read_to_string(&case.config)
        .unwrap()
        .replace("cleanup:\n", &format!("{extra}cleanup:\n"));
    std::fs::write(&case.config, config).unwrap();
}

#[test]
fn a_pod_running_an_image_by_digest_keeps_it_whatever_its_tag_says() {
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b"]);
    let running = remote_digest(&case.reference("team/app:old-a"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = "registry.example.com";
    let api = kube_api(
        &runtime,
        pod_list(&[format!("{host}/team/app@{running}")]),
        &[],
    );
    with_retention(&case, &cluster(case.work.path(), &api, host));

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-b"), "deleted", "{report:#}");
    assert_eq!(
        outcome_of(&report, "old-a"),
        "none",
        "in use: not even planned"
    );
    assert!(case.exists("team/app:old-a"));
    assert!(has_manifest(&case.registry, "team/app", &running));
}

#[test]
fn a_workload_spelling_the_registry_host_differently_keeps_its_image() {
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b", "c"]);
    let by_digest = remote_digest(&case.reference("team/app:old-b"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Configured as registry.example.com; the workloads write it with the default port, a
    // trailing dot and another case.
    let api = kube_api(
        &runtime,
        pod_list(&[
            "registry.example.com:443/team/app:old-a".to_string(),
            format!("Registry.Example.com.:443/team/app@{by_digest}"),
        ]),
        &[],
    );
    with_retention(
        &case,
        &cluster(case.work.path(), &api, "registry.example.com"),
    );

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-c"), "deleted", "{report:#}");
    assert_eq!(outcome_of(&report, "old-a"), "none", "{report:#}");
    assert_eq!(outcome_of(&report, "old-b"), "none", "{report:#}");
    assert!(case.exists("team/app:old-a") && case.exists("team/app:old-b"));
}

/// A SecretList with one Helm release (revision 1) whose rendered `manifest` is `manifest`:
/// JSON, gzip, base64 (Helm's encoding), under the API's own base64.
fn helm_release(name: &str, manifest: &str) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let release = serde_json::json!({
        "name": name, "namespace": "prod", "version": 1,
        "info": {"status": "deployed"}, "manifest": manifest,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes()).unwrap();
    let helm = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    serde_json::json!({
        "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [{
            "metadata": {"name": format!("sh.helm.release.v1.{name}.v1"), "namespace": "prod",
                         "labels": {"owner": "helm", "name": name, "version": "1"}},
            "type": "helm.sh/release.v1",
            "data": {"release": base64::engine::general_purpose::STANDARD.encode(helm)},
        }],
    })
    .to_string()
}

#[test]
fn an_image_a_helm_release_names_by_its_parts_is_kept_and_still_pulls() {
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b"]);
    let kept = remote_digest(&case.reference("team/app:old-a"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = "registry.example.com";
    // A custom resource in the release names the image as `{registry, repository, tag}`, as
    // many operators' resources do; no workload runs it.
    let manifest = format!(
        "---\napiVersion: monitoring.example.com/v1\nkind: Agent\nmetadata:\n  name: agent\nspec:\n  image:\n    registry: {host}\n    repository: team/app\n    tag: old-a\n"
    );
    let api = kube_api_with_secrets(
        &runtime,
        vec![pod_list(&[])],
        &[],
        Some(helm_release("agent", &manifest)),
    );
    with_retention(&case, &cluster(case.work.path(), &api, host));

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-b"), "deleted", "{report:#}");
    assert_eq!(
        outcome_of(&report, "old-a"),
        "none",
        "kept by helm: {report:#}"
    );
    // On the registry: the kept image still resolves and pulls whole.
    assert_eq!(remote_digest(&case.reference("team/app:old-a")), kept);
    assert!(has_manifest(&case.registry, "team/app", &kept));
    let pulled = case.work.path().join("pulled-agent");
    skopeo_copy(
        &case.reference("team/app:old-a"),
        &format!("oci:{}:back", pulled.display()),
        &[],
    );
    assert!(!case.exists("team/app:old-b"));
}

#[test]
fn a_rollback_to_a_planned_image_during_the_run_keeps_it() {
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = "registry.example.com";
    // Nothing runs old-b when the plan is made; by the first deletion a deployment was rolled
    // back to it.
    let api = kube_api_over_time(
        &runtime,
        vec![pod_list(&[]), pod_list(&[format!("{host}/team/app:old-b")])],
        &[],
    );
    with_retention(&case, &cluster(case.work.path(), &api, host));

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-a"), "deleted", "{report:#}");
    assert_eq!(
        outcome_of(&report, "old-b"),
        "skipped-changed",
        "{report:#}"
    );
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"] == serde_json::json!(["old-b"]))
        .unwrap();
    assert!(
        step["detail"]
            .as_str()
            .unwrap()
            .starts_with("now used by prod/Pod/api-1"),
        "{step}"
    );
    assert!(case.exists("team/app:old-b"));
    assert!(!case.exists("team/app:old-a"));
}

#[test]
fn a_cluster_that_cannot_be_listed_keeps_everything_it_could_run() {
    let mut case = Case::new(Registry::start(), "");
    case.old_images(&["a", "b"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = kube_api(&runtime, pod_list(&[]), &["/apis/apps/v1/deployments"]);
    with_retention(
        &case,
        &cluster(case.work.path(), &api, "registry.example.com"),
    );

    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(report["steps"], serde_json::json!([]), "{report:#}");
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("could not be listed")),
        "{report:#}"
    );
    assert!(case.exists("team/app:old-a"));
    assert!(case.exists("team/app:old-b"));
}

#[test]
fn restore_after_garbage_collection_says_so_and_changes_nothing() {
    let mut case = Case::new(Registry::start_logging(), "");
    case.image("a");
    case.push("a", "team/app:old-a");
    case.regkeeper(&["sync"]).expect_ok();
    let report = case.apply(&["--mode", "enforce"]);
    assert_eq!(outcome_of(&report, "old-a"), "deleted");
    case.registry.garbage_collect();
    let before = case.registry.requests().len();

    let out = case.regkeeper(&["restore", "team/app:old-a"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("garbage collection") && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    let writes: Vec<(String, String)> = case.registry.requests()[before..]
        .iter()
        .filter(|(method, _)| !matches!(method.as_str(), "GET" | "HEAD"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(!case.exists("team/app:old-a"));
}

#[test]
fn back_to_back_runs_keep_their_own_ids_entries_and_restores() {
    use regkeeper::{config::CleanupMode, index::Index};

    use crate::support::regkeeper::run_cleanup;
    // Three enforcing runs in one process (one pid), back to back: well within one second,
    // where ids made of the second and the pid were the same.
    let mut case = Case::new(Registry::start(), "");
    let mut digests = Vec::new();
    for i in 0..3 {
        let name = format!("old-{i}");
        case.image(&name);
        case.push(&name, &format!("team/app:{name}"));
        digests.push(remote_digest(&case.reference(&format!("team/app:{name}"))));
    }
    let config = regkeeper::config::Config::load(&case.config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runs = Vec::new();
    {
        let index = std::sync::Arc::new(
            regkeeper::index::open_sled(&case.work.path().join("index")).unwrap(),
        );
        let long_ago = regkeeper::index::UnixMillis(1);
        for (i, digest) in digests.iter().enumerate() {
            // Each run finds one more image, recorded just before it.
            let recorded = crate::support::memory_registry::recorded_push(
                "team/app",
                &format!("old-{i}"),
                digest,
                1,
                long_ago,
            );
            index.apply(&recorded).unwrap();
            let report = run_cleanup(&runtime, &config, &index, CleanupMode::Enforce);
            assert_eq!(report.steps.len(), 1, "{:#?}", report.steps);
            assert_eq!(report.steps[0].outcome.as_str(), "deleted");
            runs.push(report.run);
        }
        index.flush().unwrap();
    }
    let distinct: std::collections::BTreeSet<&String> = runs.iter().collect();
    assert_eq!(distinct.len(), 3, "{runs:?}");
    let history: Value =
        serde_json::from_str(&case.regkeeper(&["history", "--output", "json"]).expect_ok())
            .unwrap();
    for (i, run) in runs.iter().enumerate() {
        let entries: Vec<&Value> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["run"] == run.as_str())
            .collect();
        assert_eq!(entries.len(), 1, "run {i} kept its one entry: {history:#}");
        assert_eq!(entries[0]["tags"], serde_json::json!([format!("old-{i}")]));
    }
    // Restoring the middle run brings back only what it removed.
    case.regkeeper(&["restore", "--run", &runs[1]]).expect_ok();
    assert!(case.exists("team/app:old-1"));
    assert!(!case.exists("team/app:old-0") && !case.exists("team/app:old-2"));
}
