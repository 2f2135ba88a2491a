//! `/v1/runs`: runs of the reasoning loop, for the caller's tenant (user role).
//!
//! `POST /v1/runs` drives a run until it completes, fails, is cancelled or pauses for
//! approval, and answers with where it stands; a paused run holds nothing open and is
//! resumed by `POST /v1/runs/{id}/approvals`. `GET /v1/runs/{id}/events` streams the run's
//! ledger steps as server-sent events. Every run is driven on its own task, so a client
//! that hangs up does not abandon a run half-way between two recorded steps.
//!
//! Another tenant's run id is a 404, exactly like one that does not exist.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn_agent::{AgentError, ApprovalDecision, PendingCall, RunOutcome, StartRun};
use cairn_audit::{ConversationId, RunId, StepKind, TenantId};
use cairn_store::{FollowEvent, FollowOptions, follow};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        let message = error.to_string();
        match error {
            AgentError::RunNotFound(_) => ApiError::NotFound("run not found".into()),
            AgentError::NotAwaitingApproval { .. } => ApiError::Conflict {
                code: "not_awaiting_approval",
                message,
            },
            AgentError::RunEnded { .. } => ApiError::Conflict {
                code: "run_ended",
                message,
            },
            AgentError::NotPermitted { .. } => ApiError::Forbidden(message),
            AgentError::RunBusy(_) => ApiError::Conflict {
                code: "run_busy",
                message,
            },
            AgentError::ArgumentsMismatch { .. } => ApiError::Conflict {
                code: "arguments_mismatch",
                message,
            },
            AgentError::CallNotPending { .. }
            | AgentError::UndecidedCalls { .. }
            | AgentError::DuplicateDecision { .. } => {
                ApiError::unprocessable("invalid_decisions", message, Some("decisions".into()))
            }
            AgentError::UnknownTool { tool, .. } => {
                ApiError::NotFound(format!("plugin has no enabled tool `{tool}`"))
            }
            AgentError::InvalidArguments { field, .. } => {
                ApiError::unprocessable("invalid_arguments", message, Some(field))
            }
            AgentError::Invalid { what, .. } => {
                ApiError::bad_request("invalid_value", message, Some(what.to_owned()))
            }
            AgentError::Ledger { source, .. } if source.is_unavailable() => {
                ApiError::Unavailable("the audit ledger is unavailable".into())
            }
            e => ApiError::Internal(anyhow::Error::new(e)),
        }
    }
}

/// Drives a run on its own task (see the module docs) and waits for where it got.
pub(crate) async fn drive<F>(work: F) -> ApiResult<RunOutcome>
where
    F: Future<Output = cairn_agent::Result<RunOutcome>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the run's task ended abnormally: {e}")))?
        .map_err(ApiError::from)
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

/// A call waiting for a person's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApproval {
    /// The call's id (`gen_ai.tool.call.id`): what a decision names.
    pub call_id: String,
    /// The plugin whose tool it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The tool.
    pub tool: String,
    /// The arguments the model gave (valid against the tool's input schema).
    pub arguments: Value,
    /// SHA-256 (lowercase hex) of `arguments` in canonical JSON (RFC 8785), as recorded
    /// when approval was requested. Send it back in the decision to bind the decision to
    /// exactly these arguments; the call runs only with arguments that hash to it.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub arguments_sha256: cairn_audit::Hash,
    /// Why it needs approval.
    pub reason: String,
}

impl From<&PendingCall> for PendingApproval {
    fn from(p: &PendingCall) -> Self {
        Self {
            call_id: p.call_id.clone(),
            plugin: p.plugin.as_ref().map(ToString::to_string),
            tool: p.tool.to_string(),
            arguments: p.arguments.clone(),
            arguments_sha256: p.arguments_sha256,
            reason: p.reason.clone(),
        }
    }
}

/// Why a run failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunFailure {
    /// `error.type`, e.g. `step_budget_exhausted`, `deadline_exceeded`, `model_timeout`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// What happened.
    pub message: String,
}

/// A run and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run id (UUID v7); its trail is `GET /v1/audit/runs/{id}`.
    #[schema(value_type = Uuid)]
    pub id: RunId,
    /// `running`, `awaiting_approval`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The client's conversation id, if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The model that runs it.
    pub model: String,
    /// The final answer, once `completed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The calls to approve or deny, while `awaiting_approval`.
    pub pending_approvals: Vec<PendingApproval>,
    /// Why it failed, once `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunFailure>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Steps recorded so far.
    pub step_count: u64,
}

/// The run as the ledger has it now.
pub(crate) async fn run_view(state: &AppState, tenant: &TenantId, id: RunId) -> ApiResult<RunView> {
    let info = state.copilot.agent().run_status(tenant, id).await?;
    let trail = state.ledger.trail(tenant, id).await?;
    let answer = trail.iter().rev().find_map(|s| match &s.step {
        StepKind::FinalAnswer { text } => Some(text.clone()),
        _ => None,
    });
    let error = trail.iter().rev().find_map(|s| match &s.step {
        StepKind::RunFailed {
            error_type,
            message,
        } => Some(RunFailure {
            error_type: error_type.clone(),
            message: message.clone(),
        }),
        _ => None,
    });
    let run = info.run;
    Ok(RunView {
        id,
        status: run.status.as_str().to_owned(),
        conversation_id: run.conversation_id.map(|c| c.to_string()),
        model: run.model,
        answer,
        pending_approvals: info.pending.iter().map(PendingApproval::from).collect(),
        error,
        started_at: run.started_at,
        ended_at: run.ended_at,
        step_count: run.step_count,
    })
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
    if body.message.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "message: must not be empty",
            Some("message".into()),
        ));
    }
    let conversation_id = body
        .conversation_id
        .map(|c| {
            ConversationId::parse(c).map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("conversation_id: {e}"),
                    Some("conversation_id".into()),
                )
            })
        })
        .transpose()?;
    let agent = std::sync::Arc::clone(state.copilot.agent());
    let request = StartRun {
        tenant: user.tenant.clone(),
        user: user.user.clone(),
        conversation_id,
        message: body.message,
        settings: cairn_agent::RunSettings::default(),
    };
    let outcome = drive(async move { agent.start(request).await }).await?;
    let view = run_view(&state, &user.tenant, outcome.run_id()).await?;
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
    Ok(AppJson(run_view(&state, &user.tenant, path.id).await?))
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
    state.ledger.run(&user.tenant, path.id).await?;
    let stream = step_events(state, user.tenant, path.id, after);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The run's steps as SSE events, read as they are recorded (see `cairn_store::follow`).
fn step_events(
    state: AppState,
    tenant: TenantId,
    run: RunId,
    after: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let events = follow(
        state.ledger,
        &state.notifier,
        tenant,
        run,
        after,
        FollowOptions::default(),
    );
    events.map(|event| {
        Ok(match event {
            Ok(FollowEvent::Step(step)) => Event::default()
                .event("step")
                .id(step.seq.to_string())
                .json_data(&step)
                .unwrap_or_else(|_| Event::default().event("step")),
            Ok(FollowEvent::End(status)) => Event::default()
                .event("end")
                .data(serde_json::json!({ "status": status.as_str() }).to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the run's steps for the event stream failed");
                Event::default().event("error").data(
                    serde_json::json!({ "error": { "code": "unavailable", "message": "the audit ledger is unavailable" } })
                        .to_string(),
                )
            }
        })
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
    if body.decisions.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "decisions: give one decision per pending call",
            Some("decisions".into()),
        ));
    }
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
    let agent = std::sync::Arc::clone(state.copilot.agent());
    let tenant = user.tenant.clone();
    let run = path.id;
    let caller = user.caller();
    drive(async move { agent.resume(&tenant, run, &caller, decisions).await }).await?;
    Ok(AppJson(run_view(&state, &user.tenant, path.id).await?))
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
    state
        .copilot
        .agent()
        .cancel(&user.tenant, path.id, &user.caller(), body.reason)
        .await?;
    // A run driven here records its cancellation from its own task; give it a moment so
    // the answer usually shows the end state.
    let mut view = run_view(&state, &user.tenant, path.id).await?;
    for _ in 0..50 {
        if view.status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        view = run_view(&state, &user.tenant, path.id).await?;
    }
    Ok(AppJson(view))
}

/// The calls a run outcome waits on.
pub(crate) fn pending_of(outcome: &RunOutcome) -> Vec<PendingApproval> {
    match outcome {
        RunOutcome::AwaitingApproval { pending, .. } => {
            pending.iter().map(PendingApproval::from).collect()
        }
        _ => Vec::new(),
    }
}
