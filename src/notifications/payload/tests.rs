use super::*;

const NOW: UnixMillis = UnixMillis(1_900_000_000_000);
const OWN: &str = "regkeeper/0.1.0 (id=00112233445566778899aabbccddeeff)";
const DIGEST: &str = "sha256:5ae06c26b0e9bd7c1e5d1a1c43dd6aeb7ee1c9e1c0a0f3a4e1b4b83fd2b8c6a1";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/notifications/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn a_distribution_envelope_reads_manifest_events_and_skips_blobs() {
    let delivery = read(&fixture("distribution.json"), NOW, OWN).unwrap();
    // The layer push and the blob mount have nothing to record.
    assert_eq!(delivery.skipped, 2);
    let notices: Vec<&Notice> = delivery.events.iter().map(|e| &e.notice).collect();
    assert_eq!(
        notices,
        [
            &Notice::Push {
                repository: "team/app".into(),
                digest: DIGEST.into(),
                tag: Some("build-42".into()),
                at: UnixMillis(1_796_083_201_000),
            },
            &Notice::Pull {
                repository: "team/app".into(),
                reference: "build-42".into(),
                at: UnixMillis(1_796_083_202_000),
            },
            &Notice::Delete {
                repository: "team/app".into(),
                target: Deleted::Digest(
                    "sha256:1111111111111111111111111111111111111111111111111111111111111111"
                        .into()
                ),
                at: UnixMillis(1_796_083_204_000),
            },
            &Notice::Delete {
                repository: "team/app".into(),
                target: Deleted::Tag("old".into()),
                at: UnixMillis(1_796_083_205_000),
            },
        ]
    );
    assert_eq!(
        delivery.events[0].id,
        "5a1b2c3d-0000-4000-8000-000000000001"
    );
}

#[test]
fn harbor_webhooks_read_as_the_same_notices() {
    let push = read(&fixture("harbor-push.json"), NOW, OWN).unwrap();
    assert_eq!(
        push.events[0].notice,
        Notice::Push {
            repository: "team/app".into(),
            digest: DIGEST.into(),
            tag: Some("build-42".into()),
            at: UnixMillis(1_764_547_200_000),
        }
    );
    let pull = read(&fixture("harbor-pull.json"), NOW, OWN).unwrap();
    assert!(matches!(
        &pull.events[0].notice,
        Notice::Pull { reference, .. } if reference == "build-42"
    ));
    let delete = read(&fixture("harbor-delete.json"), NOW, OWN).unwrap();
    assert!(matches!(
        &delete.events[0].notice,
        Notice::Delete { target: Deleted::Digest(d), .. } if d == DIGEST
    ));
    let scan = read(&fixture("harbor-scan.json"), NOW, OWN).unwrap();
    assert!(scan.events.is_empty());
    assert_eq!(scan.skipped, 1);
    // The same body delivered again is named the same; another body is not.
    assert_eq!(
        read(&fixture("harbor-push.json"), NOW, OWN).unwrap().events[0].id,
        push.events[0].id
    );
    assert_ne!(push.events[0].id, pull.events[0].id);
}

#[test]
fn a_time_in_the_future_is_now() {
    let body = br#"{"events":[{"id":"x","timestamp":"2999-01-01T00:00:00Z","action":"pull",
        "target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b",
        "digest":"sha256:5ae06c26b0e9bd7c1e5d1a1c43dd6aeb7ee1c9e1c0a0f3a4e1b4b83fd2b8c6a1"}}]}"#;
    let delivery = read(body, NOW, OWN).unwrap();
    assert!(matches!(delivery.events[0].notice, Notice::Pull { at, .. } if at == NOW));
}

#[test]
fn bad_events_refuse_the_delivery_with_the_reason() {
    let event = |target: &str| {
        format!(
            r#"{{"events":[{{"id":"1","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json",{target}}}}}]}}"#
        )
    };
    let cases = [
        (
            event(
                r#""repository":"../etc","digest":"sha256:5ae06c26b0e9bd7c1e5d1a1c43dd6aeb7ee1c9e1c0a0f3a4e1b4b83fd2b8c6a1""#,
            ),
            "invalid repository name",
        ),
        (
            event(r#""repository":"a/b","digest":"sha256:abc""#),
            "invalid digest",
        ),
        (event(r#""repository":"a/b""#), "names no digest"),
        (
            event(
                r#""repository":"a/b","tag":"-bad","digest":"sha256:5ae06c26b0e9bd7c1e5d1a1c43dd6aeb7ee1c9e1c0a0f3a4e1b4b83fd2b8c6a1""#,
            ),
            "invalid tag",
        ),
        ("not json".to_string(), "bad JSON"),
        (r#"{"hello":1}"#.to_string(), "neither"),
        (r#"{"events":[{"id":"1"}]}"#.to_string(), "bad JSON"),
    ];
    for (body, reason) in cases {
        let error = read(body.as_bytes(), NOW, OWN).unwrap_err().to_string();
        assert!(error.contains(reason), "{body}: {error}");
    }
}

#[test]
fn regkeepers_own_reads_are_not_pulls() {
    let pull = |agent: &str| {
        format!(
            r#"{{"events":[{{"id":"1","action":"pull","request":{{"useragent":"{agent}"}},"target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"v1","digest":"{DIGEST}"}}}}]}}"#
        )
    };
    let own = read(pull(OWN).as_bytes(), NOW, OWN).unwrap();
    assert!(own.events.is_empty());
    assert_eq!(own.skipped, 1);
    // Another client calling itself regkeeper is still a pull.
    let other = read(pull("regkeeper/0.1.0").as_bytes(), NOW, OWN).unwrap();
    assert_eq!(other.events.len(), 1);
}
