//! Commit evidence is scoped to what it speaks for: the image's own annotation or labels
//! speak for its digest; a tag pattern or a link naming a tag speaks for that tag only; a
//! link naming a digest speaks for it in its repository only. Links written before scoping
//! existed: tag-pattern links are given back to the tags their pattern matches, API links
//! speak for nothing.

use std::collections::HashMap;

use regkeeper::policy::{Evidence, LinkScope, RepositorySnapshot, Snapshot, Usage};

use super::{
    DAY, NOW, REPOSITORY, digest_of, evaluate, git::GitRepo, kept_tags, manifest, retention,
    snapshot_of, tag_record,
};

/// One digest under `tags`, with `evidence`; untracked tags are kept (the default).
fn one_digest(tags: &[String], evidence: Vec<Evidence>) -> Snapshot {
    let digest = digest_of("image");
    let records = tags.iter().map(|tag| tag_record(tag, &digest)).collect();
    let links: HashMap<String, Box<[Evidence]>> = [(digest.clone(), evidence.into())].into();
    snapshot_of(RepositorySnapshot::from_records(
        REPOSITORY,
        records,
        vec![manifest(&digest)],
        |d| links.get(d).cloned(),
        Vec::new(),
    ))
}

fn kept_with(evidence: Vec<Evidence>) -> Vec<String> {
    let git = GitRepo::new();
    let live = git.commit(&[], NOW - DAY);
    git.remote_branch("main", live);
    let dead = git.commit(&[live], NOW - DAY / 2).to_string();
    let evidence = evidence
        .into_iter()
        .map(|e| Evidence {
            commit: if &*e.commit == "dead" {
                dead.as_str().into()
            } else {
                e.commit
            },
            scope: match e.scope {
                LinkScope::Tag(r, t) if &*t == "main-dead" => {
                    LinkScope::Tag(r, format!("main-{dead}").into())
                }
                other => other,
            },
        })
        .collect();
    // The pattern-named tag carries the dead commit in its name, as CI writes it.
    let tags = [
        "prod".to_string(),
        format!("main-{dead}"),
        "alias".to_string(),
    ];
    let snapshot = one_digest(&tags, evidence);
    let config = retention(
        git.dir.path(),
        "- references:\n    branch: main\n",
        "    pushedWithin: 0s\n",
    );
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    kept_tags(&plan)
        .into_iter()
        .map(|t| t.replace(&dead, "dead"))
        .collect()
}

fn evidence(scope: LinkScope) -> Vec<Evidence> {
    vec![Evidence {
        commit: "dead".into(),
        scope,
    }]
}

#[test]
fn evidence_about_a_tag_leaves_the_other_tags_alone() {
    let scoped = LinkScope::Tag(REPOSITORY.into(), "main-dead".into());
    assert_eq!(kept_with(evidence(scoped)), ["alias", "prod"]);
}

#[test]
fn evidence_about_the_image_speaks_for_every_tag() {
    assert!(kept_with(evidence(LinkScope::Image)).is_empty());
    let here = LinkScope::Repository(REPOSITORY.into());
    assert!(kept_with(evidence(here)).is_empty());
}

#[test]
fn a_digest_link_of_another_repository_speaks_for_nothing_here() {
    let elsewhere = LinkScope::Repository("team/other".into());
    assert_eq!(
        kept_with(evidence(elsewhere)),
        ["alias", "main-dead", "prod"]
    );
    let other_tag = LinkScope::Tag("team/other".into(), "prod".into());
    assert_eq!(
        kept_with(evidence(other_tag)),
        ["alias", "main-dead", "prod"]
    );
}

#[test]
fn links_from_before_scoping_speak_for_the_tags_they_came_from() {
    // A tag-pattern link of the old shape: it goes back to the tag its pattern matches.
    let pattern = LinkScope::LegacyTagPattern("^main-(?P<commit>[0-9a-f]+)$".into());
    let kept = kept_with(vec![Evidence {
        commit: "dead".into(),
        scope: pattern,
    }]);
    assert_eq!(kept, ["alias", "prod"]);
    // An API link of the old shape cannot say which tag it was about: it speaks for none.
    assert_eq!(
        kept_with(evidence(LinkScope::LegacyApi)),
        ["alias", "main-dead", "prod"]
    );
}
