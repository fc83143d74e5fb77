//! The proxy layer's errors and the one place they become OCI responses.

use http::StatusCode;

use super::{body::BodyError, route::RouteError};
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
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientIdle(std::time::Duration),
    #[error("the client's request body failed: {0}")]
    ClientIo(String),
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
    /// A failed upstream exchange, blamed on the side that caused it: a request body the
    /// client broke or stopped sending fails the upstream call too, but it is the client's.
    pub fn from_send(error: UpstreamError) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = source {
            match current.downcast_ref::<BodyError>() {
                Some(BodyError::ClientIdle(idle)) => return Self::ClientIdle(*idle),
                Some(BodyError::ClientIo(io)) => return Self::ClientIo(io.to_string()),
                _ => source = current.source(),
            }
        }
        Self::Upstream(error)
    }

    /// The client caused it (counted as `client_errors`, not `upstream_errors`).
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::ClientIdle(_) | Self::ClientIo(_))
    }

    /// A short stable label for logs and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::NotApi => "not-api",
            Self::NameInvalid => "name-invalid",
            Self::ReferenceInvalid => "reference-invalid",
            Self::DigestInvalid => "digest-invalid",
            Self::Upstream(UpstreamError::Connect(_)) => "connect",
            Self::Upstream(UpstreamError::Send(_) | UpstreamError::Exchange(_)) => "upstream-io",
            Self::UpstreamTimeout(_) => "timeout",
            Self::ClientIdle(_) => "client-idle",
            Self::ClientIo(_) => "client-io",
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
            Self::ClientIdle(_) => OciError::new(
                StatusCode::REQUEST_TIMEOUT,
                Code::BlobUploadInvalid,
                "the request body stopped arriving",
            ),
            Self::ClientIo(_) => OciError::new(
                StatusCode::BAD_REQUEST,
                Code::BlobUploadInvalid,
                "the request body could not be read",
            ),
        }
    }
}
