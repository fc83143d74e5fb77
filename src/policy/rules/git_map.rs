//! Which git repository builds an image repository: by the scope's repository patterns, or by
//! the source URL its images carry.

use crate::config::{RetentionConfig, repository_pattern};

/// Which git repository an image repository (or an image, by its source URL) is built from.
pub struct GitMap {
    by_repository: Vec<(String, Vec<regex::Regex>)>,
    by_source: Vec<(String, String)>,
}

/// `https://github.com/acme/app.git/` and `git@github.com:acme/app` both become
/// `github.com/acme/app`.
fn normalize_source(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let (rest, scp_like) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        None => (url.as_str(), true),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = if scp_like {
        rest.replacen(':', "/", 1)
    } else {
        rest.to_string()
    };
    rest.trim_end_matches('/')
        .trim_end_matches(".git")
        .trim_end_matches('/')
        .to_string()
}

impl GitMap {
    pub fn new(retention: &RetentionConfig) -> Self {
        Self {
            by_repository: retention
                .git_repositories
                .iter()
                .map(|g| {
                    let patterns = g
                        .repositories
                        .iter()
                        .filter_map(|p| repository_pattern(p).ok())
                        .collect();
                    (g.name.clone(), patterns)
                })
                .collect(),
            by_source: retention
                .git_repositories
                .iter()
                .flat_map(|g| {
                    g.source_urls
                        .iter()
                        .map(|u| (normalize_source(u), g.name.clone()))
                })
                .collect(),
        }
    }

    /// The git repository for a tag of `repository` whose image names `source` (if any).
    pub(super) fn lookup(&self, repository: &str, source: Option<&str>) -> Option<&str> {
        self.by_repository
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|p| p.is_match(repository)))
            .map(|(name, _)| name.as_str())
            .or_else(|| {
                let source = normalize_source(source?);
                self.by_source
                    .iter()
                    .find(|(s, _)| *s == source)
                    .map(|(_, n)| n.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_compare_by_host_and_path() {
        for url in [
            "https://github.com/Acme/App.git",
            "git@github.com:acme/app",
            "ssh://git@github.com/acme/app/",
            "github.com/acme/app",
        ] {
            assert_eq!(normalize_source(url), "github.com/acme/app", "{url}");
        }
    }
}
