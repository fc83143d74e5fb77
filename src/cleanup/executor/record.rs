//! The audit trail of a run: every step's entry written before its call and completed after,
//! and the steps not taken because something changed since the plan.

use base64::Engine as _;

use super::{CleanupError, Executor, Step, StepOutcome};
use crate::{
    cleanup::upstream::Registry,
    config::CleanupMode,
    index::{AuditEntry, AuditState, UnixMillis, Write},
};

impl<R: Registry> Executor<'_, R> {
    /// A step not taken because something changed since the plan: audited (enforce) and logged.
    pub(super) fn skip_changed(
        &self,
        step: &Step,
        why: String,
    ) -> Result<(StepOutcome, String), CleanupError> {
        if self.mode == CleanupMode::Enforce {
            self.audit(step, AuditState::Skipped, why.clone(), None)?;
        }
        tracing::info!(
            repository = step.repository,
            digest = step.digest,
            why,
            "skipped: changed since the plan"
        );
        Ok((StepOutcome::SkippedChanged, why))
    }

    pub(super) fn audit(
        &self,
        step: &Step,
        state: AuditState,
        detail: String,
        manifest: Option<(&str, &[u8])>,
    ) -> Result<(), CleanupError> {
        let (media_type, manifest_base64) = match manifest {
            Some((media_type, body)) => (
                media_type.to_string(),
                base64::engine::general_purpose::STANDARD.encode(body),
            ),
            None => (String::new(), String::new()),
        };
        let fence = self.fence.map(|(leadership, term)| leadership.fence(term));
        let audit = Write::Audit(AuditEntry {
            run: self.run.clone(),
            seq: step.seq,
            at: UnixMillis::now(),
            repository: step.repository.clone(),
            tags: step.tags.clone(),
            digest: step.digest.clone(),
            action: step.action,
            state,
            detail,
            reasons: step.reasons.clone(),
            media_type,
            manifest_base64,
        });
        let writes: Vec<Write> = fence.into_iter().chain([audit]).collect();
        self.index.apply(&writes)?;
        if state == AuditState::Started {
            // On disk before the call it announces: a crash must not lose the record of a
            // deletion that happened.
            self.index.flush()?;
        }
        Ok(())
    }
}
