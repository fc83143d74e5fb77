//! Small validated value types used by the config model: each rejects bad input while the YAML
//! is being read, so the error carries the line it came from.

use std::{fmt, str::FromStr};

use http::uri::{Authority, Scheme, Uri};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The upstream registry's base URL: `http` or `https`, a host, and no path, query or fragment
/// (registries serve the distribution API at `/v2/` of their origin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl UpstreamUrl {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host without port, for TLS server name checks.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port, explicit or implied by the scheme.
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(self.port_default())
    }

    /// The scheme's default port.
    pub fn port_default(&self) -> u16 {
        if self.is_https() { 443 } else { 80 }
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no scheme (write http://… or https://…)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("{text:?}: scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: credentials do not belong in the URL; use upstream.username/password"
            ));
        }
        let path = uri.path();
        if !(path.is_empty() || path == "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?}: give only scheme and host[:port]; the registry API lives at /v2/ of that origin"
            ));
        }
        Ok(Self { scheme, authority })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_origins() {
        let url: UpstreamUrl = "https://registry.example.com".parse().unwrap();
        assert!(url.is_https());
        assert_eq!(url.port(), 443);
        let url: UpstreamUrl = "http://127.0.0.1:5000/".parse().unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:5000");
        assert_eq!(url.port(), 5000);
    }

    #[test]
    fn rejects_what_would_silently_misroute() {
        for bad in [
            "registry.example.com",
            "ftp://x",
            "http://x/v2/",
            "http://x/?a=b",
            "http://user:pw@x",
            "",
        ] {
            assert!(
                bad.parse::<UpstreamUrl>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
