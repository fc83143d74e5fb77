//! The OCI error catalogue and its one rendering: `{"errors":[{"code","message","detail"}]}`.
//!
//! Every layer's error enum maps into an [`OciError`] here; nothing else builds error bodies.
//! Internal causes are logged by the caller and never leak into `detail`.
//!
//! May call: nothing.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Codes from the OCI distribution spec, plus Distribution's `UNAVAILABLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    DigestInvalid,
    ManifestUnknown,
    ManifestInvalid,
    NameInvalid,
    NameUnknown,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
}

impl OciErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One error as a client sees it.
#[derive(Clone, Debug)]
pub struct OciError {
    pub status: StatusCode,
    pub code: OciErrorCode,
    pub message: String,
}

impl OciError {
    pub fn new(status: StatusCode, code: OciErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        Bytes::from(body.to_string())
    }

    /// The HTTP response, with the distribution API version header registries send.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = self.body();
        let mut response = Response::new(B::from(body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_spec_shape() {
        let error = OciError::new(
            StatusCode::BAD_GATEWAY,
            OciErrorCode::Unavailable,
            "upstream registry unreachable",
        );
        let response: Response<Bytes> = error.into_response();
        assert_eq!(response.status(), 502);
        let value: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(value["errors"][0]["code"], "UNAVAILABLE");
        assert_eq!(
            value["errors"][0]["message"],
            "upstream registry unreachable"
        );
        assert_eq!(
            response.headers()["content-length"],
            response.body().len().to_string().as_str()
        );
    }
}
