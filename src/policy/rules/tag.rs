//! The rules judged per tag: usage (Kubernetes, Helm, restores), push and pull windows,
//! always-kept tag patterns, the newest N per repository, and untracked tags.

use super::{GitOutcomes, ago, ordinal};
use crate::{
    config::Scope,
    policy::{
        Details, HashMap, Inputs, Outcome, RepositorySnapshot, Restored, Tag,
        usage::{ImageRef, InUse},
    },
};

/// What the per-tag rules need, computed once per repository.
pub struct TagContext<'a> {
    repository: &'a str,
    repo: &'a RepositorySnapshot,
    scope: &'a Scope,
    inputs: &'a Inputs<'a>,
    tag_patterns: Vec<regex::Regex>,
    /// Tag → rank by last push (0 = newest); only when `lastPerRepository` is set.
    push_rank: HashMap<&'a str, usize>,
    /// Tag → (rule, reason) it is in use for.
    used_tags: HashMap<&'a str, Vec<(&'static str, String)>>,
    /// Digest → (rule, reason) it is in use for.
    used_digests: HashMap<&'a str, Vec<(&'static str, String)>>,
}

/// Every image in use, by repository: grouped once per evaluation, not once per repository.
pub fn usage_by_repository<'a>(
    inputs: &'a Inputs,
) -> HashMap<&'a str, Vec<(&'static str, &'a InUse)>> {
    let mut by_repository: HashMap<&str, Vec<(&'static str, &InUse)>> = HashMap::default();
    for (rule, uses) in [
        ("kubernetes", &inputs.usage.kubernetes),
        ("helm", &inputs.usage.helm),
    ] {
        for used in uses {
            by_repository
                .entry(used.repository.as_str())
                .or_default()
                .push((rule, used));
        }
    }
    by_repository
}

impl<'a> TagContext<'a> {
    pub fn new(
        repository: &'a str,
        repo: &'a RepositorySnapshot,
        scope: &'a Scope,
        inputs: &'a Inputs<'a>,
        uses: &[(&'static str, &'a InUse)],
    ) -> Self {
        let mut push_rank = HashMap::default();
        if scope.last_per_repository.is_some() {
            let mut by_push: Vec<&Tag> = repo.tags.iter().collect();
            by_push.sort_by(|a, b| {
                b.last_pushed
                    .cmp(&a.last_pushed)
                    .then_with(|| a.tag.cmp(&b.tag))
            });
            push_rank = by_push
                .iter()
                .enumerate()
                .map(|(i, t)| (&*t.tag, i))
                .collect();
        }
        let mut used_tags: HashMap<&str, Vec<(&'static str, String)>> = HashMap::default();
        let mut used_digests: HashMap<&str, Vec<(&'static str, String)>> = HashMap::default();
        for (rule, used) in uses {
            let (map, reference) = match &used.image {
                ImageRef::Tag(tag) => (&mut used_tags, tag.as_str()),
                ImageRef::Digest(digest) => (&mut used_digests, digest.as_str()),
            };
            map.entry(reference)
                .or_default()
                .push((rule, format!("{rule}: {}", used.by)));
        }
        Self {
            repository,
            repo,
            scope,
            inputs,
            tag_patterns: scope
                .tags
                .iter()
                .filter_map(|t| regex::Regex::new(t).ok())
                .collect(),
            push_rank,
            used_tags,
            used_digests,
        }
    }

    /// Digests kept by digest alone (a workload or release naming them by digest, a restore
    /// by digest within `cleanup.restoreProtection`), with the first reason, ordered by digest.
    pub fn kept_by_digest(&self) -> Vec<(&'a str, String)> {
        let mut kept: Vec<(&str, String)> = self
            .used_digests
            .iter()
            .map(|(digest, uses)| (*digest, uses[0].1.clone()))
            .collect();
        for (reference, restored) in &self.repo.restored {
            if **reference == *restored.digest
                && let Some(why) = self.restore_words(restored)
            {
                kept.push((reference, why));
            }
        }
        kept.sort();
        kept
    }

    /// Why a restore still protects what it put back, or `None` once the window is over.
    fn restore_words(&self, restored: &Restored) -> Option<String> {
        let window = self.inputs.restore_protection.as_millis() as u64;
        let since = self.inputs.now.0.saturating_sub(restored.at.0);
        (since < window).then(|| {
            format!(
                "restored from run {} {} ago (< cleanup.restoreProtection {})",
                restored.from_run,
                ago(since),
                crate::config::HumanDuration(self.inputs.restore_protection)
            )
        })
    }

    /// Every rule's verdict on `tag`; the non-keeping ones in words only for `Details::All`.
    pub fn outcomes(&self, tag: &Tag, git: &GitOutcomes, words: Details) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        // Usage first: it is what must never be deleted.
        let used = self.usage(tag, &mut outcomes);
        if !used && self.inputs.usage.kubernetes_unavailable.is_empty() {
            outcomes.push(self.unused(words));
        }
        // Git, or untracked: only evidence that speaks for this tag (about its digest, or
        // about the tag itself) puts it under the git rules.
        match git.get(&*tag.digest).filter(|_| self.repo.tag_linked(tag)) {
            Some(outcome) => outcomes.push(outcome.clone()),
            None => outcomes.push(self.untracked(tag, words)),
        }
        outcomes.push(self.pushed_within(tag, words));
        if let Some(pulled) = self.pulled_within(tag, words) {
            outcomes.push(pulled);
        }
        if let Some(pattern) = self.tag_pattern(tag, words) {
            outcomes.push(pattern);
        }
        if let Some(rank) = self.last_per_repository(tag, words) {
            outcomes.push(rank);
        }
        outcomes
    }

    /// Workloads and releases using the tag or its digest, a restore still protecting it, and
    /// every cluster that could not be read; whether anything uses it.
    fn usage(&self, tag: &Tag, outcomes: &mut Vec<Outcome>) -> bool {
        let mut used = false;
        let uses = self
            .used_tags
            .get(&*tag.tag)
            .into_iter()
            .chain(self.used_digests.get(&*tag.digest));
        for found in uses {
            for (rule, why) in found {
                used = true;
                outcomes.push(Outcome {
                    rule,
                    keeps: true,
                    detail: why.clone(),
                });
            }
        }
        if let Some(restored) = self.repo.restored.get(&*tag.tag)
            && *restored.digest == *tag.digest
            && let Some(why) = self.restore_words(restored)
        {
            outcomes.push(Outcome {
                rule: "restored",
                keeps: true,
                detail: why,
            });
        }
        let usage = self.inputs.usage;
        for (rule, failed) in [
            ("kubernetes-unavailable", &usage.kubernetes_unavailable),
            ("helm-unavailable", &usage.helm_unavailable),
        ] {
            for cluster in failed {
                outcomes.push(Outcome {
                    rule,
                    keeps: true,
                    detail: format!(
                        "{rule}: {cluster} could not be read, so nothing it might run is deleted"
                    ),
                });
            }
        }
        used
    }

    /// No workload uses it, in the namespaces that were read.
    fn unused(&self, words: Details) -> Outcome {
        Outcome {
            rule: "kubernetes",
            keeps: false,
            detail: self.text(words, false, || {
                let clusters = &self.inputs.retention.kubernetes.clusters;
                // `namespaces` narrows what keeps images: say so where it decides.
                let narrowed: Vec<String> = clusters
                    .iter()
                    .filter(|c| !c.namespaces.is_empty())
                    .map(|c| format!("{}: {}", c.name, c.namespaces.join(", ")))
                    .collect();
                let only = if narrowed.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (only these namespaces were read — {})",
                        narrowed.join("; ")
                    )
                };
                format!(
                    "kubernetes: no workload in {} cluster(s) uses it{only}",
                    clusters.len()
                )
            }),
        }
    }

    /// The latest push: a tag pushed again to a new digest is as fresh as a new tag.
    fn pushed_within(&self, tag: &Tag, words: Details) -> Outcome {
        let pushed_ago = self.inputs.now.0.saturating_sub(tag.last_pushed.0);
        let window = self.scope.pushed_within.0.as_millis() as u64;
        Outcome {
            rule: "pushedWithin",
            keeps: pushed_ago < window,
            detail: self.text(words, pushed_ago < window, || {
                format!(
                    "pushed {} ago ({} {})",
                    ago(pushed_ago),
                    if pushed_ago < window { "<" } else { "≥" },
                    self.scope.pushed_within
                )
            }),
        }
    }

    /// The latest pull of the tag or its digest, when the scope sets `pulledWithin`.
    fn pulled_within(&self, tag: &Tag, words: Details) -> Option<Outcome> {
        let pulled_within = self.scope.pulled_within?;
        let last = [&*tag.tag, &*tag.digest]
            .iter()
            .filter_map(|r| self.repo.pulls.get(*r))
            .map(|p| p.last_pulled)
            .max();
        let window = pulled_within.0.as_millis() as u64;
        Some(match last {
            Some(last) => {
                let since = self.inputs.now.0.saturating_sub(last.0);
                Outcome {
                    rule: "pulledWithin",
                    keeps: since < window,
                    detail: self.text(words, since < window, || {
                        format!(
                            "pulled {} ago ({} {pulled_within})",
                            ago(since),
                            if since < window { "<" } else { "≥" }
                        )
                    }),
                }
            }
            None => Outcome {
                rule: "pulledWithin",
                keeps: false,
                detail: self.text(words, false, || "never pulled through regkeeper".into()),
            },
        })
    }

    /// The always-kept tag patterns, when the scope has any.
    fn tag_pattern(&self, tag: &Tag, words: Details) -> Option<Outcome> {
        if let Some(pattern) = self.tag_patterns.iter().find(|p| p.is_match(&tag.tag)) {
            Some(Outcome {
                rule: "tags",
                keeps: true,
                detail: format!("tag matches {}", pattern.as_str()),
            })
        } else if !self.tag_patterns.is_empty() {
            Some(Outcome {
                rule: "tags",
                keeps: false,
                detail: self.text(words, false, || {
                    "tag matches none of the always-kept patterns".into()
                }),
            })
        } else {
            None
        }
    }

    /// The newest N by push, when the scope sets `lastPerRepository`.
    fn last_per_repository(&self, tag: &Tag, words: Details) -> Option<Outcome> {
        let n = self.scope.last_per_repository?;
        let rank = self.push_rank.get(&*tag.tag).copied().unwrap_or(usize::MAX);
        Some(Outcome {
            rule: "lastPerRepository",
            keeps: rank < n,
            detail: self.text(words, rank < n, || {
                format!(
                    "pushed {} most recently in {} ({} {n})",
                    ordinal(rank + 1),
                    self.repository,
                    if rank < n { "≤" } else { ">" }
                )
            }),
        })
    }

    /// A rule's words: always for a keep reason; for a rule that does not keep, only when the
    /// caller wants every verdict (`explain`) — a plan over a million tags would spend most of
    /// its time and memory on sentences nobody reads.
    fn text(&self, words: Details, keeps: bool, make: impl FnOnce() -> String) -> String {
        if keeps || words == Details::All {
            make()
        } else {
            String::new()
        }
    }

    fn untracked(&self, tag: &Tag, words: Details) -> Outcome {
        let linked = self.repo.tag_linked(tag);
        let what = if linked {
            "untracked: linked to commits, but no git repository is configured for it"
        } else {
            "untracked: no commit link"
        };
        match self.scope.untracked.max_age {
            None => Outcome {
                rule: "untracked",
                keeps: true,
                detail: format!("{what} (kept: untracked.maxAge is not set)"),
            },
            Some(max_age) => {
                let age = self.inputs.now.0.saturating_sub(tag.last_pushed.0);
                let keeps = age < max_age.0.as_millis() as u64;
                Outcome {
                    rule: "untracked",
                    keeps,
                    detail: self.text(words, keeps, || {
                        format!(
                            "{what}, pushed {} ago ({} untracked.maxAge {max_age})",
                            ago(age),
                            if keeps { "<" } else { "≥" }
                        )
                    }),
                }
            }
        }
    }
}
