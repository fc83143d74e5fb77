//! The registry client's errors, and how an answer's status becomes one.

use http::StatusCode;

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

/// A success status, or the error the answer means.
pub(super) fn check_success(
    status: StatusCode,
    body: &[u8],
    what: &str,
) -> Result<(), RegistryError> {
    if status.is_success() {
        return Ok(());
    }
    check_status(status, body, what)
}

/// 200, or the error the answer means (401/403: credentials; else the status and the OCI detail).
pub(super) fn check_status(
    status: StatusCode,
    body: &[u8],
    what: &str,
) -> Result<(), RegistryError> {
    if status == StatusCode::OK {
        return Ok(());
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RegistryError::Auth {
            what: what.to_string(),
            why: format!("{status}{}", oci_error_detail(body)),
        });
    }
    Err(RegistryError::Status {
        what: what.to_string(),
        status: status.as_u16(),
        detail: oci_error_detail(body),
    })
}

pub(super) fn malformed(what: &str, error: serde_json::Error) -> RegistryError {
    RegistryError::Malformed {
        what: what.to_string(),
        why: format!("not the JSON the distribution API defines: {error}"),
    }
}
