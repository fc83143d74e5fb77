//! `plan` and `explain` while `serve` holds the index: `GET /api/v1/plan` and
//! `GET /api/v1/explain?reference=R:T`, both with `at` (ms since the epoch; default now) and
//! `format` (`json`, the default, or `table`: the same text the commands print). One evaluation
//! runs at a time; its reading and evaluating move off the async workers
//! (`planning::off_the_runtime`).

use std::sync::Arc;

use http::StatusCode;
use tokio::sync::Semaphore;

use super::views::param;
use crate::{
    config::Config,
    index::UnixMillis,
    mirror::Mirror,
    planning,
    policy::{Details, Plan},
};

/// What an answer is: JSON, or text for `format=table`.
pub enum Body {
    Json(serde_json::Value),
    Text(String),
}

pub struct PlanApi {
    pub config: Arc<Config>,
    /// The index, as `serve` keeps it in memory for evaluations.
    pub mirror: Arc<Mirror>,
    /// Evaluations are heavy: one at a time.
    pub running: Semaphore,
    /// Evaluations waiting for their turn, at most [`EVALUATIONS_WAITING`]; more are refused
    /// with 503 instead of piling up.
    pub waiting: Semaphore,
}

/// Evaluations that may wait for the running one.
pub const EVALUATIONS_WAITING: usize = 4;

impl PlanApi {
    pub async fn plan(&self, query: Option<&str>) -> (StatusCode, Body) {
        let table = param(query, "format").as_deref() == Some("table");
        let show_kept = param(query, "show_kept").is_some_and(|v| v == "1" || v == "true");
        let repo = param(query, "repo").filter(|r| !r.is_empty());
        match self.evaluate(query, Details::Removed).await {
            Err(answer) => answer,
            Ok(mut plan) => {
                if let Some(repo) = &repo {
                    planning::only_repositories(&mut plan, repo);
                }
                Self::render(plan, table, show_kept)
            }
        }
    }

    fn render(plan: Plan, table: bool, show_kept: bool) -> (StatusCode, Body) {
        if table {
            (
                StatusCode::OK,
                Body::Text(crate::render::plan_table(&plan, show_kept)),
            )
        } else {
            (StatusCode::OK, json(&plan))
        }
    }

    pub async fn explain(&self, query: Option<&str>) -> (StatusCode, Body) {
        let Some(reference) = param(query, "reference") else {
            return error(
                StatusCode::BAD_REQUEST,
                "give ?reference=REPOSITORY:TAG".into(),
            );
        };
        let table = param(query, "format").as_deref() == Some("table");
        let plan = match self.evaluate(query, Details::All).await {
            Ok(plan) => plan,
            Err(answer) => return answer,
        };
        match planning::explain(&plan, &reference) {
            Ok(explanation) if table => (
                StatusCode::OK,
                Body::Text(crate::render::explain_table(&explanation)),
            ),
            Ok(explanation) => (StatusCode::OK, json(&explanation)),
            Err(unknown) => error(StatusCode::NOT_FOUND, unknown.to_string()),
        }
    }

    async fn evaluate(
        &self,
        query: Option<&str>,
        details: Details,
    ) -> Result<crate::policy::Plan, (StatusCode, Body)> {
        let at = match param(query, "at") {
            Some(at) => UnixMillis(at.parse().map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("at={at:?}: milliseconds since the epoch"),
                )
            })?),
            None => UnixMillis::now(),
        };
        let _queued = self.waiting.try_acquire().map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: an evaluation is running and enough wait for it; try again shortly".into(),
            )
        })?;
        let _turn = self
            .running
            .acquire()
            .await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
        let loaded = planning::load(&self.config, planning::Source::Mirror(&self.mirror))
            .await
            .map_err(|e| {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the index cannot be read: {e}"),
                )
            })?;
        Ok(planning::plan(&self.config, &loaded, at, details))
    }
}

fn json(value: &impl serde::Serialize) -> Body {
    Body::Json(
        serde_json::to_value(value)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
    )
}

fn error(status: StatusCode, why: String) -> (StatusCode, Body) {
    (status, Body::Json(serde_json::json!({ "error": why })))
}
