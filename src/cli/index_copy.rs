//! `regkeeper index copy`: names of engines on the command line to open stores, a progress bar
//! on a terminal, and the report.

use std::sync::Arc;

use regkeeper::{
    config::PostgresConfig,
    index::{KvStore, SledKv, copy::copy, postgres::PgKv},
};

/// `sled:PATH` or `postgres:URL`, opened as a store.
fn open(location: &str, creating: bool) -> anyhow::Result<Box<dyn KvStore>> {
    if let Some(path) = location.strip_prefix("sled:") {
        let path = std::path::Path::new(path);
        if !creating && !path.exists() {
            anyhow::bail!("no index at {}", path.display());
        }
        return Ok(Box::new(SledKv::open(path)?));
    }
    if let Some(url) = location.strip_prefix("postgres:") {
        let mut postgres = PostgresConfig::new(url.to_string());
        postgres.password_file = std::env::var_os("REGKEEPER_INDEX_POSTGRES_PASSWORD_FILE")
            .map(std::path::PathBuf::from);
        let options = regkeeper::backend::options(&postgres)?;
        return Ok(Box::new(PgKv::connect(&options)?));
    }
    anyhow::bail!("{location:?}: name an index as sled:PATH or postgres:URL")
}

pub fn run(from: &str, to: &str) -> anyhow::Result<()> {
    let source = open(from, false)?;
    let target = open(to, true)?;
    let bar = Arc::new(indicatif::ProgressBar::new_spinner());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} entries copied ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let report = copy(source.as_ref(), target.as_ref(), &mut |copied| {
        bar.set_position(copied);
    })?;
    bar.finish_and_clear();
    println!(
        "copied {} entries{}; {} entries on each side, {}",
        report.copied,
        if report.resumed {
            " (went on from an interrupted copy)"
        } else {
            ""
        },
        report.entries,
        if report.verified {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    if !report.verified {
        anyhow::bail!("the copy differs from its source; run it again into an empty index");
    }
    Ok(())
}
