//! `regkeeper tags` and `regkeeper inspect`: what the index knows, as a table or JSON.
//!
//! May call: `index`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::index::{CommitLink, Index, IndexError, ManifestRecord, PullStats, TagRecord};

/// One tag with what is known about its digest.
#[derive(Serialize, Deserialize)]
pub struct TagView {
    #[serde(flatten)]
    pub tag: TagRecord,
    pub manifest: Option<ManifestRecord>,
    pub commits: Vec<CommitLink>,
    pub pulls: Option<PullStats>,
}

/// Tags of `repository`, or of every repository.
pub fn tags(index: &dyn Index, repository: Option<&str>) -> Result<Vec<TagView>, IndexError> {
    let mut pages = TagPages::new(index, repository)?;
    let mut views = Vec::new();
    while let Some(page) = pages.next(index)? {
        views.extend(page);
    }
    Ok(views)
}

/// Tags read this many at a time.
pub const PAGE: usize = 256;

/// The tag views of one repository or all, a page at a time: a reader of a million tags holds
/// one page.
pub struct TagPages {
    /// Repositories still to read, the current one first.
    repositories: std::collections::VecDeque<String>,
    after: Option<String>,
}

impl TagPages {
    pub fn new(index: &dyn Index, repository: Option<&str>) -> Result<Self, IndexError> {
        Ok(Self {
            repositories: match repository {
                Some(repository) => [repository.to_string()].into(),
                None => index.repositories()?.into(),
            },
            after: None,
        })
    }

    /// The next page; `None` when every tag was given.
    pub fn next(&mut self, index: &dyn Index) -> Result<Option<Vec<TagView>>, IndexError> {
        while let Some(repository) = self.repositories.front() {
            let page = index.tags_page(repository, self.after.as_deref(), PAGE)?;
            match page.last() {
                Some(last) => self.after = Some(last.tag.clone()),
                None => {
                    self.repositories.pop_front();
                    self.after = None;
                    continue;
                }
            }
            return page
                .into_iter()
                .map(|tag| view(index, tag))
                .collect::<Result<_, _>>()
                .map(Some);
        }
        Ok(None)
    }
}

fn view(index: &dyn Index, tag: TagRecord) -> Result<TagView, IndexError> {
    Ok(TagView {
        manifest: index.manifest(&tag.repository, &tag.digest)?,
        commits: index.commit_links(&tag.digest)?,
        pulls: index.pulls(&tag.repository, &tag.tag)?,
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
    pub commits: Vec<CommitLink>,
    pub pulls_by_digest: Option<PullStats>,
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
    let mut after: Option<String> = None;
    loop {
        let page = index.tags_page(&repository, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.tag.clone());
        tags.extend(page.into_iter().filter(|t| t.digest == digest));
    }
    let manifest = index.manifest(&repository, &digest)?;
    if tags.is_empty() && manifest.is_none() {
        return Err(InspectError::Unknown(reference.to_string()));
    }
    Ok(Inspection {
        commits: index.commit_links(&digest)?,
        pulls_by_digest: index.pulls(&repository, &digest)?,
        repository,
        digest,
        tags,
        manifest,
    })
}

/// Text table of tag views, one line per tag.
pub fn tags_table(views: &[TagView]) -> String {
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "DIGEST".into(),
        "KIND".into(),
        "SIZE".into(),
        "COMMIT".into(),
        "PULLS".into(),
    ]];
    for v in views {
        rows.push([
            v.tag.repository.clone(),
            v.tag.tag.clone(),
            short_digest(&v.tag.digest),
            v.manifest
                .as_ref()
                .map_or("?".into(), |m| format!("{:?}", m.kind).to_lowercase()),
            v.manifest
                .as_ref()
                .map_or("?".into(), |m| human_bytes(m.total_size)),
            v.commits
                .first()
                .map_or("-".into(), |c| c.commit.chars().take(12).collect()),
            v.pulls.map_or("0".into(), |p| p.count.to_string()),
        ]);
    }
    render(&rows)
}

fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                let _ = write!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{UnixMillis, Write, in_memory};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn tags_and_inspect_read_what_was_recorded() {
        let index = in_memory();
        index
            .apply(&[Write::PushTag {
                repository: "team/app".into(),
                tag: "v1".into(),
                digest: D1.into(),
                at: UnixMillis(1),
                only_if_unknown: false,
            }])
            .unwrap();
        let views = tags(&index, None).unwrap();
        let table = tags_table(&views);
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
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
