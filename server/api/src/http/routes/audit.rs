//! `/v1/audit/*`: the ledger for auditors (auditor role), always of the caller's tenant.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cairn_audit::transparency::{Bundle, ProofError};
use cairn_audit::{
    Actor, Cursor, LedgerError, PluginId, PurgeRequest, RunId, RunStatus, StepQuery, StepRecord,
    ToolCallName, UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::AppState;
use crate::http::auth::{AuthUser, Role};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(steps))
        .routes(routes!(run_trail))
        .routes(routes!(export))
        .routes(routes!(verify))
        .routes(routes!(latest_checkpoint, publish_checkpoint))
        .routes(routes!(consistency_proof))
        .routes(routes!(inclusion_proof))
        .routes(routes!(run_bundle))
        .routes(routes!(purge))
}

/// Filters over the caller's tenant's steps.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StepFilters {
    /// Only steps of this user's runs.
    user: Option<String>,
    /// Only steps concerning this plugin id (e.g. `tasks`).
    plugin: Option<String>,
    /// Only steps concerning this tool.
    tool: Option<String>,
    /// Only steps of this kind (`user_message`, `tool_call`, `tool_result`, …).
    kind: Option<String>,
    /// Only steps of this run.
    run: Option<String>,
    /// Only steps of runs whose status is this (`running`, `completed`, `failed`, …).
    status: Option<String>,
    /// Steps recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Steps recorded before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Full-text search over step content (all words must match).
    q: Option<String>,
    /// Page size, 1..=10000 (default 100).
    limit: Option<u32>,
    /// Continue after this cursor (from a previous page's `next`).
    cursor: Option<String>,
}

fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("query parameter `{field}`: {message}"),
        Some(field.to_owned()),
    )
}

impl StepFilters {
    fn into_query(self, user: &AuthUser) -> ApiResult<StepQuery> {
        let mut query = StepQuery::new(user.tenant.clone());
        if let Some(kind) = self.kind {
            query = query.kind(&kind).map_err(|e| bad("kind", e))?;
        }
        query.user = self
            .user
            .map(|u| UserId::parse(u).map_err(|e| bad("user", e)))
            .transpose()?;
        query.plugin = self
            .plugin
            .map(|p| PluginId::parse(p).map_err(|e| bad("plugin", e)))
            .transpose()?;
        query.tool = self
            .tool
            .map(|t| ToolCallName::parse(t).map_err(|e| bad("tool", e)))
            .transpose()?;
        query.run = self
            .run
            .map(|r| RunId::parse(&r).map_err(|e| bad("run", e)))
            .transpose()?;
        query.status = self
            .status
            .map(|s| {
                RunStatus::parse(&s).ok_or_else(|| {
                    bad(
                        "status",
                        format!("unknown status {s:?} (running, awaiting_approval, completed, failed, cancelled)"),
                    )
                })
            })
            .transpose()?;
        query.from = self.from;
        query.to = self.to;
        query.text = self.q;
        if let Some(limit) = self.limit {
            if !(1..=cairn_audit::MAX_PAGE).contains(&limit) {
                return Err(bad(
                    "limit",
                    format!("must be 1..={}", cairn_audit::MAX_PAGE),
                ));
            }
            query.limit = limit;
        }
        query.after = self
            .cursor
            .map(|c| Cursor::decode(&c).map_err(|e| bad("cursor", e)))
            .transpose()?;
        Ok(query)
    }
}

/// One page of steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepPageView {
    /// Steps, oldest first (the ledger's `StepRecord`, see `schemas/audit-step.schema.json`).
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<StepRecord>,
    /// Cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Queries the tenant's steps, oldest first, with cursor pagination.
#[utoipa::path(get, path = "/v1/audit/steps", tag = "audit", security(("bearer" = [])),
    params(StepFilters),
    responses(
        (status = 200, description = "One page of steps.", body = StepPageView),
        (status = 400, description = "A bad filter (named in `field`).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn steps(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(filters): AppQuery<StepFilters>,
) -> ApiResult<AppJson<StepPageView>> {
    user.require(Role::Auditor)?;
    let query = filters.into_query(&user)?;
    let page = state.ledger.query(&query).await?;
    Ok(AppJson(StepPageView {
        steps: page.steps,
        next: page.next.map(|c| c.encode()),
    }))
}

/// `{id}` of a run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPath {
    id: RunId,
}

/// A run's header and full trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunTrail {
    /// The run (the ledger's `Run`).
    #[schema(value_type = Object)]
    pub run: cairn_audit::Run,
    /// Its steps in order.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<StepRecord>,
}

/// A run's header and every step, in order.
#[utoipa::path(get, path = "/v1/audit/runs/{id}", tag = "audit", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The run id (UUID v7).")),
    responses(
        (status = 200, description = "The run and its trail.", body = RunTrail),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn run_trail(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
) -> ApiResult<AppJson<RunTrail>> {
    user.require(Role::Auditor)?;
    let run = state.ledger.run(&user.tenant, path.id).await?;
    let steps = state.ledger.trail(&user.tenant, path.id).await?;
    Ok(AppJson(RunTrail { run, steps }))
}

/// Export format and filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `jsonl` (default) or `csv`.
    format: Option<String>,
    /// Only steps of this user's runs.
    user: Option<String>,
    /// Only steps concerning this plugin id.
    plugin: Option<String>,
    /// Only steps concerning this tool.
    tool: Option<String>,
    /// Only steps of this kind.
    kind: Option<String>,
    /// Only steps of this run.
    run: Option<String>,
    /// Only steps of runs with this status.
    status: Option<String>,
    /// Steps recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Steps recorded before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Full-text search.
    q: Option<String>,
}

/// Streams every matching step as JSON Lines or CSV; memory stays at one page.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(ExportParams),
    responses(
        (status = 200, description = "The steps, streamed.", content(
            (String = "application/x-ndjson"),
            (String = "text/csv")
        )),
        (status = 400, description = "A bad parameter.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(params): AppQuery<ExportParams>,
) -> ApiResult<Response> {
    user.require(Role::Auditor)?;
    let csv = match params.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(bad(
                "format",
                format!("unknown format {other:?} (jsonl, csv)"),
            ));
        }
    };
    let mut query = StepFilters {
        user: params.user,
        plugin: params.plugin,
        tool: params.tool,
        kind: params.kind,
        run: params.run,
        status: params.status,
        from: params.from,
        to: params.to,
        q: params.q,
        limit: None,
        cursor: None,
    }
    .into_query(&user)?;
    query.limit = 1000;
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let ledger = state.ledger.clone();
    tokio::spawn(async move {
        let rows = ledger.export(query);
        let written = if csv {
            cairn_audit::write_csv(rows, writer).await
        } else {
            cairn_audit::write_jsonl(rows, writer).await
        };
        if let Err(error) = written {
            // The status line is gone; the truncated body is all a client can see.
            tracing::error!(%error, "audit export failed mid-stream");
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The time window of a verification.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// Only runs started at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only runs started before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
}

/// The result of a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    /// True when every hash and link checked out.
    pub ok: bool,
    /// Runs verified.
    pub runs: u64,
    /// Steps verified.
    pub steps: u64,
    /// Seal records verified.
    pub seals: u64,
    /// The first broken link, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<BreakView>,
    /// The report in words.
    pub report: String,
}

/// The first broken link.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakView {
    /// What is wrong.
    pub problem: String,
    /// The run concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<Uuid>,
    /// The step seq concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The seal seq concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal_seq: Option<u64>,
    /// What should be there.
    pub expected: String,
    /// What is there.
    pub found: String,
}

/// Recomputes the tenant's hash chains and names the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    params(VerifyParams),
    responses(
        (status = 200, description = "The verification (see `ok`).", body = VerifyView),
        (status = 400, description = "A bad parameter (named in `field`).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn verify(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(params): AppQuery<VerifyParams>,
) -> ApiResult<AppJson<VerifyView>> {
    user.require(Role::Auditor)?;
    let report = state
        .ledger
        .verify(Some(&user.tenant), params.from, params.to)
        .await?;
    let text = report.to_string();
    Ok(AppJson(VerifyView {
        ok: report.is_ok(),
        runs: report.counts.runs,
        steps: report.counts.steps,
        seals: report.counts.seals,
        broken: report.broken.map(|b| BreakView {
            problem: b.problem.describe().to_owned(),
            run: b.run,
            seq: b.seq,
            seal_seq: b.seal_seq,
            expected: b.expected,
            found: b.found,
        }),
        report: text,
    }))
}

/// A proof request's error: sizes out of range name the query `field`; the rest as
/// [`proof_error`].
fn out_of_range(field: &str, e: ProofError) -> ApiError {
    match e {
        ProofError::Merkle(e) => bad(field, e),
        e => proof_error(e),
    }
}

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::Ledger(e) => e.into(),
        ProofError::Merkle(e) => ApiError::bad_request("invalid_query", e.to_string(), None),
        ProofError::NotSealed(run) => ApiError::Conflict {
            code: "run_not_sealed",
            message: format!("run {run} has not ended, so no seal covers it yet"),
        },
        ProofError::NoSigningKey => ApiError::Conflict {
            code: "no_signing_key",
            message: "no checkpoint signing key is configured ([audit] checkpoint_key_file)".into(),
        },
        // The server refuses to sign a ledger that no longer extends its last checkpoint:
        // that is an alarm, not a bug, and says what it found.
        e @ (ProofError::Rewritten { .. } | ProofError::RolledBack { .. }) => ApiError::Conflict {
            code: "ledger_inconsistent",
            message: e.to_string(),
        },
        e => ApiError::Internal(anyhow::Error::new(e)),
    }
}

fn note(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The latest signed checkpoint of the caller's tenant (C2SP signed note). Keep it: it is
/// what later proofs are checked against.
#[utoipa::path(get, path = "/v1/audit/checkpoints/latest", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed checkpoint.", content_type = "text/plain", body = String),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody),
        (status = 404, description = "No checkpoint published yet.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn latest_checkpoint(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    user.require(Role::Auditor)?;
    match state
        .transparency
        .latest(&user.tenant)
        .await
        .map_err(proof_error)?
    {
        Some(cp) => Ok(note(cp.note)),
        None => Err(ApiError::NotFound("no checkpoint published yet".into())),
    }
}

/// Publishes a checkpoint of the tenant's tree now (also done on a schedule).
#[utoipa::path(post, path = "/v1/audit/checkpoints/latest", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "The new signed checkpoint.", content_type = "text/plain", body = String),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor or admin.", body = ErrorBody),
        (status = 409, description = "No signing key, or the ledger no longer extends the last checkpoint.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn publish_checkpoint(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    user.require_any(&[Role::Auditor, Role::Admin])?;
    let cp = state
        .transparency
        .publish(&user.tenant)
        .await
        .map_err(proof_error)?;
    Ok(note(cp.note))
}

/// Tree sizes of a consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// The size of the checkpoint held.
    from: u64,
    /// The newer size (default: the current tree).
    to: Option<u64>,
}

/// A Merkle proof: hashes in lowercase hex.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProofView {
    /// The older (consistency) or only (inclusion) tree size concerned.
    pub from: u64,
    /// The tree size the proof is against.
    pub to: u64,
    /// Leaf index (inclusion proofs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<u64>,
    /// The proof's hashes.
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<cairn_audit::Hash>,
}

/// A consistency proof between two tree sizes of the tenant's tree (RFC 6962).
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "audit", security(("bearer" = [])),
    params(ConsistencyParams),
    responses(
        (status = 200, description = "The proof.", body = ProofView),
        (status = 400, description = "Sizes out of range.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn consistency_proof(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(params): AppQuery<ConsistencyParams>,
) -> ApiResult<AppJson<ProofView>> {
    user.require(Role::Auditor)?;
    let to = size_or_current(&state, &user, params.to).await?;
    let proof = state
        .transparency
        .consistency(&user.tenant, params.from, to)
        .await
        .map_err(|e| out_of_range("from", e))?;
    Ok(AppJson(ProofView {
        from: params.from,
        to,
        leaf: None,
        proof,
    }))
}

/// The tree size a proof request named, or the tenant's current one.
async fn size_or_current(state: &AppState, user: &AuthUser, given: Option<u64>) -> ApiResult<u64> {
    match given {
        Some(size) => Ok(size),
        None => state
            .transparency
            .size(&user.tenant)
            .await
            .map_err(proof_error),
    }
}

/// Which seal, in which tree.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionParams {
    /// The seal's position (leaf index).
    seal: u64,
    /// The tree size (default: the current tree).
    size: Option<u64>,
}

/// An inclusion proof of one seal in the tenant's tree (RFC 6962).
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "audit", security(("bearer" = [])),
    params(InclusionParams),
    responses(
        (status = 200, description = "The proof.", body = ProofView),
        (status = 400, description = "Seal or size out of range.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn inclusion_proof(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(params): AppQuery<InclusionParams>,
) -> ApiResult<AppJson<ProofView>> {
    user.require(Role::Auditor)?;
    let size = size_or_current(&state, &user, params.size).await?;
    let proof = state
        .transparency
        .inclusion(&user.tenant, params.seal, size)
        .await
        .map_err(|e| out_of_range("seal", e))?;
    Ok(AppJson(ProofView {
        from: size,
        to: size,
        leaf: Some(params.seal),
        proof,
    }))
}

/// A run's offline proof bundle: its steps, seals, inclusion proofs and a signed checkpoint
/// (`cairn audit verify-bundle FILE --key PUBKEY` checks it with no database).
#[utoipa::path(get, path = "/v1/audit/runs/{id}/bundle", tag = "audit", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The run id (UUID v7).")),
    responses(
        (status = 200, description = "The bundle (JSON).", body = Object),
        (status = 400, description = "Malformed run id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an auditor.", body = ErrorBody),
        (status = 404, description = "No such run in this tenant.", body = ErrorBody),
        (status = 409, description = "The run has not ended, or no checkpoint can be signed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn run_bundle(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<RunPath>,
) -> ApiResult<AppJson<Bundle>> {
    user.require(Role::Auditor)?;
    let bundle = state
        .transparency
        .bundle(&user.tenant, path.id)
        .await
        .map_err(proof_error)?;
    Ok(AppJson(bundle))
}

/// A retention purge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// Remove runs sealed before this time (RFC 3339); no later than now minus the
    /// minimum retention.
    cutoff: DateTime<Utc>,
    /// Why; recorded in the purge record.
    reason: String,
}

/// What a purge removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeView {
    /// Runs removed.
    pub runs_purged: u64,
    /// Steps removed.
    pub steps_purged: u64,
    /// The purge record's position in the tenant chain.
    pub seal_seq: u64,
}

/// Purges the tenant's runs sealed before the cutoff (admin only). The record names the
/// authenticated caller, never a name from the body, and the reason.
#[utoipa::path(post, path = "/v1/audit/purge", tag = "audit", security(("bearer" = [])),
    request_body = PurgeBody,
    responses(
        (status = 200, description = "What was removed.", body = PurgeView),
        (status = 400, description = "A blank reason or a cutoff inside the minimum retention (named in `field`).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 503, description = "The ledger (or the retention role's connection) is unavailable; nothing was removed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn purge(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<PurgeBody>,
) -> ApiResult<AppJson<PurgeView>> {
    user.require(Role::Admin)?;
    let actor = Actor::parse(format!("user:{}", user.user.as_str()))
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let request = PurgeRequest {
        tenant: user.tenant.clone(),
        cutoff: body.cutoff,
        actor,
        reason: body.reason,
        min_retention: state.retention.min_retention,
    };
    let report = state
        .retention
        .ledger
        .purge(&request)
        .await
        .map_err(|e| match e {
            LedgerError::Invalid { what, reason } => {
                let field = if what.contains("reason") {
                    "reason"
                } else {
                    "cutoff"
                };
                ApiError::bad_request(
                    "invalid_purge",
                    format!("{what}: {reason}"),
                    Some(field.into()),
                )
            }
            e => e.into(),
        })?;
    Ok(AppJson(PurgeView {
        runs_purged: report.runs_purged,
        steps_purged: report.steps_purged,
        seal_seq: report.seal_seq,
    }))
}
