//! git's commit-graph file (`objects/info/commit-graph`, or the split chain under
//! `objects/info/commit-graphs/`), read directly: for every commit it lists, the parents and the
//! committer time — all the graph loader needs — without inflating the commit from a pack.
//! git writes it on `gc`, `maintenance`, and on `fetch` with `fetch.writeCommitGraph`.
//!
//! Only what the file proves is used: a commit it does not list (newer than the file) is read
//! from the object database by the caller, and a file that does not parse is ignored whole.
//! Format: Documentation/gitformat-commit-graph.txt in git (SHA-1 graphs only).
//!
//! Owns: parsing the file. May call: nothing in the crate.

use std::path::Path;

const SIGNATURE: &[u8; 4] = b"CGPH";
const HASH_LEN: usize = 20;
const OIDF: u32 = u32::from_be_bytes(*b"OIDF");
const OIDL: u32 = u32::from_be_bytes(*b"OIDL");
const CDAT: u32 = u32::from_be_bytes(*b"CDAT");
const EDGE: u32 = u32::from_be_bytes(*b"EDGE");
const NO_PARENT: u32 = 0x7000_0000;
const EXTRA_EDGES: u32 = 0x8000_0000;

/// One file of the graph (a chain has several; positions continue across them).
struct Layer {
    data: Vec<u8>,
    /// Position of this layer's first commit in the whole chain.
    base: u32,
    count: u32,
    fanout: usize,
    ids: usize,
    commits: usize,
    edges: Option<(usize, usize)>,
}

pub struct CommitGraph {
    layers: Vec<Layer>,
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn be64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl Layer {
    fn parse(data: Vec<u8>, base: u32) -> Option<Self> {
        if data.get(..4)? != SIGNATURE || *data.get(4)? != 1 || *data.get(5)? != 1 {
            return None;
        }
        let chunks = usize::from(*data.get(6)?);
        let mut found = [None; 4];
        let mut edges_end = None;
        for i in 0..chunks {
            let entry = 8 + 12 * i;
            let id = be32(&data, entry)?;
            let offset = usize::try_from(be64(&data, entry + 4)?).ok()?;
            let next = usize::try_from(be64(&data, entry + 16)?).ok()?;
            if offset > data.len() || next > data.len() || next < offset {
                return None;
            }
            match id {
                OIDF => found[0] = Some(offset),
                OIDL => found[1] = Some(offset),
                CDAT => found[2] = Some(offset),
                EDGE => {
                    found[3] = Some(offset);
                    edges_end = Some(next);
                }
                _ => {}
            }
        }
        let [Some(fanout), Some(ids), Some(commits), edges] = found else {
            return None;
        };
        let count = be32(&data, fanout + 255 * 4)?;
        let n = usize::try_from(count).ok()?;
        if data.len() < ids + n * HASH_LEN || data.len() < commits + n * (HASH_LEN + 16) {
            return None;
        }
        Some(Self {
            edges: edges.zip(edges_end),
            data,
            base,
            count,
            fanout,
            ids,
            commits,
        })
    }

    fn id(&self, local: u32) -> &[u8] {
        let at = self.ids + local as usize * HASH_LEN;
        &self.data[at..at + HASH_LEN]
    }

    fn find(&self, id: &[u8]) -> Option<u32> {
        let first = usize::from(id[0]);
        let low = if first == 0 {
            0
        } else {
            be32(&self.data, self.fanout + (first - 1) * 4)?
        };
        let high = be32(&self.data, self.fanout + first * 4)?.min(self.count);
        let (mut low, mut high) = (low, high);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.id(middle).cmp(id) {
                std::cmp::Ordering::Equal => return Some(middle),
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
            }
        }
        None
    }
}

impl CommitGraph {
    /// The graph of the object directory `objects`, if git wrote one that this reader
    /// understands; `None` otherwise (the caller reads commits from the object database).
    pub fn open(objects: &Path) -> Option<Self> {
        let info = objects.join("info");
        let chain = std::fs::read_to_string(info.join("commit-graphs/commit-graph-chain"));
        let files: Vec<std::path::PathBuf> = match chain {
            Ok(chain) => chain
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|hash| info.join(format!("commit-graphs/graph-{}.graph", hash.trim())))
                .collect(),
            Err(_) => vec![info.join("commit-graph")],
        };
        let mut layers: Vec<Layer> = Vec::new();
        let mut base = 0u32;
        for file in files {
            let layer = Layer::parse(std::fs::read(&file).ok()?, base)?;
            base = base.checked_add(layer.count)?;
            layers.push(layer);
        }
        (!layers.is_empty()).then_some(Self { layers })
    }

    fn layer(&self, position: u32) -> Option<&Layer> {
        self.layers
            .iter()
            .find(|l| position >= l.base && position - l.base < l.count)
    }

    /// Where the graph lists `id`, newest layer first (a commit is in one layer only).
    pub fn position(&self, id: &[u8]) -> Option<u32> {
        if id.len() != HASH_LEN {
            return None;
        }
        self.layers
            .iter()
            .rev()
            .find_map(|l| l.find(id).map(|local| l.base + local))
    }

    /// The id at `position`.
    pub fn id(&self, position: u32) -> Option<&[u8]> {
        let layer = self.layer(position)?;
        Some(layer.id(position - layer.base))
    }

    /// The committer time of the commit at `position`, and the positions of its parents
    /// (appended to `parents`). `None` when the file's entry does not hold together.
    pub fn commit(&self, position: u32, parents: &mut Vec<u32>) -> Option<i64> {
        let layer = self.layer(position)?;
        let at = layer.commits + (position - layer.base) as usize * (HASH_LEN + 16);
        let data = &layer.data;
        let before = parents.len();
        let first = be32(data, at + HASH_LEN)?;
        let second = be32(data, at + HASH_LEN + 4)?;
        if first != NO_PARENT {
            parents.push(first);
        }
        if second & EXTRA_EDGES != 0 {
            // An octopus merge: the second and later parents are in the EDGE chunk; the last
            // has the high bit set.
            let (edges, end) = layer.edges?;
            let mut at = edges + (second & !EXTRA_EDGES) as usize * 4;
            loop {
                if at + 4 > end {
                    parents.truncate(before);
                    return None;
                }
                let edge = be32(data, at)?;
                parents.push(edge & !EXTRA_EDGES);
                if edge & EXTRA_EDGES != 0 {
                    break;
                }
                at += 4;
            }
        } else if second != NO_PARENT {
            parents.push(second);
        }
        let high = u64::from(be32(data, at + HASH_LEN + 8)? & 0b11);
        let low = u64::from(be32(data, at + HASH_LEN + 12)?);
        i64::try_from((high << 32) | low).ok()
    }
}
