//! The names under which the upstream refers to itself (its configured authority and the
//! names it advertises), so the URLs it hands out can be recognised and pointed back at the
//! proxy.
//!
//! Owns: matching an authority against them.

/// The host names (authority form, lowercase) under which the upstream refers to itself.
#[derive(Clone, Debug)]
pub struct UpstreamNames {
    authorities: Vec<String>,
}

impl UpstreamNames {
    /// `authority` is the configured URL's `host[:port]`; `default_port` the scheme's.
    pub fn new(authority: &str, default_port: u16, advertised: &[String]) -> Self {
        let mut authorities = Vec::new();
        for name in std::iter::once(authority).chain(advertised.iter().map(String::as_str)) {
            let name = name.to_ascii_lowercase();
            // `host` and `host:<default port>` are the same origin.
            let (host, port) = split_port(&name);
            match port {
                Some(port) if port == default_port.to_string() => {
                    authorities.push(host.to_string());
                    authorities.push(name.clone());
                }
                Some(_) => authorities.push(name.clone()),
                None => {
                    authorities.push(name.clone());
                    authorities.push(format!("{name}:{default_port}"));
                }
            }
        }
        authorities.dedup();
        Self { authorities }
    }

    /// Whether `authority` is one of them (case-insensitive).
    pub fn matches(&self, authority: &str) -> bool {
        self.authorities
            .iter()
            .any(|a| a.eq_ignore_ascii_case(authority))
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        // Skip the colons inside a bracketed IPv6 literal without a port.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    }
}
