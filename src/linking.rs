//! Linking a manifest to the git commits it was built from, without any pipeline change:
//! the manifest annotation `org.opencontainers.image.revision`, the config labels
//! `org.opencontainers.image.revision`, `org.label-schema.vcs-ref` and `vcs-ref`, and configured
//! tag patterns with a named `commit` group. Every link found is kept, with how it was learned.
//!
//! Owns: which values count as commits and where they are looked for.
//! May call: `index` (model types), `manifest` (names).

use std::collections::BTreeMap;

use regex::Regex;

use crate::{
    index::{CommitLink, LinkSource, ManifestRecord, UnixMillis},
    manifest::REVISION,
};

/// Config labels that name the commit, in the order they are looked at.
pub const COMMIT_LABELS: [&str; 3] = [REVISION, "org.label-schema.vcs-ref", "vcs-ref"];

/// The configured tag patterns, compiled once.
#[derive(Clone, Debug, Default)]
pub struct Linker {
    patterns: Vec<(String, Regex)>,
}

impl Linker {
    /// Patterns are validated by the config (`index.tagPatterns`); one that does not compile or
    /// has no `commit` group is an error here too.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let re = Regex::new(p).map_err(|e| format!("{p:?}: {e}"))?;
                if !re.capture_names().any(|n| n == Some("commit")) {
                    return Err(format!("{p:?} has no named group `commit`"));
                }
                Ok((p.clone(), re))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { patterns })
    }

    /// Links a manifest carries itself (annotation) or through the tag it was pushed as.
    pub fn manifest_links(
        &self,
        record: &ManifestRecord,
        tag: Option<&str>,
        at: UnixMillis,
    ) -> Vec<CommitLink> {
        let mut links = Vec::new();
        if let Some(commit) = record.annotations.get(REVISION).and_then(|c| commit(c)) {
            links.push(link(&record.digest, commit, LinkSource::Annotation, at));
        }
        if let Some(tag) = tag {
            links.extend(self.tag_links(&record.repository, &record.digest, tag, at));
        }
        links
    }

    /// Links the configured tag patterns find in `tag` of `repository` (pointing to the image
    /// `digest`): evidence about that tag only.
    pub fn tag_links(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
        at: UnixMillis,
    ) -> Vec<CommitLink> {
        self.patterns
            .iter()
            .filter_map(|(pattern, re)| {
                let commit = re
                    .captures(tag)
                    .and_then(|c| c.name("commit"))
                    .and_then(|m| commit(m.as_str()))?;
                let mut link = link(digest, commit, LinkSource::TagPattern(pattern.clone()), at);
                link.repository = Some(repository.to_string());
                link.tag = Some(tag.to_string());
                Some(link)
            })
            .collect()
    }
}

/// Links named by an image config's labels.
pub fn label_links(
    digest: &str,
    labels: &BTreeMap<String, String>,
    at: UnixMillis,
) -> Vec<CommitLink> {
    COMMIT_LABELS
        .iter()
        .filter_map(|name| {
            let commit = commit(labels.get(*name)?)?;
            Some(link(
                digest,
                commit,
                LinkSource::Label((*name).to_string()),
                at,
            ))
        })
        .collect()
}

/// A git object id (full or abbreviated, SHA-1 or SHA-256), lowercased; anything else (`""`,
/// `unknown`, a branch name) is not a commit.
fn commit(value: &str) -> Option<String> {
    let value = value.trim();
    ((7..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

fn link(digest: &str, commit: String, source: LinkSource, at: UnixMillis) -> CommitLink {
    CommitLink {
        digest: digest.to_string(),
        commit,
        source,
        learned_at: at,
        repository: None,
        tag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ManifestKind;

    fn record(annotation: Option<&str>) -> ManifestRecord {
        let mut record =
            crate::manifest::unreadable("a", "sha256:d", "", 0, String::new(), UnixMillis(1));
        record.kind = ManifestKind::Image;
        record.problem = None;
        if let Some(value) = annotation {
            record.annotations.insert(REVISION.into(), value.into());
        }
        record
    }

    #[test]
    fn annotation_and_every_matching_tag_pattern_link() {
        let linker = Linker::new(&[
            "^(?P<commit>[0-9a-f]{7,40})$".into(),
            "^main-(?P<commit>[0-9a-f]{8})$".into(),
        ])
        .unwrap();
        let links = linker.manifest_links(
            &record(Some("ABCDEF0123")),
            Some("main-0123abcd"),
            UnixMillis(5),
        );
        let found: Vec<_> = links
            .iter()
            .map(|l| (l.commit.as_str(), &l.source))
            .collect();
        assert_eq!(
            found,
            [
                ("abcdef0123", &LinkSource::Annotation),
                (
                    "0123abcd",
                    &LinkSource::TagPattern("^main-(?P<commit>[0-9a-f]{8})$".into())
                ),
            ]
        );
        assert!(
            linker
                .manifest_links(&record(Some("unknown")), Some("latest"), UnixMillis(5))
                .is_empty()
        );
        assert!(
            Linker::new(&["^v(\\d+)$".into()]).is_err(),
            "no commit group"
        );
        assert!(Linker::new(&["(".into()]).is_err());
    }

    #[test]
    fn labels_link_in_order_and_skip_non_commits() {
        let labels: BTreeMap<String, String> = [
            ("vcs-ref".to_string(), "1111111".to_string()),
            (REVISION.to_string(), "2222222".to_string()),
            ("org.label-schema.vcs-ref".to_string(), "".to_string()),
        ]
        .into();
        let links = label_links("sha256:d", &labels, UnixMillis(1));
        let commits: Vec<_> = links.iter().map(|l| l.commit.as_str()).collect();
        assert_eq!(commits, ["2222222", "1111111"]);
    }
}
