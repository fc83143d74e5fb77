//! Prometheus metrics: every name regkeeper exports, its help text, the recorder (installed once
//! by `serve`, rendered by the admin listener at `/metrics`), and the calls that record them.
//! Recording without an installed recorder is a no-op, so the library and the commands can call
//! these freely.
//!
//! Label values come from bounded sets (route kinds, methods, status classes, causes) or are
//! capped: repositories beyond the [`TOP_REPOSITORIES`] largest are summed as `other`.
//!
//! Owns: metric names and recording. May call: nothing in the crate.

use std::{cell::RefCell, collections::HashMap, sync::OnceLock};

use ::metrics::{counter, gauge, histogram};
use foldhash::fast::FixedState;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod describe;
pub mod process;

use describe::describe;

/// Per-repository series are kept for this many repositories (by deletable bytes).
pub const TOP_REPOSITORIES: usize = 20;

pub const PROXY_REQUESTS: &str = "regkeeper_proxy_requests_total";
pub const PROXY_DURATION: &str = "regkeeper_proxy_request_duration_seconds";
pub const PROXY_BYTES: &str = "regkeeper_proxy_bytes_total";
pub const UPSTREAM_ERRORS: &str = "regkeeper_upstream_errors_total";
pub const CLIENT_ERRORS: &str = "regkeeper_client_errors_total";
pub const INDEX_TAGS: &str = "regkeeper_index_tags";
pub const INDEX_MANIFESTS: &str = "regkeeper_index_manifests";
pub const INDEX_REPOSITORIES: &str = "regkeeper_index_repositories";
pub const INDEX_COMMIT_LINKED: &str = "regkeeper_index_commit_linked_ratio";
pub const INDEX_DROPPED: &str = "regkeeper_index_dropped_events_total";
pub const INDEX_BATCH: &str = "regkeeper_index_batch_write_duration_seconds";
pub const INDEX_WRITE_ERRORS: &str = "regkeeper_index_write_errors_total";
pub const INDEX_WRITABLE: &str = "regkeeper_index_writable";
pub const INDEX_PENDING: &str = "regkeeper_index_pending_writes";
pub const RUN_START: &str = "regkeeper_cleanup_last_run_start_timestamp_seconds";
pub const RUN_END: &str = "regkeeper_cleanup_last_run_end_timestamp_seconds";
pub const RUN_DURATION: &str = "regkeeper_cleanup_last_run_duration_seconds";
pub const RUN_SUCCESS: &str = "regkeeper_cleanup_last_run_success";
pub const BREAKER_TRIPS: &str = "regkeeper_cleanup_breaker_trips_total";
pub const TAGS_DELETED: &str = "regkeeper_cleanup_tags_deleted_total";
pub const BYTES_DELETED: &str = "regkeeper_cleanup_bytes_deleted_total";
pub const SKIPPED: &str = "regkeeper_cleanup_skipped_total";
pub const TAGS_KEPT: &str = "regkeeper_plan_tags_kept";
pub const DELETABLE_TAGS: &str = "regkeeper_plan_deletable_tags";
pub const DELETABLE_BYTES: &str = "regkeeper_plan_deletable_bytes";
pub const SOURCE_UP: &str = "regkeeper_source_up";
pub const SOURCE_SUCCESS: &str = "regkeeper_source_last_success_timestamp_seconds";
pub const MISSING_IMAGES: &str = "regkeeper_workload_images_missing";
pub const NOTIFICATIONS: &str = "regkeeper_notification_events_total";
pub const BUILD_INFO: &str = "regkeeper_build_info";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once); `serve` calls it before anything records.
pub fn install() -> Result<(), String> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(PROXY_DURATION.into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(INDEX_BATCH.into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle);
    describe();
    from_zero();
    Ok(())
}

/// The counters alerts watch exist from the start, at 0: `increase(x[1d]) > 0` then fires on
/// the first event instead of missing it (a series that appears at 1 has no increase). And
/// which build is running.
fn from_zero() {
    counter!(BREAKER_TRIPS).increment(0);
    for cause in [
        "connect",
        "upstream-io",
        "timeout",
        "upstream-error",
        "upstream-idle",
    ] {
        counter!(UPSTREAM_ERRORS, "cause" => cause).increment(0);
    }
    for cause in ["client-io", "client-idle"] {
        counter!(CLIENT_ERRORS, "cause" => cause).increment(0);
    }
    counter!(INDEX_WRITE_ERRORS).increment(0);
    gauge!(INDEX_WRITABLE).set(1.0);
    gauge!(INDEX_PENDING).set(0.0);
    for queue in ["events", "configs", "retry"] {
        counter!(INDEX_DROPPED, "queue" => queue).increment(0);
    }
    for outcome in NOTIFICATION_OUTCOMES {
        counter!(NOTIFICATIONS, "outcome" => outcome).increment(0);
    }
    for cause in [
        "skipped-changed",
        "skipped-gone",
        "skipped-deadline",
        "failed",
    ] {
        counter!(SKIPPED, "cause" => cause).increment(0);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// How often `serve` folds recorded histogram samples into their buckets. Without it, samples
/// of an unscraped histogram would pile up in memory (one per proxied request).
pub const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds pending histogram samples into buckets (run every [`UPKEEP_PERIOD`]).
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// The text exposition of every metric (empty when no recorder is installed).
pub fn render() -> String {
    match HANDLE.get() {
        Some(handle) => {
            process::record();
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// A method as a label from a fixed set.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A proxy worker's handles to its request series: the recorder's own lookup (hashing the
/// name and labels under a lock) would otherwise run several times per proxied request. The
/// keys are the proxy's own static labels, so a fixed fast hash serves.
struct ProxySeries {
    requests: HashMap<(&'static str, &'static str, &'static str), ::metrics::Counter, FixedState>,
    durations: HashMap<&'static str, ::metrics::Histogram, FixedState>,
    bytes_in: ::metrics::Counter,
    bytes_out: ::metrics::Counter,
}

thread_local! {
    static PROXY_SERIES: RefCell<Option<ProxySeries>> = const { RefCell::new(None) };
}

/// One proxied request, once its response body is done.
pub fn proxy_request(
    route: &'static str,
    method: &http::Method,
    status: u16,
    seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
) {
    if HANDLE.get().is_none() {
        return;
    }
    PROXY_SERIES.with_borrow_mut(|series| {
        let series = series.get_or_insert_with(|| ProxySeries {
            requests: HashMap::default(),
            durations: HashMap::default(),
            bytes_in: counter!(PROXY_BYTES, "direction" => "in"),
            bytes_out: counter!(PROXY_BYTES, "direction" => "out"),
        });
        let (method, class) = (method_label(method), status_class(status));
        series
            .requests
            .entry((route, method, class))
            .or_insert_with(|| {
                counter!(PROXY_REQUESTS, "route" => route, "method" => method, "status" => class)
            })
            .increment(1);
        series
            .durations
            .entry(route)
            .or_insert_with(|| histogram!(PROXY_DURATION, "route" => route))
            .record(seconds);
        if bytes_in > 0 {
            series.bytes_in.increment(bytes_in);
        }
        series.bytes_out.increment(bytes_out);
    });
}

/// A request the client broke (hung up, malformed body) or stopped sending.
pub fn client_error(cause: &'static str) {
    counter!(CLIENT_ERRORS, "cause" => cause).increment(1);
}

pub fn upstream_error(cause: &'static str) {
    counter!(UPSTREAM_ERRORS, "cause" => cause).increment(1);
}

/// What became of notification events: recorded, duplicate (a retry), skipped (nothing to
/// record), refused (a bad delivery) or retry (answered 503; the sender delivers it again).
const NOTIFICATION_OUTCOMES: [&str; 5] = ["recorded", "duplicate", "skipped", "refused", "retry"];

pub fn notifications(outcome: &'static str, count: u64) {
    counter!(NOTIFICATIONS, "outcome" => outcome).increment(count);
}

pub fn dropped_event(queue: &'static str) {
    counter!(INDEX_DROPPED, "queue" => queue).increment(1);
}

/// A batch or flush failed; `writable` and `pending` say where the writer stands.
pub fn index_write_failed() {
    counter!(INDEX_WRITE_ERRORS).increment(1);
}

pub fn index_write_state(writable: bool, pending: usize) {
    gauge!(INDEX_WRITABLE).set(if writable { 1.0 } else { 0.0 });
    gauge!(INDEX_PENDING).set(pending as f64);
}

/// Writes dropped from the retry queue (oldest first) while the index could not be written.
pub fn dropped_writes(count: usize) {
    counter!(INDEX_DROPPED, "queue" => "retry").increment(count as u64);
}

pub fn index_batch(seconds: f64) {
    histogram!(INDEX_BATCH).record(seconds);
}

/// What the index holds, as of an evaluation's snapshot.
pub fn index_contents(repositories: usize, tags: usize, manifests: usize, linked_ratio: f64) {
    gauge!(INDEX_REPOSITORIES).set(repositories as f64);
    gauge!(INDEX_TAGS).set(tags as f64);
    gauge!(INDEX_MANIFESTS).set(manifests as f64);
    gauge!(INDEX_COMMIT_LINKED).set(linked_ratio);
}

/// A cleanup run ended (`seconds` since the epoch).
pub fn cleanup_run(start: f64, end: f64, succeeded: bool, tripped: bool) {
    gauge!(RUN_START).set(start);
    gauge!(RUN_END).set(end);
    gauge!(RUN_DURATION).set(end - start);
    gauge!(RUN_SUCCESS).set(if succeeded { 1.0 } else { 0.0 });
    if tripped {
        counter!(BREAKER_TRIPS).increment(1);
    }
}

/// Removals of one run in `repository` (already capped by the caller).
pub fn cleanup_removed(repository: String, tags: u64, bytes: u64) {
    counter!(TAGS_DELETED, "repository" => repository.clone()).increment(tags);
    counter!(BYTES_DELETED, "repository" => repository).increment(bytes);
}

pub fn cleanup_skipped(cause: &'static str) {
    counter!(SKIPPED, "cause" => cause).increment(1);
}

/// The plan's kept tags by rule (each tag counted under its first keeping rule).
pub fn kept_by_rule(counts: &[(&'static str, usize)]) {
    for (rule, count) in counts {
        gauge!(TAGS_KEPT, "rule" => *rule).set(*count as f64);
    }
}

/// Deletable tags and bytes per repository (already capped by the caller).
pub fn deletable(repository: String, tags: usize, bytes: u64) {
    gauge!(DELETABLE_TAGS, "repository" => repository.clone()).set(tags as f64);
    gauge!(DELETABLE_BYTES, "repository" => repository).set(bytes as f64);
}

/// A source's health in the last evaluation; `now` in seconds since the epoch.
pub fn source(kind: &'static str, name: String, up: bool, now: f64) {
    gauge!(SOURCE_UP, "kind" => kind, "name" => name.clone()).set(if up { 1.0 } else { 0.0 });
    if up {
        gauge!(SOURCE_SUCCESS, "kind" => kind, "name" => name).set(now);
    }
}

/// Images workloads reference that the registry lacks, per namespace and workload kind.
pub fn missing_images(namespace: String, kind: String, count: usize) {
    gauge!(MISSING_IMAGES, "namespace" => namespace, "kind" => kind).set(count as f64);
}
