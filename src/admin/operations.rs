//! The operator's calls that change the registry while `serve` holds the index: one cleanup run
//! (`POST /api/v1/apply`) and restoring what a run removed (`POST /api/v1/restore`). Both need
//! `admin.operatorToken` as a bearer token; `regkeeper apply` and `regkeeper restore` use them
//! when the index is held. They run over `serve`'s mirror, through the same code as the
//! commands and the schedule, and take the same cleanup lock.
//!
//! ```sh
//! curl -X POST http://127.0.0.1:9090/api/v1/apply \
//!   -H "Authorization: Bearer $REGKEEPER_ADMIN_OPERATOR_TOKEN" -d '{"mode":"dry-run"}'
//! ```

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, de::DeserializeOwned};

use super::request::{Answer, authorized_json, error};
use crate::{
    cleanup::{self, CleanupError, restore},
    config::{CleanupMode, Config},
    index::Index,
    mirror::Mirror,
    planning::Source,
    registry::RegistryClient,
};

pub struct OperatorApi {
    pub token: String,
    pub config: Arc<Config>,
    pub mirror: Arc<Mirror>,
    pub client: Arc<RegistryClient>,
    pub leadership: Arc<crate::leader::Leadership>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    /// `cleanup.mode` when absent.
    #[serde(default)]
    mode: Option<CleanupMode>,
    /// Past the circuit breaker, this run only.
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    /// `REPOSITORY:TAG`; absent: every tag `run` removed.
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    run: Option<String>,
}

fn failed(error: &CleanupError) -> Answer {
    let status = match error {
        CleanupError::Request(_) => StatusCode::BAD_REQUEST,
        // The lock: another run is under way.
        CleanupError::Unavailable(_) => StatusCode::CONFLICT,
        CleanupError::Index(_) | CleanupError::Registry(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    self::error(status, error.to_string())
}

impl OperatorApi {
    /// The body as `T` (all defaults when empty), once the bearer token is checked.
    async fn read<T: DeserializeOwned + Default>(
        &self,
        request: Request<Incoming>,
    ) -> Result<T, Answer> {
        authorized_json(request, &self.token, "admin.operatorToken")
            .await
            .map(Option::unwrap_or_default)
    }

    /// One cleanup run; answers its report (with `succeeded`) once it ends. The run goes on
    /// to its end when the caller hangs up: an abandoned run would leave its lock to settle.
    pub async fn apply(&self, request: Request<Incoming>) -> Answer {
        let asked: ApplyRequest = match self.read(request).await {
            Ok(asked) => asked,
            Err(answer) => return answer,
        };
        let (config, mirror, client, leadership) = (
            self.config.clone(),
            self.mirror.clone(),
            self.client.clone(),
            self.leadership.clone(),
        );
        let mode = asked.mode.unwrap_or(config.cleanup.mode);
        tracing::info!(
            ?mode,
            force = asked.force,
            "cleanup run asked through the admin API"
        );
        let run = tokio::spawn(async move {
            let index: &dyn Index = mirror.as_ref();
            cleanup::run_once(
                &config,
                Source::Mirror(&mirror),
                index,
                &client,
                &leadership,
                mode,
                asked.force,
            )
            .await
        });
        match run.await {
            Ok(Ok(report)) => {
                let mut body = serde_json::to_value(&report)
                    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
                body["succeeded"] = serde_json::Value::Bool(report.succeeded());
                (StatusCode::OK, body)
            }
            Ok(Err(e)) => failed(&e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    /// Restores a tag, or every tag of a run.
    pub async fn restore(&self, request: Request<Incoming>) -> Answer {
        let asked: RestoreRequest = match self.read(request).await {
            Ok(asked) => asked,
            Err(answer) => return answer,
        };
        let (mirror, client) = (self.mirror.clone(), self.client.clone());
        let run = tokio::spawn(async move {
            restore::restore_all(
                &client,
                mirror.as_ref(),
                asked.reference.as_deref(),
                asked.run.as_deref(),
            )
            .await
        });
        match run.await {
            Ok(Ok(report)) => (
                StatusCode::OK,
                serde_json::to_value(&report)
                    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
            ),
            Ok(Err(e)) => failed(&e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}
