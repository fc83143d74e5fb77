//! Reading the whole index in one unordered pass, where the engine offers it
//! ([`Index::each_record`]): records arrive from several threads in whatever order the engine
//! finds them, and each goes straight into its repository's compact form, so no repository's
//! records are ever held as read.

use std::sync::{Mutex, MutexGuard};

use super::{
    links::Links,
    read::{LINK_BOUNDS, link_range},
};
use crate::{
    index::{Index, IndexError, Record},
    policy::{
        HashMap,
        snapshot::{RepositoryBuilder, RepositorySnapshot},
    },
};

/// Parts read at once per core: most of a part's time is the engine's, so more parts than
/// cores keep both sides busy.
const PARTS_PER_CORE: usize = 2;

/// The repositories (links not yet attached) and the links of a whole-index read.
pub(super) struct Whole<'a> {
    pub repositories: Vec<(&'a String, RepositorySnapshot)>,
    pub links: Vec<Links>,
}

/// Reads the records of `repositories` and every commit link in one pass; `None` when the
/// engine reads faster by ranges. Records of a repository not named (one created after the
/// list was read) are left out, as a read by ranges leaves them: the mirror learns of it
/// from the change log.
pub(super) fn read<'a>(
    index: &dyn Index,
    repositories: &'a [String],
) -> Result<Option<Whole<'a>>, IndexError> {
    let mut builders: HashMap<&str, Mutex<RepositoryBuilder>> = repositories
        .iter()
        .map(|r| (r.as_str(), Mutex::default()))
        .collect();
    let links: Vec<Mutex<Links>> = (0..=LINK_BOUNDS.len()).map(|_| Mutex::default()).collect();
    let builder = |repository: &str| builders.get(repository).map(locked);
    let parts = crate::policy::workers() * PARTS_PER_CORE;
    let read = index.each_record(parts, &|record| {
        match record {
            Record::Tag(tag) => {
                if let Some(mut b) = builder(&tag.repository) {
                    b.add_tag(tag);
                }
            }
            Record::Manifest(manifest) => {
                if let Some(mut b) = builder(&manifest.repository) {
                    b.add_manifest(&manifest);
                }
            }
            Record::Pull {
                repository,
                reference,
                stats,
            } => {
                if let Some(mut b) = builder(&repository) {
                    b.add_pull(reference, stats);
                }
            }
            Record::Restore(restore) => {
                if let Some(mut b) = builder(&restore.repository) {
                    b.add_restore(restore);
                }
            }
            Record::Link(link) => locked(&links[link_range(&link.digest)]).add(link),
        }
        Ok(())
    })?;
    if !read {
        return Ok(None);
    }
    let repositories = repositories
        .iter()
        .map(|r| {
            let builder = builders.remove(r.as_str()).unwrap_or_default();
            (r, into_inner(builder).finish())
        })
        .collect();
    let links = links.into_iter().map(into_inner).collect();
    Ok(Some(Whole {
        repositories,
        links,
    }))
}

/// A panicking reader fails the read (its error reaches the caller), so what it left half
/// done is never used: a poisoned lock is taken as it is.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|e| e.into_inner())
}
