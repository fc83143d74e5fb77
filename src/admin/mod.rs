//! The admin listener: liveness, readiness (the upstream answers `GET /v2/`), the link API,
//! Prometheus metrics (`/metrics`), the index views, plans, and the operator's `apply` and
//! `restore` (bearer token). Kept off the proxy listener so it can live on a private interface.
//!
//! May call: `upstream` (readiness probe), `index` and `events` (link API), `inspect` (views),
//! `render` (tables),
//! `planning`, `mirror`, `policy` and `sources` (plan/explain), `cleanup` and `registry`
//! (apply/restore), `leader` (apply runs as the leader), `config`, `proxy` (the digest grammar,
//! for the link API), `notifications` (the registry's notifications).

mod links;
mod operations;
mod plans;
pub mod remote;
mod request;
pub mod stream;
mod views;

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use stream::AdminBody;

use crate::{index::Index, upstream::Upstream};
pub use links::LinkApi;
pub use operations::OperatorApi;
pub use plans::{EVALUATIONS_WAITING, PlanApi};

/// What the admin endpoints need.
pub struct AdminState {
    pub upstream: Upstream,
    /// `None`: the link API is disabled (no token configured, or recording off).
    pub links: Option<LinkApi>,
    /// The index, for the read-only views; `None` when recording is off.
    pub index: Option<Arc<dyn Index>>,
    /// `plan`/`explain` over the held index; `None` when recording is off.
    pub plans: Option<PlanApi>,
    /// `apply`/`restore` over the held index; `None` without `admin.operatorToken` or when
    /// recording is off.
    pub operator: Option<OperatorApi>,
    /// Tokens that open the read views (`admin.readToken`, and the operator token, which may
    /// do more); empty: the views are open.
    pub read_tokens: Vec<String>,
    /// Whether the index takes writes (`/readyz?verbose`); `None` when recording is off.
    pub index_health: Option<crate::events::IndexHealth>,
    /// Index views (tags, inspect, history) served at once; more are refused with 503.
    pub views: Arc<Semaphore>,
    /// The registry's notifications; `None` without `admin.notificationToken` or when
    /// recording is off.
    pub notifications: Option<Arc<crate::notifications::Notifications>>,
}

/// Index views served at once: each holds a blocking thread while it reads a page, and a
/// stream's pages in flight.
pub const VIEWS_AT_ONCE: usize = 4;

/// The paths behind `admin.readToken`; health, readiness and metrics stay open.
const READ_VIEWS: [&str; 5] = [
    "/api/v1/tags",
    "/api/v1/inspect",
    "/api/v1/history",
    "/api/v1/plan",
    "/api/v1/explain",
];

impl AdminState {
    /// The refusal for a read view without a valid read token, when one is configured.
    fn refuse_read<B>(&self, request: &Request<B>) -> Option<Response<AdminBody>> {
        let open = self.read_tokens.is_empty()
            || self
                .read_tokens
                .iter()
                .any(|token| request::bearer_is(request, token));
        (!open).then(|| {
            json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "a valid bearer token (admin.readToken) is required" }),
            )
        })
    }

    /// A view's slot; `None` when all are taken (answer [`busy`]).
    fn view_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.views.clone().try_acquire_owned().ok()
    }
}

/// One notification delivery: recorded whole (200), refused (400, 401, 413), or to be retried
/// (503).
async fn notify(
    notifications: &crate::notifications::Notifications,
    request: Request<Incoming>,
) -> request::Answer {
    let body = match request::authorized_body(
        request,
        &notifications.token,
        "admin.notificationToken",
        crate::notifications::MAX_BODY,
    )
    .await
    {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    match notifications.deliver(&body).await {
        Ok(outcome) => {
            crate::metrics::notifications("recorded", outcome.recorded as u64);
            crate::metrics::notifications("duplicate", outcome.duplicates as u64);
            crate::metrics::notifications("skipped", outcome.skipped as u64);
            (StatusCode::OK, serde_json::json!(outcome))
        }
        Err(error) => {
            let status = error.status();
            crate::metrics::notifications(
                if status.is_server_error() {
                    "retry"
                } else {
                    "refused"
                },
                1,
            );
            tracing::warn!(%error, "notification not recorded");
            request::error(status, error.to_string())
        }
    }
}

fn busy() -> Response<AdminBody> {
    let mut response = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "busy: as many index views or evaluations as allowed are running; try again shortly" }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves admin requests until `stop` flips.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(request, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Long by design: the admin API's route table, one arm per path; each arm checks its token and
/// calls the endpoint's module.
async fn route(request: Request<Incoming>, state: &AdminState) -> Response<AdminBody> {
    let upstream = &state.upstream;
    if READ_VIEWS.contains(&request.uri().path())
        && let Some(refusal) = state.refuse_read(&request)
    {
        return refusal;
    }
    match request.uri().path() {
        "/api/v1/links" => {
            let (status, body) = match (&state.links, request.method()) {
                (Some(links), &http::Method::POST) => links.handle(request).await,
                (Some(_), _) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({ "error": "use POST" }),
                ),
                (None, _) => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": "the link API is disabled: set admin.linkToken (and keep index.record on)" }),
                ),
            };
            json(status, &body)
        }
        "/api/v1/notifications" => {
            let (status, value) = match (&state.notifications, request.method()) {
                (Some(notifications), &http::Method::POST) => notify(notifications, request).await,
                (Some(_), _) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({ "error": "use POST" }),
                ),
                (None, _) => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": "notifications are disabled: set admin.notificationToken (and keep index.record on)" }),
                ),
            };
            json(status, &value)
        }
        path @ ("/api/v1/apply" | "/api/v1/restore") => {
            let (status, body) = match (&state.operator, request.method()) {
                (Some(operator), &http::Method::POST) if path == "/api/v1/apply" => {
                    operator.apply(request).await
                }
                (Some(operator), &http::Method::POST) => operator.restore(request).await,
                (Some(_), _) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({ "error": "use POST" }),
                ),
                (None, _) => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": "the operator API is disabled: set admin.operatorToken (REGKEEPER_ADMIN_OPERATOR_TOKEN) for serve, and keep index.record on" }),
                ),
            };
            json(status, &body)
        }
        path @ ("/api/v1/tags" | "/api/v1/inspect" | "/api/v1/history") => {
            let (status, body) = match (&state.index, request.method()) {
                (Some(index), &http::Method::GET) => {
                    let Some(slot) = state.view_slot() else {
                        return busy();
                    };
                    let query = request.uri().query();
                    match path {
                        "/api/v1/tags" => return views::tags(index, query, slot).await,
                        "/api/v1/history" => return views::history(index, query, slot).await,
                        _ => views::inspect(index, query).await,
                    }
                }
                (Some(_), _) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({ "error": "use GET" }),
                ),
                (None, _) => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": "index.record is off: there is no index" }),
                ),
            };
            json(status, &body)
        }
        path @ ("/api/v1/plan" | "/api/v1/explain") => {
            let Some(plans) = &state.plans else {
                return json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "error": "index.record is off: there is no index" }),
                );
            };
            if request.method() != http::Method::GET {
                return json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({ "error": "use GET" }),
                );
            }
            let (status, body) = if path == "/api/v1/plan" {
                plans.plan(request.uri().query()).await
            } else {
                plans.explain(request.uri().query()).await
            };
            match body {
                plans::Body::Json(value) => json(status, &value),
                plans::Body::Text(body) => text(status, body),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, crate::metrics::render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        // Ready means the data path works: the upstream answers. The index is not part of it
        // (pushes pass while it fails); `?verbose` says how it is doing.
        "/readyz" => {
            let detail = match (&state.index_health, request.uri().query()) {
                (Some(health), Some(query)) if query.split('&').any(|p| p == "verbose") => {
                    format!("{}\n", health.describe())
                }
                _ => String::new(),
            };
            match upstream.probe(PROBE_TIMEOUT).await {
                Ok(status) => text(
                    StatusCode::OK,
                    format!("ok: upstream answered {status}\n{detail}"),
                ),
                Err(cause) => {
                    tracing::warn!(upstream = %upstream.url, %cause, "not ready");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: upstream {}: {cause}\n{detail}", upstream.url),
                    )
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// A JSON answer.
fn answer((status, body): (StatusCode, serde_json::Value)) -> Response<AdminBody> {
    json(status, &body)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<AdminBody> {
    let mut response = Response::new(stream::whole(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<AdminBody> {
    let mut response = Response::new(stream::whole(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
