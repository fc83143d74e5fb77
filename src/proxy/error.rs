//! The proxy layer's errors and the one place they become OCI responses.

use http::StatusCode;

use super::route::RouteError;
use crate::{
    oci_error::{OciError, OciErrorCode},
    upstream::UpstreamError,
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("not an OCI distribution API path")]
    NotApi,
    #[error("invalid repository name")]
    NameInvalid,
    #[error("invalid manifest reference")]
    ReferenceInvalid,
    #[error("invalid digest")]
    DigestInvalid,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream sent no response within {0:?}")]
    UpstreamTimeout(std::time::Duration),
}

impl From<RouteError> for ProxyError {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::NotApi => Self::NotApi,
            RouteError::NameInvalid => Self::NameInvalid,
            RouteError::ReferenceInvalid => Self::ReferenceInvalid,
            RouteError::DigestInvalid => Self::DigestInvalid,
        }
    }
}

impl ProxyError {
    /// A short stable label for logs and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::NotApi => "not-api",
            Self::NameInvalid => "name-invalid",
            Self::ReferenceInvalid => "reference-invalid",
            Self::DigestInvalid => "digest-invalid",
            Self::Upstream(UpstreamError::Connect(_)) => "connect",
            Self::Upstream(UpstreamError::Send(_)) => "upstream-io",
            Self::UpstreamTimeout(_) => "timeout",
        }
    }

    /// What the client is told. Upstream causes stay in the log, not in the body.
    pub fn to_oci(&self) -> OciError {
        use OciErrorCode as Code;
        match self {
            Self::NotApi => OciError::new(
                StatusCode::NOT_FOUND,
                Code::Unsupported,
                "not an OCI distribution API path",
            ),
            Self::NameInvalid => OciError::new(
                StatusCode::NOT_FOUND,
                Code::NameInvalid,
                "invalid repository name",
            ),
            Self::ReferenceInvalid => OciError::new(
                StatusCode::NOT_FOUND,
                Code::ManifestUnknown,
                "invalid tag or digest",
            ),
            Self::DigestInvalid => {
                OciError::new(StatusCode::NOT_FOUND, Code::DigestInvalid, "invalid digest")
            }
            Self::Upstream(_) => OciError::new(
                StatusCode::BAD_GATEWAY,
                Code::Unavailable,
                "upstream registry unavailable",
            ),
            Self::UpstreamTimeout(_) => OciError::new(
                StatusCode::GATEWAY_TIMEOUT,
                Code::Unavailable,
                "upstream registry did not answer in time",
            ),
        }
    }
}
