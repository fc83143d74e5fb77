//! Plan evaluation at scale: `--tags` tags (default 1,000,000) in `--repos` repositories (1,000),
//! a git history of `--commits` commits (200,000) with `--refs` branches and tags (2,000) made
//! with `git fast-import`, and `--in-use` image references from workloads (20,000). The index
//! (sled) and the git repository are generated once into /var/tmp/regkeeper-bench-plan/ and
//! reused; the measurement runs in a fresh child process so its peak RSS is its own.
//!
//! Run: `cargo bench --bench plan` (`-- --tags 100000` for a smaller case).
//! Reports the time split: index snapshot, git graph load, k8s matching, evaluation (git walks,
//! rules, plan), and peak RSS. Target: ≤ 5 s and ≤ 1.5 GiB.
//!
//! The git clone carries git's commit-graph file, as a clone maintained by `git gc`, `git
//! maintenance` or `fetch.writeCommitGraph` does; `-- --no-commit-graph` measures without it.
//! `-- --cleanup-words` evaluates as a cleanup run does (every verdict worded for the tags it
//! removes, for the audit log) instead of as `plan` does.
//!
//! `-- --postgres` measures the shared index instead: a real PostgreSQL (fsync on) is started,
//! the generated sled index is copied into it with `index copy`'s code, and the measuring child
//! reads it from there — the first read is the cold read of a replica starting.

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Instant,
};

#[path = "../src/index/postgres/testing.rs"]
mod testing;

use regkeeper::{
    config::{PostgresConfig, RetentionConfig},
    index::{self, CommitLink, Index, LinkSource, ManifestKind, ManifestRecord, UnixMillis, Write},
    mirror::Mirror,
    policy::{self, InUse, Inputs, Usage},
    sources::{git::GitFacts, images::ImageMatcher},
};

const NOW: i64 = 1_800_000_000;

struct Scale {
    tags: usize,
    repos: usize,
    commits: usize,
    refs: usize,
    in_use: usize,
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// The `t`th tag's digest, a real SHA-256 (readers split the index by digest ranges, so
/// digests sharing a long prefix would measure something no registry holds).
fn digest_of(t: usize) -> String {
    regkeeper::manifest::sha256_digest(t.to_string().as_bytes())
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound.max(1) as u64) as usize
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale = Scale {
        tags: arg(&args, "--tags", 1_000_000),
        repos: arg(&args, "--repos", 1_000),
        commits: arg(&args, "--commits", 200_000),
        refs: arg(&args, "--refs", 2_000),
        in_use: arg(&args, "--in-use", 20_000),
    };
    let dir = PathBuf::from(format!(
        // `v3`: digests are real SHA-256s.
        "/var/tmp/regkeeper-bench-plan/v3-{}t-{}r-{}c-{}refs",
        scale.tags, scale.repos, scale.commits, scale.refs
    ));
    if args.iter().any(|a| a == "--measure") {
        measure(&dir, &scale);
        return;
    }
    if !dir.join("ready").exists() {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let commits = generate_git(&dir.join("git"), &scale);
        generate_index(&dir.join("index"), &scale, &commits);
        std::fs::write(dir.join("ready"), "").unwrap();
        println!(
            "generated the scale case in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    // What `git gc` (or `fetch.writeCommitGraph`) leaves in a maintained clone.
    let git_dir = dir.join("git");
    let graph_file = git_dir.join("objects/info/commit-graph");
    let aside = git_dir.join("objects/info/commit-graph.aside");
    if aside.exists() {
        std::fs::rename(&aside, &graph_file).unwrap();
    }
    if !graph_file.exists() {
        let status = Command::new("git")
            .args(["commit-graph", "write", "--reachable"])
            .current_dir(&git_dir)
            .status()
            .unwrap();
        assert!(status.success(), "git commit-graph write");
    }
    println!(
        "plan benchmark: {} tags in {} repositories, {} commits, {} refs, {} in-use references",
        scale.tags, scale.repos, scale.commits, scale.refs, scale.in_use
    );
    // Held to the end: the child reads from this server.
    let postgres = args
        .iter()
        .any(|a| a == "--postgres")
        .then(|| copy_to_postgres(&dir.join("index")));
    let without_graph = args.iter().any(|a| a == "--no-commit-graph");
    if without_graph {
        std::fs::rename(&graph_file, &aside).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args(&args[1..]).arg("--measure");
    if let Some((_, url)) = &postgres {
        child.args(["--postgres-url", url]);
    }
    let status = child.status().unwrap();
    if without_graph {
        std::fs::rename(&aside, &graph_file).unwrap();
    }
    assert!(status.success());
}

/// 200k commits: a main line with half of them, the rest on branches forking from it; half the
/// refs are branches, half lightweight tags on main. Returns commit ids in creation order.
fn generate_git(path: &Path, scale: &Scale) -> Vec<String> {
    let run = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(path)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    std::fs::create_dir_all(path).unwrap();
    run(&["init", "-q", "--bare"]);
    let mut rng = Lcg(7);
    let mut stream = String::new();
    let main_len = scale.commits / 2;
    let branches = scale.refs / 2;
    let per_branch = (scale.commits - main_len) / branches.max(1);
    let mut mark = 0usize;
    let mut commit = |stream: &mut String, reference: &str, time: i64, parent: Option<usize>| {
        mark += 1;
        stream.push_str(&format!(
            "commit {reference}\nmark :{mark}\ncommitter CI <ci@example.com> {time} +0000\ndata 0\n"
        ));
        if let Some(parent) = parent {
            stream.push_str(&format!("from :{parent}\n"));
        }
        stream.push('\n');
        mark
    };
    // main: one commit every 5 minutes, ending now.
    let step = 300;
    let start = NOW - step * main_len as i64;
    let mut main_marks = Vec::with_capacity(main_len);
    let mut parent = None;
    for i in 0..main_len {
        let m = commit(
            &mut stream,
            "refs/remotes/origin/main",
            start + step * i as i64,
            parent,
        );
        main_marks.push(m);
        parent = Some(m);
    }
    for b in 0..branches.saturating_sub(1) {
        let fork = rng.next(main_len);
        let mut parent = Some(main_marks[fork]);
        let fork_time = start + step * fork as i64;
        for k in 0..per_branch {
            parent = Some(commit(
                &mut stream,
                &format!("refs/remotes/origin/feature-{b:04}"),
                fork_time + 60 * (k as i64 + 1),
                parent,
            ));
        }
    }
    for t in 0..scale.refs - branches {
        let target = main_marks[rng.next(main_len)];
        stream.push_str(&format!("reset refs/tags/v{t}\nfrom :{target}\n\n"));
    }
    let marks = path.join("marks");
    let mut child = Command::new("git")
        .args([
            "fast-import",
            "--quiet",
            &format!("--export-marks={}", marks.display()),
        ])
        .current_dir(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut ids = vec![String::new(); mark + 1];
    for line in std::fs::read_to_string(&marks).unwrap().lines() {
        let (m, id) = line.split_once(' ').unwrap();
        ids[m.trim_start_matches(':').parse::<usize>().unwrap()] = id.to_string();
    }
    ids.remove(0);
    ids
}

fn generate_index(path: &Path, scale: &Scale, commits: &[String]) {
    let index = index::open_sled(path).unwrap();
    let mut rng = Lcg(11);
    let mut batch = Vec::with_capacity(30_000);
    let started = Instant::now();
    for t in 0..scale.tags {
        let repository = format!("team/app-{:04}", t % scale.repos);
        let digest = digest_of(t);
        let pushed = UnixMillis((NOW as u64 - 3 * 3600 - rng.next(200 * 86_400) as u64) * 1000);
        batch.push(Write::PutManifest(ManifestRecord {
            kind: ManifestKind::Image,
            total_size: 50_000_000,
            config_digest: Some(format!("sha256:{:064x}", t + 1)),
            complete: true,
            config_read: true,
            ..ManifestRecord::bare(
                &repository,
                &digest,
                "application/vnd.oci.image.manifest.v1+json",
                pushed,
            )
        }));
        batch.push(Write::push(
            repository,
            format!("build-{t}"),
            digest.clone(),
            pushed,
        ));
        batch.push(Write::LinkCommit(CommitLink {
            digest,
            commit: commits[rng.next(commits.len())].clone(),
            source: LinkSource::Annotation,
            learned_at: pushed,
            repository: None,
            tag: None,
        }));
        if batch.len() >= 30_000 {
            index.apply(&batch).unwrap();
            batch.clear();
            if t % 100_000 < 10_000 {
                eprintln!(
                    "  index: {t} tags written ({:.0}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    index.apply(&batch).unwrap();
    index.flush().unwrap();
}

/// A PostgreSQL server holding a copy of the sled index at `sled`, and the database's URL.
fn copy_to_postgres(sled: &Path) -> (testing::TestPostgres, String) {
    assert!(
        testing::server_binaries().is_some(),
        "--postgres needs Debian's postgresql package"
    );
    let server = testing::TestPostgres::start_durable();
    let url = server.fresh_database();
    let started = Instant::now();
    let from = index::SledKv::open(sled).unwrap();
    let options = regkeeper::backend::options(&PostgresConfig::new(url.clone())).unwrap();
    let to = index::postgres::PgKv::connect(&options).unwrap();
    let report = index::copy::copy(&from, &to, &mut |_| {}).unwrap();
    assert!(report.verified, "the copy differs from the sled index");
    // The measurement is of a replica starting against a settled database, not of the
    // server writing back the gigabyte just copied in.
    server.sql("postgres", "CHECKPOINT");
    println!(
        "copied {} entries into PostgreSQL in {:.0}s",
        report.entries,
        started.elapsed().as_secs_f64()
    );
    (server, url)
}

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn measure(dir: &Path, scale: &Scale) {
    // `serve` keeps the index in memory (the mirror): it is read whole once at start, then an
    // evaluation re-reads only repositories written since. Measure both: the first read, and
    // the snapshot of a steady-state evaluation after 1,000 pushes into 10 repositories.
    let args: Vec<String> = std::env::args().collect();
    let started = Instant::now();
    let index: Arc<dyn Index> = match args.windows(2).find(|w| w[0] == "--postgres-url") {
        Some(w) => {
            let options = regkeeper::backend::options(&PostgresConfig::new(w[1].clone())).unwrap();
            Arc::new(index::open_postgres(&options).unwrap())
        }
        None => Arc::new(index::open_sled(&dir.join("index")).unwrap()),
    };
    let mirror = Mirror::new(index);
    mirror.snapshot().unwrap();
    let first_read = started.elapsed().as_secs_f64();
    let mirror_rss = rss_mib("VmRSS:");
    let read_peak = rss_mib("VmHWM:");
    let pushes: Vec<Write> = (0..1000)
        .flat_map(|i| {
            let repository = format!("team/app-{:04}", i % 10);
            let digest = format!("sha256:{:064x}", u64::MAX - i as u64);
            let at = UnixMillis(NOW as u64 * 1000 - 60_000);
            [
                Write::PutManifest(ManifestRecord {
                    kind: ManifestKind::Image,
                    total_size: 50_000_000,
                    complete: true,
                    ..ManifestRecord::bare(
                        &repository,
                        &digest,
                        "application/vnd.oci.image.manifest.v1+json",
                        at,
                    )
                }),
                Write::push(repository, format!("fresh-{i}"), digest, at),
            ]
        })
        .collect();
    for batch in pushes.chunks(200) {
        mirror.apply(batch).unwrap();
    }

    let total = Instant::now();
    let mut split = Vec::new();
    let started = Instant::now();
    let snapshot = mirror.snapshot().unwrap();
    split.push((
        "index snapshot (in-memory mirror, 10 repositories re-read)",
        started.elapsed().as_secs_f64(),
    ));

    let started = Instant::now();
    let linked = snapshot
        .repositories
        .values()
        .flat_map(|r| r.links.values().flatten().map(|f| &*f.commit));
    let facts = GitFacts::load(&dir.join("git"), "origin", linked).unwrap();
    split.push(("git graph load", started.elapsed().as_secs_f64()));
    let commit_count = facts.commits();
    let git: HashMap<String, Result<GitFacts, String>> = [("app".to_string(), Ok(facts))].into();

    // Workload references as clusters report them, resolved through the host aliases.
    let started = Instant::now();
    let matcher = ImageMatcher::new(&["registry.example.com".into()]);
    let mut rng = Lcg(5);
    let mut usage = Usage::default();
    for i in 0..scale.in_use {
        let t = rng.next(scale.tags);
        let reference = if i % 4 == 0 {
            format!(
                "registry.example.com/team/app-{:04}@{}",
                t % scale.repos,
                digest_of(t)
            )
        } else {
            format!(
                "registry.example.com/team/app-{:04}:build-{t}",
                t % scale.repos
            )
        };
        if let Some((repository, image)) = matcher.resolve(&reference) {
            usage.kubernetes.push(InUse {
                repository,
                image,
                by: format!("prod/Deployment/w{i} container app"),
            });
        }
    }
    split.push(("k8s matching", started.elapsed().as_secs_f64()));

    let retention: RetentionConfig = serde_saphyr::from_str(
        "gitRepositories:\n  - name: app\n    path: /unused\n    repositories: [\"**\"]\nscopes:\n  - name: all\n    include: [\"**\"]\n",
    )
    .unwrap();
    // `plan` words only keep reasons; a cleanup run also words every verdict on what it removes.
    let details = if std::env::args().any(|a| a == "--cleanup-words") {
        policy::Details::Removed
    } else {
        policy::Details::Reasons
    };
    let (plan, timings) = policy::evaluate_timed(&Inputs {
        snapshot: &snapshot,
        git: &git,
        usage: &usage,
        retention: &retention,
        now: UnixMillis(NOW as u64 * 1000),
        details,
        restore_protection: std::time::Duration::ZERO,
    });
    split.push(("git walks (werf rules)", timings.git_walks));
    split.push(("other rules and the plan's actions", timings.rules_and_plan));
    let total = total.elapsed().as_secs_f64();

    let tags: usize = plan.repositories.iter().map(|r| r.tags.len()).sum();
    let kept: usize = plan.repositories.iter().map(|r| r.kept.tags).sum();
    let actions: usize = plan.repositories.iter().map(|r| r.actions.len()).sum();
    println!(
        "{tags} tags evaluated against {commit_count} commits: {kept} kept, {actions} actions"
    );
    println!("| phase | seconds |");
    println!("|---|---|");
    for (phase, seconds) in split {
        println!("| {phase} | {seconds:.2} |");
    }
    println!("| **total** | **{total:.2}** |");
    println!(
        "first read of the index into memory (serve start, or the CLI without serve): {first_read:.2} s"
    );
    println!(
        "peak RSS: {:.0} MiB (after the first read: {mirror_rss:.0} MiB resident, {read_peak:.0} MiB peak)",
        rss_mib("VmHWM:")
    );
}
