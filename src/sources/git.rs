//! Git history for werf-style rules, read from a clone: the references (remote-tracking
//! branches, or local branches when the clone has no such remote; tags) with their dates, and
//! the commit graph, built into the policy's plain [`GitFacts`] once per evaluation.
//!
//! Owns: reading a clone with git2 (no network: the operator keeps the clone fresh).

use std::{collections::HashSet, path::Path};

use git2::{Oid, Repository};

use super::commit_graph::CommitGraph;
pub use crate::policy::git_facts::{
    CommitId, CommitIndex, GitFacts, GitReference, GraphBuilder, ReferenceKind,
};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git repository {path}: {message}")]
    Open { path: String, message: String },
    #[error("git repository {path}: reading {what}: {message}")]
    Read {
        path: String,
        what: String,
        message: String,
    },
}

impl GitFacts {
    /// Reads the references of `remote` (or local branches) and tags, and every commit they
    /// reach, then notes which of the `linked` commit ids are unreachable (see
    /// [`Self::note_unreachable`]).
    pub fn load<'a>(
        path: &Path,
        remote: &str,
        linked: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, GitError> {
        let mut facts = Self::load_graph(path, remote)?;
        facts.note_unreachable(path, linked)?;
        Ok(facts)
    }

    /// Among `linked` (the commit ids images are linked to), those the references do not reach
    /// but the repository holds (a deleted branch's commits): provably on no reference, unlike
    /// ids the repository does not know at all.
    pub fn note_unreachable<'a>(
        &mut self,
        path: &Path,
        linked: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), GitError> {
        // Most ids resolve in the graph; only the rest need the object database, once each.
        let unresolved: HashSet<&str> = linked
            .into_iter()
            .filter(|id| self.resolve(id).is_none())
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        let repo = Repository::open(path).map_err(|e| GitError::Open {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        for id in unresolved {
            // A tag object names its commit: judged as that commit. Anything else that is not
            // a commit (a tree, a blob) proves nothing and stays unresolved (git-unproven).
            let Ok(commit) = repo.revparse_single(id).and_then(|o| o.peel_to_commit()) else {
                continue;
            };
            match self.index_of(&commit_id(commit.id())) {
                Some(index) => self.mark_peeled(id, index),
                None => self.mark_unreachable(id),
            }
        }
        Ok(())
    }

    /// The references and the commit graph they reach.
    pub fn load_graph(path: &Path, remote: &str) -> Result<Self, GitError> {
        let shown = path.display().to_string();
        let repo = Repository::open(path).map_err(|e| GitError::Open {
            path: shown.clone(),
            message: e.message().to_string(),
        })?;
        let read = |what: &str, e: git2::Error| GitError::Read {
            path: shown.clone(),
            what: what.to_string(),
            message: e.message().to_string(),
        };
        let heads = heads(&repo, remote).map_err(|e| read("references", e))?;
        let shallow = repo.is_shallow();
        let mut graph = GraphBuilder::new(shallow);
        // Each commit is read once (a revwalk would parse it too, for its own ordering).
        let odb = repo.odb().map_err(|e| read("the object database", e))?;
        let mut parents: Vec<Oid> = Vec::new();
        let mut pending: Vec<Oid> = heads.iter().map(|h| h.2).collect();
        // git's commit-graph file, where there is one, answers for the commits it lists.
        let file = CommitGraph::open(&repo.path().join("objects"));
        let mut positions: Vec<u32> = Vec::new();
        while let Some(id) = pending.pop() {
            if graph.contains(&commit_id(id)) {
                continue;
            }
            parents.clear();
            let listed = file.as_ref().and_then(|file| {
                positions.clear();
                let time = file.commit(file.position(id.as_bytes())?, &mut positions)?;
                for position in &positions {
                    parents.push(file.id(*position).and_then(|p| Oid::from_bytes(p).ok())?);
                }
                Some(time)
            });
            let time = match listed {
                Some(time) => time,
                None => {
                    parents.clear();
                    // The raw object, parsed here for its parents and committer time only:
                    // libgit2's commit objects would also be parsed whole and cached, which
                    // costs more than the read itself on a long history.
                    let object = match odb.read(id) {
                        Ok(object) => object,
                        // The boundary of a shallow clone: its parents are not there.
                        Err(_) if shallow => continue,
                        Err(e) => return Err(read("a commit", e)),
                    };
                    parse_commit(object.data(), &mut parents).ok_or_else(|| GitError::Read {
                        path: shown.clone(),
                        what: format!("commit {id}"),
                        message: "not a commit object".into(),
                    })?
                }
            };
            pending.extend(
                graph
                    .add(commit_id(id), time, parents.iter().map(|p| commit_id(*p)))
                    .map(|p| Oid::from_bytes(&p.0).unwrap_or(Oid::ZERO_SHA1)),
            );
        }
        // A shallow clone lacks the parents of its boundary commits: their history ends there.
        Ok(graph.finish(
            heads
                .into_iter()
                .map(|(kind, name, id, tagger)| (kind, name, commit_id(id), tagger))
                .collect(),
        ))
    }
}

/// A branch or tag: (kind, name, commit id, tagger date if annotated).
type Head = (ReferenceKind, String, Oid, Option<i64>);

/// The remote's branches and the tags; a clone without the remote (a mirror, a CI checkout)
/// gives its local branches instead: they are the truth there.
fn heads(repo: &Repository, remote: &str) -> Result<Vec<Head>, git2::Error> {
    let mut heads: Vec<Head> = Vec::new();
    let remote_prefix = format!("refs/remotes/{remote}/");
    let mut local = Vec::new();
    for reference in repo.references()? {
        let reference = reference?;
        let Ok(name) = reference.name() else { continue };
        if let Some(branch) = name.strip_prefix(&remote_prefix) {
            if branch == "HEAD" {
                continue;
            }
            if let Ok(commit) = reference.peel_to_commit() {
                heads.push((ReferenceKind::Branch, branch.to_string(), commit.id(), None));
            }
        } else if let Some(branch) = name.strip_prefix("refs/heads/") {
            if let Ok(commit) = reference.peel_to_commit() {
                local.push((ReferenceKind::Branch, branch.to_string(), commit.id(), None));
            }
        } else if let Some(tag) = name.strip_prefix("refs/tags/") {
            let tagger = reference
                .peel_to_tag()
                .ok()
                .and_then(|t| t.tagger().map(|s| s.when().seconds()));
            if let Ok(commit) = reference.peel_to_commit() {
                heads.push((ReferenceKind::Tag, tag.to_string(), commit.id(), tagger));
            }
        }
    }
    if !heads.iter().any(|h| h.0 == ReferenceKind::Branch) {
        heads.extend(local);
    }
    Ok(heads)
}

/// git2's id as the graph's.
fn commit_id(id: Oid) -> CommitId {
    CommitId::from_bytes(id.as_bytes()).unwrap_or_default()
}

/// A raw commit object's parents (appended to `parents`) and committer time; `None` when the
/// bytes are not a commit. The header is `tree`, `parent`*, `author`, `committer`, … then a
/// blank line and the message.
fn parse_commit(data: &[u8], parents: &mut Vec<Oid>) -> Option<i64> {
    let before = parents.len();
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"parent ") {
            let hex = std::str::from_utf8(hex).ok()?;
            parents.push(Oid::from_str(hex.trim()).ok()?);
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            // `Name <email> <seconds> <zone>`: the time is the second field from the end.
            let rest = std::str::from_utf8(rest).ok()?;
            let mut fields = rest.rsplitn(3, ' ');
            let _zone = fields.next()?;
            return fields.next()?.parse().ok();
        }
    }
    parents.truncate(before);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_commits_give_parents_and_committer_time() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 0123456789abcdef0123456789abcdef01234567\nparent 89abcdef0123456789abcdef0123456789abcdef\nauthor A <a@x> 1700000000 +0100\ncommitter C B <c@x> 1700000123 -0500\n\nparent not a header\n";
        let mut parents = Vec::new();
        assert_eq!(parse_commit(raw, &mut parents), Some(1_700_000_123));
        assert_eq!(parents.len(), 2);
        assert_eq!(
            parents[1].to_string(),
            "89abcdef0123456789abcdef0123456789abcdef"
        );
        let mut none = Vec::new();
        assert_eq!(parse_commit(b"tree x\nparent zz\n", &mut none), None);
        assert_eq!(parse_commit(b"not a commit", &mut none), None);
        assert!(none.is_empty());
    }
}
