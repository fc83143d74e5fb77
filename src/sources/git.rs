//! Git history for werf-style rules: the references (remote-tracking branches, or local
//! branches when the clone has no such remote; tags) with their dates, and the commit graph
//! loaded once into memory — integer indices, parents, committer times — so every walk is a
//! few array reads per commit instead of a pack lookup.
//!
//! Owns: reading a clone with git2 (no network: the operator keeps the clone fresh).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use git2::{Oid, Repository};

use super::commit_graph::CommitGraph;

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

/// A commit's position in [`GitFacts`].
pub type CommitIndex = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceKind {
    Branch,
    Tag,
}

/// A branch or tag with the commit it names and its date (seconds since the epoch): a branch's
/// head committer date; a tag's tagger date when annotated, else its commit's committer date.
#[derive(Clone, Debug)]
pub struct GitReference {
    pub kind: ReferenceKind,
    pub name: String,
    pub commit: CommitIndex,
    pub date: i64,
}

/// One repository's references and commit graph.
#[derive(Debug, Default)]
pub struct GitFacts {
    pub references: Vec<GitReference>,
    /// The clone is shallow: history ends early, so nothing can be proven about old commits.
    pub shallow: bool,
    /// Linked commit ids the repository holds but no reference reaches.
    pub unreachable: HashSet<String>,
    /// Linked ids that name an annotated tag object (`git rev-parse v1.0.0`), peeled to the
    /// commit in the graph it tags.
    peeled: HashMap<String, CommitIndex, foldhash::quality::RandomState>,
    ids: Vec<Oid>,
    by_id: HashMap<Oid, CommitIndex, foldhash::quality::RandomState>,
    /// Commit indices ordered by id, for abbreviated-id lookups.
    sorted: Vec<CommitIndex>,
    times: Vec<i64>,
    /// Parents of commit `i` are `parents[parent_start[i]..parent_start[i + 1]]`.
    parent_start: Vec<u32>,
    parents: Vec<CommitIndex>,
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
            match self.by_id.get(&commit.id()) {
                Some(&index) => {
                    self.peeled.insert(id.to_ascii_lowercase(), index);
                }
                None => {
                    self.unreachable.insert(id.to_ascii_lowercase());
                }
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
        // (kind, name, commit id, tagger date if annotated)
        let mut heads: Vec<(ReferenceKind, String, Oid, Option<i64>)> = Vec::new();
        let remote_prefix = format!("refs/remotes/{remote}/");
        let mut local = Vec::new();
        for reference in repo.references().map_err(|e| read("references", e))? {
            let reference = reference.map_err(|e| read("references", e))?;
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
        // Mirror clones and CI checkouts without the remote: their local branches are the truth.
        if !heads.iter().any(|h| h.0 == ReferenceKind::Branch) {
            heads.extend(local);
        }

        let mut facts = Self {
            shallow: repo.is_shallow(),
            ..Self::default()
        };
        // Each commit is read once (a revwalk would parse it too, for its own ordering).
        let odb = repo.odb().map_err(|e| read("the object database", e))?;
        let mut parent_ids: Vec<Oid> = Vec::new();
        let mut parent_counts: Vec<u32> = Vec::new();
        let mut pending: Vec<Oid> = heads.iter().map(|h| h.2).collect();
        // git's commit-graph file, where there is one, answers for the commits it lists.
        let graph = CommitGraph::open(&repo.path().join("objects"));
        let mut positions: Vec<u32> = Vec::new();
        while let Some(id) = pending.pop() {
            if facts.by_id.contains_key(&id) {
                continue;
            }
            let listed = graph.as_ref().and_then(|graph| {
                positions.clear();
                let time = graph.commit(graph.position(id.as_bytes())?, &mut positions)?;
                let before = parent_ids.len();
                for position in &positions {
                    match graph.id(*position).and_then(|p| Oid::from_bytes(p).ok()) {
                        Some(parent) => parent_ids.push(parent),
                        None => {
                            parent_ids.truncate(before);
                            return None;
                        }
                    }
                }
                Some((time, before))
            });
            let (time, before) = match listed {
                Some(listed) => listed,
                None => {
                    // The raw object, parsed here for its parents and committer time only:
                    // libgit2's commit objects would also be parsed whole and cached, which
                    // costs more than the read itself on a long history.
                    let object = match odb.read(id) {
                        Ok(object) => object,
                        // The boundary of a shallow clone: its parents are not there.
                        Err(_) if facts.shallow => continue,
                        Err(e) => return Err(read("a commit", e)),
                    };
                    let before = parent_ids.len();
                    let time = parse_commit(object.data(), &mut parent_ids).ok_or_else(|| {
                        GitError::Read {
                            path: shown.clone(),
                            what: format!("commit {id}"),
                            message: "not a commit object".into(),
                        }
                    })?;
                    (time, before)
                }
            };
            facts.by_id.insert(id, facts.ids.len() as CommitIndex);
            facts.ids.push(id);
            facts.times.push(time);
            parent_counts.push((parent_ids.len() - before) as u32);
            pending.extend(
                parent_ids[before..]
                    .iter()
                    .filter(|p| !facts.by_id.contains_key(p)),
            );
        }
        // A shallow clone lacks the parents of its boundary commits: their history ends there.
        facts.link_parents(&parent_ids, &parent_counts);
        facts.sorted = (0..facts.ids.len() as CommitIndex).collect();
        facts
            .sorted
            .sort_unstable_by(|a, b| facts.ids[*a as usize].cmp(&facts.ids[*b as usize]));
        for (kind, name, id, tagger) in heads {
            let Some(&commit) = facts.by_id.get(&id) else {
                continue;
            };
            let date = tagger.unwrap_or(facts.times[commit as usize]);
            facts.references.push(GitReference {
                kind,
                name,
                commit,
                date,
            });
        }
        facts
            .references
            .sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        Ok(facts)
    }

    fn link_parents(&mut self, parent_ids: &[Oid], counts: &[u32]) {
        let mut offset = 0usize;
        for &count in counts {
            self.parent_start.push(self.parents.len() as u32);
            for parent in &parent_ids[offset..offset + count as usize] {
                if let Some(&p) = self.by_id.get(parent) {
                    self.parents.push(p);
                }
            }
            offset += count as usize;
        }
        self.parent_start.push(self.parents.len() as u32);
    }

    /// The id of the commit at `commit`.
    pub fn id(&self, commit: CommitIndex) -> Oid {
        self.ids[commit as usize]
    }

    pub fn commits(&self) -> usize {
        self.ids.len()
    }

    pub fn time(&self, commit: CommitIndex) -> i64 {
        self.times[commit as usize]
    }

    pub fn parents(&self, commit: CommitIndex) -> &[CommitIndex] {
        let i = commit as usize;
        &self.parents[self.parent_start[i] as usize..self.parent_start[i + 1] as usize]
    }

    /// The commit a full or abbreviated (≥ 7 hex digits) id names, if exactly one does.
    pub fn resolve(&self, id: &str) -> Option<CommitIndex> {
        let found = self.resolve_commit(id);
        if found.is_none() && !self.peeled.is_empty() {
            return self.peeled.get(&id.to_ascii_lowercase()).copied();
        }
        found
    }

    fn resolve_commit(&self, id: &str) -> Option<CommitIndex> {
        if id.len() == 40 {
            // The common case, once per linked image: decoded here, without allocating.
            let mut raw = [0u8; 20];
            for (byte, pair) in raw.iter_mut().zip(id.as_bytes().chunks_exact(2)) {
                let nibble = |c: u8| (c as char).to_digit(16);
                *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
            }
            return Oid::from_bytes(&raw)
                .ok()
                .and_then(|oid| self.by_id.get(&oid).copied());
        }
        let id = id.to_ascii_lowercase();
        if id.len() < 7 || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut padded = id.clone();
        padded.extend(std::iter::repeat_n('0', 40 - id.len()));
        let low = Oid::from_str(&padded).ok()?;
        let start = self.sorted.partition_point(|&c| self.ids[c as usize] < low);
        let mut matches = self.sorted[start..]
            .iter()
            .take_while(|&&c| self.ids[c as usize].to_string().starts_with(&id));
        let first = matches.next().copied();
        // Ambiguous abbreviations prove nothing.
        if matches.next().is_some() {
            None
        } else {
            first
        }
    }
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
