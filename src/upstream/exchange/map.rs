//! A [`Head`] as an `http::Response`, for the callers that want the fields in a `HeaderMap`
//! (hyper's server side, regkeeper's probe). The proxy's own HTTP/1.1 path passes the fields
//! on as they came and never builds one.

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use super::{ExchangeError, Head};

/// Field names remembered per thread, as the upstream spells them.
const NAMES_KEPT: usize = 32;
/// Longer names are parsed each time (nothing an upstream sends on every answer is this long).
const NAME_KEPT_UP_TO: usize = 48;

std::thread_local! {
    static NAMES: std::cell::RefCell<Vec<(Box<[u8]>, HeaderName)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The field name `bytes` spells. An upstream sends the same dozen names on every answer, and
/// parsing one (validated, lowercased, looked up among the standard names) cost more than
/// finding it among those already seen by its exact bytes; the first [`NAMES_KEPT`] names
/// seen are kept, so an upstream sending ever new names changes nothing but their speed.
pub(super) fn field_name(bytes: &[u8]) -> Result<HeaderName, ExchangeError> {
    NAMES.with_borrow_mut(|names| {
        if let Some((_, name)) = names.iter().find(|(seen, _)| **seen == *bytes) {
            return Ok(name.clone());
        }
        let name =
            HeaderName::from_bytes(bytes).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
        if names.len() < NAMES_KEPT && bytes.len() <= NAME_KEPT_UP_TO {
            names.push((bytes.into(), name.clone()));
        }
        Ok(name)
    })
}

impl Head {
    /// The status, version and fields as an `http::Response` without a body.
    pub fn to_response(&self) -> Result<Response<()>, ExchangeError> {
        let mut map = HeaderMap::with_capacity(self.fields().len());
        for (name, value) in self.fields() {
            let value = HeaderValue::from_maybe_shared(self.shared(value))
                .map_err(|e| ExchangeError::Malformed(e.to_string()))?;
            map.append(field_name(name)?, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = map;
        Ok(response)
    }
}

#[cfg(test)]
pub(super) fn names_kept() -> (usize, usize) {
    (NAMES.with_borrow(Vec::len), NAMES_KEPT)
}
