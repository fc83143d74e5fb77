//! Reading a [`Snapshot`] from the index: the I/O around the policy's plain data. The whole
//! index (for a mirror's first load, or a command's plan) or one repository (a mirror's refresh).

use std::sync::Arc;

use crate::{
    index::{Index, IndexError},
    policy::{
        HashMap, HashSet,
        snapshot::{Evidence, LinkScope, RepositorySnapshot, Snapshot},
    },
};

/// Reads the index with whole-prefix scans (tags, manifests and pulls per repository; all
/// commit links once), spread over the machine's cores: sled's iteration costs per entry,
/// and a million tags are three million entries.
pub fn snapshot(index: &dyn Index) -> Result<Snapshot, IndexError> {
    let repositories = index.repositories()?;
    let workers = crate::policy::workers();
    let (read, links) = std::thread::scope(|scope| {
        let shares: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: Vec<&String> =
                    repositories.iter().skip(worker).step_by(workers).collect();
                // Each repository is made compact as soon as it is read (links come after):
                // the records as read are several times larger.
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|repository| {
                            let repo = RepositorySnapshot::from_records(
                                repository,
                                index.tags(repository)?,
                                index.manifests(repository)?,
                                |_| None,
                                index.repository_pulls(repository)?,
                            )
                            .with_restores(index.restores(Some(repository))?);
                            Ok((repository, repo))
                        })
                        .collect::<Result<Vec<_>, IndexError>>()
                })
            })
            .collect();
        let links = all_links(index);
        let read: Vec<_> = shares
            .into_iter()
            .map(|share| {
                share.join().unwrap_or_else(|_| {
                    Err(IndexError::Engine(
                        "a snapshot reader thread panicked".into(),
                    ))
                })
            })
            .collect();
        (read, links)
    });
    let links = links?;
    let mut snapshot = Snapshot::default();
    for share in read {
        for (repository, mut repo) in share? {
            repo.attach_with(repository, |digest, visit| {
                for stored in links.get(digest).into_iter().flatten() {
                    match stored {
                        Stored::Image(commit) => visit(commit, &LinkScope::Image),
                        Stored::Scoped(evidence) => visit(&evidence.commit, &evidence.scope),
                    }
                }
            });
            snapshot
                .repositories
                .insert(repository.clone(), Arc::new(repo));
        }
    }
    Ok(snapshot)
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
    let tags = index.tags(repository)?;
    let manifests = index.manifests(repository)?;
    let pulls = index.repository_pulls(repository)?;
    let restores = index.restores(Some(repository))?;
    let mut repo = RepositorySnapshot::from_records(repository, tags, manifests, |_| None, pulls)
        .with_restores(restores);
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

/// A link as held for the whole index while it is read: the common case (the image's own
/// evidence) as small as a bare commit id.
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

/// Digest → its evidence, for every link in the index.
fn all_links(index: &dyn Index) -> Result<HashMap<Box<str>, Box<[Stored]>>, IndexError> {
    let mut by_digest: HashMap<Box<str>, Box<[Stored]>> = HashMap::default();
    index.each_commit_link(&mut |link| {
        let digest = link.digest.clone();
        let evidence = Stored::from(Evidence::from(link));
        match by_digest.get_mut(digest.as_str()) {
            // Links come in key order, so a digest's links arrive together; repeats (one
            // commit learned from several sources) are stored once.
            Some(all) if !all.contains(&evidence) => {
                let mut grown = std::mem::take(all).into_vec();
                grown.push(evidence);
                *all = grown.into_boxed_slice();
            }
            Some(_) => {}
            None => {
                by_digest.insert(digest.into_boxed_str(), Box::new([evidence]));
            }
        }
        Ok(())
    })?;
    Ok(by_digest)
}
