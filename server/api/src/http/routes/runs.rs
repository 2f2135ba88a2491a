//! `/v1/runs`: runs of the reasoning loop, for the caller's tenant (user role), over
//! `cairn_app::runs`.
//!
//! `POST /v1/runs` drives a run until it completes, fails, is cancelled or pauses for
//! approval, and answers with where it stands; a paused run holds nothing open and is
//! resumed by `POST /v1/runs/{id}/approvals`. `GET /v1/runs/{id}/events` streams the run's
//! ledger steps as server-sent events. Every run is driven on its own task, so a client
//! that hangs up does not abandon a run half-way between two recorded steps.
//!
//! Another tenant's run id is a 404, exactly like one that does not exist.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn_agent::ApprovalDecision;
use cairn_app::runs::RunEvent as Followed;
pub use cairn_app::runs::{PendingApproval, RunFailure, RunView};
use cairn_audit::RunId;
use futures::StreamExt;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::auth::{AuthUser, Role};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, parse_json, read_body};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(decide))
        .routes(routes!(cancel_run))
}

/// `{id}` of a run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPath {
    id: RunId,
}

/// A request to start a run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// What the user asks, e.g. "Remind me to renew my passport" (not blank).
    #[schema(min_length = 1, pattern = r"\S")]
    pub message: String,
    /// The client's conversation (thread) id, recorded on the run: 1 to 256 printable
    /// characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f]+$"
    )]
    pub conversation_id: Option<String>,
}

/// Starts a run for the caller: records the message, then asks the model and runs tools
/// until the run completes, fails or pauses for approval (a tool not marked read-only
/// waits for the user's decision). Failures of the run itself (model error, step budget,
/// deadline) are a `failed` run, not an HTTP error.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", security(("bearer" = [])),
    request_body = CreateRun,
    responses(
        (status = 201, description = "The run, completed, failed, or awaiting approval.", body = RunView),
        (status = 400, description = "Malformed body (the field is named).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 503, description = "The ledger cannot be reached.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn create_run(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<CreateRun>,
) -> ApiResult<(StatusCode, AppJson<RunView>)> {
    user.require(Role::User)?;
    let view = state
        .app
        .start_run(&user.principal(), body.message, body.conversation_id)
        .await?;
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// Where a run stands: its status, answer, pending approvals or error.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id (UUID v7).", format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The run.", body = RunView),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), run = %path.id))]
async fn get_run(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
) -> ApiResult<AppJson<RunView>> {
    user.require(Role::User)?;
    Ok(AppJson(state.app.run_view(&user.tenant, path.id).await?))
}

/// One server-sent event of `GET /v1/runs/{id}/events` (documentation only: the stream
/// is written by axum's `Event`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RunEvent {
    /// `step`, then one `end` (or `error`, if the ledger could not be read).
    event: String,
    /// On `step` events, the step's `seq`.
    id: Option<String>,
    /// JSON: the step as the audit ledger stores it (`step`), `{"status"}` (`end`), or an
    /// error body (`error`).
    data: String,
}

/// The run's ledger steps as server-sent events: every step so far, then each new one as
/// it is recorded. Each `step` event's `id` is the step's `seq` (send `Last-Event-ID` to
/// resume after it) and its data the step as the audit ledger stores it. The stream ends
/// with an `end` event (`{"status": …}`) once the run completes, fails, is cancelled or
/// pauses for approval.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The run id (UUID v7).", format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Only steps after this seq.")
    ),
    responses(
        (status = 200, description = "`step` events, then one `end` event.", body = RunEvent, content_type = "text/event-stream"),
        (status = 400, description = "Malformed id or Last-Event-ID.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), run = %path.id))]
async fn run_events(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    user.require(Role::User)?;
    let after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        "Last-Event-ID must be a step seq (a whole number)",
                        Some("Last-Event-ID".into()),
                    )
                })?,
        ),
    };
    // 404 before the stream starts, not inside it.
    let events = state.app.follow(&user.tenant, path.id, after).await?;
    Ok(Sse::new(events.map(sse_event))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A run event as a server-sent event.
fn sse_event(event: Followed) -> Result<Event, Infallible> {
    Ok(match event {
        Followed::Step(step) => Event::default()
            .event("step")
            .id(step.seq.to_string())
            .json_data(&step)
            .unwrap_or_else(|_| Event::default().event("step")),
        Followed::End(status) => Event::default()
            .event("end")
            .data(serde_json::json!({ "status": status.as_str() }).to_string()),
        Followed::Unavailable => Event::default().event("error").data(
            serde_json::json!({ "error": { "code": "unavailable", "message": "the audit ledger is unavailable" } })
                .to_string(),
        ),
    })
}

/// One decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The pending call's `call_id`.
    pub call_id: String,
    /// `true` runs the call; `false` denies it and the model is told so.
    pub approve: bool,
    /// Why (recorded; on a denial the model is told it).
    #[serde(default)]
    pub reason: Option<String>,
    /// The pending call's `arguments_sha256` as the decider was shown it. Optional (older
    /// clients send none; the decision is then on the call as recorded); when given, a
    /// decision on other arguments is refused with 409 `arguments_mismatch` and nothing
    /// is recorded or run.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{64}$")]
    pub arguments_sha256: Option<cairn_audit::Hash>,
}

/// A decision for every pending call of a run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionsBody {
    /// One per pending call, all at once.
    pub decisions: Vec<DecisionBody>,
}

/// Approves or denies each pending call of a paused run; the caller is recorded as the
/// approver. Approved calls run, denied ones go back to the model as errors, and the run
/// continues until it completes, fails or pauses again.
#[utoipa::path(post, path = "/v1/runs/{id}/approvals", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id (UUID v7).", format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")),
    request_body = DecisionsBody,
    responses(
        (status = 200, description = "The run after the decisions.", body = RunView),
        (status = 400, description = "Malformed body or id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user, or neither the run's owner nor a holder of an approver role.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody),
        (status = 409, description = "The run is not awaiting approval, has ended, or is being resumed; or a decision's `arguments_sha256` is not the pending call's (`arguments_mismatch`, naming the call: nothing was recorded or run).", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "A decision names a call that is not pending, repeats one, or one is missing.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), run = %path.id))]
async fn decide(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
    AppJson(body): AppJson<DecisionsBody>,
) -> ApiResult<AppJson<RunView>> {
    user.require(Role::User)?;
    let decisions = body
        .decisions
        .into_iter()
        .map(|d| ApprovalDecision {
            call_id: d.call_id,
            approve: d.approve,
            by: user.user.clone(),
            reason: d.reason,
            arguments_sha256: d.arguments_sha256,
        })
        .collect();
    let view = state
        .app
        .decide(&user.principal(), path.id, decisions)
        .await?;
    Ok(AppJson(view))
}

/// Why a run is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Recorded with the cancellation.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancels a run that has not ended: a run being driven stops before its next action, a
/// paused one ends at once; either way `run_cancelled` is recorded with the caller. The
/// body (`{"reason": …}`) is optional.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id (UUID v7).", format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")),
    request_body(content = Option<CancelBody>, description = "Optional."),
    responses(
        (status = 200, description = "The run after cancelling (`cancelled`, or still `running` for a moment if it was being driven).", body = RunView),
        (status = 400, description = "Malformed body or id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user, or neither the run's owner nor a holder of an approver role.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody),
        (status = 409, description = "The run has already ended.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), run = %path.id))]
async fn cancel_run(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
    request: axum::extract::Request,
) -> ApiResult<AppJson<RunView>> {
    user.require(Role::User)?;
    let bytes = read_body(request, &state).await?;
    let body: CancelBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        parse_json(&bytes)?
    };
    let view = state
        .app
        .cancel(&user.principal(), path.id, body.reason)
        .await?;
    Ok(AppJson(view))
}
