//! The `regkeeper` command line: parses arguments and calls into the library.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use regkeeper::config::{Config, ENV_OVERRIDES};

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
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (and admin listener) in front of the configured upstream registry.
    Serve {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
    },
    /// List the tags the index knows (all repositories, or one), with digest, kind, size, commit
    /// and pulls. Reads the index directly: run it where `serve` is stopped.
    Tags {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        repository: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Everything the index knows about REPOSITORY:TAG or REPOSITORY@DIGEST (JSON by default).
    Inspect {
        #[arg(long, short, env = "REGKEEPER_CONFIG")]
        config: PathBuf,
        reference: String,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("regkeeper: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            regkeeper::telemetry::init(&config.log);
            regkeeper::server::serve(config)?;
            Ok(())
        }
        Command::Tags {
            config,
            repository,
            output,
        } => {
            let index = open_existing_index(&Config::load(&config)?)?;
            let views = regkeeper::inspect::tags(&index, repository.as_deref())?;
            match output {
                Output::Table => print!("{}", regkeeper::inspect::tags_table(&views)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
            }
            Ok(())
        }
        Command::Inspect { config, reference } => {
            let index = open_existing_index(&Config::load(&config)?)?;
            let inspection = regkeeper::inspect::inspect(&index, &reference)?;
            println!("{}", serde_json::to_string_pretty(&inspection)?);
            Ok(())
        }
        Command::CheckConfig { config, env } => {
            let config = Config::load(&config)?;
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

/// The index for a reading command: never creates one where there is none.
fn open_existing_index(config: &Config) -> anyhow::Result<regkeeper::index::SledIndex> {
    let path = &config.index.path;
    if !path.exists() {
        anyhow::bail!(
            "no index at {} (index.path): nothing has been recorded there yet",
            path.display()
        );
    }
    Ok(regkeeper::index::open_sled(path)?)
}
