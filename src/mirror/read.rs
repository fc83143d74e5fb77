//! Reading a [`Snapshot`] from the index: the I/O around the policy's plain data. The whole
//! index (for a mirror's first load, or a command's plan) or one repository (a mirror's refresh).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use super::{links::Links, whole};
use crate::{
    index::{DigestRange, Index, IndexError, on_threads},
    policy::{
        HashSet,
        snapshot::{Evidence, LinkScope, RepositorySnapshot, Snapshot},
    },
};

/// Readers per core: most of a read is waiting (for a database's answers, or between the
/// threads that pass them on), so more readers than cores keep the cores busy.
const READERS_PER_CORE: usize = 4;

/// Where the commit links are split between readers (and held apart while read): sha256 digests spread evenly over the
/// first hex digit. Any digest falls in exactly one of the ranges these bound.
pub(super) const LINK_BOUNDS: [&str; 15] = [
    "sha256:1", "sha256:2", "sha256:3", "sha256:4", "sha256:5", "sha256:6", "sha256:7", "sha256:8",
    "sha256:9", "sha256:a", "sha256:b", "sha256:c", "sha256:d", "sha256:e", "sha256:f",
];

/// Which range of [`LINK_BOUNDS`] `digest` falls in.
pub(super) fn link_range(digest: &str) -> usize {
    LINK_BOUNDS.partition_point(|bound| *bound <= digest)
}

/// One reader's piece of the whole index.
enum Piece<'a> {
    /// The links of the digests in the `n`th range of [`LINK_BOUNDS`].
    Links(usize),
    Repository(&'a String),
}

/// Reads the index with whole-prefix scans (tags, manifests and pulls per repository; the
/// commit links in ranges of digests), spread over reader threads that take the next piece
/// when done with one: sled's iteration costs per entry, a database's per round trip, and a
/// million tags are three million entries. Links are attached once all are read, one thread
/// per core: attaching on every reader, between reads, measured a quarter slower.
pub fn snapshot(index: &dyn Index) -> Result<Snapshot, IndexError> {
    let repositories = index.repositories()?;
    match whole::read(index, &repositories) {
        Ok(Some(whole)) => return assemble(whole.repositories, whole.links),
        Ok(None) => {}
        // It holds several connections at once for seconds; reads by ranges take one at a
        // time, and a writer busy on every other connection does not stop them.
        Err(error) => tracing::warn!(
            %error,
            "reading the whole index in one pass failed; reading it range by range"
        ),
    }
    // The links first: they are the largest pieces.
    let pieces: Vec<Piece<'_>> = (0..=LINK_BOUNDS.len())
        .map(Piece::Links)
        .chain(repositories.iter().map(Piece::Repository))
        .collect();
    let next = AtomicUsize::new(0);
    let readers = crate::policy::workers() * READERS_PER_CORE;
    let reads = on_threads((0..readers).collect(), |_| {
        let mut read = Read::default();
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            match piece {
                Piece::Links(n) => read.links.push((*n, links_in(index, *n)?)),
                Piece::Repository(repository) => read
                    .repositories
                    .push((*repository, read_repository(index, repository)?)),
            }
        }
        Ok(read)
    })?;
    let mut links: Vec<Links> = (0..=LINK_BOUNDS.len()).map(|_| Links::default()).collect();
    let mut read = Vec::with_capacity(repositories.len());
    for share in reads {
        for (n, part) in share.links {
            links[n] = part;
        }
        read.extend(share.repositories);
    }
    assemble(read, links)
}

/// The snapshot of repositories read, once each is given its links.
fn assemble(
    mut read: Vec<(&String, RepositorySnapshot)>,
    links: Vec<Links>,
) -> Result<Snapshot, IndexError> {
    // Matching each repository's digests against a million links is a second of hashing.
    let chunk = read.len().div_ceil(crate::policy::workers()).max(1);
    on_threads(read.chunks_mut(chunk).collect(), |chunk| {
        attach_all(chunk, &links);
        Ok(())
    })?;
    // Freeing a million links takes the better part of a second; nobody waits for it.
    std::thread::spawn(move || drop(links));
    let mut snapshot = Snapshot::default();
    for (repository, repo) in read {
        snapshot
            .repositories
            .insert(repository.clone(), Arc::new(repo));
    }
    Ok(snapshot)
}

/// What one reader read.
#[derive(Default)]
struct Read<'a> {
    links: Vec<(usize, Links)>,
    repositories: Vec<(&'a String, RepositorySnapshot)>,
}

/// Made compact as soon as it is read (links are attached later): the records as read are
/// several times larger.
fn read_repository(index: &dyn Index, repository: &str) -> Result<RepositorySnapshot, IndexError> {
    let records = index.repository_records(repository)?;
    Ok(RepositorySnapshot::from_records(
        repository,
        records.tags,
        records.manifests,
        |_| None,
        records.pulls,
    )
    .with_restores(records.restores))
}

/// The links of the digests in the `n`th range of [`LINK_BOUNDS`].
fn links_in(index: &dyn Index, n: usize) -> Result<Links, IndexError> {
    let range = DigestRange {
        from: n.checked_sub(1).map(|b| LINK_BOUNDS[b]),
        until: LINK_BOUNDS.get(n).copied(),
    };
    Links::read(index, range)
}

fn attach_all(read: &mut [(&String, RepositorySnapshot)], links: &[Links]) {
    for (repository, repo) in read {
        attach(repository, repo, links);
    }
}

fn attach(repository: &str, repo: &mut RepositorySnapshot, links: &[Links]) {
    repo.attach_with(repository, |digest, visit| {
        links[link_range(digest)].visit(digest, visit);
    });
}

/// One repository, read afresh (a mirror's refresh after writes to it). Links of digests
/// `known` already held are taken from it unless `relinked` names them: links are only
/// ever added, and each addition is named there.
pub fn repository(
    index: &dyn Index,
    repository: &str,
    known: Option<&RepositorySnapshot>,
    relinked: &HashSet<String>,
) -> Result<RepositorySnapshot, IndexError> {
    let mut repo = read_repository(index, repository)?;
    let mut failed = None;
    repo.attach_with(repository, |digest, visit| {
        if let Some(known) = known.filter(|_| !relinked.contains(digest))
            && (known.manifests.contains_key(digest) || known.links.contains_key(digest))
        {
            // Facts already scoped to this repository: about the digest, or about a tag.
            for fact in known.links.get(digest).into_iter().flatten() {
                match &fact.tag {
                    None => visit(&fact.commit, &LinkScope::Image),
                    Some(tag) => visit(
                        &fact.commit,
                        &LinkScope::Tag(repository.into(), tag.clone()),
                    ),
                }
            }
            return;
        }
        match index.commit_links(digest) {
            Ok(links) => {
                for evidence in links.into_iter().map(Evidence::from) {
                    visit(&evidence.commit, &evidence.scope);
                }
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(repo),
    }
}
