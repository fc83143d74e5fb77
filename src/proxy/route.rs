//! The one route parser: turns a request path into an [`OciRoute`] following the OCI
//! distribution spec's endpoint table and repository-name grammar. Later layers (push/pull/delete
//! taps) match on the parsed route; nothing else splits paths.
//!
//! Parsing borrows from the path and allocates nothing: it runs on every proxied request.

use std::fmt;

/// A manifest reference: a tag or a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

impl<'a> Reference<'a> {
    /// The tag or digest as the client wrote it.
    pub fn as_str(&self) -> &'a str {
        match *self {
            Reference::Tag(tag) => tag,
            Reference::Digest(digest) => digest,
        }
    }
}

impl fmt::Display for Reference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed OCI distribution API path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciRoute<'a> {
    /// `/v2/` (and `/v2`, which registries redirect).
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    TagsList { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: &'a str,
        reference: Reference<'a>,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: &'a str, digest: &'a str },
    /// `/v2/<name>/blobs/uploads/` — start an upload (or mount).
    UploadStart { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<session>` — continue, finish, query or cancel an upload.
    Upload { name: &'a str, session: &'a str },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: &'a str, digest: &'a str },
}

/// Why a path is not an OCI API route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Not under `/v2/`, or no known endpoint shape.
    NotApi,
    /// An endpoint shape with a repository name the grammar rejects.
    NameInvalid,
    /// A manifest reference that is neither a tag nor a digest.
    ReferenceInvalid,
    /// A blob or referrers path whose digest is malformed.
    DigestInvalid,
}

/// Longest repository name Distribution accepts.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

impl<'a> OciRoute<'a> {
    /// Parses `path` (without query).
    pub fn parse(path: &'a str) -> Result<Self, RouteError> {
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => return Ok(OciRoute::Base),
            Some(rest) => rest.strip_prefix('/').ok_or(RouteError::NotApi)?,
            None => return Err(RouteError::NotApi),
        };
        if rest == "_catalog" {
            return Ok(OciRoute::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(OciRoute::TagsList {
                name: name_of(name)?,
            });
        }
        // Without the slash too: some registries redirect it, and the upstream decides.
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Ok(OciRoute::UploadStart {
                name: name_of(name)?,
            });
        }
        // Every remaining shape is `<name>/<endpoint>/<last>`; `<last>` never holds a slash.
        let (head, last) = split_last(rest).ok_or(RouteError::NotApi)?;
        if last.is_empty() {
            return Err(RouteError::NotApi);
        }
        let (name, endpoint) = split_last(head).ok_or(RouteError::NotApi)?;
        match endpoint {
            "manifests" => Ok(OciRoute::Manifest {
                name: name_of(name)?,
                reference: reference_of(last)?,
            }),
            "blobs" => Ok(OciRoute::Blob {
                name: name_of(name)?,
                digest: digest_of(last)?,
            }),
            "referrers" => Ok(OciRoute::Referrers {
                name: name_of(name)?,
                digest: digest_of(last)?,
            }),
            "uploads" => {
                let name = name.strip_suffix("/blobs").ok_or(RouteError::NotApi)?;
                Ok(OciRoute::Upload {
                    name: name_of(name)?,
                    session: last,
                })
            }
            _ => Err(RouteError::NotApi),
        }
    }

    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OciRoute::Base => "base",
            OciRoute::Catalog => "catalog",
            OciRoute::TagsList { .. } => "tags",
            OciRoute::Manifest { .. } => "manifest",
            OciRoute::Blob { .. } => "blob",
            OciRoute::UploadStart { .. } | OciRoute::Upload { .. } => "upload",
            OciRoute::Referrers { .. } => "referrers",
        }
    }

    /// The repository the route addresses, if any.
    pub fn repository(&self) -> Option<&'a str> {
        match *self {
            OciRoute::Base | OciRoute::Catalog => None,
            OciRoute::TagsList { name }
            | OciRoute::Manifest { name, .. }
            | OciRoute::Blob { name, .. }
            | OciRoute::UploadStart { name }
            | OciRoute::Upload { name, .. }
            | OciRoute::Referrers { name, .. } => Some(name),
        }
    }
}

/// `path` split at its last `/` (a byte search: `str::rsplit_once` with a `char` pattern
/// decodes characters, and the route is parsed on every request).
fn split_last(path: &str) -> Option<(&str, &str)> {
    let at = path.bytes().rposition(|b| b == b'/')?;
    Some((&path[..at], &path[at + 1..]))
}

fn name_of(name: &str) -> Result<&str, RouteError> {
    if is_valid_repository_name(name) {
        Ok(name)
    } else {
        Err(RouteError::NameInvalid)
    }
}

fn reference_of(last: &str) -> Result<Reference<'_>, RouteError> {
    if last.contains(':') {
        digest_of(last).map(Reference::Digest)
    } else if is_valid_tag(last) {
        Ok(Reference::Tag(last))
    } else {
        Err(RouteError::ReferenceInvalid)
    }
}

fn digest_of(last: &str) -> Result<&str, RouteError> {
    if is_valid_digest(last) {
        Ok(last)
    } else {
        Err(RouteError::DigestInvalid)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
pub fn is_valid_repository_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(is_valid_path_component)
}

fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One alphanumeric run.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: `.`, `_`, `__` or a run of `-`.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(&bytes[0])
        && bytes[1..]
            .iter()
            .all(|b| word(b) || *b == b'.' || *b == b'-')
}

/// `algorithm ":" encoded` with algorithm `[a-z0-9]+([+._-][a-z0-9]+)*` and encoded
/// `[a-zA-Z0-9=_-]+`.
pub fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
    algorithm_ok && encoded_ok
}

/// A digest of content as regkeeper stores it: `sha256:` + 64 or `sha512:` + 128 lowercase hex
/// digits (the grammar above also admits algorithms and lengths no registry produces).
pub fn is_content_digest(digest: &str) -> bool {
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match digest.split_once(':') {
        Some(("sha256", encoded)) => hex(encoded, 64),
        Some(("sha512", encoded)) => hex(encoded, 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
