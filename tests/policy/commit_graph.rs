//! The graph loader reads git's commit-graph file where git wrote one: the same commits,
//! parents, committer times and references as reading every commit from the object database,
//! for a single file and for a split chain with commits newer than the file.

use std::{collections::BTreeMap, path::Path, process::Command};

use regkeeper::sources::git::GitFacts;

use super::{DAY, NOW, git::GitRepo};

/// Commit id → (committer time, parent ids).
type Commits = BTreeMap<String, (i64, Vec<String>)>;

/// Every commit by id, and the references.
fn shape(path: &Path) -> (Commits, Vec<String>) {
    let facts = GitFacts::load_graph(path, "origin").unwrap();
    let mut ids = BTreeMap::new();
    let id_of = |commit| facts.id(commit).to_string();
    for commit in 0..facts.commits() as u32 {
        let parents = facts.parents(commit).iter().map(|p| id_of(*p)).collect();
        ids.insert(id_of(commit), (facts.time(commit), parents));
    }
    let mut references: Vec<String> = facts
        .references
        .iter()
        .map(|r| format!("{:?} {} {} {}", r.kind, r.name, id_of(r.commit), r.date))
        .collect();
    references.sort();
    (ids, references)
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git is installed");
    assert!(status.success(), "git {args:?}");
}

fn graph_files(dir: &Path) -> Vec<String> {
    let info = dir.join(".git/objects/info");
    let mut found = Vec::new();
    for entry in walk(&info) {
        found.push(entry.strip_prefix(&info).unwrap().display().to_string());
    }
    found.sort();
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn commit_graph_files_give_the_same_graph_as_the_object_database() {
    let repo = GitRepo::new();
    let dir = repo.dir.path();
    let main = repo.line(None, NOW - 30 * DAY, 3600, 40);
    let a = repo.line(Some(main[10]), NOW - 20 * DAY, 60, 5);
    let b = repo.line(Some(main[12]), NOW - 19 * DAY, 60, 5);
    // An octopus merge: parents beyond the second live in the file's EDGE chunk.
    let octopus = repo.commit(&[main[39], a[4], b[4]], NOW - 10 * DAY);
    let after = repo.line(Some(octopus), NOW - 9 * DAY, 60, 3);
    repo.remote_branch("main", after[2]);
    repo.remote_branch("feature", a[2]);
    repo.lightweight_tag("v1", main[20]);
    repo.annotated_tag("v2", main[30], NOW - 5 * DAY);
    let from_objects = shape(dir);
    assert_eq!(from_objects.0.len(), 40 + 5 + 5 + 1 + 3);
    let octopus_parents = &from_objects.0[&octopus.to_string()].1;
    assert_eq!(octopus_parents.len(), 3);

    git(dir, &["commit-graph", "write", "--reachable"]);
    assert_eq!(graph_files(dir), ["commit-graph"]);
    assert_eq!(shape(dir), from_objects, "single commit-graph file");
    // The file is what answers: with an old commit's object gone, the graph still loads.
    let hex = main[5].to_string();
    let object = dir.join(".git/objects").join(&hex[..2]).join(&hex[2..]);
    let kept = std::fs::read(&object).unwrap();
    std::fs::remove_file(&object).unwrap();
    assert_eq!(shape(dir), from_objects, "commit read from the file");
    std::fs::write(&object, kept).unwrap();

    // Newer commits than the file: read from the object database, the rest from the file.
    let newer = repo.line(Some(after[2]), NOW - DAY, 60, 4);
    repo.remote_branch("main", newer[3]);
    let with_newer = shape(dir);
    assert_eq!(with_newer.0.len(), from_objects.0.len() + 4);
    std::fs::remove_file(dir.join(".git/objects/info/commit-graph")).unwrap();
    assert_eq!(shape(dir), with_newer, "without the file");

    // A split chain, as `git fetch` with fetch.writeCommitGraph writes it: two layers.
    git(dir, &["commit-graph", "write", "--reachable", "--split"]);
    let more = repo.line(Some(newer[3]), NOW - 3600, 60, 3);
    repo.remote_branch("main", more[2]);
    git(
        dir,
        &["commit-graph", "write", "--reachable", "--split=no-merge"],
    );
    let files = graph_files(dir);
    assert!(
        files.iter().filter(|f| f.ends_with(".graph")).count() >= 2,
        "{files:?}"
    );
    let chained = shape(dir);
    for f in walk(&dir.join(".git/objects/info")) {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(chained, shape(dir), "split chain");

    // A damaged file is ignored, not believed.
    git(dir, &["commit-graph", "write", "--reachable"]);
    let file = dir.join(".git/objects/info/commit-graph");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(shape(dir), chained, "truncated file");
}
