//! `regkeeper tags` and `inspect`'s table: one line per tag.

use super::{columns, human_bytes};
use crate::inspect::TagView;

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
            if v.untagged {
                "<none>".into()
            } else {
                v.tag.tag.clone()
            },
            short_digest(&v.tag.digest),
            v.manifest
                .as_ref()
                .map_or("?".into(), |m| format!("{:?}", m.kind).to_lowercase()),
            v.manifest
                .as_ref()
                .map_or("?".into(), |_| human_bytes(v.size)),
            v.commits
                .first()
                .map_or("-".into(), |c| c.commit.chars().take(12).collect()),
            v.pulls.map_or("0".into(), |p| p.count.to_string()),
        ]);
    }
    columns(&rows)
}

fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}
