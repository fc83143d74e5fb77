//! Header handling between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1) and the
//! rewrite of absolute `Location`/`Link` URLs that name the upstream into the proxy's address.

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{CONNECTION, LINK, LOCATION},
};

use crate::upstream::UpstreamNames;

/// Whether `name` is hop-by-hop, or `expect` (answered by the proxy's own server side; forwarding
/// it would make the upstream wait for a continue that the client already got).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "keep-alive"
            | "proxy-connection"
            | "expect"
    )
}

/// Removes hop-by-hop headers, including any the `Connection` header lists. One pass over the
/// names, removing only what is there: most messages carry none, and this runs twice per request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    doomed.extend(
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// Rewrites `Location` and `Link` values that point at the upstream so they point at
/// `client_origin` (`scheme://host[:port]` as the client addressed the proxy). Relative URLs and
/// URLs of other hosts (a token realm, a CDN redirect for blobs) are left alone.
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

fn rewrite_url(url: &str, names: &UpstreamNames, client_origin: &str) -> Option<String> {
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
    let Ok(text) = value.to_str() else {
        return value.clone();
    };
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
    if !changed {
        return value.clone();
    }
    HeaderValue::try_from(out).unwrap_or_else(|_| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> UpstreamNames {
        UpstreamNames::new("127.0.0.1:5000", 80, &["registry.example.com".to_string()])
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
