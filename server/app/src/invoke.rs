//! Direct invocation: one tool of an enabled installation called by a person, through the
//! loop's path for every call ([`cairn_agent::Agent::invoke`]): the approval policy
//! decides (`deny` → [`AppError::PolicyDenied`] naming the rule; a tool that needs
//! approval is approved by the caller's own invocation, recorded as their decision), the
//! call is recorded before it runs, input and output are checked against the tool's
//! schemas, egress decisions are recorded, and a failure carries the loop's `error.type`.

use cairn_agent::{InvokeTool, RunOutcome};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::runs::{PendingApproval, drive, pending_of};
use crate::{App, AppError, AppResult, Principal};

/// The outcome of a direct invocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeResult {
    /// The audited run that recorded the call.
    pub run_id: Uuid,
    /// `ok`, `error`, or `awaiting_approval` (the tool needs a person's approval: decide
    /// with `POST /v1/runs/{run_id}/approvals`; the result is then the run's answer).
    pub status: &'static str,
    /// The tool's result, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
    /// The call waiting for approval, when `status` is `awaiting_approval`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<PendingApproval>,
}

impl InvokeResult {
    /// Whether the call waits for a person's decision (nothing ran yet).
    pub fn is_pending(&self) -> bool {
        self.status == "awaiting_approval"
    }
}

/// A failed tool call.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeError {
    /// `error.type`, as the loop records it: `tool`, `timeout`, `trap`, `invalid_output`, …
    #[serde(rename = "type")]
    pub error_type: String,
    /// The message.
    pub message: String,
}

impl App {
    /// Calls `tool` of the tenant's installation `installation` with `arguments`, as
    /// `who`. The caller names the exact call, so their invocation is their approval
    /// (recorded as such); a `deny` rule still refuses it.
    #[tracing::instrument(skip_all, fields(tenant = %who.tenant, %installation, %tool))]
    pub async fn invoke(
        &self,
        who: &Principal,
        installation: Uuid,
        tool: String,
        arguments: Value,
    ) -> AppResult<InvokeResult> {
        let plugin = self
            .installations
            .enabled_plugin_id(&who.tenant, installation)
            .await?;
        self.refresh_policy(&who.tenant).await?;
        let agent = std::sync::Arc::clone(&self.agent);
        let request = InvokeTool {
            tenant: who.tenant.clone(),
            user: who.user.clone(),
            plugin,
            tool,
            arguments,
            // The caller names the exact call: that is their approval (recorded as such).
            approved_by_caller: true,
        };
        let outcome = drive(async move { agent.invoke(request).await }).await?;
        let run_id = outcome.run_id().as_uuid();
        let pending = pending_of(&outcome);
        let result = |status, result, error| InvokeResult {
            run_id,
            status,
            result,
            error,
            pending_approvals: Vec::new(),
        };
        Ok(match outcome {
            RunOutcome::Completed { answer, .. } => {
                let value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
                result("ok", Some(value), None)
            }
            RunOutcome::Failed {
                error_type,
                message,
                ..
            } if error_type == "busy" => {
                // Refused for want of a call slot: recorded, and answered as busy.
                return Err(AppError::Busy {
                    message: format!("{message} (run {run_id})"),
                    retry_after: std::time::Duration::from_secs(1),
                });
            }
            RunOutcome::Failed {
                error_type,
                message,
                ..
            } if error_type == "denied_by_policy" => {
                return Err(AppError::PolicyDenied(format!("{message} (run {run_id})")));
            }
            RunOutcome::Failed {
                error_type,
                message,
                ..
            } => {
                let error = InvokeError {
                    error_type,
                    message,
                };
                result("error", None, Some(error))
            }
            RunOutcome::AwaitingApproval { .. } => InvokeResult {
                pending_approvals: pending,
                ..result("awaiting_approval", None, None)
            },
            RunOutcome::Cancelled { .. } => {
                return Err(AppError::Conflict {
                    code: "run_cancelled",
                    message: format!("run {run_id} was cancelled"),
                });
            }
        })
    }
}
