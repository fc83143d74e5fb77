//! The database's layout, versioned: forward migrations applied at start, one process at a
//! time (an advisory lock held for the migrating transaction), and a database migrated by a
//! newer regkeeper refused instead of written with an older layout.
//!
//! The index lives in one ordered key-value table, the same layout sled holds, so one
//! implementation of the index's semantics serves every engine. Views decode it for operators:
//! `SELECT tag FROM regkeeper_tags WHERE repository = 'team/app' AND digest = 'sha256:…'`.

use tokio_postgres::Client;

use super::PgError;

/// `(version, SQL)`, in order. Never edit a released one: add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
CREATE TABLE regkeeper_kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL
);

-- Values are a version byte, then JSON.
CREATE FUNCTION regkeeper_json(value bytea) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT convert_from(substring(value FROM 2), 'UTF8')::jsonb
$$;

CREATE VIEW regkeeper_tags AS
SELECT regkeeper_json(value) ->> 'repository' AS repository,
       regkeeper_json(value) ->> 'tag' AS tag,
       regkeeper_json(value) ->> 'digest' AS digest,
       to_timestamp((regkeeper_json(value) ->> 'last_pushed')::bigint / 1000.0) AS last_pushed,
       regkeeper_json(value) AS record
FROM regkeeper_kv
WHERE key >= '\x74'::bytea AND key < '\x75'::bytea;

CREATE VIEW regkeeper_manifests AS
SELECT regkeeper_json(value) ->> 'repository' AS repository,
       regkeeper_json(value) ->> 'digest' AS digest,
       regkeeper_json(value) ->> 'media_type' AS media_type,
       (regkeeper_json(value) ->> 'total_size')::bigint AS total_size,
       regkeeper_json(value) AS record
FROM regkeeper_kv
WHERE key >= '\x6d'::bytea AND key < '\x6e'::bytea;

CREATE VIEW regkeeper_audit AS
SELECT regkeeper_json(value) ->> 'run' AS run,
       (regkeeper_json(value) ->> 'seq')::bigint AS seq,
       regkeeper_json(value) ->> 'state' AS state,
       regkeeper_json(value) ->> 'action' AS action,
       regkeeper_json(value) ->> 'repository' AS repository,
       regkeeper_json(value) ->> 'digest' AS digest,
       regkeeper_json(value) AS record
FROM regkeeper_kv
WHERE key >= '\x61'::bytea AND key < '\x62'::bytea;
",
    ),
    (
        2,
        r"
-- What each batch changed, in commit order (commits append under one lock): replicas keep
-- their in-memory copy current by reading on from where they were.
CREATE TABLE regkeeper_changes (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    keys bytea[] NOT NULL
);
-- The log is pruned; a reader from before this has to read everything again.
CREATE TABLE regkeeper_changes_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    upto bigint NOT NULL
);
INSERT INTO regkeeper_changes_pruned (upto) VALUES (0);
",
    ),
    (
        3,
        r"
-- Each committed batch's id, kept an hour: a writer that lost the answer to its COMMIT asks
-- here whether the batch landed, instead of applying it a second time.
CREATE TABLE regkeeper_batches (
    id bytea PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now()
);
",
    ),
    (
        4,
        r"
-- A batch's keys are a megabyte of digests that barely compress: trying to cost a writer
-- 5-40 ms a batch, storing them uncompressed 5 ms.
ALTER TABLE regkeeper_changes ALTER COLUMN keys SET STORAGE EXTERNAL;

-- Writers read a batch in a snapshot, then take this table's lock to check that nothing they
-- read changed since, write and commit: one writer at a time, none waiting while another reads.
CREATE TABLE regkeeper_write_lock ();

-- Writers from before took no such lock, and could commit between a check and its COMMIT:
-- every batch now says it was written under the lock, which their batch record does not, so
-- they cannot write at all once a newer replica migrated (they keep proxying; `sync` repairs
-- what they could not record).
ALTER TABLE regkeeper_batches ADD COLUMN writer smallint NOT NULL DEFAULT 5;
ALTER TABLE regkeeper_batches ALTER COLUMN writer DROP DEFAULT;
",
    ),
];

/// The layout this build writes.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Any fixed number: every regkeeper takes the same lock before migrating.
const MIGRATION_LOCK: i64 = 0x0072_6567_6b65_6570;

/// Brings the database to [`LATEST`], or refuses one a newer build migrated.
pub async fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS regkeeper_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let found: i32 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM regkeeper_migrations",
            &[],
        )
        .await?
        .get(0);
    if found > LATEST {
        return Err(PgError::NewerSchema {
            found,
            supported: LATEST,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO regkeeper_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
        tracing::info!(version, "index database migrated");
    }
    transaction.commit().await?;
    Ok(found)
}
