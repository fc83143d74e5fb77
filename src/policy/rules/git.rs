//! The git rule: which git repository each image repository is built from, the commits its
//! images link to, and the werf walks' verdicts per digest.

use super::GitMap;
use crate::{
    config::Scope,
    policy::{
        Details, HashMap, HashSet, Inputs, Outcome, RepositorySnapshot, git_facts::CommitIndex,
        git_facts::GitFacts, policies_of, werf, workers,
    },
};

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
    for ((scope_index, git), members) in groups(repositories, map) {
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
        debug_assert!(
            members
                .iter()
                .all(|(slot, _)| repositories[*slot].scope_index == scope_index)
        );
        let group = Group {
            repositories,
            members: &members,
            facts,
            git,
        };
        group.judge(inputs, &mut outcomes, warnings);
    }
    outcomes
}

/// (scope, git repository) → each member's linked, tagged digests, in a stable order.
fn groups<'a, 'm>(
    repositories: &[InScope<'a>],
    map: &'m GitMap,
) -> Vec<((usize, &'m str), Vec<Member<'a>>)> {
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
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// The repositories of one scope built from one readable git repository.
struct Group<'g, 'a> {
    repositories: &'g [InScope<'a>],
    members: &'g [Member<'a>],
    facts: &'g GitFacts,
    git: &'g str,
}

impl<'a> Group<'_, 'a> {
    /// Resolves the members' commits, walks the references once for all of them, and fills
    /// each member's outcomes; members are spread over the cores in contiguous runs.
    fn judge(&self, inputs: &Inputs, outcomes: &mut [GitOutcomes<'a>], warnings: &mut Vec<String>) {
        let members = self.members;
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
        let (images, judged) = self.link(&mut mine, run, warnings);
        let policies = policies_of(self.repositories[members[0].0].scope);
        let notes = match inputs.details {
            Details::All => Some(werf::Notes::ALL),
            Details::Removed => Some(werf::Notes::REMOVED),
            Details::Reasons => None,
        };
        let now = i64::try_from(inputs.now.0 / 1000).unwrap_or(i64::MAX);
        let verdicts = werf::evaluate(&policies, self.facts, &images, members.len(), now, notes);
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

    /// Commit → (member, digest) for every image linked to it, resolved in parallel runs of
    /// members, then grouped by commit; and per member, the digests the walks judge.
    #[allow(clippy::type_complexity)]
    fn link(
        &self,
        mine: &mut [(usize, &mut GitOutcomes<'a>)],
        run: usize,
        warnings: &mut Vec<String>,
    ) -> (HashMap<CommitIndex, Vec<(u32, &'a str)>>, Vec<Vec<&'a str>>) {
        let linked: Vec<Linked<'a>> = std::thread::scope(|threads| {
            let handles: Vec<_> = mine
                .chunks_mut(run)
                .map(|chunk| {
                    threads.spawn(move || {
                        let mut found = Linked::default();
                        for (member, outcomes) in chunk.iter_mut() {
                            let (slot, digests) = &self.members[*member];
                            let in_scope = &self.repositories[*slot];
                            found.link(*member, in_scope, digests, self.facts, self.git, outcomes);
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
        let mut judged: Vec<Vec<&str>> = vec![Vec::new(); self.members.len()];
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
        (images, judged)
    }
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
        facts: &GitFacts,
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
fn git_outcome(verdicts: &werf::GitVerdicts, digest: &str, details: Details) -> Outcome {
    match verdicts.kept.get(digest) {
        Some(reasons) => Outcome {
            rule: "git",
            keeps: true,
            detail: format!("git: {}", reasons.join("; ")),
        },
        // `Removed` words these too: the kept ones are not asked.
        None if details == Details::Reasons => Outcome {
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
                None if details == Details::Removed => format!(
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
