//! A `limit` (`last`, `in`, `operator`) resolved against `now`, and its words.

use super::CLOCK_SKEW_SECS;
use crate::config::{Limit, Operator};

/// `last` / `in` / `operator` resolved: `None` means no condition.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rule {
    pub(super) last: Option<i64>,
    pub(super) cutoff: Option<i64>,
    pub(super) within_secs: Option<i64>,
    pub(super) operator: Operator,
}

impl Rule {
    /// `last_default` is werf's: 1 for `imagesPerReference`, unlimited for `references.limit`.
    pub(super) fn new(limit: Option<&Limit>, last_default: Option<i64>, now: i64) -> Self {
        let last = match limit.and_then(|l| l.last) {
            Some(n) if n < 0 => None,
            Some(n) => Some(n),
            None => last_default,
        };
        let within_secs = limit
            .and_then(|l| l.within)
            .map(|w| i64::try_from(w.0.as_secs()).unwrap_or(i64::MAX));
        Self {
            last,
            cutoff: within_secs.map(|w| now.saturating_sub(w)),
            within_secs,
            operator: limit.and_then(|l| l.operator).unwrap_or_default(),
        }
    }

    /// Whether the k-th (1-based) item dated `time` is kept. An unlimited `last` is a
    /// condition every item meets (werf: `filterReferencesByLast(-1)` returns them all, a scan
    /// with `last < 0` keeps every image it reaches): under `Or` it keeps everything.
    pub(super) fn keeps(&self, k: i64, time: i64) -> bool {
        let by_last = self.last.is_none_or(|l| k <= l);
        match (self.operator, self.cutoff) {
            (_, None) => by_last,
            (Operator::And, Some(c)) => by_last && time > c,
            (Operator::Or, Some(c)) => by_last || time > c,
        }
    }

    /// No member can keep a later image: each has counted its `last` (`counted_all`; an
    /// unlimited `last` never is), and/or the walk is past the cutoff (allowing for skew), as
    /// the operator combines them.
    pub(super) fn walk_done(&self, counted_all: bool, time: i64) -> bool {
        let counted = self.last.is_some() && counted_all;
        let too_old = self
            .cutoff
            .map(|c| time < c.saturating_sub(CLOCK_SKEW_SECS));
        match (self.operator, too_old) {
            (_, None) => counted,
            (Operator::And, Some(old)) => counted || old,
            (Operator::Or, Some(old)) => counted && old,
        }
    }

    pub(super) fn summary(&self) -> String {
        let within = self
            .within_secs
            .map(|w| format!("committed within {}", human_secs(w)));
        match (self.last, within, self.operator) {
            (Some(l), None, _) => format!("the newest {l} images"),
            (Some(l), Some(w), Operator::And) => format!("the newest {l} images {w}"),
            (Some(l), Some(w), Operator::Or) => format!("the newest {l} images and all {w}"),
            (None, Some(w), Operator::And) => format!("all images {w}"),
            (None, _, _) => "all its images".into(),
        }
    }

    pub(super) fn describe(&self, k: i64) -> String {
        match (self.last, self.within_secs) {
            (Some(l), _) => format!("image {k} of {l}"),
            (None, Some(w)) => format!("image {k} within {}", human_secs(w)),
            (None, None) => format!("image {k}"),
        }
    }
}

pub(super) fn beyond(rule: &Rule, k: i64, time: i64) -> String {
    let mut why = Vec::new();
    if let Some(last) = rule.last.filter(|&l| k > l) {
        why.push(format!("beyond the last {last}"));
    }
    if let (Some(cutoff), Some(w)) = (rule.cutoff, rule.within_secs)
        && time <= cutoff
    {
        let ago = cutoff.saturating_add(w).saturating_sub(time).max(0);
        let ago = match ago {
            s if s >= 86_400 => format!("{}d", s / 86_400),
            s if s >= 3_600 => format!("{}h", s / 3_600),
            s => format!("{}m", s / 60),
        };
        why.push(format!("committed {ago} ago, outside {}", human_secs(w)));
    }
    if why.is_empty() {
        "the policy's operator combines its conditions this way".into()
    } else {
        why.join(", ")
    }
}

/// `168h`, `2d`, `90m`: the largest unit that divides evenly.
pub fn human_secs(secs: i64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
