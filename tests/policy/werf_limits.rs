//! werf's `last` / `in` / `operator` at both levels, every combination: `last` unset, negative,
//! 0 or N; `in` unset or set; `And` or `Or`. Each expected set comes from a small oracle that
//! states werf's rule in one line, not from the code under test.

use std::collections::BTreeSet;

use git2::Oid;

use super::{DAY, NOW, git::GitRepo, werf_keeps};

#[derive(Clone, Copy, Debug)]
enum Last {
    Unset,
    Negative,
    Zero,
    Two,
}

impl Last {
    fn yaml(self) -> Option<&'static str> {
        match self {
            Last::Unset => None,
            Last::Negative => Some("-1"),
            Last::Zero => Some("0"),
            Last::Two => Some("2"),
        }
    }
}

const LASTS: [Last; 4] = [Last::Unset, Last::Negative, Last::Zero, Last::Two];
const INS: [Option<i64>; 2] = [None, Some(4)];
const OPERATORS: [&str; 2] = ["And", "Or"];

/// A `limit` / `imagesPerReference` block at `indent`, or `None` when every field is unset.
fn limit_yaml(last: Last, in_days: Option<i64>, operator: &str, indent: &str) -> Option<String> {
    let mut fields = Vec::new();
    if let Some(last) = last.yaml() {
        fields.push(format!("{indent}last: {last}\n"));
    }
    if let Some(days) = in_days {
        fields.push(format!("{indent}in: {}h\n", days * 24));
    }
    if fields.is_empty() {
        return None;
    }
    fields.push(format!("{indent}operator: {operator}\n"));
    Some(fields.concat())
}

/// werf's combination: `in` unset → `last` alone; else the operator joins both conditions.
fn combine(by_last: bool, by_in: Option<bool>, operator: &str) -> bool {
    match (by_in, operator) {
        (None, _) => by_last,
        (Some(by_in), "Or") => by_last || by_in,
        (Some(by_in), _) => by_last && by_in,
    }
}

#[test]
fn references_limit_every_combination() {
    // Five branches, one image at each head: 1, 3, 5, 9 and 15 days old.
    let git = GitRepo::new();
    let ages = [1, 3, 5, 9, 15];
    let root = git.commit(&[], NOW - 60 * DAY);
    let heads: Vec<Oid> = ages
        .iter()
        .map(|age| git.commit(&[root], NOW - age * DAY))
        .collect();
    let names: Vec<String> = (0..ages.len()).map(|i| format!("b{i}")).collect();
    for (name, head) in names.iter().zip(&heads) {
        git.remote_branch(name, *head);
    }
    let images: Vec<(&str, Oid)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(heads.clone())
        .collect();
    for last in LASTS {
        for in_days in INS {
            for operator in OPERATORS {
                let limit = limit_yaml(last, in_days, operator, "      ")
                    .map(|l| format!("    limit:\n{l}"))
                    .unwrap_or_default();
                let policies = format!("- references:\n    branch: /b.*/\n{limit}");
                // Rank r (1 = newest): unset or negative `last` selects every reference.
                let expected: BTreeSet<String> = ages
                    .iter()
                    .enumerate()
                    .filter(|(rank, age)| {
                        let by_last = match last {
                            Last::Unset | Last::Negative => true,
                            Last::Zero => false,
                            Last::Two => *rank < 2,
                        };
                        combine(by_last, in_days.map(|d| **age < d), operator)
                    })
                    .map(|(i, _)| names[i].clone())
                    .collect();
                assert_eq!(
                    werf_keeps(&git, &images, &policies),
                    expected,
                    "references.limit last={last:?} in={in_days:?} operator={operator}"
                );
            }
        }
    }
}

#[test]
fn images_per_reference_every_combination() {
    // main: seven images, 7 … 1 days old.
    let git = GitRepo::new();
    let commits = git.line(None, NOW - 7 * DAY, DAY, 7);
    git.remote_branch("main", commits[6]);
    let names: Vec<String> = (0..7).map(|i| format!("i{i}")).collect();
    let images: Vec<(&str, Oid)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(commits.clone())
        .collect();
    for last in LASTS {
        for in_days in INS {
            for operator in OPERATORS {
                let per_reference = limit_yaml(last, in_days, operator, "    ")
                    .map(|l| format!("  imagesPerReference:\n{l}"))
                    .unwrap_or_default();
                let policies = format!("- references:\n    branch: main\n{per_reference}");
                // Image k (1 = newest): `last` defaults to 1; negative keeps every image
                // reached; 0 keeps nothing whatever `in` says.
                let expected: BTreeSet<String> = (0..7)
                    .filter(|&i| {
                        let k = 7 - i; // names[6] is the newest
                        let age = 7 - i as i64;
                        let by_last = match last {
                            Last::Unset => k <= 1,
                            Last::Negative => true,
                            Last::Zero => return false,
                            Last::Two => k <= 2,
                        };
                        combine(by_last, in_days.map(|d| age < d), operator)
                    })
                    .map(|i| names[i].clone())
                    .collect();
                assert_eq!(
                    werf_keeps(&git, &images, &policies),
                    expected,
                    "imagesPerReference last={last:?} in={in_days:?} operator={operator}"
                );
            }
        }
    }
}

#[test]
fn the_reported_configurations_keep_what_werf_keeps() {
    let git = GitRepo::new();
    let root = git.commit(&[], NOW - 400 * DAY);
    let main = git.line(Some(root), NOW - 300 * DAY, 30 * DAY, 5);
    let three = git.line(Some(root), NOW - 200 * DAY, 40 * DAY, 3);
    git.remote_branch("main", main[4]);
    git.remote_branch("3", three[2]);
    let feature = git.commit(&[root], NOW - DAY);
    git.remote_branch("feature", feature);
    git.lightweight_tag("v2.7.0", main[0]);
    git.lightweight_tag("v2.7.1", main[1]);
    let mut images: Vec<(String, Oid)> = Vec::new();
    images.extend(
        main.iter()
            .enumerate()
            .map(|(i, c)| (format!("main-{i}"), *c)),
    );
    images.extend(
        three
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("three-{i}"), *c)),
    );
    images.push(("feature".into(), feature));
    let images: Vec<(&str, Oid)> = images.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    // Every image on both branches, old as they are: both `last`s are unlimited under Or.
    let branches = "- references:\n    branch: /^(main|3)$/\n    limit:\n      last: -1\n      in: 720h\n      operator: Or\n  imagesPerReference:\n    last: -1\n    in: 720h\n    operator: Or\n";
    let kept = werf_keeps(&git, &images, branches);
    assert_eq!(kept.len(), 8, "{kept:?}");
    assert!(!kept.contains("feature"));
    // An unset `references.limit.last` under Or selects every matching tag.
    let tags =
        "- references:\n    tag: /v2\\.7.*/\n    limit:\n      in: 2400h\n      operator: Or\n";
    let kept = werf_keeps(&git, &images, tags);
    assert_eq!(
        kept,
        ["main-0", "main-1"].iter().map(|s| s.to_string()).collect()
    );
}
