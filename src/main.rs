//! The `regkeeper` command line: parses arguments and calls into the library.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "regkeeper",
    version,
    about = "A retention-aware OCI registry proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (and admin listener) in front of the configured upstream registry.
    Serve {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        /// Run next to the registry instead of in front of it: no proxy listener; the index
        /// learns from the registry's notifications (`admin.notificationToken`) and `sync`.
        #[arg(long, env = "REGKEEPER_NO_PROXY")]
        no_proxy: bool,
    },
    /// List the tags the index knows (all repositories, or one), with digest, kind, size, commit
    /// and pulls. Reads the index, or asks `serve` (its admin listener) while it holds it.
    Tags {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        repository: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Also list manifests no tag points to (pushed by digest, referrers, left behind by a
        /// moved tag), as `<none>`.
        #[arg(long)]
        all: bool,
    },
    /// Everything the index knows about REPOSITORY:TAG or REPOSITORY@DIGEST (JSON by default).
    Inspect {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        reference: String,
    },
    /// Crawl the upstream and record what the index lacks (pushes that bypassed the proxy,
    /// dropped events). Resumes an interrupted run. Exits 1 when something could not be read.
    Sync {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        /// Print the run's report as JSON on stdout.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What a cleanup would do now: per repository, tags and bytes kept and deleted, and the
    /// deletions. Reads the index and the configured git clones and clusters, or asks `serve`
    /// while it holds the index.
    Plan {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Also list every kept tag with the rules that keep it.
        #[arg(long)]
        show_kept: bool,
        /// Evaluate as of another moment: 2026-12-07, 2026-12-07T09:00:00Z, +3d, -12h, or Unix
        /// seconds.
        #[arg(long, allow_hyphen_values = true)]
        at: Option<String>,
        /// Show only this repository, or the repositories under it (`team` shows `team/app`).
        #[arg(long)]
        repo: Option<String>,
    },
    /// Every rule's verdict on REPOSITORY:TAG, including the rules that did not keep it.
    Explain {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        reference: String,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// As of another moment (as for `plan`).
        #[arg(long, allow_hyphen_values = true)]
        at: Option<String>,
    },
    /// One evaluation and cleanup: deletes upstream what no rule keeps (in `enforce` mode;
    /// `dry-run`, the default, only reports). Exits 1 when the circuit breaker stops an
    /// enforcing run or a step fails; a dry run whose plan the breaker would stop reports the
    /// whole plan and exits 3.
    Apply {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        /// Override `cleanup.mode` for this run: dry-run or enforce.
        #[arg(long)]
        mode: Option<regkeeper::config::CleanupMode>,
        /// Run even if the circuit breaker would stop it (this run only).
        #[arg(long)]
        force: bool,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The audit log: every cleanup step, with the reasons and the manifest it removed.
    History {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        /// Only this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Only entries at or after: 2026-12-07, 2026-12-07T09:00:00Z, -7d, or Unix seconds.
        #[arg(long, allow_hyphen_values = true)]
        since: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Put back a tag a cleanup removed (REPOSITORY:TAG), a manifest it deleted
    /// (REPOSITORY@DIGEST), or everything a run removed (--run ID), after checking the blobs
    /// are still upstream.
    Restore {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        reference: Option<String>,
        #[arg(long)]
        run: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Work on an index as a whole.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Validate a configuration and print the effective result (file + environment overrides).
    CheckConfig {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        /// Also list every REGKEEPER_* override variable and the field it sets.
        #[arg(long)]
        env: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum IndexCommand {
    /// Copy a whole index — tags, manifests, links, pulls, the audit log — from one engine to
    /// another: `sled:PATH` or `postgres:URL` (password in the URL, or from the file named by
    /// REGKEEPER_INDEX_POSTGRES_PASSWORD_FILE). The target must be empty; an interrupted copy
    /// goes on where it stopped when run again. Both sides are compared at the end. Stop
    /// `serve` on a sled source first (sled has one writer).
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

/// The error and its causes, each cause said only when the words before do not already say it
/// (errors that name their cause in their own message would otherwise repeat it).
fn said_once(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// A dry run whose plan the breaker would stop in enforce mode: its own exit code (3), so a
/// pipeline can tell "would refuse" from "failed".
#[derive(Debug, thiserror::Error)]
#[error(
    "an enforcing run would stop here: the circuit breaker refuses this plan (see above; --force overrides once)"
)]
pub(crate) struct EnforceWouldStop;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<EnforceWouldStop>() => {
            eprintln!("regkeeper: {}", said_once(&error));
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("regkeeper: {}", said_once(&error));
            ExitCode::FAILURE
        }
    }
}
