//! The `retention` section: which repositories are managed (scopes), which git repository an
//! image repository is built from, werf's `keepPolicies` in werf's own YAML shape, regkeeper's
//! usage rules, and the Kubernetes clusters to ask. Validated here with the path of the field.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod werf;

use werf::check_reference_pattern;
pub use werf::{
    KeepPolicy, Limit, Operator, References, pattern_warning, reference_pattern,
    werf_default_policies,
};

use super::{ConfigError, HumanDuration};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionConfig {
    /// Local clones of the git repositories images are built from (kept fresh by the operator,
    /// e.g. a git-sync sidecar).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_repositories: Vec<GitRepository>,
    /// Policy sets, each for the repositories it includes. The first scope that includes a
    /// repository governs it; a repository in no scope is never touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub helm: HelmConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRepository {
    /// How plans and reasons name it.
    pub name: String,
    /// A local clone (bare or not).
    pub path: PathBuf,
    /// The remote whose branches count (`refs/remotes/<remote>/*`); local branches when the
    /// clone has no such remote.
    #[serde(default = "default_remote")]
    pub remote: String,
    /// Image repositories built from it (glob with `*`/`**`, or `/regex/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Source URLs that name it in `org.opencontainers.image.source`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_urls: Vec<String>,
}

fn default_remote() -> String {
    "origin".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    pub name: String,
    /// Repository patterns (glob with `*` within a path segment and `**` across, or `/regex/`).
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// werf's `cleanup.keepPolicies`, pasted unchanged; empty means werf's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_policies: Vec<KeepPolicy>,
    /// Tags pushed (first seen) within this window are kept: protects running pipelines.
    #[serde(default = "default_pushed_within")]
    pub pushed_within: HumanDuration,
    /// Tags (and digests) pulled within this window are kept. Unset: pulls keep nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_within: Option<HumanDuration>,
    /// Tags matching any of these regexes are always kept (e.g. releases, `latest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The N most recently pushed tags of each repository are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_per_repository: Option<usize>,
    #[serde(default)]
    pub untracked: Untracked,
    /// Manifests no tag points to (left behind when a tag moved on, pushed by digest only).
    /// Unset (the default): never deleted on their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_manifests: Option<UntaggedManifests>,
}

/// Deleting manifests that no tag, no index and no kept subject references.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UntaggedManifests {
    /// Deletable once untagged this long (counted from the moment the last tag moved away
    /// from it, or else from its push), and never within `pushedWithin` of its push.
    pub max_age: HumanDuration,
}

fn default_pushed_within() -> HumanDuration {
    HumanDuration::from_secs(2 * 3600)
}

/// Tags with no commit link: git cannot judge them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Untracked {
    /// Unset (the default): untracked tags are always kept. Set: they become deletable once
    /// pushed longer ago than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Clusters whose workloads keep the images they run. Empty: the rule keeps nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// Registry host names workloads use for this registry (the proxy's address, the
    /// upstream's, DNS aliases); `registry.example.com/team/app:1` → repository `team/app`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_hosts: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// A kubeconfig file; unset with `inCluster: false` means the default kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Use the pod's service account.
    #[serde(default)]
    pub in_cluster: bool,
    /// Namespaces to look at; empty = all. Narrowing is a decision about what keeps images:
    /// a workload in a namespace not listed keeps nothing (`explain` says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// All of the cluster's reads (every kind and the Helm releases, page by page) must finish
    /// within this, or the cluster counts as unavailable and everything is kept. Generous: a
    /// large, slow API server answering 10 s per page needs minutes.
    #[serde(default = "Cluster::default_timeout")]
    pub timeout: HumanDuration,
    /// Connecting, and waiting for the first byte of each answer: a server that accepts and
    /// never answers is given up after this, not after `timeout`.
    #[serde(default = "Cluster::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
}

impl Cluster {
    fn default_timeout() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    fn default_connect_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmConfig {
    /// Images of the last N revisions of each release (in the configured clusters) are kept.
    #[serde(default = "default_helm_revisions")]
    pub revisions: usize,
}

impl Default for HelmConfig {
    fn default() -> Self {
        Self {
            revisions: default_helm_revisions(),
        }
    }
}

fn default_helm_revisions() -> usize {
    10
}

/// A repository pattern: `/regex/` (anchored), or a glob where `*` stays within a path segment
/// and `**` crosses segments.
pub fn repository_pattern(text: &str) -> Result<regex::Regex, regex::Error> {
    if let Some(re) = text.strip_prefix('/').and_then(|t| t.strip_suffix('/'))
        && text.len() >= 2
    {
        return regex::Regex::new(&format!("^(?:{re})$"));
    }
    let mut source = String::from("^");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            if chars.peek() == Some(&'*') {
                chars.next();
                source.push_str(".*");
            } else {
                source.push_str("[^/]*");
            }
        } else {
            source.push_str(&regex::escape(&c.to_string()));
        }
    }
    source.push('$');
    regex::Regex::new(&source)
}

impl RetentionConfig {
    /// What is valid but probably not meant, each with the field it is about.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            for (j, policy) in scope.keep_policies.iter().enumerate() {
                let references = &policy.references;
                for (name, pattern) in [("tag", &references.tag), ("branch", &references.branch)] {
                    if let Some(warning) = pattern.as_deref().and_then(pattern_warning) {
                        warnings.push(format!(
                            "`retention.scopes[{i}].keepPolicies[{j}].references.{name}`: {warning}"
                        ));
                    }
                }
            }
        }
        warnings
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = |path: String, message: String| ConfigError::InvalidAt { path, message };
        let mut names = std::collections::HashSet::new();
        for (i, git) in self.git_repositories.iter().enumerate() {
            let path = format!("retention.gitRepositories[{i}]");
            if !names.insert(git.name.as_str()) {
                return Err(at(
                    format!("{path}.name"),
                    format!("{:?} is used twice", git.name),
                ));
            }
            for (j, pattern) in git.repositories.iter().enumerate() {
                repository_pattern(pattern)
                    .map_err(|e| at(format!("{path}.repositories[{j}]"), e.to_string()))?;
            }
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            let path = format!("retention.scopes[{i}]");
            if scope.include.is_empty() {
                return Err(at(
                    format!("{path}.include"),
                    "a scope must include at least one repository pattern".into(),
                ));
            }
            for (field, patterns) in [("include", &scope.include), ("exclude", &scope.exclude)] {
                for (j, pattern) in patterns.iter().enumerate() {
                    repository_pattern(pattern)
                        .map_err(|e| at(format!("{path}.{field}[{j}]"), e.to_string()))?;
                }
            }
            for (j, tag) in scope.tags.iter().enumerate() {
                regex::Regex::new(tag)
                    .map_err(|e| at(format!("{path}.tags[{j}]"), e.to_string()))?;
            }
            for (j, policy) in scope.keep_policies.iter().enumerate() {
                let path = format!("{path}.keepPolicies[{j}]");
                let references = &policy.references;
                let (name, pattern) = match (&references.tag, &references.branch) {
                    (Some(tag), None) => ("tag", tag),
                    (None, Some(branch)) => ("branch", branch),
                    (Some(_), Some(_)) => {
                        return Err(at(
                            format!("{path}.references"),
                            "give either `tag` or `branch`, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(at(
                            format!("{path}.references"),
                            "needs `tag` or `branch`".into(),
                        ));
                    }
                };
                check_reference_pattern(pattern)
                    .map_err(|why| at(format!("{path}.references.{name}"), why))?;
            }
        }
        if !self.kubernetes.clusters.is_empty() && self.kubernetes.registry_hosts.is_empty() {
            return Err(at(
                "retention.kubernetes.registryHosts".into(),
                "clusters are configured but no registry host names: no workload image could be matched, so nothing in use would be protected".into(),
            ));
        }
        for (i, cluster) in self.kubernetes.clusters.iter().enumerate() {
            if cluster.in_cluster && (cluster.kubeconfig.is_some() || cluster.context.is_some()) {
                return Err(at(
                    format!("retention.kubernetes.clusters[{i}]"),
                    "`inCluster` excludes `kubeconfig` and `context`".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_patterns_are_anchored_and_literals_are_literal() {
        let re = reference_pattern("/^(main|master)$/").unwrap();
        assert!(re.is_match("main") && !re.is_match("main2"));
        // werf's anchoring, character for character: `(^main)|(3$)`.
        let re = reference_pattern("/main|3/").unwrap();
        assert!(re.is_match("main") && re.is_match("3"));
        assert!(re.is_match("main-feature") && re.is_match("chore/merge-main-into-3"));
        assert!(!re.is_match("x-main-y"));
        let re = reference_pattern("/release-.*/").unwrap();
        assert!(re.is_match("release-1") && !re.is_match("xrelease-1"));
        let literal = reference_pattern("v1.0").unwrap();
        assert!(literal.is_match("v1.0") && !literal.is_match("v1x0"));
    }

    #[test]
    fn a_top_level_alternation_is_warned_about_with_the_grouped_form() {
        let warning = pattern_warning("/main|3/").unwrap();
        assert!(warning.contains("/^(main|3)$/"), "{warning}");
        assert!(
            pattern_warning("/^main|master$/")
                .unwrap()
                .contains("/^(main|master)$/")
        );
        for quiet in [
            "/^(main|3)$/",
            "/a[|]b/",
            "/a\\|b/",
            "main|3",
            "/release-.*/",
        ] {
            assert_eq!(pattern_warning(quiet), None, "{quiet}");
        }
    }

    #[test]
    fn repository_globs_respect_segments() {
        let one = repository_pattern("team/*").unwrap();
        assert!(one.is_match("team/app") && !one.is_match("team/app/sub"));
        let deep = repository_pattern("team/**").unwrap();
        assert!(deep.is_match("team/app/sub"));
        let re = repository_pattern("/apps-(a|b)/").unwrap();
        assert!(re.is_match("apps-a") && !re.is_match("apps-c"));
    }
}
