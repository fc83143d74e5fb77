//! `cleanup`: how a plan becomes deletions — the mode (a new install only reports), the
//! schedule in `serve`, the circuit breaker, and the pace of calls to the upstream.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Cron, HumanDuration};

/// Whether cleanup deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupMode {
    /// Everything but the DELETE/PUT calls: what would happen is reported, nothing changes.
    #[default]
    DryRun,
    Enforce,
}

impl std::str::FromStr for CleanupMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "dry-run" => Ok(Self::DryRun),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!("{other:?}: give dry-run or enforce")),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupConfig {
    #[serde(default)]
    pub mode: CleanupMode,
    /// How often `serve` runs a cleanup, counted from the last run's end; `0s` (the default)
    /// runs none on its own.
    #[serde(default = "CleanupConfig::default_interval")]
    pub interval: HumanDuration,
    /// When `serve` runs cleanups, as a cron expression in UTC (`0 3 * * *`: every night at
    /// 03:00); instead of `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Cron>,
    /// A run that would remove more tags than this stops before deleting anything.
    #[serde(default = "CleanupConfig::default_max_deletions")]
    pub max_deletions: usize,
    /// A run that would remove more than this fraction of any repository's tags stops before
    /// deleting anything.
    #[serde(default = "CleanupConfig::default_max_fraction")]
    pub max_fraction: f64,
    /// Calls to the upstream in flight at once.
    #[serde(default = "CleanupConfig::default_concurrency")]
    pub concurrency: usize,
    /// A run stops starting deletions after this long (what is under way completes).
    #[serde(default = "CleanupConfig::default_deadline")]
    pub deadline: HumanDuration,
    /// What `restore` puts back is kept this long (reason `restored`), so the next run does
    /// not delete it again; `0s` turns it off.
    #[serde(default = "CleanupConfig::default_restore_protection")]
    pub restore_protection: HumanDuration,
}

impl CleanupConfig {
    fn default_interval() -> HumanDuration {
        HumanDuration::from_secs(0)
    }
    fn default_max_deletions() -> usize {
        1000
    }
    fn default_max_fraction() -> f64 {
        0.9
    }
    fn default_concurrency() -> usize {
        8
    }
    fn default_deadline() -> HumanDuration {
        HumanDuration::from_secs(3600)
    }
    fn default_restore_protection() -> HumanDuration {
        HumanDuration::from_secs(7 * 86_400)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_fraction > 0.0 && self.max_fraction <= 1.0) {
            return Err(ConfigError::Invalid {
                field: "cleanup.maxFraction",
                message: format!("{} is not in (0, 1]", self.max_fraction),
            });
        }
        if self.schedule.is_some() && !self.interval.0.is_zero() {
            return Err(ConfigError::Invalid {
                field: "cleanup.schedule",
                message: format!(
                    "give either a schedule or an interval ({}), not both",
                    self.interval
                ),
            });
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Invalid {
                field: "cleanup.concurrency",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            mode: CleanupMode::default(),
            interval: Self::default_interval(),
            schedule: None,
            max_deletions: Self::default_max_deletions(),
            max_fraction: Self::default_max_fraction(),
            concurrency: Self::default_concurrency(),
            deadline: Self::default_deadline(),
            restore_protection: Self::default_restore_protection(),
        }
    }
}
