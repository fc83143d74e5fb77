//! Header handling between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1) and the
//! rewrite of absolute `Location`/`Link` URLs that name the upstream into the proxy's address.

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{
        CONNECTION, EXPECT, LINK, LOCATION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
        TRANSFER_ENCODING, UPGRADE,
    },
};

use crate::upstream::{ConnectionOption, UpstreamNames, connection_options};

/// Whether `name` is hop-by-hop, or `expect` (answered by the proxy's own server side; forwarding
/// it would make the upstream wait for a continue that the client already got).
/// The headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `expect`
/// (hyper answers it towards the client itself).
const HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    TRANSFER_ENCODING,
    TE,
    TRAILER,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    EXPECT,
];

/// Whether the field `name` (as written, any case) is one of [`HOP_BY_HOP`]: for the heads the
/// proxy passes on as bytes.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    hop_by_hop_position(name).is_some()
}

/// `name`'s place in [`HOP_BY_HOP`].
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    hop_by_hop_position(name.as_str().as_bytes())
}

/// The place in [`HOP_BY_HOP`] of the name `name` spells in any case.
fn hop_by_hop_position(name: &[u8]) -> Option<usize> {
    // Their lengths: most end-to-end names (`date`, `content-type`, `docker-content-digest`)
    // are told apart without looking at a byte.
    if !matches!(name.len(), 2 | 6 | 7 | 10 | 16..=19) {
        return None;
    }
    let mut lower = [0u8; 19];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let position = match &*lower {
        b"connection" => 0,
        b"transfer-encoding" => 1,
        b"te" => 2,
        b"trailer" => 3,
        b"upgrade" => 4,
        b"proxy-authorization" => 5,
        b"proxy-authenticate" => 6,
        b"keep-alive" => 7,
        b"proxy-connection" => 8,
        b"expect" => 9,
        _ => return None,
    };
    Some(position)
}

/// Removes the hop-by-hop headers and those the `Connection` header names. Runs twice per
/// proxied request, and nearly every message carries just `Connection: keep-alive`: one pass
/// over the names finds them, and the usual `Connection` values parse no header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = 0u16;
    for name in headers.keys() {
        if let Some(position) = hop_by_hop(name) {
            found |= 1 << position;
        }
    }
    if found == 0 {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| connection_options(value.as_bytes()))
        .filter_map(|option| match option {
            ConnectionOption::Names(name) => HeaderName::from_bytes(name).ok(),
            _ => None,
        })
        .collect();
    for (position, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << position) != 0 {
            headers.remove(name);
        }
    }
    for name in listed {
        headers.remove(name);
    }
}

pub fn rewrite_upstream_urls(headers: &mut HeaderMap, names: &UpstreamNames, client_origin: &str) {
    if let Some(value) = headers.get(LOCATION).and_then(|v| v.to_str().ok())
        && let Some(rewritten) = rewrite_url(value, names, client_origin)
        && let Ok(value) = HeaderValue::try_from(rewritten)
    {
        headers.insert(LOCATION, value);
    }
    if headers.contains_key(LINK) {
        let links: Vec<HeaderValue> = headers
            .get_all(LINK)
            .iter()
            .map(|value| rewrite_link(value, names, client_origin))
            .collect();
        headers.remove(LINK);
        for link in links {
            headers.append(LINK, link);
        }
    }
}

/// An absolute `url` that names the upstream, pointed at `client_origin` (path and query
/// kept); `None` for a relative URL or one naming another host.
pub fn rewrite_url(url: &str, names: &UpstreamNames, client_origin: &str) -> Option<String> {
    let (_, after_scheme) = url.split_once("://")?;
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(authority_end);
    names
        .matches(authority)
        .then(|| format!("{client_origin}{rest}"))
}

/// `<url>; rel="next", <url2>; ...` — only the URLs inside angle brackets change.
fn rewrite_link(value: &HeaderValue, names: &UpstreamNames, client_origin: &str) -> HeaderValue {
    value
        .to_str()
        .ok()
        .and_then(|text| rewrite_links(text, names, client_origin))
        .and_then(|out| HeaderValue::try_from(out).ok())
        .unwrap_or_else(|| value.clone())
}

/// A `Link` value with the upstream's URLs inside angle brackets pointed at the proxy; `None`
/// when none of them names the upstream.
pub fn rewrite_links(text: &str, names: &UpstreamNames, client_origin: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let url = &rest[open + 1..open + close];
        out.push_str(&rest[..=open]);
        match rewrite_url(url, names, client_origin) {
            Some(rewritten) => {
                out.push_str(&rewritten);
                changed = true;
            }
            None => out.push_str(url),
        }
        out.push('>');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> UpstreamNames {
        UpstreamNames::new("127.0.0.1:5000", 80, &["registry.example.com".to_string()])
    }

    #[test]
    fn each_hop_by_hop_name_is_found_at_its_place_in_any_case() {
        for (place, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(place));
            let upper = name.as_str().to_ascii_uppercase();
            assert!(is_hop_by_hop(upper.as_bytes()), "{upper}");
        }
        for other in ["content-length", "host", "x-proxy-authorization-2", "", "t"] {
            assert!(!is_hop_by_hop(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("expect", "100-continue"),
            ("authorization", "Bearer abc"),
            ("content-length", "42"),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-length"]);
    }

    #[test]
    fn the_usual_connection_values_name_no_header_and_others_still_go() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("Keep-Alive"));
        headers.append(CONNECTION, HeaderValue::from_static("close, X-Private"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);

        let mut plain = HeaderMap::new();
        plain.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn rewrites_upstream_location_only() {
        let cases = [
            (
                "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x",
                "https://proxy:8443/v2/a/blobs/uploads/u1?_state=x",
            ),
            (
                "https://registry.example.com/v2/a/blobs/uploads/u1",
                "https://proxy:8443/v2/a/blobs/uploads/u1",
            ),
            (
                "https://registry.example.com:443/v2/x",
                "https://proxy:8443/v2/x",
            ),
            ("/v2/a/blobs/uploads/u1", "/v2/a/blobs/uploads/u1"),
            (
                "https://cdn.example.net/blob?sig=1",
                "https://cdn.example.net/blob?sig=1",
            ),
        ];
        let names = UpstreamNames::new("127.0.0.1:5000", 80, &["registry.example.com".into()]);
        let names_https = UpstreamNames::new("registry.example.com", 443, &[]);
        for (from, to) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(LOCATION, HeaderValue::from_str(from).unwrap());
            rewrite_upstream_urls(&mut headers, &names, "https://proxy:8443");
            rewrite_upstream_urls(&mut headers, &names_https, "https://proxy:8443");
            assert_eq!(headers[LOCATION], to, "{from}");
        }
    }

    #[test]
    fn rewrites_urls_inside_link_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"<http://127.0.0.1:5000/v2/_catalog?last=b&n=1>; rel="next""#,
            ),
        );
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</v2/_catalog?last=c&n=1>; rel="next""#),
        );
        rewrite_upstream_urls(&mut headers, &names(), "http://127.0.0.1:6000");
        let links: Vec<&str> = headers
            .get_all(LINK)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            links,
            [
                r#"<http://127.0.0.1:6000/v2/_catalog?last=b&n=1>; rel="next""#,
                r#"</v2/_catalog?last=c&n=1>; rel="next""#
            ]
        );
    }

    #[test]
    fn malformed_values_pass_unchanged() {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, HeaderValue::from_static("<http://127.0.0.1:5000/x"));
        headers.insert(LOCATION, HeaderValue::from_static("http://"));
        rewrite_upstream_urls(&mut headers, &names(), "http://p");
        assert_eq!(headers[LINK], "<http://127.0.0.1:5000/x");
        assert_eq!(headers[LOCATION], "http://");
    }
}
