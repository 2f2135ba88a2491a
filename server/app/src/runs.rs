//! Runs of the reasoning loop: start, view, decide (approve or deny), cancel, follow.
//!
//! Every run is driven on its own task, so a caller that goes away (an HTTP
//! client hanging up, an MCP session closing) does not abandon a run half-way between
//! two recorded steps. Another tenant's run id is "not found", exactly like one that does
//! not exist.

use std::time::Duration;

use cairn_agent::{ApprovalDecision, PendingCall, RunOutcome, RunSettings, StartRun};
use cairn_audit::{ConversationId, RunId, RunStatus, StepKind, StepRecord, TenantId};
use cairn_store::{FollowEvent, FollowOptions, follow};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{App, AppError, AppResult, Principal};

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

/// What following a run yields: each step as it is recorded, then how the run stopped.
#[derive(Debug)]
pub enum RunEvent {
    /// A step, as the ledger stores it.
    Step(Box<StepRecord>),
    /// The run completed, failed, was cancelled or paused for approval: nothing more
    /// will come until someone acts on it.
    End(RunStatus),
    /// The ledger could not be read; the stream ends.
    Unavailable,
}

/// Drives a run on its own task (see the module docs) and waits for where it got.
pub(crate) async fn drive<F>(work: F) -> AppResult<RunOutcome>
where
    F: Future<Output = cairn_agent::Result<RunOutcome>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the run's task ended abnormally: {e}")))?
        .map_err(AppError::from)
}

/// The calls a run outcome waits on.
pub fn pending_of(outcome: &RunOutcome) -> Vec<PendingApproval> {
    match outcome {
        RunOutcome::AwaitingApproval { pending, .. } => {
            pending.iter().map(PendingApproval::from).collect()
        }
        _ => Vec::new(),
    }
}

impl App {
    /// Starts a run for `who` with `message`: records it, then asks the model and runs
    /// tools until the run completes, fails or pauses for approval. Failures of the run
    /// itself (model error, step budget, deadline) are a `failed` run, not an error.
    #[tracing::instrument(skip_all, fields(tenant = %who.tenant))]
    pub async fn start_run(
        &self,
        who: &Principal,
        message: String,
        conversation_id: Option<String>,
    ) -> AppResult<RunView> {
        if message.trim().is_empty() {
            return Err(AppError::invalid_body("message", "must not be empty"));
        }
        let conversation_id = conversation_id
            .map(|c| {
                ConversationId::parse(c).map_err(|e| AppError::invalid_body("conversation_id", e))
            })
            .transpose()?;
        self.refresh_policy(&who.tenant).await?;
        let agent = std::sync::Arc::clone(&self.agent);
        let request = StartRun {
            tenant: who.tenant.clone(),
            user: who.user.clone(),
            conversation_id,
            message,
            settings: RunSettings::default(),
        };
        let outcome = drive(async move { agent.start(request).await }).await?;
        self.run_view(&who.tenant, outcome.run_id()).await
    }

    /// The run as the ledger has it now.
    pub async fn run_view(&self, tenant: &TenantId, id: RunId) -> AppResult<RunView> {
        let info = self.agent.run_status(tenant, id).await?;
        let trail = self.ledger.trail(tenant, id).await?;
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

    /// Approves or denies each pending call of a paused run, as `who` (recorded as the
    /// approver); the run goes on until it completes, fails or pauses again.
    #[tracing::instrument(skip_all, fields(tenant = %who.tenant, run = %run))]
    pub async fn decide(
        &self,
        who: &Principal,
        run: RunId,
        decisions: Vec<ApprovalDecision>,
    ) -> AppResult<RunView> {
        if decisions.is_empty() {
            return Err(AppError::invalid_body(
                "decisions",
                "give one decision per pending call",
            ));
        }
        self.refresh_policy(&who.tenant).await?;
        let agent = std::sync::Arc::clone(&self.agent);
        let tenant = who.tenant.clone();
        let caller = who.caller();
        drive(async move { agent.resume(&tenant, run, &caller, decisions).await }).await?;
        self.run_view(&who.tenant, run).await
    }

    /// Cancels a run that has not ended: a run being driven (on any host) stops before
    /// its next action, a paused one ends at once.
    #[tracing::instrument(skip_all, fields(tenant = %who.tenant, run = %run))]
    pub async fn cancel(
        &self,
        who: &Principal,
        run: RunId,
        reason: Option<String>,
    ) -> AppResult<RunView> {
        self.agent
            .cancel(&who.tenant, run, &who.caller(), reason)
            .await?;
        // A run driven here records its cancellation from its own task; give it a moment
        // so the answer usually shows the end state.
        let mut view = self.run_view(&who.tenant, run).await?;
        for _ in 0..50 {
            if view.status != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            view = self.run_view(&who.tenant, run).await?;
        }
        Ok(view)
    }

    /// The run's steps after `after` (all when `None`), then each new one as it is
    /// recorded by any host (woken by the store's notifications, not by polling the
    /// trail), ending when the run stops. "Not found" is answered before anything is
    /// streamed.
    pub async fn follow(
        &self,
        tenant: &TenantId,
        run: RunId,
        after: Option<u64>,
    ) -> AppResult<impl Stream<Item = RunEvent> + Send + 'static> {
        self.ledger.run(tenant, run).await?;
        let events = follow(
            std::sync::Arc::clone(&self.ledger),
            &self.notifier,
            tenant.clone(),
            run,
            after,
            FollowOptions::default(),
        );
        Ok(events.map(|event| match event {
            Ok(FollowEvent::Step(step)) => RunEvent::Step(step),
            Ok(FollowEvent::End(status)) => RunEvent::End(status),
            Err(e) => {
                tracing::warn!(error = %e, "reading the run's steps for the event stream failed");
                RunEvent::Unavailable
            }
        }))
    }
}
