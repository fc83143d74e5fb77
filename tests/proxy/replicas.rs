//! Several regkeeper processes over one shared index in a real PostgreSQL, in front of a real
//! Distribution: each proxies and records, one leads, and the commands work from anywhere.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Registry, Regkeeper,
    image::{ImageSpec, Layout, remote_digest, skopeo_copy, tar_gz_layer},
    postgres::{TestPostgres, shared_index},
    process::wait_until,
    regkeeper::run_cli,
};

fn replica(registry: &Registry, url: &str, extra: &str) -> Regkeeper {
    let env = shared_index(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Regkeeper::start_full(&registry.url(), extra, &env)
}

/// `regkeeper tags --output json` run with `proxy`'s config on the shared index: the tags of
/// `repository`, sorted.
fn tags(proxy: &Regkeeper, url: &str, repository: &str) -> Vec<String> {
    let env = shared_index(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_cli(&proxy.config_path(), &["tags", "--output", "json"], &env).expect_ok();
    let views: Value = serde_json::from_str(&out).unwrap();
    let mut tags: Vec<String> = views
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["repository"] == repository)
        .map(|v| v["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

fn images(layout: &mut Layout, names: &[&str]) {
    for name in names {
        let image = layout.add_image(&ImageSpec {
            layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
            ..ImageSpec::default()
        });
        layout.tag(name, &image);
    }
}

/// Pushes through either replica land in the one index; the CLI reads it while both serve;
/// a plan on one replica holds what the other recorded.
#[test]
fn two_replicas_record_into_one_index_that_every_command_reads() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let rules = crate::cleanup::RULES;
    let a = replica(&registry, &url, rules);
    let b = replica(&registry, &url, rules);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    images(&mut layout, &["one", "two"]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    skopeo_copy(&src("one"), &format!("docker://{}/team/app:via-a", a.host()), &[]);
    skopeo_copy(&src("two"), &format!("docker://{}/team/app:via-b", b.host()), &[]);
    // Pulled through B what A pushed: the same registry behind both.
    remote_digest(&format!("docker://{}/team/app:via-a", b.host()));

    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || tags(&a, &url, "team/app") == ["via-a", "via-b"],
        || format!("tags: {:?}", tags(&a, &url, "team/app")),
    );
    // The plan on A (its in-memory copy, kept current from the change log) holds B's push.
    let (status, plan) = a.admin_text("/api/v1/plan?format=json&showKept=true");
    assert_eq!(status, 200, "{plan}");
    assert!(plan.contains("via-b"), "{plan}");
    let (status, plan) = b.admin_text("/api/v1/plan?format=json&showKept=true");
    assert_eq!(status, 200, "{plan}");
    assert!(plan.contains("via-a"), "{plan}");
}

/// The database away for ten seconds: pushes and pulls through the proxy go on unharmed, and
/// what they recorded reaches the index once it is back (the writer holds and retries it).
#[test]
fn pushes_and_pulls_go_on_while_the_database_is_down_and_are_recorded_after() {
    let mut postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let proxy = replica(&registry, &url, "");
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let names = ["before", "during-1", "during-2", "during-3"];
    images(&mut layout, &names);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let dst = |tag: &str| format!("docker://{}/team/app:{tag}", proxy.host());
    skopeo_copy(&src("before"), &dst("before"), &[]);
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || tags(&proxy, &url, "team/app") == ["before"],
        || format!("tags: {:?}", tags(&proxy, &url, "team/app")),
    );

    postgres.stop();
    let down = std::time::Instant::now();
    for name in &names[1..] {
        skopeo_copy(&src(name), &dst(name), &[]);
        remote_digest(&dst(name));
        remote_digest(&dst("before"));
    }
    // Ten seconds away in all, traffic throughout.
    while down.elapsed() < Duration::from_secs(10) {
        remote_digest(&dst("before"));
        std::thread::sleep(Duration::from_millis(200));
    }
    postgres.run();

    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || tags(&proxy, &url, "team/app") == expected,
        || {
            format!(
                "tags: {:?}\n{}",
                tags(&proxy, &url, "team/app"),
                proxy.logs()
            )
        },
    );
}
