//! What the clusters start using while a run goes on. The plan's view of Kubernetes and Helm is
//! as old as the plan; meanwhile someone may roll a deployment back to an image the plan is
//! about to delete (`kubectl set image`, `helm rollback`). The guard reads the clusters again
//! right before the first step and then every [`REFRESH`] while the run goes on; the executor
//! asks it before each call. A cluster that cannot be read again stops the deletions (fail
//! closed), as it would have stopped the plan.
//!
//! May call: `sources::usage`, `policy` (usage types).

use std::{collections::HashMap, convert::Infallible, sync::Mutex, time::Duration};

use crate::{
    config::RetentionConfig,
    policy::{ImageRef, Usage},
};

/// How often the clusters are read again during a run.
pub const REFRESH: Duration = Duration::from_secs(30);

pub struct UsageGuard<'a> {
    retention: &'a RetentionConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Repository → what live workloads and kept Helm revisions use, and by whom.
    in_use: HashMap<String, Vec<(ImageRef, String)>>,
    /// Why the last reading is incomplete (clusters or releases that could not be read).
    unavailable: Option<String>,
}

impl<'a> UsageGuard<'a> {
    /// `None` when no cluster is configured: nothing to watch.
    pub fn new(retention: &'a RetentionConfig) -> Option<Self> {
        (!retention.kubernetes.clusters.is_empty()).then(|| Self {
            retention,
            state: Mutex::new(State::default()),
        })
    }

    /// Reads every cluster again.
    pub async fn refresh(&self) {
        let usage = crate::sources::usage::collect(self.retention).await;
        let state = State::from(usage);
        if let Some(why) = &state.unavailable {
            tracing::warn!(
                why,
                "clusters could not be read again: the run deletes nothing more"
            );
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Refreshes every [`REFRESH`], forever: run it beside the steps and drop it with them.
    pub async fn keep_fresh(&self) -> Infallible {
        loop {
            tokio::time::sleep(REFRESH).await;
            self.refresh().await;
        }
    }

    /// Why the step on `digest` (and `tags`) of `repository` must not run now, if it must not.
    pub fn blocks(&self, repository: &str, tags: &[String], digest: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &state.unavailable {
            return Some(format!("clusters could not be read again ({why})"));
        }
        state
            .in_use
            .get(repository)?
            .iter()
            .find(|(image, _)| match image {
                ImageRef::Tag(tag) => tags.contains(tag),
                ImageRef::Digest(used) => used == digest,
            })
            .map(|(_, by)| format!("now used by {by}"))
    }
}

impl From<Usage> for State {
    fn from(usage: Usage) -> Self {
        let unavailable: Vec<String> = usage
            .kubernetes_unavailable
            .into_iter()
            .chain(usage.helm_unavailable)
            .collect();
        let mut in_use: HashMap<String, Vec<(ImageRef, String)>> = HashMap::new();
        for used in usage.kubernetes.into_iter().chain(usage.helm) {
            in_use
                .entry(used.repository)
                .or_default()
                .push((used.image, used.by));
        }
        Self {
            in_use,
            unavailable: (!unavailable.is_empty()).then(|| unavailable.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::InUse;

    #[test]
    fn blocks_images_used_by_tag_or_digest_and_everything_when_blind() {
        let usage = Usage {
            kubernetes: vec![
                InUse {
                    repository: "team/app".into(),
                    image: ImageRef::Tag("v1".into()),
                    by: "prod/Deployment/api container app".into(),
                },
                InUse {
                    repository: "team/app".into(),
                    image: ImageRef::Digest("sha256:aa".into()),
                    by: "prod/Pod/worker-1 container worker".into(),
                },
            ],
            ..Usage::default()
        };
        let retention = RetentionConfig::default();
        let guard = UsageGuard {
            retention: &retention,
            state: Mutex::new(State::from(usage)),
        };
        let tags = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            guard.blocks("team/app", &tags(&["old", "v1"]), "sha256:bb"),
            Some("now used by prod/Deployment/api container app".into())
        );
        assert!(
            guard
                .blocks("team/app", &[], "sha256:aa")
                .unwrap()
                .contains("worker-1")
        );
        assert_eq!(guard.blocks("team/app", &tags(&["old"]), "sha256:bb"), None);
        assert_eq!(guard.blocks("other/app", &tags(&["v1"]), "sha256:aa"), None);

        let blind = UsageGuard {
            retention: &retention,
            state: Mutex::new(State::from(Usage {
                kubernetes_unavailable: vec!["prod: 500".into()],
                ..Usage::default()
            })),
        };
        assert!(
            blind
                .blocks("other/app", &[], "sha256:cc")
                .unwrap()
                .contains("prod: 500")
        );
    }
}
