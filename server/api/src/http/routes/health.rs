//! `/healthz`, `/readyz`, `/metrics`: for load balancers and Prometheus, unauthenticated.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up.", body = Health)))]
async fn healthz() -> AppJson<Health> {
    AppJson(Health { status: "ok" })
}

/// The ledger answers: the server can take traffic.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready.", body = Health),
        (status = 503, description = "The ledger cannot be reached.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all)]
async fn readyz(State(state): State<AppState>) -> ApiResult<AppJson<Health>> {
    let tenant =
        cairn_audit::TenantId::parse("readyz").map_err(|e| ApiError::Internal(e.into()))?;
    let mut probe = cairn_audit::StepQuery::new(tenant);
    probe.limit = 1;
    state.ledger.query(&probe).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness probe failed");
        ApiError::Unavailable("the audit ledger cannot be reached".into())
    })?;
    Ok(AppJson(Health { status: "ready" }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
