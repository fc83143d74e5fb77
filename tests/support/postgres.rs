//! A real PostgreSQL for the shared-index tests: the same helper the library's unit tests use.

#[path = "../../src/index/postgres/testing.rs"]
mod testing;

#[allow(unused_imports)]
pub use testing::{TestPostgres, server_binaries};

/// The overrides that put a `regkeeper` process on the shared index at `url`.
pub fn shared_index(url: &str) -> [(&'static str, String); 2] {
    [
        ("REGKEEPER_INDEX_BACKEND", "postgres".to_string()),
        ("REGKEEPER_INDEX_POSTGRES_URL", url.to_string()),
    ]
}
