//! The conformance suite: every case runs against the in-memory twin, sled and PostgreSQL.

use std::collections::BTreeMap;

use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn push(repository: &str, tag: &str, digest: &str, at: u64) -> Write {
    Write::push(repository, tag, digest, UnixMillis(at))
}

pub(crate) fn manifest(repository: &str, digest: &str) -> ManifestRecord {
    ManifestRecord {
        repository: repository.into(),
        digest: digest.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        kind: ManifestKind::Image,
        total_size: 1234,
        config_digest: Some(D3.into()),
        children: Vec::new(),
        subject: None,
        artifact_type: None,
        created: Some("2026-01-01T00:00:00Z".into()),
        annotations: BTreeMap::from([("org.opencontainers.image.revision".into(), "abc".into())]),
        labels: BTreeMap::new(),
        recorded_at: UnixMillis(5),
        untagged_at: None,
        complete: true,
        config_read: false,
        problem: None,
    }
}

fn push_records_times_and_history(index: &dyn Index) {
    index.apply(&[push("team/app", "v1", D1, 10)]).unwrap();
    index.apply(&[push("team/app", "v1", D1, 20)]).unwrap();
    let tag = index.tag("team/app", "v1").unwrap().unwrap();
    assert_eq!(
        (tag.first_pushed, tag.last_pushed),
        (UnixMillis(10), UnixMillis(20))
    );
    assert!(tag.history.is_empty(), "same digest again is not history");

    index.apply(&[push("team/app", "v1", D2, 30)]).unwrap();
    let tag = index.tag("team/app", "v1").unwrap().unwrap();
    assert_eq!(tag.digest, D2);
    assert_eq!(tag.first_pushed, UnixMillis(10));
    assert_eq!(tag.last_pushed, UnixMillis(30));
    assert_eq!(
        tag.history,
        [PreviousDigest {
            digest: D1.into(),
            replaced_at: UnixMillis(30)
        }]
    );
}

fn sync_leaves_known_tags_alone(index: &dyn Index) {
    index.apply(&[push("a", "t", D1, 10)]).unwrap();
    let seen = |tag: &str, digest: &str| Write::PushTag {
        repository: "a".into(),
        tag: tag.into(),
        digest: digest.into(),
        at: UnixMillis(99),
        only_if_unknown: true,
    };
    index.apply(&[seen("t", D2), seen("new", D2)]).unwrap();
    let known = index.tag("a", "t").unwrap().unwrap();
    assert_eq!(
        (known.digest.as_str(), known.first_pushed),
        (D1, UnixMillis(10))
    );
    let new = index.tag("a", "new").unwrap().unwrap();
    assert_eq!(new.first_pushed, UnixMillis(99));
}

fn delete_by_digest_removes_its_tags_in_that_repository_only(index: &dyn Index) {
    index
        .apply(&[
            push("a", "t1", D1, 1),
            push("a", "t2", D1, 2),
            push("a", "t3", D2, 3),
            push("b", "t1", D1, 4),
            Write::PutManifest(manifest("a", D1)),
            Write::PutManifest(manifest("b", D1)),
        ])
        .unwrap();
    index
        .apply(&[Write::DeleteManifest {
            repository: "a".into(),
            digest: D1.into(),
        }])
        .unwrap();
    let left: Vec<String> = index
        .tags("a")
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(left, ["t3"]);
    assert!(index.manifest("a", D1).unwrap().is_none());
    assert!(index.manifest("b", D1).unwrap().is_some());
    assert!(index.tag("b", "t1").unwrap().is_some());
}

fn a_checked_delete_removes_the_manifest_and_the_named_tags(index: &dyn Index) {
    index
        .apply(&[
            push("a", "t1", D1, 1),
            push("a", "t2", D2, 2),
            Write::PutManifest(manifest("a", D1)),
            Write::PutManifest(manifest("a", D2)),
        ])
        .unwrap();
    index
        .apply(&[Write::DeleteChecked {
            repository: "a".into(),
            digest: D1.into(),
            tags: vec!["t1".into()],
        }])
        .unwrap();
    assert!(index.manifest("a", D1).unwrap().is_none());
    assert!(index.tag("a", "t1").unwrap().is_none());
    assert!(index.tag("a", "t2").unwrap().is_some());
    assert!(index.manifest("a", D2).unwrap().is_some());
}

fn delete_tag_keeps_the_manifest(index: &dyn Index) {
    index
        .apply(&[push("a", "t", D1, 1), Write::PutManifest(manifest("a", D1))])
        .unwrap();
    index
        .apply(&[Write::DeleteTag {
            repository: "a".into(),
            tag: "t".into(),
            at: UnixMillis(9),
        }])
        .unwrap();
    assert!(index.tag("a", "t").unwrap().is_none());
    // The manifest stays, knowing since when it is untagged.
    let untagged = ManifestRecord {
        untagged_at: Some(UnixMillis(9)),
        ..manifest("a", D1)
    };
    assert_eq!(index.manifest("a", D1).unwrap().unwrap(), untagged);
}

fn writes_in_one_batch_see_each_other(index: &dyn Index) {
    index
        .apply(&[
            push("a", "t", D1, 1),
            push("a", "t", D2, 2),
            Write::DeleteManifest {
                repository: "a".into(),
                digest: D2.into(),
            },
            push("a", "u", D3, 3),
        ])
        .unwrap();
    assert!(index.tag("a", "t").unwrap().is_none());
    assert_eq!(index.tag("a", "u").unwrap().unwrap().digest, D3);
}

fn commit_links_are_stored_once_per_source(index: &dyn Index) {
    let link = |commit: &str, source: LinkSource| {
        Write::LinkCommit(CommitLink {
            digest: D1.into(),
            commit: commit.into(),
            source,
            learned_at: UnixMillis(7),
            repository: None,
            tag: None,
        })
    };
    index
        .apply(&[
            link("abc", LinkSource::Annotation),
            link("abc", LinkSource::Annotation),
            link("abc", LinkSource::Label("vcs-ref".into())),
            link("def", LinkSource::Api),
        ])
        .unwrap();
    let links = index.commit_links(D1).unwrap();
    assert_eq!(links.len(), 3, "{links:?}");
    assert!(index.commit_links(D2).unwrap().is_empty());
    // Evidence about a tag is stored per repository and tag: two tags of one digest with the
    // same pattern and commit keep their own links.
    let scoped = |repository: &str, tag: &str| {
        Write::LinkCommit(CommitLink {
            digest: D2.into(),
            commit: "abc".into(),
            source: LinkSource::TagPattern("^main-(?P<commit>.+)$".into()),
            learned_at: UnixMillis(7),
            repository: Some(repository.into()),
            tag: Some(tag.into()),
        })
    };
    index
        .apply(&[
            scoped("a", "main-abc"),
            scoped("a", "main-abc"),
            scoped("b", "main-abc"),
        ])
        .unwrap();
    let mut scopes: Vec<(Option<String>, Option<String>)> = index
        .commit_links(D2)
        .unwrap()
        .into_iter()
        .map(|l| (l.repository, l.tag))
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            (Some("a".into()), Some("main-abc".into())),
            (Some("b".into()), Some("main-abc".into()))
        ]
    );
}

fn pulls_accumulate(index: &dyn Index) {
    let pulls = |count, last| Write::RecordPulls {
        repository: "a".into(),
        reference: "latest".into(),
        count,
        last: UnixMillis(last),
    };
    index.apply(&[pulls(3, 50), pulls(2, 40)]).unwrap();
    index.apply(&[pulls(1, 60)]).unwrap();
    let stats = index.pulls("a", "latest").unwrap().unwrap();
    assert_eq!((stats.count, stats.last_pulled), (6, UnixMillis(60)));
    assert!(index.pulls("a", "other").unwrap().is_none());
}

fn names_that_prefix_each_other_stay_apart(index: &dyn Index) {
    index
        .apply(&[
            push("a", "x", D1, 1),
            push("ab", "x", D2, 2),
            push("a/b", "x", D3, 3),
        ])
        .unwrap();
    assert_eq!(index.tags("a").unwrap().len(), 1);
    assert_eq!(index.tags("ab").unwrap()[0].digest, D2);
    assert_eq!(index.repositories().unwrap(), ["a", "a/b", "ab"]);
}

fn tag_history_is_bounded(index: &dyn Index) {
    for i in 0..150u64 {
        let digest = if i % 2 == 0 { D1 } else { D2 };
        index.apply(&[push("a", "t", digest, i)]).unwrap();
    }
    let tag = index.tag("a", "t").unwrap().unwrap();
    assert_eq!(tag.history.len(), 100);
    assert_eq!(tag.history.last().unwrap().replaced_at, UnixMillis(149));
}

fn config_facts_are_set_and_survive_a_repush_of_the_same_digest(index: &dyn Index) {
    let set = |digest: &str| Write::SetConfig {
        repository: "a".into(),
        digest: digest.into(),
        facts: ConfigFacts {
            created: Some("2026-02-02T00:00:00Z".into()),
            labels: BTreeMap::from([("vcs-ref".into(), "abcdef0".into())]),
            problem: None,
        },
    };
    // Facts for a manifest the index does not know are ignored.
    index.apply(&[set(D2)]).unwrap();
    assert!(index.manifest("a", D2).unwrap().is_none());
    index
        .apply(&[Write::PutManifest(manifest("a", D1))])
        .unwrap();
    assert!(index.manifest("a", D1).unwrap().unwrap().needs_config());
    index.apply(&[set(D1)]).unwrap();
    let read = index.manifest("a", D1).unwrap().unwrap();
    assert!(read.config_read && !read.needs_config());
    assert_eq!(read.labels["vcs-ref"], "abcdef0");
    // The same digest pushed again (its config not read yet) keeps what was read.
    let mut again = manifest("a", D1);
    again.recorded_at = UnixMillis(50);
    index.apply(&[Write::PutManifest(again)]).unwrap();
    let kept = index.manifest("a", D1).unwrap().unwrap();
    assert_eq!((kept.recorded_at, kept.config_read), (UnixMillis(50), true));
    assert_eq!(kept.created.as_deref(), Some("2026-02-02T00:00:00Z"));
}

fn forgetting_a_tag_spares_pushes_sync_could_not_have_seen(index: &dyn Index) {
    index
        .apply(&[push("a", "old", D1, 10), push("a", "fresh", D1, 30)])
        .unwrap();
    let forget = |tag: &str| Write::ForgetTag {
        repository: "a".into(),
        tag: tag.into(),
        listed: UnixMillis(20),
    };
    index
        .apply(&[forget("old"), forget("fresh"), forget("never")])
        .unwrap();
    assert!(index.tag("a", "old").unwrap().is_none());
    assert!(index.tag("a", "fresh").unwrap().is_some());
    assert!(index.manifest("a", D1).unwrap().is_none());
}

fn sync_progress_is_stored(index: &dyn Index) {
    assert_eq!(index.sync_state().unwrap(), None);
    let state = SyncState {
        started: UnixMillis(1),
        done_through: Some("b/two".into()),
        finished: None,
        last_finished: Some(UnixMillis(0)),
    };
    index.apply(&[Write::SyncProgress(state.clone())]).unwrap();
    assert_eq!(index.sync_state().unwrap(), Some(state));
    assert!(index.repositories().unwrap().is_empty());
}

fn whole_index_scans_see_every_link_and_pull(index: &dyn Index) {
    let link = |digest: &str, commit: &str| {
        Write::LinkCommit(CommitLink {
            digest: digest.into(),
            commit: commit.into(),
            source: LinkSource::Api,
            learned_at: UnixMillis(1),
            repository: None,
            tag: None,
        })
    };
    let pulls = |repository: &str, reference: &str| Write::RecordPulls {
        repository: repository.into(),
        reference: reference.into(),
        count: 2,
        last: UnixMillis(7),
    };
    index
        .apply(&[
            link(D1, "aaaaaaa"),
            link(D2, "bbbbbbb"),
            link(D1, "ccccccc"),
            pulls("a", "latest"),
            pulls("a", D1),
            pulls("ab", "latest"),
        ])
        .unwrap();
    let mut links: Vec<(String, String)> = Vec::new();
    index
        .each_commit_link(DigestRange::ALL, &mut |l| {
            links.push((l.digest, l.commit));
            Ok(())
        })
        .unwrap();
    assert_eq!(links.len(), 3);
    assert!(links.contains(&(D1.into(), "ccccccc".into())));
    let mut pulled = index.repository_pulls("a").unwrap();
    pulled.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(pulled.len(), 2, "`ab` is another repository: {pulled:?}");
    assert_eq!(pulled[0].0, "latest");
    assert_eq!(pulled[1].0, D1);
    assert_eq!(pulled[0].1.count, 2);
}

/// A manifest remembers when a tag last stopped pointing to it: moved on (push), deleted, or
/// found gone by sync (as of its listing); a new push of the manifest itself starts afresh.
/// Readers split the links between threads by digest range: each link is read exactly once,
/// in the range that contains its digest, whatever the digests look like.
fn commit_links_split_by_digest_range_cover_each_link_once(index: &dyn Index) {
    let digests = [
        "",
        "md5:ff",
        "sha256:",
        "sha256:0a",
        "sha256:1",
        "sha256:1\u{1}",
        "sha256:10",
        "sha256:7f",
        "sha256:8",
        "sha256:80",
        "sha256:ff",
        "sha512:00",
        "\u{10FFFF}",
    ];
    let writes: Vec<Write> = digests
        .iter()
        .flat_map(|digest| {
            ["aaaaaaa", "bbbbbbb"].map(|commit| {
                Write::LinkCommit(CommitLink {
                    digest: (*digest).into(),
                    commit: commit.into(),
                    source: LinkSource::Api,
                    learned_at: UnixMillis(1),
                    repository: None,
                    tag: None,
                })
            })
        })
        .collect();
    index.apply(&writes).unwrap();
    let bounds = [None, Some("sha256:1"), Some("sha256:8"), Some("sha3"), None];
    let mut seen: Vec<(String, String)> = Vec::new();
    for pair in bounds.windows(2) {
        let range = DigestRange {
            from: pair[0],
            until: pair[1],
        };
        index
            .each_commit_link(range, &mut |link| {
                assert!(range.contains(&link.digest), "{range:?} gave {link:?}");
                seen.push((link.digest, link.commit));
                Ok(())
            })
            .unwrap();
    }
    seen.sort();
    let mut expected: Vec<(String, String)> = digests
        .iter()
        .flat_map(|d| {
            [
                (d.to_string(), "aaaaaaa".into()),
                (d.to_string(), "bbbbbbb".into()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
}

fn manifests_remember_when_they_lost_a_tag(index: &dyn Index) {
    let untagged_at = |digest: &str| index.manifest("a", digest).unwrap().unwrap().untagged_at;
    index
        .apply(&[
            Write::PutManifest(manifest("a", D1)),
            Write::PutManifest(manifest("a", D2)),
            push("a", "latest", D1, 1),
            push("a", "other", D2, 1),
        ])
        .unwrap();
    assert_eq!(untagged_at(D1), None);
    index.apply(&[push("a", "latest", D2, 7)]).unwrap();
    assert_eq!(untagged_at(D1), Some(UnixMillis(7)));
    assert_eq!(untagged_at(D2), None);
    index
        .apply(&[Write::ForgetTag {
            repository: "a".into(),
            tag: "other".into(),
            listed: UnixMillis(20),
        }])
        .unwrap();
    assert_eq!(untagged_at(D2), Some(UnixMillis(20)));
    index
        .apply(&[Write::DeleteTag {
            repository: "a".into(),
            tag: "latest".into(),
            at: UnixMillis(30),
        }])
        .unwrap();
    assert_eq!(untagged_at(D2), Some(UnixMillis(30)));
    // Never earlier than what it knew; a tag never seen changes nothing.
    index
        .apply(&[Write::DeleteTag {
            repository: "a".into(),
            tag: "never".into(),
            at: UnixMillis(40),
        }])
        .unwrap();
    assert_eq!(untagged_at(D2), Some(UnixMillis(30)));
    index
        .apply(&[Write::PutManifest(manifest("a", D2))])
        .unwrap();
    assert_eq!(untagged_at(D2), None);
}

/// The one-trip read of a repository answers what the separate reads answer, and nothing of a
/// repository whose name extends it.
fn a_repository_read_together_equals_its_separate_reads(index: &dyn Index) {
    let mut writes = Vec::new();
    for repository in ["a", "ab", "b"] {
        writes.extend([
            Write::PutManifest(manifest(repository, D1)),
            Write::PutManifest(manifest(repository, D2)),
            push(repository, "v1", D1, 1),
            push(repository, "v2", D2, 2),
            Write::RecordPulls {
                repository: repository.into(),
                reference: "v1".into(),
                count: 3,
                last: UnixMillis(9),
            },
            Write::Restored(crate::index::RestoreRecord {
                repository: repository.into(),
                tag: Some("v2".into()),
                digest: D2.into(),
                from_run: "r1".into(),
                at: UnixMillis(4),
            }),
        ]);
    }
    index.apply(&writes).unwrap();
    for repository in ["a", "ab", "c"] {
        let together = index.repository_records(repository).unwrap();
        let separate = RepositoryRecords {
            tags: index.tags(repository).unwrap(),
            manifests: index.manifests(repository).unwrap(),
            pulls: index.repository_pulls(repository).unwrap(),
            restores: index.restores(Some(repository)).unwrap(),
        };
        assert_eq!(
            format!("{together:?}"),
            format!("{separate:?}"),
            "{repository}"
        );
    }
    let a = index.repository_records("a").unwrap();
    assert_eq!(
        (
            a.tags.len(),
            a.manifests.len(),
            a.pulls.len(),
            a.restores.len()
        ),
        (2, 2, 1, 1)
    );
}

fn restores_are_kept_per_repository_and_reference(index: &dyn Index) {
    let restored = |repository: &str, tag: Option<&str>, run: &str, at: u64| {
        Write::Restored(crate::index::RestoreRecord {
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: D1.into(),
            from_run: run.into(),
            at: UnixMillis(at),
        })
    };
    index
        .apply(&[
            restored("a", Some("v1"), "r1", 1),
            restored("a", Some("v1"), "r2", 2),
            restored("a", None, "r1", 3),
            restored("ab", Some("v1"), "r3", 4),
        ])
        .unwrap();
    let mut found = index.restores(Some("a")).unwrap();
    found.sort_by_key(|r| r.at);
    let seen: Vec<(Option<&str>, &str)> = found
        .iter()
        .map(|r| (r.tag.as_deref(), r.from_run.as_str()))
        .collect();
    // The latest restore of a reference is what counts.
    assert_eq!(seen, [(Some("v1"), "r2"), (None, "r1")]);
    assert_eq!(index.restores(Some("ab")).unwrap().len(), 1);
    assert!(index.restores(Some("b")).unwrap().is_empty());
    assert_eq!(index.restores(None).unwrap().len(), 3, "every repository's");
}

fn pages_cover_everything_once_in_order(index: &dyn Index) {
    let mut writes: Vec<Write> = (0..25)
        .map(|n| push("ab", &format!("t{n:02}"), D1, n))
        .collect();
    // Names that prefix the paged repository's stay out of its pages.
    writes.push(push("a", "zz", D1, 1));
    writes.push(push("abc", "a", D1, 1));
    for run in ["r1", "r2"] {
        for seq in 0..7 {
            writes.push(Write::Audit(AuditEntry {
                run: run.into(),
                seq,
                at: UnixMillis(seq),
                repository: "ab".into(),
                tags: vec![],
                digest: D1.into(),
                action: AuditAction::DeleteDigest,
                state: AuditState::Done,
                detail: String::new(),
                reasons: vec![],
                media_type: String::new(),
                manifest_base64: String::new(),
            }));
        }
    }
    index.apply(&writes).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = index.tags_page("ab", after.as_deref(), 10).unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.tag.clone());
        seen.extend(page.into_iter().map(|t| t.tag));
    }
    let all: Vec<String> = index
        .tags("ab")
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(seen, all);
    assert_eq!(seen.len(), 25);
    assert!(index.tags_page("ab", Some("t24"), 10).unwrap().is_empty());
    assert!(index.tags_page("none", None, 10).unwrap().is_empty());
    index
        .apply(&[
            Write::PutManifest(manifest("ab", D1)),
            Write::PutManifest(manifest("ab", D2)),
            Write::PutManifest(manifest("ab", D3)),
            Write::PutManifest(manifest("abc", D1)),
        ])
        .unwrap();
    let first = index.manifests_page("ab", None, 2).unwrap();
    let rest = index
        .manifests_page("ab", Some(&first[1].digest), 2)
        .unwrap();
    let digests: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|m| m.digest.as_str())
        .collect();
    assert_eq!(digests, [D1, D2, D3]);

    let mut steps = Vec::new();
    let mut after: Option<(String, u64)> = None;
    loop {
        let page = index
            .audit_page(after.as_ref().map(|(r, s)| (r.as_str(), *s)), 3)
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.run.clone(), last.seq));
        steps.extend(page.into_iter().map(|e| (e.run, e.seq)));
    }
    let all: Vec<(String, u64)> = index
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| (e.run, e.seq))
        .collect();
    assert_eq!(steps, all);
    assert_eq!(steps.len(), 14);
}

fn take(index: &dyn Index, holder: &str, at: u64, until: u64) -> Lease {
    index
        .apply(&[Write::TakeLease {
            name: "leader".into(),
            holder: holder.into(),
            at: UnixMillis(at),
            until: UnixMillis(until),
            exclusive: false,
        }])
        .unwrap();
    index.lease("leader").unwrap().unwrap()
}

/// A fenced audit entry: written only while `holder` leads at `epoch`.
fn fenced(index: &dyn Index, holder: &str, epoch: u64, at: u64) -> Result<(), IndexError> {
    let entry = AuditEntry {
        run: format!("run-{holder}-{at}"),
        seq: 0,
        at: UnixMillis(at),
        repository: "team/app".into(),
        tags: vec!["v1".into()],
        digest: D1.into(),
        action: AuditAction::DeleteDigest,
        state: AuditState::Started,
        detail: String::new(),
        reasons: Vec::new(),
        media_type: String::new(),
        manifest_base64: String::new(),
    };
    index.apply(&[
        Write::Fence {
            name: "leader".into(),
            holder: holder.into(),
            epoch,
            at: UnixMillis(at),
        },
        Write::Audit(entry),
    ])
}

fn leases_pass_on_expiry_and_fence_out_the_holder_that_lost_one(index: &dyn Index) {
    assert_eq!(take(index, "a", 0, 100).holder, "a");
    assert_eq!(take(index, "b", 50, 150).holder, "a", "held, not expired");
    let renewed = take(index, "a", 60, 160);
    assert_eq!((renewed.epoch, renewed.expires), (1, UnixMillis(160)));
    fenced(index, "a", 1, 100).unwrap();

    let taken = take(index, "b", 170, 270);
    assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 2));
    let refused = fenced(index, "a", 1, 171).unwrap_err();
    assert!(matches!(refused, IndexError::Fenced(_)), "{refused}");
    let runs: Vec<String> = index.audit().unwrap().into_iter().map(|e| e.run).collect();
    assert_eq!(runs, ["run-a-100"], "a fenced batch writes nothing");
    fenced(index, "b", 2, 200).unwrap();
    assert!(
        matches!(fenced(index, "b", 2, 300), Err(IndexError::Fenced(_))),
        "expired"
    );

    index
        .apply(&[Write::DropLease {
            name: "leader".into(),
            holder: "a".into(),
        }])
        .unwrap();
    assert_eq!(
        index.lease("leader").unwrap().unwrap().holder,
        "b",
        "not a's to drop"
    );
    index
        .apply(&[Write::DropLease {
            name: "leader".into(),
            holder: "b".into(),
        }])
        .unwrap();
    let next = take(index, "a", 280, 380);
    assert_eq!(
        (next.holder.as_str(), next.epoch),
        ("a", 3),
        "epochs only count up"
    );
    // The only process on the index takes over a live lease: its holder is gone.
    index
        .apply(&[Write::TakeLease {
            name: "leader".into(),
            holder: "c".into(),
            at: UnixMillis(290),
            until: UnixMillis(390),
            exclusive: true,
        }])
        .unwrap();
    let lease = index.lease("leader").unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("c", 4));
}

/// Batches applied together (a shared engine overlaps them, each read on top of the one
/// before) end as the same batches applied one by one; a failing batch stops the ones after.
fn batches_applied_together_equal_them_one_by_one(index: &dyn Index) {
    let pulls = |count| Write::RecordPulls {
        repository: "a".into(),
        reference: "v1".into(),
        count,
        last: UnixMillis(count),
    };
    let batches = vec![
        vec![
            Write::PutManifest(manifest("a", D1)),
            push("a", "v1", D1, 1),
            pulls(2),
        ],
        // Reads what the batch before wrote: the tag it moves, the manifest it untags, the
        // tally it adds to.
        vec![
            Write::PutManifest(manifest("a", D2)),
            push("a", "v1", D2, 2),
            pulls(3),
        ],
        // Scans the tags the batches before wrote.
        vec![
            Write::DeleteManifest {
                repository: "a".into(),
                digest: D2.into(),
            },
            push("a", "v2", D1, 3),
            pulls(4),
        ],
        // Fenced by a lease nobody holds: fails.
        vec![
            Write::Fence {
                name: "leader".into(),
                holder: "nobody".into(),
                epoch: 1,
                at: UnixMillis(4),
            },
            push("a", "v3", D1, 4),
        ],
        vec![push("a", "v4", D1, 5)],
    ];
    let (done, result) = index.apply_each(&batches);
    assert_eq!(done, 3);
    assert!(result.is_err());
    let one_by_one = in_memory();
    for writes in &batches[..3] {
        one_by_one.apply(writes).unwrap();
    }
    assert_eq!(
        format!("{:?}", index.repository_records("a").unwrap()),
        format!("{:?}", one_by_one.repository_records("a").unwrap())
    );
    let tags: Vec<String> = index
        .tags("a")
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(tags, ["v2"]);
    assert_eq!(index.pulls("a", "v1").unwrap().map(|p| p.count), Some(9));
}

/// Manifests asked for together are the manifests asked for one by one, unknown ones too.
fn manifests_asked_together_equal_them_one_by_one(index: &dyn Index) {
    index
        .apply(&[
            Write::PutManifest(manifest("a", D1)),
            Write::PutManifest(manifest("b", D2)),
        ])
        .unwrap();
    let wanted = [("a", D1), ("a", D2), ("b", D2), ("c", D1)];
    let together = index.manifests_of(&wanted).unwrap();
    let one_by_one: Vec<_> = wanted
        .iter()
        .map(|(repository, digest)| index.manifest(repository, digest).unwrap())
        .collect();
    assert_eq!(format!("{together:?}"), format!("{one_by_one:?}"));
    let found: Vec<bool> = together.iter().map(Option::is_some).collect();
    assert_eq!(found, [true, false, true, false]);
}

/// A whole-index read (where the engine offers one) hands over exactly what reads by ranges
/// find: every tag, manifest, pull counter, restore and link once, and nothing else.
fn a_whole_read_hands_over_what_reads_by_ranges_find(index: &dyn Index) {
    let mut writes = Vec::new();
    for (n, repository) in ["a", "a/b", "ab", "team/app"].into_iter().enumerate() {
        let at = n as u64 * 10;
        writes.extend([
            Write::PutManifest(manifest(repository, D1)),
            Write::PutManifest(manifest(repository, D2)),
            push(repository, "v1", D1, at + 1),
            push(repository, "v1", D2, at + 2),
            push(repository, "latest", D2, at + 3),
            Write::RecordPulls {
                repository: repository.into(),
                reference: "v1".into(),
                count: 3,
                last: UnixMillis(at + 4),
            },
            Write::RecordPulls {
                repository: repository.into(),
                reference: D2.into(),
                count: 1,
                last: UnixMillis(at + 5),
            },
            Write::Restored(crate::index::RestoreRecord {
                repository: repository.into(),
                tag: Some("v1".into()),
                digest: D2.into(),
                from_run: "r1".into(),
                at: UnixMillis(at + 6),
            }),
        ]);
    }
    for (digest, commit) in [(D1, "abc"), (D2, "def"), (D3, "abc")] {
        writes.push(Write::LinkCommit(CommitLink {
            digest: digest.into(),
            commit: commit.into(),
            source: LinkSource::Annotation,
            learned_at: UnixMillis(7),
            repository: None,
            tag: None,
        }));
    }
    index.apply(&writes).unwrap();
    // Neither a record a plan reads nor one of its repositories: left out.
    take(index, "leader", 0, 100);
    fenced(index, "leader", take(index, "leader", 0, 100).epoch, 1).unwrap();

    let mut by_ranges = Vec::new();
    for repository in index.repositories().unwrap() {
        let records = index.repository_records(&repository).unwrap();
        by_ranges.extend(records.tags.into_iter().map(|r| format!("{r:?}")));
        by_ranges.extend(records.manifests.into_iter().map(|r| format!("{r:?}")));
        by_ranges.extend(records.restores.into_iter().map(|r| format!("{r:?}")));
        by_ranges.extend(
            records
                .pulls
                .into_iter()
                .map(|(reference, stats)| format!("{repository} {reference} {stats:?}")),
        );
    }
    index
        .each_commit_link(DigestRange::ALL, &mut |link| {
            by_ranges.push(format!("{link:?}"));
            Ok(())
        })
        .unwrap();
    by_ranges.sort();
    assert_eq!(by_ranges.len(), 4 * 7 + 3);

    let whole = std::sync::Mutex::new(Vec::new());
    let offered = index
        .each_record(3, &|record| {
            let shown = match record {
                Record::Tag(r) => format!("{r:?}"),
                Record::Manifest(r) => format!("{r:?}"),
                Record::Restore(r) => format!("{r:?}"),
                Record::Link(r) => format!("{r:?}"),
                Record::Pull {
                    repository,
                    reference,
                    stats,
                } => format!("{repository} {reference} {stats:?}"),
            };
            whole.lock().unwrap().push(shown);
            Ok(())
        })
        .unwrap();
    let mut whole = whole.into_inner().unwrap();
    if !offered {
        assert!(
            whole.is_empty(),
            "an engine that reads by ranges visits nothing"
        );
        return;
    }
    whole.sort();
    assert_eq!(whole, by_ranges);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $case() { super::$case(&crate::index::in_memory()) })*
        }
        mod sled {
            $(#[test] fn $case() {
                let dir = tempfile::tempdir().unwrap();
                super::$case(&crate::index::open_sled(&dir.path().join("index")).unwrap())
            })*
        }
        mod postgres {
            /// One server for every case (starting one takes seconds), a fresh database each.
            #[test]
            fn every_case() {
                let server = crate::index::postgres::testing::TestPostgres::start();
                $(
                    eprintln!("case {}", stringify!($case));
                    super::$case(&crate::index::postgres::open_for_tests(&server.fresh_database()));
                )*
            }
        }
    };
}

conformance!(
    a_whole_read_hands_over_what_reads_by_ranges_find,
    push_records_times_and_history,
    sync_leaves_known_tags_alone,
    delete_by_digest_removes_its_tags_in_that_repository_only,
    a_checked_delete_removes_the_manifest_and_the_named_tags,
    delete_tag_keeps_the_manifest,
    writes_in_one_batch_see_each_other,
    commit_links_are_stored_once_per_source,
    pulls_accumulate,
    names_that_prefix_each_other_stay_apart,
    tag_history_is_bounded,
    config_facts_are_set_and_survive_a_repush_of_the_same_digest,
    forgetting_a_tag_spares_pushes_sync_could_not_have_seen,
    sync_progress_is_stored,
    whole_index_scans_see_every_link_and_pull,
    commit_links_split_by_digest_range_cover_each_link_once,
    manifests_remember_when_they_lost_a_tag,
    restores_are_kept_per_repository_and_reference,
    a_repository_read_together_equals_its_separate_reads,
    pages_cover_everything_once_in_order,
    leases_pass_on_expiry_and_fence_out_the_holder_that_lost_one,
    batches_applied_together_equal_them_one_by_one,
    manifests_asked_together_equal_them_one_by_one,
);

/// Opens again after a drop in this process: sled's background flusher may hold the file lock a
/// moment longer.
fn reopen(path: &std::path::Path) -> Result<SledIndex, IndexError> {
    for _ in 0..100 {
        match open_sled(path) {
            Err(IndexError::InUse { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => return other,
        }
    }
    open_sled(path)
}

#[test]
fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    {
        let index = open_sled(&path).unwrap();
        index
            .apply(&[push("a", "t", D1, 1), Write::PutManifest(manifest("a", D1))])
            .unwrap();
        index.flush().unwrap();
    }
    let index = reopen(&path).unwrap();
    assert_eq!(index.tag("a", "t").unwrap().unwrap().digest, D1);
    assert_eq!(index.manifest("a", D1).unwrap().unwrap(), manifest("a", D1));
}

#[test]
fn foreign_directory_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "do not touch").unwrap();
    let error = open_sled(dir.path())
        .err()
        .expect("must refuse")
        .to_string();
    assert!(error.contains("not a regkeeper index"), "{error}");
    assert!(error.contains("precious.txt"), "{error}");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "nothing may be created in a foreign directory"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(),
        "do not touch"
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    {
        let kv = SledKv::open(&path).unwrap();
        kv.apply(vec![(
            b"\0schema".to_vec(),
            Some((SCHEMA_VERSION + 1).to_be_bytes().to_vec()),
        )])
        .unwrap();
        kv.flush().unwrap();
    }
    let error = reopen(&path).err().expect("must refuse").to_string();
    assert!(error.contains("newer regkeeper"), "{error}");
}

#[test]
fn sled_database_of_someone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    {
        let kv = SledKv::open(&path).unwrap();
        kv.apply(vec![(b"their-key".to_vec(), Some(b"their value".to_vec()))])
            .unwrap();
        kv.flush().unwrap();
    }
    let error = reopen(&path).err().expect("must refuse").to_string();
    assert!(error.contains("no regkeeper schema version"), "{error}");
}

#[test]
fn unreadable_record_is_an_error_not_a_panic() {
    let kv = MemoryKv::default();
    let index = Store::new(kv).unwrap();
    index.apply(&[push("a", "t", D1, 1)]).unwrap();
    // Overwrite the record with garbage through the KV layer.
    let store_kv: &MemoryKv = index.kv_for_tests();
    store_kv
        .apply(vec![(b"ta\0t".to_vec(), Some(b"\x01{not json".to_vec()))])
        .unwrap();
    let error = index.tag("a", "t").unwrap_err().to_string();
    assert!(error.contains("unreadable"), "{error}");
    // Not UTF-8 inside a string: named, whether read alone or with its whole repository.
    store_kv
        .apply(vec![(
            b"ta\0t".to_vec(),
            Some(b"\x01{\"tag\":\"\xff\"}".to_vec()),
        )])
        .unwrap();
    let error = index.tag("a", "t").unwrap_err().to_string();
    assert!(
        error.contains("unreadable") && error.contains("a/t"),
        "{error}"
    );
    let error = index.repository_records("a").unwrap_err().to_string();
    assert!(
        error.contains("unreadable") && error.contains("a/t"),
        "{error}"
    );
}

#[test]
fn a_second_opener_is_told_the_index_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let _first = open_sled(&path).unwrap();
    let error = open_sled(&path).err().expect("single writer").to_string();
    assert!(error.contains("in use by another regkeeper"), "{error}");
}

#[test]
fn sled_reopens_in_place_and_keeps_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_sled(&dir.path().join("index")).unwrap();
    index.apply(&[push("a", "t", D1, 1)]).unwrap();
    index.recover().unwrap();
    assert_eq!(index.tag("a", "t").unwrap().unwrap().digest, D1);
    index.apply(&[push("a", "u", D2, 2)]).unwrap();
    assert_eq!(index.tags("a").unwrap().len(), 2);
}
