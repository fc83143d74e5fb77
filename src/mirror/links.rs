//! Every commit link of a range of digests, held while a whole index is read and looked up for
//! each repository's digests.
//!
//! A million links are held at once and looked up once each, so the common case — a sha256
//! digest with one link, the image's own evidence, to a SHA-1 commit — is stored in place as
//! bytes: no allocation per link, and one memory access per lookup instead of four (the key's
//! text, the list, the link, the commit's text). Anything else keeps its text.

use std::collections::hash_map::Entry;

use crate::{
    index::{CommitLink, DigestRange, Index, IndexError},
    policy::{
        HashMap,
        git_facts::CommitId,
        snapshot::{Evidence, LinkScope},
    },
};

/// A link as held for the whole index while it is read.
#[derive(Clone, PartialEq, Eq)]
enum Stored {
    Image(Box<str>),
    Scoped(Box<Evidence>),
}

impl From<Evidence> for Stored {
    fn from(evidence: Evidence) -> Self {
        match evidence.scope {
            LinkScope::Image => Self::Image(evidence.commit),
            _ => Self::Scoped(Box::new(evidence)),
        }
    }
}

/// One digest's links.
enum Facts {
    /// One link, the image's own evidence, to this SHA-1 commit.
    Commit(CommitId),
    /// Any other links, each once.
    Stored(Box<[Stored]>),
}

impl Facts {
    fn of(stored: Stored) -> Self {
        match &stored {
            // Lowercase only: the id is written back in lowercase, and must read as stored.
            Stored::Image(commit) if !commit.bytes().any(|b| b.is_ascii_uppercase()) => {
                match CommitId::from_hex(commit) {
                    Some(id) => Self::Commit(id),
                    None => Self::Stored(Box::new([stored])),
                }
            }
            Stored::Image(_) => Self::Stored(Box::new([stored])),
            Stored::Scoped(_) => Self::Stored(Box::new([stored])),
        }
    }

    /// Adds `stored` unless it is already there: one commit may be learned from several
    /// sources.
    fn add(&mut self, stored: Stored) {
        let mut all = match std::mem::replace(self, Self::Stored(Box::new([]))) {
            Self::Commit(id) => vec![Stored::Image((*id.hex()).into())],
            Self::Stored(all) => all.into_vec(),
        };
        if !all.contains(&stored) {
            all.push(stored);
        }
        *self = match <[Stored; 1]>::try_from(all) {
            Ok([only]) => Self::of(only),
            Err(all) => Self::Stored(all.into_boxed_slice()),
        };
    }

    fn visit(&self, visit: &mut dyn FnMut(&str, &LinkScope)) {
        match self {
            Self::Commit(id) => visit(&id.hex(), &LinkScope::Image),
            Self::Stored(all) => {
                for stored in all {
                    match stored {
                        Stored::Image(commit) => visit(commit, &LinkScope::Image),
                        Stored::Scoped(evidence) => visit(&evidence.commit, &evidence.scope),
                    }
                }
            }
        }
    }
}

/// The links of every digest in one range.
#[derive(Default)]
pub struct Links {
    /// `sha256:` digests written in lowercase hex, by their 32 bytes.
    sha256: HashMap<[u8; 32], Facts>,
    /// Any other digest, by its text.
    other: HashMap<Box<str>, Facts>,
}

impl Links {
    /// Reads the links of every digest in `digests`.
    pub fn read(index: &dyn Index, digests: DigestRange<'_>) -> Result<Self, IndexError> {
        let mut links = Self::default();
        index.each_commit_link(digests, &mut |link| {
            links.add(link);
            Ok(())
        })?;
        Ok(links)
    }

    pub(super) fn add(&mut self, mut link: CommitLink) {
        let digest = std::mem::take(&mut link.digest);
        let stored = Stored::from(Evidence::from(link));
        match sha256_key(&digest) {
            Some(key) => add_to(self.sha256.entry(key), stored),
            None => add_to(self.other.entry(digest.into_boxed_str()), stored),
        }
    }

    /// Hands each link of `digest` to `visit` as (commit, scope).
    pub fn visit(&self, digest: &str, visit: &mut dyn FnMut(&str, &LinkScope)) {
        let facts = match sha256_key(digest) {
            Some(key) => self.sha256.get(&key),
            None => self.other.get(digest),
        };
        if let Some(facts) = facts {
            facts.visit(visit);
        }
    }
}

fn add_to<K>(entry: Entry<'_, K, Facts>, stored: Stored) {
    match entry {
        Entry::Occupied(mut facts) => facts.get_mut().add(stored),
        Entry::Vacant(facts) => {
            facts.insert(Facts::of(stored));
        }
    }
}

/// The 32 bytes of a `sha256:` digest written in lowercase hex (the only way that writes each
/// digest one way, so the text comes back exactly as stored).
fn sha256_key(digest: &str) -> Option<[u8; 32]> {
    hex_bytes(digest.strip_prefix("sha256:")?)
}

/// The 32 bytes that `text` (exactly 64 lowercase hex digits) writes.
fn hex_bytes(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0; 32];
    let mut invalid = 0;
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= high | low;
        *byte = high << 4 | (low & 0xf);
    }
    // Checked once at the end: a million digests are decoded, each 64 digits long.
    (invalid & NOT_HEX == 0).then_some(bytes)
}

/// Marks what is not a lowercase hex digit in [`NIBBLES`].
const NOT_HEX: u8 = 0x10;

/// Each byte's value as a lowercase hex digit, or [`NOT_HEX`].
const NIBBLES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        let ascii = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        table[ascii as usize] = digit;
        digit += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::LinkSource;

    fn collect(links: &Links, digest: &str) -> Vec<(String, LinkScope)> {
        let mut seen = Vec::new();
        links.visit(digest, &mut |commit, scope| {
            seen.push((commit.to_string(), scope.clone()))
        });
        seen
    }

    fn link(digest: &str, commit: &str, source: LinkSource) -> CommitLink {
        CommitLink {
            digest: digest.into(),
            commit: commit.into(),
            source,
            learned_at: crate::index::UnixMillis(1),
            repository: None,
            tag: None,
        }
    }

    const SHA256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_link_comes_back_as_it_was_stored() {
        let upper = "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        let not_hex = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg";
        let cases = [
            (SHA256, COMMIT),
            (SHA256, "89ABCDEF0123456789abcdef0123456789abcdef"),
            (SHA256, "short"),
            (upper, COMMIT),
            (not_hex, COMMIT),
            (SHA256, "89abcdef0123456789abcdef0123456789abcde/"),
            ("sha512:abcd", COMMIT),
            ("sha256:abc", COMMIT),
        ];
        for (digest, commit) in cases {
            let mut links = Links::default();
            links.add(link(digest, commit, LinkSource::Label("rev".into())));
            assert_eq!(
                collect(&links, digest),
                [(commit.to_string(), LinkScope::Image)],
                "{digest} {commit}"
            );
        }
    }

    #[test]
    fn a_digest_holds_each_of_its_links_once() {
        let other = "0000000000000000000000000000000000000001";
        let mut links = Links::default();
        links.add(link(SHA256, COMMIT, LinkSource::Label("rev".into())));
        links.add(link(SHA256, COMMIT, LinkSource::Annotation));
        assert_eq!(collect(&links, SHA256).len(), 1);
        links.add(link(SHA256, other, LinkSource::Label("rev".into())));
        let mut seen = collect(&links, SHA256);
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                (other.to_string(), LinkScope::Image),
                (COMMIT.to_string(), LinkScope::Image)
            ]
        );
        assert!(collect(&links, "sha256:unknown").is_empty());
    }
}
