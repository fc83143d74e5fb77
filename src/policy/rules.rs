//! The per-tag rules: git (through [`super::werf`]), usage (Kubernetes, Helm), push and pull
//! windows, always-kept tag patterns, the newest N per repository, and untracked tags.

use super::{
    Details, HashMap, HashSet, Inputs, Outcome, RepositorySnapshot, Tag, policies_of, werf, workers,
};
use crate::{
    config::{RetentionConfig, Scope, repository_pattern},
    policy::git_facts::CommitIndex,
    policy::usage::{ImageRef, InUse},
};

/// Which git repository an image repository (or an image, by its source URL) is built from.
pub struct GitMap {
    by_repository: Vec<(String, Vec<regex::Regex>)>,
    by_source: Vec<(String, String)>,
}

/// `https://github.com/acme/app.git/` and `git@github.com:acme/app` both become
/// `github.com/acme/app`.
fn normalize_source(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let (rest, scp_like) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        None => (url.as_str(), true),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = if scp_like {
        rest.replacen(':', "/", 1)
    } else {
        rest.to_string()
    };
    rest.trim_end_matches('/')
        .trim_end_matches(".git")
        .trim_end_matches('/')
        .to_string()
}

impl GitMap {
    pub fn new(retention: &RetentionConfig) -> Self {
        Self {
            by_repository: retention
                .git_repositories
                .iter()
                .map(|g| {
                    let patterns = g
                        .repositories
                        .iter()
                        .filter_map(|p| repository_pattern(p).ok())
                        .collect();
                    (g.name.clone(), patterns)
                })
                .collect(),
            by_source: retention
                .git_repositories
                .iter()
                .flat_map(|g| {
                    g.source_urls
                        .iter()
                        .map(|u| (normalize_source(u), g.name.clone()))
                })
                .collect(),
        }
    }

    /// The git repository for a tag of `repository` whose image names `source` (if any).
    fn lookup(&self, repository: &str, source: Option<&str>) -> Option<&str> {
        self.by_repository
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|p| p.is_match(repository)))
            .map(|(name, _)| name.as_str())
            .or_else(|| {
                let source = normalize_source(source?);
                self.by_source
                    .iter()
                    .find(|(s, _)| *s == source)
                    .map(|(_, n)| n.as_str())
            })
    }
}

/// Per digest: the git outcome (kept with reasons, unproven, or why not), for digests that are
/// git-judged (linked to commits, with a git repository mapped).
pub type GitOutcomes<'a> = HashMap<&'a str, Outcome>;

/// A repository in scope, as the git rules see it.
pub struct InScope<'a> {
    pub name: &'a str,
    pub repo: &'a RepositorySnapshot,
    pub scope: &'a Scope,
    /// Which scope (repositories of one scope share policies, so they share walks).
    pub scope_index: usize,
}

/// A repository's slot and its git-judged digests, within one (scope, git repository) group.
type Member<'a> = (usize, Vec<&'a str>);

/// Git outcomes for every repository in scope. Repositories governed by the same scope and
/// built from the same git repository are walked together: each reference is walked once for
/// all of them, numbering each repository's images separately (werf's per-image-name
/// semantics), instead of once per repository.
pub fn git_verdicts<'a>(
    repositories: &[InScope<'a>],
    map: &GitMap,
    inputs: &Inputs,
    warnings: &mut Vec<String>,
) -> Vec<GitOutcomes<'a>> {
    let mut outcomes: Vec<GitOutcomes> = repositories
        .iter()
        .map(|_| GitOutcomes::default())
        .collect();
    // (scope, git repository) → (slot → its linked, tagged digests).
    let mut groups: HashMap<(usize, &str), Vec<Member>> = HashMap::default();
    for (slot, in_scope) in repositories.iter().enumerate() {
        let repo = in_scope.repo;
        let mut per_git: HashMap<&str, Vec<&str>> = HashMap::default();
        let mut seen = HashSet::default();
        for tag in &repo.tags {
            let digest = &*tag.digest;
            if !seen.insert(digest) || repo.digest_commits(digest).next().is_none() {
                continue;
            }
            let source = repo.manifests.get(digest).and_then(|m| m.source.as_deref());
            if let Some(git) = map.lookup(in_scope.name, source) {
                per_git.entry(git).or_default().push(digest);
            }
        }
        for (git, digests) in per_git {
            groups
                .entry((in_scope.scope_index, git))
                .or_default()
                .push((slot, digests));
        }
    }
    let now = i64::try_from(inputs.now.0 / 1000).unwrap_or(i64::MAX);
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    for ((scope_index, git), members) in groups {
        let facts = match inputs.git.get(git) {
            Some(Ok(facts)) if !facts.shallow => facts,
            other => {
                let why = match other {
                    Some(Ok(_)) => format!("git repository {git} is a shallow clone"),
                    Some(Err(e)) => format!("git repository {git} cannot be read: {e}"),
                    None => format!("git repository {git} was not loaded"),
                };
                for (slot, digests) in members {
                    for digest in digests {
                        outcomes[slot].insert(digest, unproven(why.clone()));
                    }
                }
                continue;
            }
        };
        // Each member's outcome map, to be filled by whichever thread handles the member.
        let mut member_of: Vec<Option<usize>> = vec![None; outcomes.len()];
        for (member, (slot, _)) in members.iter().enumerate() {
            member_of[*slot] = Some(member);
        }
        let mut mine: Vec<(usize, &mut GitOutcomes<'a>)> = outcomes
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, o)| member_of[slot].map(|member| (member, o)))
            .collect();
        mine.sort_by_key(|(member, _)| *member);
        let run = mine.len().div_ceil(workers()).max(1);

        // Commit → (member, digest) for every image linked to it: resolved in parallel runs
        // of members, then grouped by commit.
        let linked: Vec<Linked<'a>> = std::thread::scope(|threads| {
            let handles: Vec<_> = mine
                .chunks_mut(run)
                .map(|chunk| {
                    let members = &members;
                    threads.spawn(move || {
                        let mut found = Linked::default();
                        for (member, outcomes) in chunk.iter_mut() {
                            let (slot, digests) = &members[*member];
                            let in_scope = &repositories[*slot];
                            found.link(*member, in_scope, digests, facts, git, outcomes);
                        }
                        found
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut pairs: Vec<(CommitIndex, u32, &str)> = Vec::new();
        let mut judged: Vec<Vec<&str>> = vec![Vec::new(); members.len()];
        for found in linked {
            pairs.extend(found.pairs);
            warnings.extend(found.warnings);
            for (member, digests) in found.judged {
                judged[member] = digests;
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut images: HashMap<CommitIndex, Vec<(u32, &str)>> = HashMap::default();
        for group in pairs.chunk_by(|a, b| a.0 == b.0) {
            images.insert(group[0].0, group.iter().map(|p| (p.1, p.2)).collect());
        }
        let policies = policies_of(repositories[members[0].0].scope);
        debug_assert!(
            members
                .iter()
                .all(|(slot, _)| repositories[*slot].scope_index == scope_index)
        );
        let notes = match inputs.details {
            super::Details::All => Some(werf::Notes::ALL),
            super::Details::Removed => Some(werf::Notes::REMOVED),
            super::Details::Reasons => None,
        };
        let verdicts = werf::evaluate(&policies, facts, &images, members.len(), now, notes);
        std::thread::scope(|threads| {
            for chunk in mine.chunks_mut(run) {
                let (judged, verdicts) = (&judged, &verdicts);
                threads.spawn(move || {
                    for (member, outcomes) in chunk.iter_mut() {
                        let verdicts = &verdicts[*member];
                        for &digest in &judged[*member] {
                            let outcome = git_outcome(verdicts, digest, inputs.details);
                            outcomes.entry(digest).or_insert(outcome);
                        }
                    }
                });
            }
        });
    }
    outcomes
}

/// One thread's share of resolving linked commits.
#[derive(Default)]
struct Linked<'a> {
    /// (commit, member, digest) for every judged image.
    pairs: Vec<(CommitIndex, u32, &'a str)>,
    /// Member → its digests the walks judge.
    judged: Vec<(usize, Vec<&'a str>)>,
    warnings: Vec<String>,
}

impl<'a> Linked<'a> {
    /// Resolves the commits of `digests` (one member's): images whose commits are all
    /// resolved go to the walks; missing commits make them unproven, unreachable ones not
    /// kept by git.
    fn link(
        &mut self,
        member: usize,
        in_scope: &InScope<'a>,
        digests: &[&'a str],
        facts: &super::git_facts::GitFacts,
        git: &str,
        outcomes: &mut GitOutcomes<'a>,
    ) {
        let repo = in_scope.repo;
        let mut judged = Vec::new();
        for &digest in digests {
            let mut missing = Vec::new();
            let before = self.pairs.len();
            for linked in repo.digest_commits(digest) {
                match facts.resolve(linked) {
                    Some(commit) => self.pairs.push((commit, member as u32, digest)),
                    // Held by the repository but on no reference: nothing keeps it.
                    None if facts.unreachable.contains(&linked.to_ascii_lowercase()) => {}
                    None => missing.push(linked.to_string()),
                }
            }
            if !missing.is_empty() {
                self.pairs.truncate(before);
                self.warnings.push(format!(
                    "{}: commits not in git repository {git} (kept as git-unproven): {}",
                    in_scope.name,
                    missing.join(", ")
                ));
                outcomes.insert(
                    digest,
                    unproven(format!(
                        "commit {} is not in git repository {git}",
                        missing.join(", ")
                    )),
                );
            } else if self.pairs.len() == before {
                let commits: Vec<&str> = repo
                    .digest_commits(digest)
                    .map(|c| &c[..c.len().min(12)])
                    .collect();
                outcomes.insert(
                    digest,
                    Outcome {
                        rule: "git",
                        keeps: false,
                        detail: format!(
                            "git: no branch or tag of {git} reaches commit {} (a deleted branch?)",
                            commits.join(", ")
                        ),
                    },
                );
            } else {
                judged.push(digest);
            }
        }
        self.judged.push((member, judged));
    }
}

/// The git outcome of a judged digest, from the walks' verdicts.
fn git_outcome(verdicts: &werf::GitVerdicts, digest: &str, details: super::Details) -> Outcome {
    match verdicts.kept.get(digest) {
        Some(reasons) => Outcome {
            rule: "git",
            keeps: true,
            detail: format!("git: {}", reasons.join("; ")),
        },
        // `Removed` words these too: the kept ones are not asked.
        None if details == super::Details::Reasons => Outcome {
            rule: "git",
            keeps: false,
            detail: String::new(),
        },
        None => Outcome {
            rule: "git",
            keeps: false,
            detail: match verdicts.not_kept.get(digest) {
                Some(notes) => format!("git: {}", notes.join("; ")),
                None if verdicts.walked.is_empty() => {
                    "git: no policy selects a branch or tag of it".into()
                }
                // What each reference keeps is the same for all of this repository's images:
                // `explain` lists it; a cleanup's audit of many removals does not repeat it.
                None if details == super::Details::Removed => format!(
                    "git: older than what the {} selected references keep",
                    verdicts.walked.len()
                ),
                None => format!(
                    "git: older than what the selected references keep ({})",
                    verdicts.walked.join("; ")
                ),
            },
        },
    }
}

fn unproven(why: String) -> Outcome {
    Outcome {
        rule: "git-unproven",
        keeps: true,
        detail: format!("git-unproven: {why}"),
    }
}

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
    fn restore_words(&self, restored: &super::Restored) -> Option<String> {
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
        let now = self.inputs.now;
        let usage = self.inputs.usage;
        // Usage first: it is what must never be deleted.
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
        if !used && usage.kubernetes_unavailable.is_empty() {
            outcomes.push(Outcome {
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
            });
        }
        // Git, or untracked: only evidence that speaks for this tag (about its digest, or
        // about the tag itself) puts it under the git rules.
        match git.get(&*tag.digest).filter(|_| self.repo.tag_linked(tag)) {
            Some(outcome) => outcomes.push(outcome.clone()),
            None => outcomes.push(self.untracked(tag, words)),
        }
        // Push and pull windows.
        // The latest push: a tag pushed again to a new digest is as fresh as a new tag.
        let pushed_ago = now.0.saturating_sub(tag.last_pushed.0);
        let window = self.scope.pushed_within.0.as_millis() as u64;
        outcomes.push(Outcome {
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
        });
        if let Some(pulled_within) = self.scope.pulled_within {
            let last = [&*tag.tag, &*tag.digest]
                .iter()
                .filter_map(|r| self.repo.pulls.get(*r))
                .map(|p| p.last_pulled)
                .max();
            let window = pulled_within.0.as_millis() as u64;
            outcomes.push(match last {
                Some(last) => {
                    let since = now.0.saturating_sub(last.0);
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
            });
        }
        if let Some(pattern) = self.tag_patterns.iter().find(|p| p.is_match(&tag.tag)) {
            outcomes.push(Outcome {
                rule: "tags",
                keeps: true,
                detail: format!("tag matches {}", pattern.as_str()),
            });
        } else if !self.tag_patterns.is_empty() {
            outcomes.push(Outcome {
                rule: "tags",
                keeps: false,
                detail: self.text(words, false, || {
                    "tag matches none of the always-kept patterns".into()
                }),
            });
        }
        if let Some(n) = self.scope.last_per_repository {
            let rank = self.push_rank.get(&*tag.tag).copied().unwrap_or(usize::MAX);
            outcomes.push(Outcome {
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
            });
        }
        outcomes
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

/// `35m`, `2d`, `5h`: the largest whole unit.
pub fn ago(millis: u64) -> String {
    let secs = millis / 1000;
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_compare_by_host_and_path() {
        for url in [
            "https://github.com/Acme/App.git",
            "git@github.com:acme/app",
            "ssh://git@github.com/acme/app/",
            "github.com/acme/app",
        ] {
            assert_eq!(normalize_source(url), "github.com/acme/app", "{url}");
        }
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(ago(90 * 60 * 1000), "1h");
    }
}
