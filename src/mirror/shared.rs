//! The mirror over a shared index: what other replicas write reaches it through the change log.

use std::sync::Arc;

use crate::index::{Index, UnixMillis, Write, postgres::testing::TestPostgres};

const D: [&str; 3] = [
    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "sha256:2222222222222222222222222222222222222222222222222222222222222222",
    "sha256:3333333333333333333333333333333333333333333333333333333333333333",
];

#[test]
fn a_mirror_sees_what_another_replica_recorded() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let a: Arc<dyn Index> = Arc::new(crate::index::postgres::open_for_tests(&url));
    let b = crate::index::postgres::open_for_tests(&url);
    a.apply(&[Write::push("team/app", "v1", D[0], UnixMillis(1))])
        .unwrap();
    let mirror = super::Mirror::new(a.clone());
    let tags = |mirror: &super::Mirror, repository: &str| -> Vec<String> {
        let snapshot = mirror.snapshot().unwrap();
        snapshot
            .repositories
            .get(repository)
            .map(|r| r.tags.iter().map(|t| t.tag.to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(tags(&mirror, "team/app"), ["v1"]);

    b.apply(&[
        Write::push("team/app", "v2", D[1], UnixMillis(2)),
        Write::push("team/other", "x", D[2], UnixMillis(3)),
    ])
    .unwrap();
    assert_eq!(tags(&mirror, "team/app"), ["v1", "v2"]);
    assert_eq!(tags(&mirror, "team/other"), ["x"]);
    b.apply(&[Write::DeleteTag {
        repository: "team/app".into(),
        tag: "v1".into(),
        at: UnixMillis(4),
    }])
    .unwrap();
    assert_eq!(tags(&mirror, "team/app"), ["v2"]);

    // The log pruned past the copy's cursor: everything is read again, nothing missed.
    let database = url.rsplit('/').next().unwrap();
    b.apply(&[Write::push("team/app", "v3", D[2], UnixMillis(5))])
        .unwrap();
    server.sql(
        database,
        "DELETE FROM regkeeper_changes; UPDATE regkeeper_changes_pruned SET upto = 1000000",
    );
    assert_eq!(tags(&mirror, "team/app"), ["v2", "v3"]);
}
