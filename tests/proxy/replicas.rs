//! Several regkeeper processes over one shared index in a real PostgreSQL, in front of a real
//! Distribution: each proxies and records, one leads, and the commands work from anywhere.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Registry, Regkeeper,
    image::{Layout, remote_digest, resolves, skopeo_copy},
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
    layout.add_named(&["one", "two"]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    skopeo_copy(
        &src("one"),
        &format!("docker://{}/team/app:via-a", a.host()),
        &[],
    );
    skopeo_copy(
        &src("two"),
        &format!("docker://{}/team/app:via-b", b.host()),
        &[],
    );
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
    // The other reading commands open the shared index themselves while both replicas serve.
    let env = shared_index(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cli = |args: &[&str]| run_cli(&a.config_path(), args, &env).expect_ok();
    let plan = cli(&["plan", "--output", "json", "--show-kept"]);
    assert!(plan.contains("via-a") && plan.contains("via-b"), "{plan}");
    assert!(cli(&["inspect", "team/app:via-b"]).contains("team/app"));
    assert_eq!(cli(&["history", "--output", "json"]).trim(), "[]");
    let dry_run = cli(&["apply", "--output", "json"]);
    assert!(dry_run.contains("\"mode\""), "{dry_run}");
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
    layout.add_named(&names);
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

/// Who holds the leader lease: the replica whose pid is in the holder's name.
fn leader<'a>(
    postgres: &TestPostgres,
    database: &str,
    replicas: &[&'a Regkeeper],
) -> Option<&'a Regkeeper> {
    let holder = postgres.sql(
        database,
        "SELECT regkeeper_json(value) ->> 'holder' FROM regkeeper_kv \
         WHERE key = '\\x6c6c6561646572'::bytea \
         AND (regkeeper_json(value) ->> 'expires')::bigint > extract(epoch FROM now()) * 1000",
    );
    let pid = holder.trim().split('/').nth(1)?.to_string();
    replicas
        .iter()
        .copied()
        .find(|r| r.pid().to_string() == pid)
}

fn runs_started(proxy: &Regkeeper) -> usize {
    proxy.logs().matches("cleanup run starts").count()
}

/// Two replicas with the same cleanup schedule: only the leader runs it. Paused (SIGSTOP) past
/// its lease, the leader is replaced; resumed, it runs no more cleanups, and what the new
/// leader deletes is deleted once.
#[test]
fn one_of_two_replicas_runs_the_schedule_and_a_paused_leader_is_replaced() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let database = url.rsplit('/').next().unwrap().to_string();
    let registry = Registry::start();
    let extra = format!("{}  mode: enforce\n  interval: 1s\n", crate::cleanup::RULES);
    let env = shared_index(&url);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("REGKEEPER_INDEX_LEADER_LEASE", "2s"));
    let a = Regkeeper::start_full(&registry.url(), &extra, &env);
    let b = Regkeeper::start_full(&registry.url(), &extra, &env);
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || runs_started(&a) + runs_started(&b) >= 4,
        || format!("no scheduled runs:\n{}\n{}", a.logs(), b.logs()),
    );
    let first = leader(&postgres, &database, &[&a, &b]).expect("a leader");
    let other = if std::ptr::eq(first, &a) { &b } else { &a };
    assert_eq!(
        runs_started(other),
        0,
        "only the leader runs:\n{}",
        other.logs()
    );

    first.signal("STOP");
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || runs_started(other) > 0,
        || format!("the other replica never took over:\n{}", other.logs()),
    );
    // The new leader deletes what no rule keeps, pushed now.
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    layout.add_named(&["doomed", "kept"]);
    for (image, tag) in [("doomed", "old-doomed"), ("kept", "keep-kept")] {
        skopeo_copy(
            &format!("oci:{}:{image}", layout.dir.display()),
            &format!("docker://{}/team/app:{tag}", other.host()),
            &[],
        );
    }
    let exists = |tag: &str| resolves(&format!("docker://{}/team/app:{tag}", registry.addr));
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || !exists("old-doomed"),
        || format!("the new leader never cleaned up:\n{}", other.logs()),
    );
    // What a rule keeps still resolves and pulls whole on the registry.
    assert!(exists("keep-kept"));
    remote_digest(&format!("docker://{}/team/app:keep-kept", registry.addr));

    let before = runs_started(first);
    first.signal("CONT");
    wait_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            first.logs().contains("passed to another process")
                || first.logs().contains("leads; it runs cleanup")
        },
        || format!("the resumed leader never noticed:\n{}", first.logs()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs_started(first),
        before,
        "the replaced leader ran again:\n{}",
        first.logs()
    );
    let history = run_cli(&other.config_path(), &["history", "--output", "json"], &env).expect_ok();
    let entries: Value = serde_json::from_str(&history).unwrap();
    let done = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "done")
        .count();
    assert_eq!(done, 1, "one deletion, recorded once: {entries:#}");
    // An enforcing apply from the command line takes part in the leadership: refused while a
    // replica leads.
    let refused = run_cli(&other.config_path(), &["apply", "--mode", "enforce"], &env);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("leads cleanup"),
        "{}",
        refused.stderr
    );
}

/// An index recorded by one sled replica moves to PostgreSQL and back whole — tags, manifests,
/// the audit log — and each copy is compared with its source.
#[test]
fn an_index_moves_from_sled_to_postgres_and_back() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let mut proxy = Regkeeper::start(&registry.url());
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    layout.add_named(&["one", "two", "three"]);
    for name in ["one", "two", "three"] {
        skopeo_copy(
            &format!("oci:{}:{name}", layout.dir.display()),
            &format!("docker://{}/team/app:{name}", proxy.host()),
            &[],
        );
    }
    proxy.terminate();
    assert!(proxy.wait());
    let sled = format!("sled:{}", proxy.index_path().display());
    let copy = |from: &str, to: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .args(["index", "copy", "--from", from, "--to", to])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let said = copy(&sled, &format!("postgres:{url}"));
    assert!(said.contains("identical"), "{said}");
    let back = work.path().join("back");
    let said = copy(
        &format!("postgres:{url}"),
        &format!("sled:{}", back.display()),
    );
    assert!(said.contains("identical"), "{said}");

    let database = url.rsplit('/').next().unwrap();
    let tags = postgres.sql(
        database,
        "SELECT tag FROM regkeeper_tags WHERE repository = 'team/app' ORDER BY tag",
    );
    assert_eq!(tags.lines().collect::<Vec<_>>(), ["one", "three", "two"]);
    {
        use regkeeper::index::Index as _;
        let original = regkeeper::index::open_sled(&proxy.index_path()).unwrap();
        let returned = regkeeper::index::open_sled(&back).unwrap();
        assert_eq!(
            original.tags("team/app").unwrap(),
            returned.tags("team/app").unwrap()
        );
    }
    // Into a target that holds data already: refused, nothing merged. (sled's background
    // flusher may hold the source's lock a moment after the handles above are dropped.)
    let mut refused = None;
    for _ in 0..100 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .args([
                "index",
                "copy",
                "--from",
                &sled,
                "--to",
                &format!("postgres:{url}"),
            ])
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&output.stderr).contains("in use") {
            refused = Some(output);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = refused.expect("the source index is free again");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Three replicas take pushes in turn; one is killed (`kill -9`) mid-burst. A client whose
/// push failed there pushes again through the next replica; once the survivors' writers have
/// written what they queued, and one `sync` has run, the index holds every tag the registry
/// holds.
#[test]
fn a_replica_killed_mid_burst_loses_no_tag_after_a_sync() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let mut replicas: Vec<Regkeeper> = (0..3).map(|_| replica(&registry, &url, "")).collect();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let names: Vec<String> = (0..24).map(|i| format!("build-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    layout.add_named(&names);
    for (i, name) in names.iter().enumerate() {
        if i == 10 {
            // Killed while it takes this push (10 goes to replica 1).
            let pid = replicas[1].pid();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            });
        }
        let src = format!("oci:{}:{name}", layout.dir.display());
        // Round robin; a push that fails is made again through the next replica.
        let pushed = (0..replicas.len()).any(|attempt| {
            let target = &replicas[(i + attempt) % replicas.len()];
            try_push(&src, &format!("docker://{}/team/app:{name}", target.host()))
        });
        assert!(pushed, "{name} could not be pushed through any replica");
    }
    let env = shared_index(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for survivor in [0, 2] {
        replicas[survivor].terminate();
        assert!(replicas[survivor].wait(), "{}", replicas[survivor].logs());
    }
    run_cli(&replicas[0].config_path(), &["sync"], &env).expect_ok();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(tags(&replicas[0], &url, "team/app"), expected);
}

/// A skopeo push that may fail (its target was killed): whether it succeeded.
fn try_push(from: &str, to: &str) -> bool {
    std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--retry-times",
            "0",
        ])
        .args([from, to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Traffic through a balancer while each of three replicas is stopped (SIGTERM) and started
/// again in turn: no push and no pull fails. Prints the pulls' p99 in steady state and during
/// the restart.
#[test]
fn a_rolling_restart_behind_a_balancer_fails_no_request() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let env = shared_index(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let extra = "timeouts:\n  shutdownGrace: 10s\n";
    let mut replicas: Vec<Regkeeper> = (0..3)
        .map(|_| Regkeeper::start_full(&registry.url(), extra, &env))
        .collect();
    let addrs: Vec<std::net::SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = crate::support::balancer::Balancer::start(&addrs);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let names: Vec<String> = (0..400).map(|i| format!("r{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    layout.add_named(&name_refs[..1]);
    skopeo_copy(
        &format!("oci:{}:r0", layout.dir.display()),
        &format!("docker://{}/team/app:r0", balancer.host()),
        &[],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let restarting = Arc::new(AtomicBool::new(false));
    // Pulls: a manifest GET in a loop, timed, marked by phase.
    let pulls = {
        let (stop, restarting) = (stop.clone(), restarting.clone());
        let url = format!("http://{}/v2/team/app/manifests/r0", balancer.host());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = crate::support::http::HttpClient::default();
            let (mut steady, mut during, mut failed) = (Vec::new(), Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let started = std::time::Instant::now();
                let answer = runtime.block_on(client.try_send(
                    http::Method::GET,
                    &url,
                    &[("accept", "application/vnd.oci.image.manifest.v1+json")],
                    crate::support::http::empty(),
                ));
                let took = started.elapsed();
                match answer {
                    Some(answer) if answer.status == 200 => {
                        if restarting.load(Ordering::SeqCst) {
                            during.push(took);
                        } else {
                            steady.push(took);
                        }
                    }
                    other => failed.push(other.map(|a| a.status.as_u16())),
                }
            }
            (steady, during, failed)
        })
    };
    // Pushes: one image after another, each through the balancer.
    let pushes = {
        let stop = stop.clone();
        let dir = layout.dir.clone();
        let host = balancer.host();
        let mut layout = layout;
        layout.add_named(&name_refs[1..]);
        let names = names.clone();
        std::thread::spawn(move || {
            let mut pushed = Vec::new();
            for name in &names[1..] {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let ok = try_push(
                    &format!("oci:{}:{name}", dir.display()),
                    &format!("docker://{host}/team/app:{name}"),
                );
                pushed.push((name.clone(), ok));
            }
            pushed
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    restarting.store(true, Ordering::SeqCst);
    for (i, addr) in addrs.iter().enumerate() {
        replicas[i].terminate();
        assert!(replicas[i].wait(), "{}", replicas[i].logs());
        replicas[i] = Regkeeper::start_at(*addr, &registry.url(), extra, &env);
        std::thread::sleep(Duration::from_secs(1));
    }
    restarting.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let (steady, during, failed) = pulls.join().unwrap();
    let pushed = pushes.join().unwrap();
    assert!(failed.is_empty(), "failed pulls: {failed:?}");
    let failed_pushes: Vec<&String> = pushed
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
    assert!(failed_pushes.is_empty(), "failed pushes: {failed_pushes:?}");
    assert!(
        !during.is_empty() && pushed.len() > 3,
        "traffic ran during the restart"
    );
    let p99 = |mut times: Vec<Duration>| {
        times.sort();
        times[(times.len() * 99 / 100).min(times.len() - 1)]
    };
    println!(
        "rolling restart: {} pulls, {} pushes, 0 failed; pull p99 steady {:?}, during the restart {:?}",
        steady.len() + during.len(),
        pushed.len(),
        p99(steady),
        p99(during)
    );
}

/// The answer to a batch's COMMIT is lost after the batch landed (the connection is cut right
/// after COMMIT goes out): the writer settles it through the batch's id and reports success, and
/// the pull it recorded counts once — a blind retry would count it twice.
#[test]
fn a_batch_whose_commit_answer_is_lost_is_applied_exactly_once() {
    use regkeeper::{
        config::PostgresConfig,
        index::{Index, UnixMillis, Write},
    };
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let gate = crate::support::gate::Gate::open_to(format!("127.0.0.1:{port}").parse().unwrap());
    let open = |url: &str| {
        let options = regkeeper::backend::options(&PostgresConfig::new(url.to_string())).unwrap();
        regkeeper::index::open_postgres(&options).unwrap()
    };
    let index = open(&url.replace(&format!(":{port}/"), &format!(":{}/", gate.addr.port())));
    let pull = || Write::RecordPulls {
        repository: "team/app".into(),
        reference: "v1".into(),
        count: 1,
        last: UnixMillis(1),
    };
    index.apply(&[pull()]).unwrap();
    gate.cut_after(b"COMMIT\0");
    index.apply(&[pull()]).unwrap();
    assert!(!gate.cut_pending(), "no COMMIT was cut");
    let direct = open(&url);
    assert_eq!(direct.pulls("team/app", "v1").unwrap().unwrap().count, 2);
}

/// A process starting on an index PostgreSQL already holds reads it whole in one pass (the
/// heap in block ranges, one snapshot) and cleans by what it read: an enforcing `apply` from
/// the command line, with no replica running, deletes what no rule keeps — a tag no rule
/// keeps, a tag moved on and the manifest it left untagged (untagged since the tag's history
/// says), a second tag on a kept image — and the kept image still resolves and pulls whole
/// from the registry.
#[test]
fn a_cleanup_from_an_index_read_in_one_pass_keeps_what_the_rules_keep() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    layout.add_named(&["doomed", "kept", "moved-from", "moved-to"]);
    let src = |image: &str| format!("oci:{}:{image}", layout.dir.display());
    let on_registry = |tag: &str| format!("docker://{}/team/app:{tag}", registry.addr);
    let by_digest = |digest: &str| format!("docker://{}/team/app@{digest}", registry.addr);
    let rules = crate::cleanup::RULES.replace(
        "      untracked:\n",
        "      untaggedManifests:\n        maxAge: 0s\n      untracked:\n",
    );
    let config = crate::support::regkeeper::cli_config(work.path(), &registry.url(), &rules);
    let env = shared_index(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let recorded = |tag: &str| -> Option<String> {
        let out = run_cli(&config, &["tags", "--output", "json"], &env).expect_ok();
        let views: Value = serde_json::from_str(&out).unwrap();
        views.as_array().unwrap().iter().find_map(|v| {
            (v["tag"] == tag).then(|| v["digest"].as_str().unwrap_or_default().to_string())
        })
    };

    let mut pushed = Vec::new();
    {
        let proxy = replica(&registry, &url, "");
        for (image, tag) in [
            ("doomed", "old-doomed"),
            ("kept", "keep-kept"),
            ("kept", "old-alias"),
            ("moved-from", "old-moved"),
            ("moved-to", "old-moved"),
        ] {
            let to = format!("docker://{}/team/app:{tag}", proxy.host());
            skopeo_copy(&src(image), &to, &[]);
            pushed.push((tag, remote_digest(&on_registry(tag))));
        }
        // Every push recorded, the moved tag at its last digest.
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                [0, 1, 2, 4]
                    .iter()
                    .all(|&n| recorded(pushed[n].0).as_ref() == Some(&pushed[n].1))
            },
            || format!("tags: {:?}", tags(&proxy, &url, "team/app")),
        );
    }
    let digest_of = |n: usize| pushed[n].1.clone();
    let (doomed, kept, moved_from, moved_to) =
        (digest_of(0), digest_of(1), digest_of(3), digest_of(4));

    let applied = run_cli(&config, &["apply", "--mode", "enforce"], &env).expect_ok();
    for (what, digest) in [
        ("doomed", &doomed),
        ("moved-from", &moved_from),
        ("moved-to", &moved_to),
    ] {
        assert!(
            !resolves(&by_digest(digest)),
            "{what} is deleted: {applied}"
        );
    }
    // By the untagged-manifests rule, on its own.
    assert!(
        applied.contains(&format!("deleted          team/app@{moved_from}")),
        "{applied}"
    );
    assert!(
        !resolves(&on_registry("old-alias")) || remote_digest(&on_registry("old-alias")) != kept,
        "the second tag no longer names the kept image: {applied}"
    );
    // The kept image: its tag, its digest, and every blob (skopeo checks each digest).
    assert_eq!(remote_digest(&on_registry("keep-kept")), kept);
    assert!(resolves(&by_digest(&kept)));
    skopeo_copy(
        &on_registry("keep-kept"),
        &format!("dir:{}", work.path().join("pulled").display()),
        &[],
    );
}
