//! Every metric's help text and unit, registered once when the recorder is installed.

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use super::*;

/// Long by design: one description per metric, read top to bottom like the metric list in the
/// README.
pub(super) fn describe() {
    describe_counter!(
        PROXY_REQUESTS,
        "Proxied requests by route kind, method and status class"
    );
    describe_histogram!(
        PROXY_DURATION,
        Unit::Seconds,
        "Time from request to the end of the response body, by route kind"
    );
    describe_counter!(
        PROXY_BYTES,
        Unit::Bytes,
        "Body bytes through the proxy (direction in: from clients, out: to clients)"
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Requests the upstream failed (refused, reset, timeout, a response body cut off or idle), by cause"
    );
    describe_gauge!(process::RESIDENT, Unit::Bytes, "Resident memory");
    describe_gauge!(process::VIRTUAL, Unit::Bytes, "Virtual memory");
    describe_gauge!(process::OPEN_FDS, "Open file descriptors");
    describe_gauge!(process::MAX_FDS, "Allowed open file descriptors");
    describe_gauge!(process::THREADS, "Threads");
    describe_gauge!(
        process::CPU,
        Unit::Seconds,
        "User and system CPU time spent"
    );
    describe_gauge!(
        process::START,
        Unit::Seconds,
        "Start time since the Unix epoch"
    );
    describe_counter!(
        CLIENT_ERRORS,
        "Requests the client broke (hung up, malformed body) or stopped sending, by cause"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the running build's version in its label"
    );
    describe_gauge!(INDEX_TAGS, "Tags in the index (as of the last evaluation)");
    describe_gauge!(INDEX_MANIFESTS, "Manifests in the index");
    describe_gauge!(INDEX_REPOSITORIES, "Repositories in the index");
    describe_gauge!(
        INDEX_COMMIT_LINKED,
        "Share of tagged digests linked to a git commit"
    );
    describe_counter!(
        INDEX_DROPPED,
        "Index events dropped because a queue was full (sync repairs them), by queue"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Registry notification events by outcome (recorded, duplicate, skipped, refused, retry)"
    );
    describe_histogram!(
        INDEX_BATCH,
        Unit::Seconds,
        "Time to apply one batch of index writes"
    );
    describe_gauge!(
        RUN_START,
        Unit::Seconds,
        "When the last cleanup run started"
    );
    describe_gauge!(RUN_END, Unit::Seconds, "When the last cleanup run ended");
    describe_gauge!(
        RUN_DURATION,
        Unit::Seconds,
        "How long the last cleanup run took"
    );
    describe_gauge!(
        RUN_SUCCESS,
        "1 when the last cleanup run completed without a failed step or a breaker trip"
    );
    describe_counter!(
        BREAKER_TRIPS,
        "Cleanup runs the circuit breaker stopped before any deletion"
    );
    describe_counter!(
        TAGS_DELETED,
        "Tags removed by cleanup (enforce mode), by repository"
    );
    describe_counter!(
        BYTES_DELETED,
        Unit::Bytes,
        "Bytes of digests deleted by cleanup, by repository"
    );
    describe_counter!(SKIPPED, "Cleanup steps skipped or failed, by cause");
    describe_gauge!(
        TAGS_KEPT,
        "Tags the last plan keeps, by the first rule keeping each"
    );
    describe_gauge!(
        DELETABLE_TAGS,
        "Tags the last plan would remove, by repository"
    );
    describe_gauge!(
        DELETABLE_BYTES,
        Unit::Bytes,
        "Bytes the last plan would delete, by repository"
    );
    describe_gauge!(
        SOURCE_UP,
        "1 when the source (git repository, cluster) was read in the last evaluation"
    );
    describe_gauge!(
        SOURCE_SUCCESS,
        Unit::Seconds,
        "When the source was last read successfully"
    );
    describe_counter!(
        INDEX_WRITE_ERRORS,
        "Index batches (or flushes) that failed; they are retried"
    );
    describe_gauge!(
        INDEX_WRITABLE,
        "1 while the index takes writes, 0 while they fail (the proxy serves either way)"
    );
    describe_gauge!(INDEX_PENDING, "Writes waiting to be retried into the index");
    describe_gauge!(
        MISSING_IMAGES,
        "Images live workloads reference that the registry does not have, by namespace and kind"
    );
}
