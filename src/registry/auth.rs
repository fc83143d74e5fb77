//! Authenticating regkeeper's own requests: anonymous until the upstream asks, then Basic or the
//! Docker/OCI token flow (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`), with tokens
//! cached per scope until shortly before they expire.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine as _;
use http::HeaderValue;

/// A token is renewed this long before the expiry the token server announced.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Token servers that omit `expires_in` mean 60 s (Docker token spec).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Cached tokens beyond this are dropped (a sync touches every repository once).
const MAX_CACHED_TOKENS: usize = 4096;

/// What the upstream asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` value. Parameter values may be quoted
/// (with `\"` escapes) or bare tokens.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(name, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[derive(Default)]
struct State {
    /// The upstream asked for Basic once: send it up front from then on.
    basic: bool,
    /// Our scope → (`Authorization` value, renew after).
    tokens: HashMap<String, (HeaderValue, Instant)>,
}

/// regkeeper's identity at the upstream.
pub struct Authenticator {
    /// `Basic base64(user:password)`, when credentials are configured.
    basic: Option<HeaderValue>,
    state: Mutex<State>,
}

/// What the token endpoint answers.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Authenticator {
    pub fn new(credentials: Option<(String, String)>) -> Result<Self, String> {
        let basic = credentials
            .map(|(user, password)| {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| "the username or password holds a character HTTP cannot carry")?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(Self {
            basic,
            state: Mutex::new(State::default()),
        })
    }

    /// The `Authorization` value to send for `scope` now, if any is known.
    pub fn authorization(&self, scope: &str) -> Option<HeaderValue> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.basic {
            return self.basic.clone();
        }
        state
            .tokens
            .get(scope)
            .filter(|(_, renew)| Instant::now() < *renew)
            .map(|(value, _)| value.clone())
    }

    /// Credentials to present to a token endpoint (Basic, when configured).
    pub fn basic(&self) -> Option<HeaderValue> {
        self.basic.clone()
    }

    /// Remembers that the upstream wants Basic. Err when there is nothing to send.
    pub fn use_basic(&self) -> Result<(), String> {
        if self.basic.is_none() {
            return Err(
                "the upstream asks for a username and password; set upstream.credentials".into(),
            );
        }
        self.state.lock().unwrap_or_else(|e| e.into_inner()).basic = true;
        Ok(())
    }

    /// Stores a token answer (JSON) for `scope`.
    pub fn store_token(&self, scope: &str, answer: &[u8]) -> Result<(), String> {
        let answer: TokenAnswer = serde_json::from_slice(answer)
            .map_err(|e| format!("the token endpoint answered something else than JSON: {e}"))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or("the token endpoint's answer holds no token")?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token holds characters HTTP cannot carry")?;
        value.set_sensitive(true);
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        let renew = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.tokens.len() >= MAX_CACHED_TOKENS {
            let now = Instant::now();
            state.tokens.retain(|_, (_, renew)| now < *renew);
            if state.tokens.len() >= MAX_CACHED_TOKENS {
                state.tokens.clear();
            }
        }
        state.tokens.insert(scope.to_string(), (value, renew));
        Ok(())
    }
}

/// `realm?service=…&scope=…` for a token request.
pub fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_string();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    for (name, value) in [("service", service), ("scope", Some(scope))] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            url.push(separator);
            url.push_str(name);
            url.push('=');
            url.push_str(&super::query_escape(value));
            separator = '&';
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_quoted_bare_and_escaped_values() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://a/t, service = "x \"y\"""#),
            Some(Challenge::Bearer {
                realm: "http://a/t".into(),
                service: Some("x \"y\"".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn tokens_are_cached_per_scope_and_basic_needs_credentials() {
        let anonymous = Authenticator::new(None).unwrap();
        assert!(anonymous.use_basic().is_err());
        anonymous
            .store_token(
                "repository:a:pull",
                br#"{"access_token":"t1","expires_in":300}"#,
            )
            .unwrap();
        assert_eq!(
            anonymous.authorization("repository:a:pull").unwrap(),
            "Bearer t1"
        );
        assert!(anonymous.authorization("repository:b:pull").is_none());
        // A lifetime shorter than the margin is never reused.
        anonymous
            .store_token("repository:c:pull", br#"{"token":"t2","expires_in":5}"#)
            .unwrap();
        assert!(anonymous.authorization("repository:c:pull").is_none());
        assert!(anonymous.store_token("s", br#"{"token":""}"#).is_err());
        assert!(anonymous.store_token("s", b"<html>").is_err());

        let user = Authenticator::new(Some(("ci".into(), "pw".into()))).unwrap();
        user.use_basic().unwrap();
        assert_eq!(user.authorization("anything").unwrap(), "Basic Y2k6cHc=");
    }

    #[test]
    fn token_urls_escape_their_parameters() {
        assert_eq!(
            token_url("https://a/token", Some("reg"), "repository:team/app:pull"),
            "https://a/token?service=reg&scope=repository%3Ateam%2Fapp%3Apull"
        );
        assert_eq!(
            token_url("https://a/token?x=1", None, "registry:catalog:*"),
            "https://a/token?x=1&scope=registry%3Acatalog%3A%2A"
        );
    }
}
