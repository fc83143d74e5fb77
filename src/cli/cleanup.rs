//! The cleanup commands: `apply` (one evaluation + cleanup), `history` (the audit log) and
//! `restore` (put back what a run removed). They open the index themselves, or, while `serve`
//! holds it, ask `serve`: `history` on its read-only view, `apply` and `restore` through the
//! operator API (`admin.operatorToken`), so the run happens in `serve` over its own index.

use std::time::Duration;

use regkeeper::{
    cleanup::{self, RunReport, history, restore as restoring},
    config::{CleanupMode, Config},
    planning::Source,
    registry::RegistryClient,
};

use super::{Local, open_existing_index, runtime};
use crate::Output;

/// Beyond a run's own deadline: the plan before it, and the answer after.
const ANSWER_MARGIN: Duration = Duration::from_secs(600);

/// Asks the running `serve` to do `what` at `path` with the operator token.
fn ask_operator(
    config: &Config,
    what: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let Some(token) = &config.admin.operator_token else {
        anyhow::bail!(
            "the index at {} is held by a running `regkeeper serve`; {what} then runs inside serve, which needs admin.operatorToken (REGKEEPER_ADMIN_OPERATOR_TOKEN) set for both",
            config.index.path.display()
        );
    };
    let timeout = config.cleanup.deadline.0 + ANSWER_MARGIN;
    runtime()?
        .block_on(regkeeper::admin::remote::post_json(
            config.admin.listen,
            path,
            token,
            body,
            timeout,
        ))
        .map_err(|why| anyhow::anyhow!("{what} through the running `serve` failed: {why}"))
}

fn client(config: &Config) -> anyhow::Result<RegistryClient> {
    let tls = regkeeper::tls::client_for_upstream(config)?;
    Ok(RegistryClient::new(config, tls)?)
}

/// How an `apply` ended, for its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every attempted step worked (exit 0).
    Done,
    /// The breaker stopped an enforcing run, or a step failed (exit 1).
    Incomplete,
    /// A dry run whose plan an enforcing run would refuse (exit 3).
    EnforceWouldStop,
}

/// `apply`: the report, and how it ended.
pub fn apply(
    config: &Config,
    mode: Option<CleanupMode>,
    force: bool,
    output: Output,
) -> anyhow::Result<Applied> {
    let report: RunReport = match open_existing_index(config)? {
        Local::Index(index) => {
            let client = client(config)?;
            let mode = mode.unwrap_or(config.cleanup.mode);
            // Takes part in the leadership of the processes sharing the index: an enforcing
            // run starts only as the leader, and gives the lease back when done.
            let leadership = regkeeper::backend::leadership(config, index.clone());
            let report = runtime()?.block_on(cleanup::run_once(
                config,
                Source::Index(index.as_ref()),
                index.as_ref(),
                &client,
                &leadership,
                mode,
                force,
            ));
            leadership.resign();
            let report = report?;
            index.flush()?;
            report
        }
        Local::Serving => {
            let body = serde_json::json!({ "mode": mode, "force": force });
            serde_json::from_value(ask_operator(config, "apply", "/api/v1/apply", &body)?)?
        }
    };
    super::emit(output, &report, cleanup::report_table)?;
    Ok(if report.enforce_would_stop() {
        Applied::EnforceWouldStop
    } else if report.succeeded() {
        Applied::Done
    } else {
        Applied::Incomplete
    })
}

pub fn history(
    config: &Config,
    repository: Option<&str>,
    since: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let since = since
        .map(|s| {
            regkeeper::planning::parse_time(s, regkeeper::index::UnixMillis::now())
                .map_err(anyhow::Error::msg)
        })
        .transpose()?;
    let entries = match open_existing_index(config)? {
        Local::Index(index) => history::timeline(index.as_ref(), repository, since)?,
        Local::Serving => {
            let mut path = "/api/v1/history?".to_string();
            if let Some(repository) = repository {
                path.push_str(&format!("repository={}&", super::escape(repository)));
            }
            if let Some(since) = since {
                path.push_str(&format!("since={}", since.0));
            }
            serde_json::from_value(super::ask_serve(config, &path)?)?
        }
    };
    super::emit(output, &entries, |entries| {
        regkeeper::render::history_table(entries)
    })
}

/// `restore REPOSITORY:TAG|REPOSITORY@DIGEST [--run ID]`, or everything a run removed (`--run ID`
/// alone).
pub fn restore(
    config: &Config,
    reference: Option<&str>,
    run: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let report: restoring::RestoreReport = match open_existing_index(config)? {
        Local::Index(index) => {
            let client = client(config)?;
            runtime()?.block_on(restoring::restore_all(
                &client,
                index.as_ref(),
                reference,
                run,
            ))?
        }
        Local::Serving => {
            let body = serde_json::json!({ "reference": reference, "run": run });
            serde_json::from_value(ask_operator(config, "restore", "/api/v1/restore", &body)?)?
        }
    };
    match output {
        Output::Table => {
            for done in &report.restored {
                println!(
                    "restored {} → {} (from run {})",
                    done.reference(),
                    done.digest,
                    done.run
                );
            }
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&report.restored)?),
    }
    anyhow::ensure!(report.failed.is_empty(), "{}", report.failed.join("\n"));
    Ok(())
}
