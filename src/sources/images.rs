//! Image references as workloads write them (`registry.example.com:5000/team/app:1.2`,
//! `team/app@sha256:…`, `docker-pullable://…@sha256:…`) resolved to a repository of this
//! registry and a tag or digest — or to nothing when they name another registry.

use crate::policy::ImageRef;

/// The registry a reference without a host means (Docker's default).
const DEFAULT_REGISTRY: &str = "docker.io";

/// Turns workload image strings into (repository, tag or digest) for the registry known by
/// `hosts` (host[:port] names, compared case-insensitively).
#[derive(Clone, Debug)]
pub struct ImageMatcher {
    hosts: Vec<String>,
}

impl ImageMatcher {
    pub fn new(hosts: &[String]) -> Self {
        Self {
            hosts: hosts.iter().map(|h| normalize_host(h)).collect(),
        }
    }

    /// `None` when the reference names another registry or is not a reference at all.
    pub fn resolve(&self, reference: &str) -> Option<(String, ImageRef)> {
        let reference = reference
            .trim()
            .trim_start_matches("docker-pullable://")
            .trim_start_matches("docker://");
        if reference.is_empty() || reference.starts_with("sha256:") {
            return None;
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
            None => (name, None),
        };
        let (host, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (normalize_host(first), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !self.hosts.contains(&host) {
            return None;
        }
        let path = if host == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let path = path.to_ascii_lowercase();
        let image = match (digest, tag) {
            (Some(digest), _) if digest.contains(':') => ImageRef::Digest(digest.to_string()),
            (Some(_), _) => return None,
            (None, Some(tag)) if !tag.is_empty() => ImageRef::Tag(tag.to_string()),
            (None, _) => ImageRef::Tag("latest".into()),
        };
        Some((path, image))
    }
}

/// One spelling per registry host, on both sides (configured hosts and workload references):
/// case folded, a scheme dropped, the fully-qualified trailing dot dropped, and the default
/// port dropped — 443 and 80 both, since a reference alone does not say whether the
/// registry is plain HTTP, and matching one spelling too many only keeps more.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/').to_ascii_lowercase();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(&host);
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port; `[::1]:443` has one after the bracket.
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let name = name.trim_end_matches('.');
    let host = match port {
        Some("443" | "80") | None => name.to_string(),
        Some(port) => format!("{name}:{port}"),
    };
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_resolve_through_host_aliases() {
        let matcher = ImageMatcher::new(&[
            "registry.example.com".into(),
            "127.0.0.1:5050".into(),
            "docker.io".into(),
        ]);
        let tag = |t: &str| ImageRef::Tag(t.into());
        assert_eq!(
            matcher.resolve("registry.example.com/team/app:1.2"),
            Some(("team/app".into(), tag("1.2")))
        );
        assert_eq!(
            matcher.resolve("Registry.Example.com/team/app"),
            Some(("team/app".into(), tag("latest")))
        );
        assert_eq!(
            matcher.resolve(
                "127.0.0.1:5050/team/app:v1@"
                    .to_owned()
                    .trim_end_matches('@')
            ),
            Some(("team/app".into(), tag("v1")))
        );
        assert_eq!(
            matcher.resolve(&format!(
                "docker-pullable://registry.example.com/team/app@{D}"
            )),
            Some(("team/app".into(), ImageRef::Digest(D.into())))
        );
        assert_eq!(
            matcher.resolve(&format!("registry.example.com/team/app:1.2@{D}")),
            Some(("team/app".into(), ImageRef::Digest(D.into()))),
            "a digest wins over the tag"
        );
        assert_eq!(
            matcher.resolve("nginx:1.25"),
            Some(("library/nginx".into(), tag("1.25")))
        );
        assert_eq!(matcher.resolve("ghcr.io/acme/app:1"), None);
        assert_eq!(matcher.resolve(D), None);
        assert_eq!(matcher.resolve(""), None);
        // Other spellings of the same host: a trailing dot, the default port, any case.
        for spelling in [
            "registry.example.com:443/team/app:v1",
            "registry.example.com./team/app:v1",
            "REGISTRY.example.com.:443/team/app:v1",
            "registry.example.com:80/team/app:v1",
        ] {
            assert_eq!(
                matcher.resolve(spelling),
                Some(("team/app".into(), tag("v1"))),
                "{spelling}"
            );
        }
        assert_eq!(
            matcher.resolve("registry.example.com:8443/team/app:v1"),
            None
        );
        let configured = ImageMatcher::new(&["https://Registry.Example.com.:443".into()]);
        assert_eq!(
            configured.resolve("registry.example.com/team/app:v1"),
            Some(("team/app".into(), tag("v1")))
        );
        let v6 = ImageMatcher::new(&["[::1]:443".into()]);
        assert_eq!(
            v6.resolve("[::1]/team/app:v1"),
            Some(("team/app".into(), tag("v1")))
        );
        let private = ImageMatcher::new(&["localhost:5000".into()]);
        assert_eq!(
            private.resolve("localhost:5000/app:2"),
            Some(("app".into(), tag("2")))
        );
    }
}
