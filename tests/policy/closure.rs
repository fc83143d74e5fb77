//! What stays protects what it references, as properties over generated repositories
//! (proptest, which shrinks a failure to its smallest case): after applying any plan, every
//! manifest that remains resolves whole — its children and its subject are still there — no
//! kept tag loses its digest, and a cosign tag stays exactly while its subject stays.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use regkeeper::{
    config::RetentionConfig,
    index::{ManifestKind, ManifestRecord, TagRecord, UnixMillis},
    policy::{self, Action, Inputs, Plan, RepositorySnapshot, Snapshot, Usage},
};

use super::{NOW, REPOSITORY, digest_of, manifest, snapshot_of, tag_record};

/// One generated repository: images, indexes over some of them, referrers of some manifests,
/// and tags (kept ones are named `keep-*`, cosign-style ones name a subject).
#[derive(Clone, Debug)]
struct Repo {
    images: usize,
    /// Each index lists these images (by number).
    indexes: Vec<BTreeSet<usize>>,
    /// Each referrer names this manifest (by number over images then indexes) as subject.
    referrers: Vec<usize>,
    /// (manifest number over images, indexes, referrers; kept by the `tags` rule?).
    tags: Vec<(usize, bool)>,
    /// Cosign tags: (signature manifest number, subject manifest number).
    signatures: Vec<(usize, usize)>,
    /// Whether the untagged-manifests rule is on.
    untagged_rule: bool,
}

impl Repo {
    fn manifests(&self) -> usize {
        self.images + self.indexes.len() + self.referrers.len()
    }

    fn digest(&self, n: usize) -> String {
        digest_of(&format!("m{n}"))
    }
}

fn repositories() -> impl Strategy<Value = Repo> {
    (1usize..7, 0usize..4, 0usize..4, any::<bool>()).prop_flat_map(
        |(images, indexes, referrers, untagged_rule)| {
            let all = images + indexes + referrers;
            (
                prop::collection::vec(prop::collection::btree_set(0..images, 1..=images), indexes),
                prop::collection::vec(0..images + indexes, referrers),
                prop::collection::vec((0..all, any::<bool>()), 0..8),
                prop::collection::vec((0..all, 0..all), 0..3),
            )
                .prop_map(move |(indexes, referrers, tags, signatures)| Repo {
                    images,
                    indexes,
                    referrers,
                    tags,
                    signatures,
                    untagged_rule,
                })
        },
    )
}

fn snapshot(repo: &Repo) -> Snapshot {
    let mut manifests = Vec::new();
    for n in 0..repo.manifests() {
        let mut record: ManifestRecord = manifest(&repo.digest(n));
        record.recorded_at = UnixMillis(1000);
        if let Some(children) = n.checked_sub(repo.images).and_then(|i| repo.indexes.get(i)) {
            record.kind = ManifestKind::Index;
            record.children = children.iter().map(|c| repo.digest(*c)).collect();
        }
        if let Some(subject) = n
            .checked_sub(repo.images + repo.indexes.len())
            .and_then(|i| repo.referrers.get(i))
        {
            record.subject = Some(repo.digest(*subject));
        }
        manifests.push(record);
    }
    let tag = |name: String, n: usize| tag_record(&name, &repo.digest(n));
    let mut tags: Vec<TagRecord> = repo
        .tags
        .iter()
        .enumerate()
        .map(|(i, (n, keep))| tag(format!("{}-{i}", if *keep { "keep" } else { "old" }), *n))
        .collect();
    for (signature, subject) in &repo.signatures {
        let hex = repo
            .digest(*subject)
            .trim_start_matches("sha256:")
            .to_string();
        tags.push(tag(format!("sha256-{hex}.sig"), *signature));
    }
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    tags.dedup_by(|a, b| a.tag == b.tag);
    snapshot_of(RepositorySnapshot::from_records(
        REPOSITORY,
        tags,
        manifests,
        |_| None,
        Vec::new(),
    ))
}

fn plan(snapshot: &Snapshot, untagged_rule: bool) -> Plan {
    let untagged = if untagged_rule {
        "    untaggedManifests:\n      maxAge: 1s\n"
    } else {
        ""
    };
    let yaml = format!(
        "scopes:\n  - name: all\n    include: [\"**\"]\n    pushedWithin: 0s\n    tags: [\"^keep-\"]\n    untracked:\n      maxAge: 0s\n{untagged}"
    );
    let retention: RetentionConfig = serde_saphyr::from_str(&yaml).unwrap();
    retention.validate().unwrap();
    policy::evaluate(&Inputs {
        snapshot,
        git: &HashMap::new(),
        usage: &Usage::default(),
        retention: &retention,
        now: UnixMillis(NOW as u64 * 1000),
        details: policy::Details::Reasons,
        restore_protection: std::time::Duration::ZERO,
    })
}

/// The repository after the plan: manifests that remain, and tag → digest.
fn applied(snapshot: &Snapshot, plan: &Plan) -> (BTreeSet<String>, HashMap<String, String>) {
    let repo = &snapshot.repositories[REPOSITORY];
    let mut manifests: BTreeSet<String> = repo.manifests.keys().map(|d| d.to_string()).collect();
    let mut tags: HashMap<String, String> = repo
        .tags
        .iter()
        .map(|t| (t.tag.to_string(), t.digest.to_string()))
        .collect();
    for action in &plan.repositories[0].actions {
        match action {
            Action::DeleteDigest { digest, .. } | Action::DeleteUntagged { digest, .. } => {
                manifests.remove(&**digest);
                // A DELETE by digest takes every tag on it.
                tags.retain(|_, d| **d != **digest);
            }
            Action::Untag { tag, .. } => {
                tags.remove(&**tag);
            }
        }
    }
    (manifests, tags)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn what_remains_resolves_whole(repo in repositories()) {
        let snapshot = snapshot(&repo);
        let plan = plan(&snapshot, repo.untagged_rule);
        let (remaining, tags) = applied(&snapshot, &plan);
        let before = &snapshot.repositories[REPOSITORY];
        for digest in &remaining {
            let manifest = &before.manifests[digest.as_str()];
            for child in manifest.children.iter() {
                prop_assert!(remaining.contains(&**child), "{digest} lost its child {child}: {plan:#?}");
            }
            if let Some(subject) = &manifest.subject {
                prop_assert!(remaining.contains(&**subject), "{digest} lost its subject {subject}: {plan:#?}");
            }
        }
        // Every kept tag still points to a manifest that is there.
        for tag in plan.repositories[0].tags.iter().filter(|t| t.keep) {
            prop_assert_eq!(tags.get(&*tag.tag).map(String::as_str), Some(&*tag.digest));
            prop_assert!(remaining.contains(&*tag.digest));
        }
        // A cosign tag whose subject is here stays exactly while the subject stays.
        for tag in &before.tags {
            let Some(hex) = tag.tag.strip_prefix("sha256-").and_then(|t| t.strip_suffix(".sig")) else {
                continue;
            };
            let subject = format!("sha256:{hex}");
            if before.manifests.contains_key(subject.as_str()) {
                prop_assert_eq!(
                    tags.contains_key(&*tag.tag),
                    remaining.contains(&subject),
                    "{} after its subject: {:#?}", tag.tag, plan
                );
            }
        }
    }
}

#[test]
fn a_child_shared_with_an_index_that_stays_is_untagged_not_deleted() {
    // m0 is listed by m3 (tagged old: deleted) and by m4 (pushed by digest: stays); m1 is
    // only m3's; m0 also carries a deletable tag of its own.
    let repo = Repo {
        images: 3,
        indexes: vec![[0, 1].into(), [0, 2].into()],
        referrers: Vec::new(),
        tags: vec![(3, false), (0, false)],
        signatures: Vec::new(),
        untagged_rule: false,
    };
    let snapshot = snapshot(&repo);
    let plan = plan(&snapshot, false);
    let (remaining, tags) = applied(&snapshot, &plan);
    assert!(!remaining.contains(&repo.digest(3)), "{plan:#?}");
    assert!(
        !remaining.contains(&repo.digest(1)),
        "m1 follows its only index"
    );
    assert!(
        remaining.contains(&repo.digest(0)),
        "m0 is listed by m4, which stays"
    );
    assert!(remaining.contains(&repo.digest(4)) && remaining.contains(&repo.digest(2)));
    assert!(!tags.contains_key("old-1"), "m0's own tag goes as a tag");
    let explained = policy::evaluate(&Inputs {
        details: policy::Details::All,
        ..inputs_for(&snapshot)
    });
    let old1 = explained.repositories[0]
        .tags
        .iter()
        .find(|t| &*t.tag == "old-1")
        .unwrap();
    assert!(
        old1.outcomes
            .iter()
            .any(|o| o.detail.contains("listed by index") && o.detail.contains("which stays")),
        "{:?}",
        old1.outcomes
    );
}

fn inputs_for(snapshot: &Snapshot) -> Inputs<'_> {
    let retention: &'static RetentionConfig = Box::leak(Box::new(
        serde_saphyr::from_str(
            "scopes:\n  - name: all\n    include: [\"**\"]\n    pushedWithin: 0s\n    tags: [\"^keep-\"]\n    untracked:\n      maxAge: 0s\n",
        )
        .unwrap(),
    ));
    let git: &'static HashMap<String, Result<regkeeper::sources::git::GitFacts, String>> =
        Box::leak(Box::default());
    let usage: &'static Usage = Box::leak(Box::default());
    Inputs {
        snapshot,
        git,
        usage,
        retention,
        now: UnixMillis(NOW as u64 * 1000),
        details: policy::Details::Reasons,
        restore_protection: std::time::Duration::ZERO,
    }
}

#[test]
fn a_signature_follows_a_subject_pushed_by_digest_and_the_rules_judge_one_from_elsewhere() {
    // m0 is pushed by digest only and stays (no rule deletes untagged manifests here); its
    // signature m1 is tagged the cosign way. Another signature names a subject that lives in
    // another repository (COSIGN_REPOSITORY): the rules decide it, and `^keep-` is not it.
    let repo = Repo {
        images: 3,
        indexes: Vec::new(),
        referrers: Vec::new(),
        tags: Vec::new(),
        signatures: vec![(1, 0)],
        untagged_rule: false,
    };
    let snapshot = snapshot(&repo);
    let mut with_foreign = (*snapshot.repositories[REPOSITORY]).clone();
    let foreign = format!("sha256-{:0>64}.sig", "abc");
    with_foreign.put_tag(&tag_record(&foreign, &repo.digest(2)));
    let snapshot = snapshot_of(with_foreign);
    let plan = plan(&snapshot, false);
    let kept: BTreeSet<&str> = plan.repositories[0]
        .tags
        .iter()
        .filter(|t| t.keep)
        .map(|t| &*t.tag)
        .collect();
    let own = format!(
        "sha256-{}.sig",
        repo.digest(0).trim_start_matches("sha256:")
    );
    assert!(kept.contains(own.as_str()), "{plan:#?}");
    assert!(
        !kept.contains(foreign.as_str()),
        "untracked.maxAge 0s: {plan:#?}"
    );

    // With the default push window the foreign one stays too, judged like any tag.
    let retention: RetentionConfig = serde_saphyr::from_str(
        "scopes:\n  - name: all\n    include: [\"**\"]\n    untracked:\n      maxAge: 0s\n",
    )
    .unwrap();
    let fresh = policy::evaluate(&Inputs {
        retention: &retention,
        now: UnixMillis(2000),
        ..inputs_for(&snapshot)
    });
    assert!(
        fresh.repositories[0].tags.iter().all(|t| t.keep),
        "{fresh:#?}"
    );
}
