use std::{io, path::PathBuf};

/// Everything that can be wrong with a configuration. Each variant names where: the file and
/// line for YAML problems, the environment variable for overrides, the field path otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    SyntaxNoLocation { path: PathBuf, message: String },
    #[error("environment variable {var} (overrides `{field}`): {message}")]
    Env {
        var: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("`{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A field inside a list, named with its index (`retention.scopes[1].keepPolicies[0]`).
    #[error("`{path}`: {message}")]
    InvalidAt { path: String, message: String },
}
