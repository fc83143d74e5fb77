//! From a plan to the executor's steps: one per digest acted on, numbered in plan order, and
//! the waves that let a manifest's deletion wait for the indexes and referrers deleted first.

use std::collections::HashMap;

use crate::{
    index::AuditAction,
    policy::{Action, Plan},
};

/// One step: everything the plan does to one digest of one repository.
#[derive(Clone, Debug)]
pub struct Step {
    pub seq: u64,
    pub repository: String,
    pub digest: String,
    pub action: AuditAction,
    /// The tags it removes (for `Untag`, exactly one).
    pub tags: Vec<String>,
    pub bytes: u64,
    /// Why no rule kept it.
    pub reasons: Vec<String>,
    /// Digests of the same repository deleted by earlier steps of the run that list or refer
    /// to this one: this step waits for them, and is skipped unless they all went.
    pub after: Vec<String>,
}

/// The steps of a plan, in plan order, numbered from 1.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for repository in plan.repositories.iter().filter(|r| r.scope.is_some()) {
        let by_name: HashMap<&str, &crate::policy::TagPlan> =
            repository.tags.iter().map(|t| (&*t.tag, t)).collect();
        let reasons_of = |tag: &str| -> Vec<String> {
            by_name
                .get(tag)
                .map(|t| {
                    t.outcomes
                        .iter()
                        .filter(|o| !o.keeps && !o.detail.is_empty())
                        .map(|o| o.detail.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for action in &repository.actions {
            let (digest, action, tags, bytes, reasons, after) = match action {
                Action::DeleteDigest {
                    digest,
                    tags,
                    bytes,
                    follows,
                    after,
                } => {
                    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                    let reasons = match follows {
                        Some(why) => vec![why.clone()],
                        None => tags.first().map(|t| reasons_of(t)).unwrap_or_default(),
                    };
                    (
                        digest,
                        AuditAction::DeleteDigest,
                        tags,
                        *bytes,
                        reasons,
                        &after[..],
                    )
                }
                Action::Untag { tag, digest } => (
                    digest,
                    AuditAction::Untag,
                    vec![tag.to_string()],
                    0,
                    reasons_of(tag),
                    &[][..],
                ),
                Action::DeleteUntagged {
                    digest,
                    bytes,
                    why,
                    after,
                } => (
                    digest,
                    AuditAction::DeleteDigest,
                    Vec::new(),
                    *bytes,
                    vec![why.clone()],
                    &after[..],
                ),
            };
            steps.push(Step {
                seq: steps.len() as u64 + 1,
                repository: repository.repository.clone(),
                digest: digest.to_string(),
                action,
                tags,
                bytes,
                reasons,
                after: after.iter().map(|d| d.to_string()).collect(),
            });
        }
    }
    steps
}

/// Each step's wave: 0 without `after`, else one more than the latest wave among the steps
/// it waits for (content addressing rules out cycles; a malformed plan still ends, by
/// counting at most as many waves as steps).
pub(super) fn waves(steps: &[Step]) -> Vec<usize> {
    let position: HashMap<(&str, &str), usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.action == AuditAction::DeleteDigest)
        .map(|(i, s)| ((s.repository.as_str(), s.digest.as_str()), i))
        .collect();
    let mut wave = vec![0usize; steps.len()];
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, step) in steps.iter().enumerate() {
            let needed = step
                .after
                .iter()
                .filter_map(|d| position.get(&(step.repository.as_str(), d.as_str())))
                .map(|j| wave[*j] + 1)
                .max()
                .unwrap_or(0);
            if needed > wave[i] {
                wave[i] = needed;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    wave
}
