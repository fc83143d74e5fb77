use super::*;

const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

#[test]
fn parses_every_endpoint_shape() {
    let manifest_by_digest = format!("/v2/team/app/manifests/{DIGEST}");
    let blob = format!("/v2/team/app/blobs/{DIGEST}");
    let referrers = format!("/v2/a/referrers/{DIGEST}");
    let cases: Vec<(&str, OciRoute)> = vec![
        ("/v2/", OciRoute::Base),
        ("/v2", OciRoute::Base),
        ("/v2/_catalog", OciRoute::Catalog),
        (
            "/v2/team/app/tags/list",
            OciRoute::TagsList { name: "team/app" },
        ),
        (
            "/v2/team/app/manifests/v1.2.3",
            OciRoute::Manifest {
                name: "team/app",
                reference: Reference::Tag("v1.2.3"),
            },
        ),
        (
            &manifest_by_digest,
            OciRoute::Manifest {
                name: "team/app",
                reference: Reference::Digest(DIGEST),
            },
        ),
        (
            &blob,
            OciRoute::Blob {
                name: "team/app",
                digest: DIGEST,
            },
        ),
        (
            "/v2/team/app/blobs/uploads/",
            OciRoute::UploadStart { name: "team/app" },
        ),
        (
            "/v2/team/app/blobs/uploads/0d6c-4f1e",
            OciRoute::Upload {
                name: "team/app",
                session: "0d6c-4f1e",
            },
        ),
        (
            &referrers,
            OciRoute::Referrers {
                name: "a",
                digest: DIGEST,
            },
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(OciRoute::parse(path), Ok(expected), "{path}");
    }
}

#[test]
fn endpoint_words_may_be_name_components() {
    // Distribution's regex router accepts these: the endpoint is decided from the right.
    assert_eq!(
        OciRoute::parse("/v2/blobs/manifests/manifests/latest"),
        Ok(OciRoute::Manifest {
            name: "blobs/manifests",
            reference: Reference::Tag("latest")
        })
    );
    assert_eq!(
        OciRoute::parse("/v2/tags/list/tags/list"),
        Ok(OciRoute::TagsList { name: "tags/list" })
    );
    assert_eq!(
        OciRoute::parse("/v2/app/blobs/uploads"),
        Ok(OciRoute::UploadStart { name: "app" })
    );
    assert_eq!(
        OciRoute::parse("/v2/uploads/blobs/uploads/"),
        Ok(OciRoute::UploadStart { name: "uploads" })
    );
}

#[test]
fn rejects_non_api_paths() {
    for path in [
        "/",
        "/v1/",
        "/v2x",
        "/api/v2.0/projects",
        "/v2/app",
        "/v2/app/unknown/x",
        "/v2/app/manifests/",
    ] {
        assert_eq!(OciRoute::parse(path), Err(RouteError::NotApi), "{path}");
    }
}

#[test]
fn applies_the_name_grammar() {
    for good in [
        "a",
        "a/b/c",
        "a.b",
        "a_b",
        "a__b",
        "a---b",
        "0",
        "my-org/my.app_v2",
    ] {
        assert!(is_valid_repository_name(good), "{good}");
    }
    let long = "a".repeat(256);
    for bad in [
        "", "A", "a/", "/a", "a//b", "a_", "_a", "a___b", "a.-b", "a..b", "a b", "a%2fb", &long,
    ] {
        assert!(!is_valid_repository_name(bad), "{bad}");
    }
    assert_eq!(
        OciRoute::parse("/v2/Team/manifests/x"),
        Err(RouteError::NameInvalid)
    );
}

#[test]
fn applies_tag_and_digest_grammar() {
    assert!(is_valid_tag("latest"));
    assert!(is_valid_tag("_x"));
    assert!(is_valid_tag(&"a".repeat(128)));
    assert!(!is_valid_tag(&"a".repeat(129)));
    assert!(!is_valid_tag(".x"));
    assert!(!is_valid_tag("-x"));
    assert!(is_valid_digest(DIGEST));
    assert!(is_valid_digest(
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"
    ));
    assert!(!is_valid_digest("sha256:"));
    assert!(!is_valid_digest(":abc"));
    assert!(!is_valid_digest("SHA256:abc"));
    assert_eq!(
        OciRoute::parse("/v2/a/manifests/bad:"),
        Err(RouteError::DigestInvalid)
    );
    assert_eq!(
        OciRoute::parse("/v2/a/manifests/.bad"),
        Err(RouteError::ReferenceInvalid)
    );
    assert_eq!(
        OciRoute::parse("/v2/a/blobs/nodigest"),
        Err(RouteError::DigestInvalid)
    );
}

#[test]
fn reports_kind_and_repository() {
    let route = OciRoute::parse("/v2/team/app/blobs/uploads/").unwrap();
    assert_eq!(route.kind(), "upload");
    assert_eq!(route.repository(), Some("team/app"));
    assert_eq!(OciRoute::Catalog.repository(), None);
}

#[test]
fn only_content_digests_are_content_digests() {
    let good = format!("sha256:{}", "ab".repeat(32));
    assert!(is_content_digest(&good));
    assert!(is_valid_digest("sha256:0000"), "the grammar admits it");
    for bad in ["sha256:0000", "sha256:", "md5:abc", &good.to_uppercase()] {
        assert!(!is_content_digest(bad), "{bad}");
    }
}
