//! What each command does once its arguments are parsed: one dispatch, and what the commands
//! share — reading the index where it lies, or asking the running `serve` that holds it (its
//! admin listener), on one runtime.

pub mod cleanup;
mod index_copy;

use regkeeper::{
    config::{Config, ENV_OVERRIDES},
    policy::Details,
};

use crate::{Command, EnforceWouldStop, IndexCommand, Output};

/// Long by design: a dispatch table, one arm per command, each arm a call into the command's
/// module (or the local-index-or-serve helpers below).
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, no_proxy } => {
            let config = Config::load(&config)?;
            regkeeper::telemetry::init(&config.log);
            for warning in config.warnings() {
                tracing::warn!(%warning, "configuration");
            }
            let mode = if no_proxy {
                regkeeper::server::Mode::Sidecar
            } else {
                regkeeper::server::Mode::Proxy
            };
            regkeeper::server::serve(config, mode)?;
            Ok(())
        }
        Command::Tags {
            config,
            repository,
            output,
            all,
        } => {
            let config = Config::load(&config)?;
            let views = match open_existing_index(&config)? {
                Local::Index(index) => {
                    regkeeper::inspect::tags(index.as_ref(), repository.as_deref(), all)?
                }
                Local::Serving => {
                    let path = match &repository {
                        Some(r) => format!("/api/v1/tags?repository={}&all={all}", escape(r)),
                        None => format!("/api/v1/tags?all={all}"),
                    };
                    serde_json::from_value(ask_serve(&config, &path)?)?
                }
            };
            emit(output, &views[..], regkeeper::render::tags_table)
        }
        Command::Inspect { config, reference } => {
            let config = Config::load(&config)?;
            let inspection = match open_existing_index(&config)? {
                Local::Index(index) => {
                    serde_json::to_value(regkeeper::inspect::inspect(index.as_ref(), &reference)?)?
                }
                Local::Serving => ask_serve(
                    &config,
                    &format!("/api/v1/inspect?reference={}", escape(&reference)),
                )?,
            };
            println!("{}", serde_json::to_string_pretty(&inspection)?);
            Ok(())
        }
        Command::Sync { config, output } => {
            let config = Config::load(&config)?;
            regkeeper::telemetry::init(&config.log);
            let progress = regkeeper::sync::ProgressStyle::detect();
            let report = runtime()?.block_on(regkeeper::sync::once(&config, progress))?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => println!(
                    "synced {} repositories, {} tags ({} recorded, {} gone) in {:.1}s; {} tags asked for their digest, {} manifests and {} configs fetched; {} errors",
                    report.repositories,
                    report.tags,
                    report.tags_recorded,
                    report.tags_gone,
                    report.seconds,
                    report.manifest_heads,
                    report.manifests_fetched,
                    report.configs_read,
                    report.errors
                ),
            }
            if report.errors > 0 {
                anyhow::bail!(
                    "{} repositories or tags could not be read (logged above); run sync again",
                    report.errors
                );
            }
            Ok(())
        }
        Command::Plan {
            config,
            output,
            show_kept,
            at,
            repo,
        } => {
            let config = Config::load(&config)?;
            let at = moment(at.as_deref())?;
            if let Local::Serving = open_existing_index(&config)? {
                let mut query = format!("at={}&show_kept={show_kept}", at.0);
                if let Some(repo) = &repo {
                    query.push_str(&format!("&repo={}", escape(repo)));
                }
                return print_from_serve(&config, "plan", &query, output);
            }
            let mut plan = evaluate(&config, at, Details::Removed)?;
            if let Some(repo) = &repo {
                regkeeper::planning::only_repositories(&mut plan, repo);
            }
            emit(output, &plan, |plan| {
                regkeeper::render::plan_table(plan, show_kept)
            })
        }
        Command::Explain {
            config,
            reference,
            output,
            at,
        } => {
            let config = Config::load(&config)?;
            let at = moment(at.as_deref())?;
            if let Local::Serving = open_existing_index(&config)? {
                let query = format!("reference={}&at={}", escape(&reference), at.0);
                return print_from_serve(&config, "explain", &query, output);
            }
            let plan = evaluate(&config, at, Details::All)?;
            let explanation = regkeeper::planning::explain(&plan, &reference)?;
            emit(output, &explanation, regkeeper::render::explain_table)
        }
        Command::Apply {
            config,
            mode,
            force,
            output,
        } => {
            let config = Config::load(&config)?;
            regkeeper::telemetry::init(&config.log);
            match cleanup::apply(&config, mode, force, output)? {
                cleanup::Applied::Done => Ok(()),
                cleanup::Applied::Incomplete => {
                    anyhow::bail!("the cleanup run did not complete (see above)")
                }
                cleanup::Applied::EnforceWouldStop => Err(EnforceWouldStop.into()),
            }
        }
        Command::History {
            config,
            repo,
            since,
            output,
        } => {
            let config = Config::load(&config)?;
            cleanup::history(&config, repo.as_deref(), since.as_deref(), output)
        }
        Command::Restore {
            config,
            reference,
            run,
            output,
        } => {
            let config = Config::load(&config)?;
            regkeeper::telemetry::init(&config.log);
            cleanup::restore(&config, reference.as_deref(), run.as_deref(), output)
        }
        Command::Index {
            command: IndexCommand::Copy { from, to },
        } => index_copy::run(&from, &to),
        Command::CheckConfig { config, env } => {
            let config = Config::load(&config)?;
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.to_yaml());
            if env {
                println!("# environment overrides:");
                for over in ENV_OVERRIDES {
                    println!("#   {:<42} {}", over.var, over.field);
                }
            }
            Ok(())
        }
    }
}

/// `value` as the table `table` renders, or as pretty JSON.
pub(crate) fn emit<T: serde::Serialize + ?Sized>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", table(value)),
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// `--at`, or now.
fn moment(at: Option<&str>) -> anyhow::Result<regkeeper::index::UnixMillis> {
    let now = regkeeper::index::UnixMillis::now();
    match at {
        Some(text) => regkeeper::planning::parse_time(text, now).map_err(anyhow::Error::msg),
        None => Ok(now),
    }
}

/// One evaluation of the retention rules against the index (opened directly) as of `at`.
fn evaluate(
    config: &Config,
    at: regkeeper::index::UnixMillis,
    details: Details,
) -> anyhow::Result<regkeeper::policy::Plan> {
    let index = match open_existing_index(config)? {
        Local::Index(index) => index,
        Local::Serving => anyhow::bail!(
            "the index at {} is held by a running `regkeeper serve`",
            config.index.path.display()
        ),
    };
    let loaded = runtime()?.block_on(regkeeper::planning::load(
        config,
        regkeeper::planning::Source::Index(index.as_ref()),
    ))?;
    Ok(regkeeper::planning::plan(config, &loaded, at, details))
}

/// Where a reading command reads from.
enum Local {
    Index(std::sync::Arc<dyn regkeeper::index::Index>),
    /// A running `serve` holds the index: ask it through its admin listener.
    Serving,
}

/// The index for a reading command: never creates one where there is none.
fn open_existing_index(config: &Config) -> anyhow::Result<Local> {
    // The shared index is opened by every replica and command at once.
    if regkeeper::backend::is_shared(config) {
        return Ok(Local::Index(regkeeper::backend::open(config)?));
    }
    let path = &config.index.path;
    if !path.exists() {
        anyhow::bail!(
            "no index at {} (index.path): nothing has been recorded there yet",
            path.display()
        );
    }
    match regkeeper::index::open_sled(path) {
        Ok(index) => Ok(Local::Index(std::sync::Arc::new(index))),
        Err(regkeeper::index::IndexError::InUse { .. }) => Ok(Local::Serving),
        Err(error) => Err(error.into()),
    }
}

fn ask_serve(config: &Config, path: &str) -> anyhow::Result<serde_json::Value> {
    let text = ask_serve_text(config, path)?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the admin listener answered non-JSON: {e}"))
}

/// Asks the running `serve` for `/api/v1/<view>?<query>` and prints its answer as the command
/// itself would (JSON pretty-printed).
fn print_from_serve(
    config: &Config,
    view: &str,
    query: &str,
    output: Output,
) -> anyhow::Result<()> {
    let format = match output {
        Output::Table => "table",
        Output::Json => "json",
    };
    let answer = ask_serve_text(config, &format!("/api/v1/{view}?{query}&format={format}"))?;
    match output {
        Output::Table => print!("{answer}"),
        Output::Json => {
            let value: serde_json::Value = serde_json::from_str(&answer)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

fn ask_serve_text(config: &Config, path: &str) -> anyhow::Result<String> {
    runtime()?
        .block_on(regkeeper::admin::remote::get_text(
            config.admin.listen,
            path,
            read_token(config),
        ))
        .map_err(|why| {
            anyhow::anyhow!(
                "the index at {} is held by a running `regkeeper serve`, and asking it failed: {why}",
                config.index.path.display()
            )
        })
}

/// The one runtime the commands use (serve builds its own): a worker per core, as sync's
/// crawl and a cleanup's concurrent steps want.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The token a command shows the running `serve` for its read views: the read token, else
/// the operator token (which opens them too).
fn read_token(config: &Config) -> Option<&str> {
    config
        .admin
        .read_token
        .as_deref()
        .or(config.admin.operator_token.as_deref())
}

fn escape(text: &str) -> String {
    regkeeper::registry::query_escape(text)
}
