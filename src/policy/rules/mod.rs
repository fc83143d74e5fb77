//! The per-tag rules: git (through [`super::werf`], in [`git`]), and in [`tag`] usage
//! (Kubernetes, Helm), push and pull windows, always-kept tag patterns, the newest N per
//! repository, and untracked tags.
//!
//! Owns: each rule's verdict and its words. May call: the policy's own types, `config`.

mod git;
mod git_map;
mod tag;

pub use git::{GitOutcomes, InScope, git_verdicts};
pub use git_map::GitMap;
pub use tag::{TagContext, usage_by_repository};

/// `35m`, `2d`, `5h`: the largest whole unit.
pub fn ago(millis: u64) -> String {
    let secs = millis / 1000;
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_ages_are_worded() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(ago(90 * 60 * 1000), "1h");
    }
}
