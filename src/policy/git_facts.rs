//! Git history as the rules read it: the references with their dates and the commit graph —
//! integer indices, parents, committer times — so every walk is a few array reads per commit.
//! Plain data: `sources::git` builds it from a clone, tests build it in memory, both through
//! [`GraphBuilder`].

use std::collections::{HashMap, HashSet};

/// A commit's position in [`GitFacts`].
pub type CommitIndex = u32;

/// A commit id (SHA-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(pub [u8; 20]);

impl CommitId {
    /// From 40 hex digits (either case); `None` otherwise.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 40 {
            return None;
        }
        let mut raw = [0u8; 20];
        for (byte, pair) in raw.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let nibble = |c: u8| (c as char).to_digit(16);
            *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
        }
        Some(Self(raw))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl CommitId {
    /// The 40 lowercase hex digits, on the stack: written for every linked image when a whole
    /// index is read.
    pub fn hex(&self) -> HexId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0; 40];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        HexId(text)
    }
}

/// A commit id's hex digits ([`CommitId::hex`]).
pub struct HexId([u8; 40]);

impl std::ops::Deref for HexId {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

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
    ids: Vec<CommitId>,
    by_id: HashMap<CommitId, CommitIndex, foldhash::quality::RandomState>,
    /// Commit indices ordered by id, for abbreviated-id lookups.
    sorted: Vec<CommitIndex>,
    times: Vec<i64>,
    /// Parents of commit `i` are `parents[parent_start[i]..parent_start[i + 1]]`.
    parent_start: Vec<u32>,
    parents: Vec<CommitIndex>,
}

impl GitFacts {
    /// The id of the commit at `commit`.
    pub fn id(&self, commit: CommitIndex) -> CommitId {
        self.ids[commit as usize]
    }

    /// Where the commit `id` is in the graph.
    pub fn index_of(&self, id: &CommitId) -> Option<CommitIndex> {
        self.by_id.get(id).copied()
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

    /// A linked id names an annotated tag object tagging `commit`.
    pub fn mark_peeled(&mut self, id: &str, commit: CommitIndex) {
        self.peeled.insert(id.to_ascii_lowercase(), commit);
    }

    /// A linked id names a commit the repository holds but no reference reaches.
    pub fn mark_unreachable(&mut self, id: &str) {
        self.unreachable.insert(id.to_ascii_lowercase());
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
            // The common case, once per linked image: decoded without allocating.
            return CommitId::from_hex(id).and_then(|id| self.index_of(&id));
        }
        let id = id.to_ascii_lowercase();
        if id.len() < 7 || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut padded = id.clone();
        padded.extend(std::iter::repeat_n('0', 40 - id.len()));
        let low = CommitId::from_hex(&padded)?;
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

/// Builds [`GitFacts`] commit by commit (each once, in any order), then the references.
pub struct GraphBuilder {
    facts: GitFacts,
    parent_ids: Vec<CommitId>,
    parent_counts: Vec<u32>,
}

impl GraphBuilder {
    pub fn new(shallow: bool) -> Self {
        Self {
            facts: GitFacts {
                shallow,
                ..GitFacts::default()
            },
            parent_ids: Vec::new(),
            parent_counts: Vec::new(),
        }
    }

    pub fn contains(&self, id: &CommitId) -> bool {
        self.facts.by_id.contains_key(id)
    }

    /// Adds the commit `id` with its committer time and parents; returns the parents not added
    /// yet (for the caller to visit). A parent never added (a shallow clone's boundary) is left
    /// out of the graph.
    pub fn add(
        &mut self,
        id: CommitId,
        time: i64,
        parents: impl IntoIterator<Item = CommitId>,
    ) -> impl Iterator<Item = CommitId> + '_ {
        let before = self.parent_ids.len();
        self.parent_ids.extend(parents);
        let facts = &mut self.facts;
        facts.by_id.insert(id, facts.ids.len() as CommitIndex);
        facts.ids.push(id);
        facts.times.push(time);
        self.parent_counts
            .push((self.parent_ids.len() - before) as u32);
        self.parent_ids[before..]
            .iter()
            .copied()
            .filter(|p| !self.facts.by_id.contains_key(p))
    }

    /// The graph, with `heads` — (kind, name, commit, tagger date when annotated) — as its
    /// references (those naming a commit not in the graph are left out).
    pub fn finish(
        mut self,
        heads: Vec<(ReferenceKind, String, CommitId, Option<i64>)>,
    ) -> GitFacts {
        let facts = &mut self.facts;
        let mut offset = 0usize;
        for &count in &self.parent_counts {
            facts.parent_start.push(facts.parents.len() as u32);
            for parent in &self.parent_ids[offset..offset + count as usize] {
                if let Some(&p) = facts.by_id.get(parent) {
                    facts.parents.push(p);
                }
            }
            offset += count as usize;
        }
        facts.parent_start.push(facts.parents.len() as u32);
        facts.sorted = (0..facts.ids.len() as CommitIndex).collect();
        let ids = &facts.ids;
        facts
            .sorted
            .sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
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
        self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> CommitId {
        CommitId([n; 20])
    }

    #[test]
    fn a_graph_built_in_memory_resolves_ids_and_walks_parents() {
        let mut graph = GraphBuilder::new(false);
        let pending: Vec<CommitId> = graph.add(id(3), 300, [id(2)]).collect();
        assert_eq!(pending, [id(2)]);
        assert_eq!(graph.add(id(2), 200, [id(1)]).count(), 1);
        assert_eq!(graph.add(id(1), 100, []).count(), 0);
        let facts = graph.finish(vec![(ReferenceKind::Branch, "main".into(), id(3), None)]);
        let head = facts.resolve(&id(3).to_string()).unwrap();
        assert_eq!(facts.time(head), 300);
        let parent = facts.parents(head)[0];
        assert_eq!(facts.id(parent), id(2));
        assert_eq!(facts.references[0].date, 300);
        assert_eq!(
            facts.resolve("0101010"),
            Some(facts.index_of(&id(1)).unwrap())
        );
        assert_eq!(facts.resolve("01010"), None, "too short");
        assert_eq!(CommitId::from_hex(&id(0xab).to_string()), Some(id(0xab)));
    }
}
