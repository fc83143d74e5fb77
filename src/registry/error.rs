/// What can go wrong when regkeeper talks to the upstream on its own behalf. Each variant says
/// what was being done (`what`), so a log line or a sync report stands on its own.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("upstream credentials: {0}")]
    Credentials(String),
    #[error("{what}: {cause}")]
    Transport { what: String, cause: String },
    #[error("{what}: no complete answer within {seconds}s")]
    Timeout { what: String, seconds: u64 },
    #[error("{what}: the upstream answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: authentication failed: {why}")]
    Auth { what: String, why: String },
    #[error("{what}: larger than {limit} bytes; not read")]
    TooLarge { what: String, limit: usize },
    #[error("{what}: {why}")]
    Malformed { what: String, why: String },
    /// 429 or 503: the upstream asks to come back later (`Retry-After` seconds, if given).
    #[error("{what}: the upstream answered {status} (busy)")]
    Busy {
        what: String,
        status: u16,
        retry_after: Option<u64>,
    },
}

/// The OCI error body's first `code: message`, if the upstream sent one, for error details.
pub(super) fn oci_error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(errors) => errors
            .errors
            .first()
            .map(|e| format!(" ({}: {})", e.code, e.message))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}
