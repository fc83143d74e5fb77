//! `regkeeper tags` and `regkeeper inspect`: what the index knows, as a table or JSON.
//!
//! May call: `index`.

use serde::{Deserialize, Serialize};

use crate::index::{CommitLink, Index, IndexError, ManifestRecord, PullStats, TagRecord};

/// One tag with what is known about its digest; or (`untagged`, with `tags --all`) a manifest
/// no tag points to, its `tag` empty and its push times its record's.
#[derive(Serialize, Deserialize)]
pub struct TagView {
    #[serde(flatten)]
    pub tag: TagRecord,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untagged: bool,
    pub manifest: Option<ManifestRecord>,
    /// What the image holds in bytes: for an index, its own size plus its children's.
    #[serde(default)]
    pub size: u64,
    pub commits: Vec<CommitLink>,
    pub pulls: Option<PullStats>,
}

/// Tags of `repository`, or of every repository (with `all`, then their untagged manifests).
pub fn tags(
    index: &dyn Index,
    repository: Option<&str>,
    all: bool,
) -> Result<Vec<TagView>, IndexError> {
    let mut pages = TagPages::new(index, repository, all)?;
    let mut views = Vec::new();
    while let Some(page) = pages.next(index)? {
        views.extend(page);
    }
    Ok(views)
}

/// Tags read this many at a time.
pub const PAGE: usize = 256;

/// The tag views of one repository or all, a page at a time: a reader of a million tags holds
/// one page. With `all`, each repository's tags are followed by its manifests no tag points
/// to; to know those, the repository's tagged digests are remembered as 64-bit hashes (8 bytes
/// each; a collision could only hide an untagged manifest from this listing).
pub struct TagPages {
    /// Repositories still to read, the current one first.
    repositories: std::collections::VecDeque<String>,
    all: bool,
    phase: Phase,
}

enum Phase {
    /// Tags after this one.
    Tags(Option<String>),
    /// Untagged manifests with digests after `after`; `tagged`: the repository's tagged
    /// digests.
    Untagged {
        after: Option<String>,
        tagged: std::collections::HashSet<u64>,
    },
}

impl TagPages {
    pub fn new(index: &dyn Index, repository: Option<&str>, all: bool) -> Result<Self, IndexError> {
        Ok(Self {
            repositories: match repository {
                Some(repository) => [repository.to_string()].into(),
                None => index.repositories()?.into(),
            },
            all,
            phase: Phase::Tags(None),
        })
    }

    /// The next page; `None` when every tag (and untagged manifest) was given.
    pub fn next(&mut self, index: &dyn Index) -> Result<Option<Vec<TagView>>, IndexError> {
        while let Some(repository) = self.repositories.front() {
            match &self.phase {
                Phase::Tags(after) => {
                    let page = index.tags_page(repository, after.as_deref(), PAGE)?;
                    let Some(last) = page.last() else {
                        if self.all {
                            self.phase = Phase::Untagged {
                                after: None,
                                tagged: tagged_digests(index, repository)?,
                            };
                        } else {
                            self.repositories.pop_front();
                            self.phase = Phase::Tags(None);
                        }
                        continue;
                    };
                    self.phase = Phase::Tags(Some(last.tag.clone()));
                    return page
                        .into_iter()
                        .map(|tag| view(index, tag))
                        .collect::<Result<_, _>>()
                        .map(Some);
                }
                Phase::Untagged { after, tagged } => {
                    let page = index.manifests_page(repository, after.as_deref(), PAGE)?;
                    let Some(last) = page.last() else {
                        self.repositories.pop_front();
                        self.phase = Phase::Tags(None);
                        continue;
                    };
                    let last = last.digest.clone();
                    let views: Vec<TagView> = page
                        .into_iter()
                        .filter(|m| !tagged.contains(&hash(&m.digest)))
                        .map(|m| untagged_view(index, m))
                        .collect::<Result<_, _>>()?;
                    if let Phase::Untagged { after, .. } = &mut self.phase {
                        *after = Some(last);
                    }
                    if !views.is_empty() {
                        return Ok(Some(views));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// The repository's tagged digests, as hashes.
fn tagged_digests(
    index: &dyn Index,
    repository: &str,
) -> Result<std::collections::HashSet<u64>, IndexError> {
    let mut tagged = std::collections::HashSet::new();
    each_tag(index, repository, |tag| {
        tagged.insert(hash(&tag.digest));
    })?;
    Ok(tagged)
}

/// Hands every tag of `repository` to `visit`, reading a page at a time.
fn each_tag(
    index: &dyn Index,
    repository: &str,
    mut visit: impl FnMut(TagRecord),
) -> Result<(), IndexError> {
    let mut after: Option<String> = None;
    loop {
        let page = index.tags_page(repository, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.tag.clone());
        page.into_iter().for_each(&mut visit);
    }
}

fn hash(digest: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    hasher.write(digest.as_bytes());
    hasher.finish()
}

fn untagged_view(index: &dyn Index, manifest: ManifestRecord) -> Result<TagView, IndexError> {
    let tag = TagRecord {
        repository: manifest.repository.clone(),
        tag: String::new(),
        digest: manifest.digest.clone(),
        first_pushed: manifest.recorded_at,
        last_pushed: manifest.recorded_at,
        history: Vec::new(),
    };
    let mut view = view(index, tag)?;
    view.untagged = true;
    Ok(view)
}

/// What the image holds: a manifest's total size; an index's plus its recorded children's.
fn size(index: &dyn Index, manifest: Option<&ManifestRecord>) -> Result<u64, IndexError> {
    let Some(manifest) = manifest else {
        return Ok(0);
    };
    let mut size = manifest.total_size;
    for child in &manifest.children {
        if let Some(child) = index.manifest(&manifest.repository, child)? {
            size += child.total_size;
        }
    }
    Ok(size)
}

fn view(index: &dyn Index, tag: TagRecord) -> Result<TagView, IndexError> {
    let manifest = index.manifest(&tag.repository, &tag.digest)?;
    let pulls = if tag.tag.is_empty() {
        index.pulls(&tag.repository, &tag.digest)?
    } else {
        index.pulls(&tag.repository, &tag.tag)?
    };
    Ok(TagView {
        size: size(index, manifest.as_ref())?,
        manifest,
        untagged: false,
        commits: index.commit_links(&tag.digest)?,
        pulls,
        tag,
    })
}

/// What `REPOSITORY:TAG` or `REPOSITORY@DIGEST` names.
#[derive(Serialize, Deserialize)]
pub struct Inspection {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<TagRecord>,
    pub manifest: Option<ManifestRecord>,
    /// What the image holds in bytes (an index: its own size plus its children's).
    #[serde(default)]
    pub size: u64,
    /// Manifests whose `subject` is this one (signatures, SBOMs, attestations).
    #[serde(default)]
    pub referrers: Vec<Referrer>,
    pub commits: Vec<CommitLink>,
    pub pulls_by_digest: Option<PullStats>,
}

/// A manifest that refers to the inspected one.
#[derive(Serialize, Deserialize)]
pub struct Referrer {
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub media_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0:?} is not REPOSITORY:TAG or REPOSITORY@DIGEST")]
    Reference(String),
    #[error("the index knows nothing about {0}")]
    Unknown(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

pub fn inspect(index: &dyn Index, reference: &str) -> Result<Inspection, InspectError> {
    let (repository, digest) = if let Some((repository, digest)) = reference.split_once('@') {
        (repository.to_string(), digest.to_string())
    } else if let Some((repository, tag)) =
        reference.rsplit_once(':').filter(|(_, t)| !t.contains('/'))
    {
        let tag = index
            .tag(repository, tag)?
            .ok_or_else(|| InspectError::Unknown(reference.to_string()))?;
        (repository.to_string(), tag.digest)
    } else {
        return Err(InspectError::Reference(reference.to_string()));
    };
    // Paged: a repository of a million tags is read a page at a time, only matches kept.
    let mut tags: Vec<TagRecord> = Vec::new();
    each_tag(index, &repository, |tag| {
        if tag.digest == digest {
            tags.push(tag);
        }
    })?;
    let manifest = index.manifest(&repository, &digest)?;
    if tags.is_empty() && manifest.is_none() {
        return Err(InspectError::Unknown(reference.to_string()));
    }
    let mut referrers = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = index.manifests_page(&repository, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        referrers.extend(
            page.into_iter()
                .filter(|m| m.subject.as_deref() == Some(digest.as_str()))
                .map(|m| Referrer {
                    digest: m.digest,
                    artifact_type: m.artifact_type,
                    media_type: m.media_type,
                }),
        );
    }
    Ok(Inspection {
        size: size(index, manifest.as_ref())?,
        referrers,
        commits: index.commit_links(&digest)?,
        pulls_by_digest: index.pulls(&repository, &digest)?,
        repository,
        digest,
        tags,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{UnixMillis, Write, in_memory};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn push(repository: &str, tag: &str, digest: &str) -> Write {
        Write::push(repository, tag, digest, UnixMillis(1))
    }

    #[test]
    fn tags_and_inspect_read_what_was_recorded() {
        let index = in_memory();
        index.apply(&[push("team/app", "v1", D1)]).unwrap();
        let views = tags(&index, None, false).unwrap();
        let table = crate::render::tags_table(&views);
        assert!(table.starts_with("REPOSITORY"), "{table}");
        assert!(
            table.contains("team/app") && table.contains("sha256:111111111111"),
            "{table}"
        );
        let by_tag = inspect(&index, "team/app:v1").unwrap();
        assert_eq!(by_tag.digest, D1);
        let by_digest = inspect(&index, &format!("team/app@{D1}")).unwrap();
        assert_eq!(by_digest.tags[0].tag, "v1");
        assert!(matches!(
            inspect(&index, "team/app:nope"),
            Err(InspectError::Unknown(_))
        ));
        assert!(matches!(
            inspect(&index, "no-separator"),
            Err(InspectError::Reference(_))
        ));
        assert_eq!(crate::render::human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn untagged_manifests_referrers_and_the_size_of_an_index() {
        use crate::index::{ManifestKind, ManifestRecord};
        const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
        const SIG: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
        let record = |digest: &str, size: u64| ManifestRecord {
            total_size: size,
            kind: ManifestKind::Image,
            complete: true,
            ..ManifestRecord::bare(
                "team/app",
                digest,
                "application/vnd.oci.image.manifest.v1+json",
                UnixMillis(5),
            )
        };
        let index = in_memory();
        index
            .apply(&[
                // D1 is a multi-platform index of D2 and D3; only D1 is tagged.
                Write::PutManifest(ManifestRecord {
                    kind: ManifestKind::Index,
                    children: vec![D2.into(), D3.into()],
                    ..record(D1, 300)
                }),
                Write::PutManifest(record(D2, 1000)),
                Write::PutManifest(record(D3, 2000)),
                // A signature referring to D1, pushed by digest.
                Write::PutManifest(ManifestRecord {
                    subject: Some(D1.into()),
                    artifact_type: Some("application/vnd.dev.cosign.artifact.sig.v1+json".into()),
                    kind: ManifestKind::Artifact,
                    ..record(SIG, 50)
                }),
                push("team/app", "v1", D1),
            ])
            .unwrap();
        index.apply(&[push("team/other", "a", D2)]).unwrap();
        // Every repository's tags, the second's named before the first's last.
        let every = tags(&index, None, false).unwrap();
        assert_eq!(every.len(), 2);
        let tagged = tags(&index, Some("team/app"), false).unwrap();
        assert_eq!(tagged.len(), 1);
        assert_eq!(tagged[0].size, 3300, "an index counts its children");
        let all = tags(&index, Some("team/app"), true).unwrap();
        let untagged: Vec<&str> = all
            .iter()
            .filter(|v| v.untagged)
            .map(|v| v.tag.digest.as_str())
            .collect();
        assert_eq!(untagged, [D2, D3, SIG]);
        let table = crate::render::tags_table(&all);
        assert_eq!(table.matches("<none>").count(), 3, "{table}");
        assert!(table.contains("3.2 KiB"), "{table}");
        let inspection = inspect(&index, "team/app:v1").unwrap();
        assert_eq!(inspection.size, 3300);
        assert_eq!(inspection.referrers.len(), 1);
        assert_eq!(inspection.referrers[0].digest, SIG);
        assert!(
            inspect(&index, &format!("team/app@{D2}"))
                .unwrap()
                .referrers
                .is_empty()
        );
    }
}
