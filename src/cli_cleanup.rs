//! The cleanup commands: `apply` (one evaluation + cleanup), `history` (the audit log) and
//! `restore` (put back what a run removed). `apply` and `restore` need the index to themselves
//! (while `serve` holds it, its own schedule runs cleanups); `history` asks a running `serve`.

use regkeeper::{
    cleanup::{self, history},
    config::{CleanupMode, Config},
    index::{Index as _, SledIndex},
    planning::Source,
    registry::RegistryClient,
};

use super::{Local, Output, open_existing_index};

fn index_for(config: &Config, what: &str) -> anyhow::Result<SledIndex> {
    match open_existing_index(config)? {
        Local::Index(index) => Ok(index),
        Local::Serving => anyhow::bail!(
            "the index at {} is held by a running `regkeeper serve`; {what} needs it to itself (stop serve, or let its cleanup.interval schedule run cleanups)",
            config.index.path.display()
        ),
    }
}

fn client(config: &Config) -> anyhow::Result<RegistryClient> {
    let tls = regkeeper::upstream::client_tls(config)?;
    Ok(RegistryClient::new(config, tls)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `apply`: exits 1 when the breaker stopped the run or a step failed.
pub fn apply(
    config: &Config,
    mode: Option<CleanupMode>,
    force: bool,
    output: Output,
) -> anyhow::Result<bool> {
    let index = index_for(config, "apply")?;
    let client = client(config)?;
    let mode = mode.unwrap_or(config.cleanup.mode);
    let report = runtime()?.block_on(cleanup::run_once(
        config,
        Source::Index(&index),
        &index,
        &client,
        mode,
        force,
    ))?;
    index.flush()?;
    match output {
        Output::Table => print!("{}", cleanup::report_table(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(report.succeeded())
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
        Local::Index(index) => history::entries(&index, repository, since)?,
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
    match output {
        Output::Table => print!("{}", history::table(&entries)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
    }
    Ok(())
}

/// `restore REPOSITORY:TAG [--run ID]`, or every tag a run removed (`--run ID` alone).
pub fn restore(
    config: &Config,
    reference: Option<&str>,
    run: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let index = index_for(config, "restore")?;
    let client = client(config)?;
    let entries = history::entries(&index, None, None)?;
    let targets: Vec<(&regkeeper::index::AuditEntry, String)> = match reference {
        Some(reference) => {
            let (repository, tag) = reference
                .rsplit_once(':')
                .filter(|(r, _)| !r.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{reference:?}: give REPOSITORY:TAG"))?;
            let entry = history::removal(&entries, repository, tag, run).ok_or_else(|| {
                anyhow::anyhow!(
                    "the audit log has no completed removal of {repository}:{tag}{}",
                    run.map(|r| format!(" in run {r}")).unwrap_or_default()
                )
            })?;
            vec![(entry, tag.to_string())]
        }
        None => {
            let run = run.ok_or_else(|| anyhow::anyhow!("give REPOSITORY:TAG, or --run ID"))?;
            let found: Vec<_> = entries
                .iter()
                .filter(|e| e.run == run && e.state == regkeeper::index::AuditState::Done)
                .flat_map(|e| e.tags.iter().map(move |t| (e, t.clone())))
                .collect();
            anyhow::ensure!(!found.is_empty(), "run {run} removed no tag");
            found
        }
    };
    let runtime = runtime()?;
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for (entry, tag) in targets {
        match runtime.block_on(history::restore(&client, &index, entry, &tag)) {
            Ok(done) => restored.push(done),
            Err(error) => failed.push(error.to_string()),
        }
    }
    index.flush()?;
    match output {
        Output::Table => {
            for done in &restored {
                println!(
                    "restored {}:{} → {} (from run {})",
                    done.repository, done.tag, done.digest, done.run
                );
            }
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&restored)?),
    }
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
