//! What only a shared engine has to get right: several writers (replicas) at once, and the
//! schema's versions. Against a real PostgreSQL.

use std::{sync::Arc, thread};

use super::{testing::TestPostgres, *};
use crate::index::{
    Index, PgIndex, UnixMillis, Write,
    conformance::manifest,
    kv::{KvRead, KvStore},
    open_postgres,
};

const D: [&str; 3] = [
    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "sha256:2222222222222222222222222222222222222222222222222222222222222222",
    "sha256:3333333333333333333333333333333333333333333333333333333333333333",
];

#[test]
fn prefix_ends_are_the_next_key_after_the_range() {
    assert_eq!(prefix_end(b"t"), Some(b"u".to_vec()));
    assert_eq!(prefix_end(b"ta\0"), Some(b"ta\x01".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

#[test]
fn a_batchs_writes_go_in_key_order_with_the_last_write_of_a_key() {
    let write = |key: &[u8], value: Option<&[u8]>| (key.to_vec(), value.map(<[u8]>::to_vec));
    let writes = vec![
        write(b"b", Some(b"1")),
        write(b"a", Some(b"1")),
        write(b"b", None),
        write(b"c", Some(b"1")),
        write(b"b", Some(b"3")),
        write(b"c", None),
    ];
    assert_eq!(
        commit::in_key_order(writes),
        [
            write(b"a", Some(b"1")),
            write(b"b", Some(b"3")),
            write(b"c", None)
        ]
    );
}

/// Three replicas each hand over pull counts for the same tag, many times, all at once: every
/// pull is counted once.
#[test]
fn pull_tallies_from_three_replicas_add_up() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let replicas: Vec<Arc<PgIndex>> = (0..3).map(|_| Arc::new(open_for_tests(&url))).collect();
    let rounds = 60u64;
    let writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(n, index)| {
            let index = index.clone();
            thread::spawn(move || {
                for round in 0..rounds {
                    index
                        .apply(&[Write::RecordPulls {
                            repository: "team/app".into(),
                            reference: "latest".into(),
                            count: n as u64 + 1,
                            last: UnixMillis(round),
                        }])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let stats = replicas[0].pulls("team/app", "latest").unwrap().unwrap();
    assert_eq!(stats.count, rounds * (1 + 2 + 3));
    assert_eq!(stats.last_pulled, UnixMillis(rounds - 1));
}

/// Two replicas record pushes of the same tag at once, each to its own digests: the tag ends
/// on one of them and its history holds every other push, none lost to the race.
#[test]
fn two_writers_recording_the_same_tag_lose_no_history() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let (a, b) = (
        Arc::new(open_for_tests(&url)),
        Arc::new(open_for_tests(&url)),
    );
    let pushes = 40u64;
    // Every push its own digest: each must leave one trace, the tag's digest or a history entry.
    let digest = |writer: u64, n: u64| format!("sha256:{:064x}", writer << 32 | n);
    let writer = |index: Arc<PgIndex>, id: u64, offset: u64| {
        thread::spawn(move || {
            for n in 0..pushes {
                let digest = digest(id, n);
                let at = UnixMillis(offset + n * 2);
                index
                    .apply(&[
                        Write::PutManifest(manifest("team/app", &digest)),
                        Write::push("team/app", "v1", digest.as_str(), at),
                    ])
                    .unwrap();
            }
        })
    };
    let first = writer(a.clone(), 1, 1000);
    let second = writer(b.clone(), 2, 1001);
    first.join().unwrap();
    second.join().unwrap();
    let tag = a.tag("team/app", "v1").unwrap().unwrap();
    // Serial application: consecutive entries differ, and no push was lost to the race.
    assert!(!tag.history.is_empty());
    for pair in tag.history.windows(2) {
        assert_ne!(pair[0].digest, pair[1].digest, "{:?}", tag.history);
    }
    assert_ne!(tag.history.last().unwrap().digest, tag.digest);
    let mut seen: Vec<String> = tag.history.iter().map(|h| h.digest.clone()).collect();
    seen.push(tag.digest.clone());
    seen.sort();
    let mut pushed: Vec<String> = (0..pushes)
        .flat_map(|n| [digest(1, n), digest(2, n)])
        .collect();
    pushed.sort();
    assert_eq!(seen, pushed, "every push left its trace");
    assert_eq!(tag.last_pushed, UnixMillis(1001 + (pushes - 1) * 2));
    // The first to commit created the tag.
    assert!([UnixMillis(1000), UnixMillis(1001)].contains(&tag.first_pushed));
    assert_eq!(b.tag("team/app", "v1").unwrap(), Some(tag));
}

/// A delete of a digest racing pushes of a tag to it: whichever commits second sees the first,
/// so the index never keeps a tag pointing to a manifest it deleted, nor a manifest whose push
/// it lost.
#[test]
fn a_delete_racing_a_push_leaves_one_of_the_two_orders() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let (a, b) = (
        Arc::new(open_for_tests(&url)),
        Arc::new(open_for_tests(&url)),
    );
    for round in 0..30 {
        let tag = format!("t{round}");
        a.apply(&[
            Write::PutManifest(manifest("team/app", D[1])),
            Write::push("team/app", "old", D[1], UnixMillis(1)),
        ])
        .unwrap();
        let deleter = {
            let a = a.clone();
            thread::spawn(move || {
                a.apply(&[Write::DeleteManifest {
                    repository: "team/app".into(),
                    digest: D[1].into(),
                }])
                .unwrap()
            })
        };
        let pusher = {
            let (b, tag) = (b.clone(), tag.clone());
            thread::spawn(move || {
                b.apply(&[
                    Write::PutManifest(manifest("team/app", D[1])),
                    Write::push("team/app", &tag, D[1], UnixMillis(2)),
                ])
                .unwrap()
            })
        };
        deleter.join().unwrap();
        pusher.join().unwrap();
        let manifest = a.manifest("team/app", D[1]).unwrap();
        let pushed = a.tag("team/app", &tag).unwrap();
        let old = a.tag("team/app", "old").unwrap();
        match manifest {
            // The push came second: its manifest and tag are there.
            Some(_) => assert!(pushed.is_some(), "round {round}: manifest without its push"),
            // The delete came second: no tag points to what it deleted.
            None => assert!(
                pushed.is_none() && old.is_none(),
                "round {round}: a tag points to a deleted manifest"
            ),
        }
    }
}

#[test]
fn a_database_a_newer_regkeeper_migrated_is_refused_and_left_alone() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    drop(open_for_tests(&url));
    let database = url.rsplit('/').next().unwrap();
    server.sql(
        database,
        "INSERT INTO regkeeper_migrations (version) VALUES (999)",
    );
    let refused = open_postgres(&PgOptions {
        url: url.clone(),
        password: None,
        tls: Arc::new(testing_tls()),
        connections: 2,
        connect_timeout: std::time::Duration::from_secs(10),
    });
    let error = refused
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(error.contains("newer regkeeper"), "{error}");
    assert_eq!(
        server
            .sql(database, "SELECT max(version) FROM regkeeper_migrations")
            .trim(),
        "999"
    );
}

/// Replicas starting together on an empty database: one migrates, the others wait for it and
/// find the schema in place.
#[test]
fn replicas_starting_together_migrate_once() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let starters: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                open_for_tests(&url)
                    .apply(&[Write::push("team/app", "v1", D[0], UnixMillis(1))])
                    .unwrap();
            })
        })
        .collect();
    for starter in starters {
        starter.join().unwrap();
    }
    let database = url.rsplit('/').next().unwrap();
    assert_eq!(
        server
            .sql(database, "SELECT count(*) FROM regkeeper_migrations")
            .trim(),
        SCHEMA.to_string()
    );
}

/// The operator's question, in one query over the views.
#[test]
fn which_tags_point_to_a_digest_is_one_sql_query() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let index = open_for_tests(&url);
    index
        .apply(&[
            Write::push("team/app", "v1", D[0], UnixMillis(1)),
            Write::push("team/app", "v2", D[0], UnixMillis(2)),
            Write::push("team/app", "v3", D[1], UnixMillis(3)),
            Write::push("team/other", "v1", D[0], UnixMillis(4)),
        ])
        .unwrap();
    let database = url.rsplit('/').next().unwrap();
    let tags = server.sql(
        database,
        &format!(
            "SELECT tag FROM regkeeper_tags WHERE repository = 'team/app' AND digest = '{}' ORDER BY tag",
            D[0]
        ),
    );
    assert_eq!(tags.lines().collect::<Vec<_>>(), ["v1", "v2"]);
}

/// A key another writer inserted behind the change log's back (a writer taking no lock) is a
/// unique violation when the batch that read it as absent inserts it: a conflict, run again —
/// and run again, the batch sees the key.
#[test]
fn a_key_inserted_behind_the_log_is_a_conflict_then_seen() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let kv = PgKv::connect(&test_options(&url)).unwrap();
    let key = b"tteam/app\0new".to_vec();
    let database = url.rsplit('/').next().unwrap();
    let mut runs = Vec::new();
    kv.transact(&mut |read| {
        let found = read.get(&key)?;
        if runs.is_empty() {
            server.sql(
                database,
                "INSERT INTO regkeeper_kv (key, value) VALUES ('\\x747465616d2f617070006e6577', 'behind')",
            );
        }
        runs.push(found.clone());
        Ok(match found {
            None => vec![(key.clone(), Some(b"mine".to_vec()))],
            Some(_) => Vec::new(),
        })
    })
    .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], None);
    assert_eq!(kv.get(&key).unwrap(), Some(b"behind".to_vec()));
}

/// Runs a batch that reads `read` and writes `written` = what it read + "!", while another
/// replica, during the first build, sets `changed`: how many times the batch was built.
fn builds_while_another_writes(read: &[u8], changed: &[u8]) -> (usize, Option<Vec<u8>>) {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let kv = PgKv::connect(&test_options(&url)).unwrap();
    let other = PgKv::connect(&test_options(&url)).unwrap();
    kv.apply(vec![(read.to_vec(), Some(b"before".to_vec()))])
        .unwrap();
    let mut builds = 0;
    kv.transact(&mut |reads| {
        builds += 1;
        let seen = reads.get(read)?.unwrap_or_default();
        if builds == 1 {
            other.apply(vec![(changed.to_vec(), Some(b"other".to_vec()))])?;
        }
        Ok(vec![(
            b"written".to_vec(),
            Some([seen, b"!".to_vec()].concat()),
        )])
    })
    .unwrap();
    (builds, kv.get(b"written").unwrap())
}

/// A batch is read without a lock; a key it read that another writer changed before it took
/// the writers' lock makes it build again, on what is there now.
#[test]
fn a_batch_whose_read_another_writer_changed_is_built_again() {
    let (builds, written) = builds_while_another_writes(b"shared", b"shared");
    assert_eq!(builds, 2);
    assert_eq!(written, Some(b"other!".to_vec()));
}

/// Another writer's commit that touches nothing the batch read leaves its build standing.
#[test]
fn a_batch_another_writer_did_not_touch_is_built_once() {
    let (builds, written) = builds_while_another_writes(b"shared", b"elsewhere");
    assert_eq!(builds, 1);
    assert_eq!(written, Some(b"before!".to_vec()));
}

/// Batches applied together overlap — the next read on top of the one still committing —
/// and another replica writing in between makes the affected one build again: the result is
/// as if each ran alone, in order.
#[test]
fn overlapped_batches_with_another_writer_between_end_as_if_one_at_a_time() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let kv = PgKv::connect(&test_options(&url)).unwrap();
    let other = PgKv::connect(&test_options(&url)).unwrap();
    let counter = b"counter".to_vec();
    let runs = std::cell::Cell::new(0);
    let count = |read: &dyn KvRead| -> Result<u64, IndexError> {
        Ok(read
            .get(&counter)?
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or_default())))
    };
    let add = |read: &dyn KvRead| -> Result<Vec<crate::index::kv::KvWrite>, IndexError> {
        runs.set(runs.get() + 1);
        if runs.get() == 2 {
            // While the first batch commits and the second is read: another replica adds 100
            // (in a batch of its own, as replicas write).
            other.transact(&mut |read| {
                let now = count(read)?;
                Ok(vec![(
                    counter.clone(),
                    Some((now + 100).to_be_bytes().to_vec()),
                )])
            })?;
        }
        let now = count(read)?;
        Ok(vec![(
            counter.clone(),
            Some((now + 1).to_be_bytes().to_vec()),
        )])
    };
    let (mut a, mut b, mut c) = (add, add, add);
    let (done, result) = kv.transact_each(&mut [&mut a, &mut b, &mut c]);
    result.unwrap();
    assert_eq!(done, 3);
    let total = u64::from_be_bytes(kv.get(&counter).unwrap().unwrap().try_into().unwrap());
    // The other replica's 100 may land before the first batch or between two: never lost.
    assert_eq!(total, 103, "after {} builds", runs.get());
}

/// A writer from before the writers' lock (schema 3) commits its batch record without saying
/// it took the lock: once the database is migrated, its batch fails whole and writes nothing,
/// so during a rolling upgrade no batch lands outside the lock.
#[test]
fn a_writer_from_before_the_lock_cannot_write_once_migrated() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let kv = PgKv::connect(&test_options(&url)).unwrap();
    let pool = kv.pool.clone();
    let old_batch = kv.run(async move {
        let mut client = pool.get().await.map_err(pool_error)?;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::Serializable)
            .start()
            .await?;
        // What schema 3's commit did, statement by statement.
        for statement in [
            "INSERT INTO regkeeper_kv (key, value) VALUES ('\\x746f6c64', 'old')",
            "SELECT pg_advisory_xact_lock(1)",
            "INSERT INTO regkeeper_changes (keys) VALUES (ARRAY['\\x746f6c64'::bytea])",
            "INSERT INTO regkeeper_batches (id) VALUES ('\\x0102')",
        ] {
            transaction.execute(statement, &[]).await?;
        }
        transaction.commit().await?;
        Ok(())
    });
    let error = old_batch.expect_err("an old writer's batch must not land");
    assert!(error.to_string().contains("writer"), "{error}");
    assert_eq!(kv.get(b"told").unwrap(), None);
}

/// A writer that stops while holding the writers' lock (a paused or stopped process) is cut
/// off by the server, so the other replicas' batches go on instead of waiting for good.
#[test]
fn a_writer_stopped_holding_the_lock_is_cut_off_and_the_others_go_on() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let stopped = PgKv::connect(&test_options(&url)).unwrap();
    let holding = transaction::Transaction::begin(
        stopped.handle(),
        stopped.pool.clone(),
        transaction::Mode::Locked,
    )
    .unwrap();
    let other = PgKv::connect(&test_options(&url)).unwrap();
    let (done, waited) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(other.apply(vec![(b"k".to_vec(), Some(b"v".to_vec()))]));
    });
    // The server's cut-off is 30 s; far longer means it never came.
    let applied = waited
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the other replica's batch still waits for the stopped writer's lock");
    applied.unwrap();
    assert!(
        holding
            .commit(
                vec![(b"late".to_vec(), Some(b"x".to_vec()))],
                Default::default()
            )
            .is_err(),
        "the cut-off writer's batch must not land"
    );
    assert_eq!(stopped.get(b"late").unwrap(), None);
}

/// A batch's key lookup plans without parallel workers but leaves the session's setting (here
/// the operator's, from the URL) to the statements after it (see [`transaction::rows_of`]).
#[test]
fn a_key_lookup_leaves_the_sessions_parallel_setting_to_the_rest() {
    let server = TestPostgres::start();
    let url = format!(
        "{}?options=-c%20max_parallel_workers_per_gather%3D3",
        server.fresh_database()
    );
    let kv = PgKv::connect(&test_options(&url)).unwrap();
    kv.apply(vec![(b"tteam/app\0a".to_vec(), Some(b"one".to_vec()))])
        .unwrap();
    let pool = kv.pool.clone();
    let (found, after) = kv
        .run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let read = client.build_transaction().read_only(true).start().await?;
            let keys = vec![b"tteam/app\0a".to_vec(), b"tteam/app\0b".to_vec()];
            let rows = transaction::rows_of(&read, &keys).await?;
            let found: Vec<Vec<u8>> = rows.iter().map(|row| row.get(1)).collect();
            let after: String = read
                .query_one(
                    "SELECT current_setting('max_parallel_workers_per_gather')",
                    &[],
                )
                .await?
                .get(0);
            read.commit().await?;
            Ok((found, after))
        })
        .unwrap();
    assert_eq!(found, [b"one".to_vec()]);
    assert_eq!(after, "3");
    assert_eq!(
        kv.get_many(&[b"tteam/app\0a".to_vec()]).unwrap(),
        [Some(b"one".to_vec())]
    );
}
