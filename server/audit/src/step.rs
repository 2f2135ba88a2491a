//! What a step records: one typed enum, serialised with OpenTelemetry GenAI field names.
//!
//! The JSON form of [`StepKind`] is what is stored, hashed and exported, and
//! `schemas/audit-step.schema.json` is generated from these types.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canonical::Hash;
use crate::ids::{Actor, PluginId, ToolCallName, UserId};

/// One step of a run. The `kind` tag names the variant in `snake_case`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// What the run was asked with beyond the deployment's settings, recorded before
    /// anything else happens, so that a paused run resumes (in any process) exactly as it
    /// was asked. Runs with nothing of their own record none.
    RunConfigured {
        /// `loop` (the model decides what to call) or `direct` (one call named by the
        /// caller; no model).
        mode: RunMode,
        /// The client's own system instructions, added after the deployment's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// Tools the client supplied: offered to the model, never run by Cairn; a call to
        /// one pauses the run and is handed back to the client.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        client_tools: Vec<ClientTool>,
        /// `tool_choice: "none"`: no tool is offered at all.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_tools: bool,
        /// `tool_choice: "required"` or a named function: the run's first model request
        /// must call a tool (that one, the only one offered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forced_tool: Option<ForcedTool>,
        /// The client's cap on generated tokens per model request (a hard limit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u32>,
        /// The client's sampling temperature.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temperature: Option<f32>,
    },
    /// An administrator changed the deployment: installed, enabled, disabled, configured,
    /// upgraded or uninstalled a plugin, or changed the approval policy. `before` and
    /// `after` are the state the action replaced and left (a secret setting's value never
    /// appears, only whether it is set).
    AdminAction {
        /// What was done, e.g. `plugin.install`, `plugin.config`, `approval_policy.set`.
        action: String,
        /// What it was done to: an installation id, or `approval_policy`.
        target: String,
        /// The plugin concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plugin_id: Option<PluginId>,
        /// The state before (null when there was none).
        before: serde_json::Value,
        /// The state after (null when there is none any more).
        after: serde_json::Value,
    },
    /// The user's request as received.
    UserMessage {
        /// The message text.
        text: String,
    },
    /// A request sent to the model.
    ModelRequest {
        /// `gen_ai.operation.name`, e.g. `chat`.
        #[serde(rename = "gen_ai.operation.name")]
        operation: String,
        /// `gen_ai.request.model`: the model asked for.
        #[serde(rename = "gen_ai.request.model")]
        model: String,
        /// The tools offered to the model for this request.
        #[serde(default)]
        tools_offered: Vec<ToolCallName>,
        /// How many messages the prompt held.
        message_count: u32,
    },
    /// The model's answer to a request: its reasoning, text and token usage.
    ModelResponse {
        /// `gen_ai.response.model`: the model that answered, if the provider said.
        #[serde(
            rename = "gen_ai.response.model",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        response_model: Option<String>,
        /// The normalised reasoning text, whatever shape the model returned it in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reasoning: Option<String>,
        /// The visible text of the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// `gen_ai.response.finish_reasons`.
        #[serde(rename = "gen_ai.response.finish_reasons", default)]
        finish_reasons: Vec<String>,
        /// `gen_ai.usage.input_tokens`.
        #[serde(rename = "gen_ai.usage.input_tokens")]
        input_tokens: u64,
        /// `gen_ai.usage.output_tokens`.
        #[serde(rename = "gen_ai.usage.output_tokens")]
        output_tokens: u64,
    },
    /// The model asked for a tool to be called. Recorded before the tool runs.
    ToolCall {
        /// `cairn.plugin.id`: the plugin that provides the tool (none for client tools).
        #[serde(
            rename = "cairn.plugin.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        plugin_id: Option<PluginId>,
        /// `gen_ai.tool.name`.
        #[serde(rename = "gen_ai.tool.name")]
        tool_name: ToolCallName,
        /// `gen_ai.tool.call.id`.
        #[serde(rename = "gen_ai.tool.call.id")]
        call_id: String,
        /// The arguments exactly as the model produced them (after parsing).
        arguments: serde_json::Value,
    },
    /// What policy allowed or refused, and why.
    PolicyDecision {
        /// `cairn.plugin.id`, when the decision concerns a plugin.
        #[serde(
            rename = "cairn.plugin.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        plugin_id: Option<PluginId>,
        /// `gen_ai.tool.name`, when the decision concerns a tool.
        #[serde(
            rename = "gen_ai.tool.name",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        tool_name: Option<ToolCallName>,
        /// `gen_ai.tool.call.id`, when the decision concerns one call.
        #[serde(
            rename = "gen_ai.tool.call.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        call_id: Option<String>,
        /// What was asked for, e.g. `egress https://api.example.com:443`.
        subject: String,
        /// Allowed or refused.
        decision: PolicyOutcome,
        /// The rule that decided, e.g. `manifest.permissions.hosts`.
        rule: String,
        /// Why, in words an auditor can read.
        reason: String,
    },
    /// A tool with side effects needs the user's approval; the run pauses.
    ApprovalRequested {
        /// `cairn.plugin.id`.
        #[serde(
            rename = "cairn.plugin.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        plugin_id: Option<PluginId>,
        /// `gen_ai.tool.name`.
        #[serde(rename = "gen_ai.tool.name")]
        tool_name: ToolCallName,
        /// `gen_ai.tool.call.id`.
        #[serde(rename = "gen_ai.tool.call.id")]
        call_id: String,
        /// Why approval is needed (e.g. the tool is not read-only).
        reason: String,
        /// SHA-256 of the call's arguments in canonical JSON (RFC 8785), lowercase hex:
        /// what the approver is shown and what a decision must name. Absent on steps
        /// recorded before approvals were bound to their arguments.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments_sha256: Option<Hash>,
    },
    /// Someone approved or denied a pending call.
    ApprovalDecided {
        /// `gen_ai.tool.call.id` of the call decided.
        #[serde(rename = "gen_ai.tool.call.id")]
        call_id: String,
        /// Who decided.
        decided_by: UserId,
        /// When they decided (their request's time, which may precede recording).
        decided_at: DateTime<Utc>,
        /// Approve or deny.
        decision: ApprovalOutcome,
        /// The reason they gave, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// SHA-256 of the canonical (RFC 8785) arguments decided on, lowercase hex: an
        /// approved call runs only with arguments that hash to it. Absent on steps
        /// recorded before approvals were bound to their arguments.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments_sha256: Option<Hash>,
    },
    /// A tool returned.
    ToolResult {
        /// `cairn.plugin.id`.
        #[serde(
            rename = "cairn.plugin.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        plugin_id: Option<PluginId>,
        /// `gen_ai.tool.name`.
        #[serde(rename = "gen_ai.tool.name")]
        tool_name: ToolCallName,
        /// `gen_ai.tool.call.id`.
        #[serde(rename = "gen_ai.tool.call.id")]
        call_id: String,
        /// The result as returned (after output-schema validation).
        result: serde_json::Value,
        /// Wall time of the call in milliseconds.
        duration_ms: u64,
    },
    /// A tool failed (trap, timeout, typed error, schema violation).
    ToolError {
        /// `cairn.plugin.id`.
        #[serde(
            rename = "cairn.plugin.id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        plugin_id: Option<PluginId>,
        /// `gen_ai.tool.name`.
        #[serde(rename = "gen_ai.tool.name")]
        tool_name: ToolCallName,
        /// `gen_ai.tool.call.id`.
        #[serde(rename = "gen_ai.tool.call.id")]
        call_id: String,
        /// `error.type`, e.g. `timeout`, `trap`, `invalid_arguments`.
        #[serde(rename = "error.type")]
        error_type: String,
        /// The message.
        message: String,
    },
    /// The answer given to the user. Ends the run as `completed`.
    FinalAnswer {
        /// The answer text.
        text: String,
    },
    /// The run failed. Ends the run as `failed`.
    RunFailed {
        /// `error.type`.
        #[serde(rename = "error.type")]
        error_type: String,
        /// The message.
        message: String,
    },
    /// The run was cancelled. Ends the run as `cancelled`.
    RunCancelled {
        /// Who cancelled.
        cancelled_by: Actor,
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// How a run decides what to call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// The reasoning loop: the model decides.
    #[default]
    Loop,
    /// A direct invocation: the caller named one tool and its arguments; no model runs,
    /// and the tool's result is the answer.
    Direct,
}

/// A tool a client supplied with its request (OpenAI's `tools[].function`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTool {
    /// The function's name, as the client spelled it.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// A tool call the client's `tool_choice` forces on the run's first model request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForcedTool {
    /// `"required"`: a call to any tool offered.
    Required,
    /// `{"type": "function", "function": {"name"}}`: a call to this tool, by the name the
    /// model is offered it under; it is the only tool offered to the run.
    Function {
        /// The tool's name as offered to the model.
        name: String,
    },
}

/// The outcome of a policy check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// The action was allowed.
    Allowed,
    /// The action was refused.
    Refused,
}

/// The outcome of an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// The call may run.
    Approve,
    /// The call must not run.
    Deny,
}

/// Where a run stands. Derived from its steps: the last step decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Working.
    Running,
    /// Paused until someone approves or denies a call.
    AwaitingApproval,
    /// Ended with a final answer.
    Completed,
    /// Ended with an error.
    Failed,
    /// Ended by cancellation.
    Cancelled,
}

impl RunStatus {
    /// The spelling stored in the database and used in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "awaiting_approval" => RunStatus::AwaitingApproval,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// True for completed, failed and cancelled: the run is sealed and accepts no steps.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl StepKind {
    /// The `kind` tag, as stored in its own column for filtering.
    pub fn kind_name(&self) -> &'static str {
        match self {
            StepKind::RunConfigured { .. } => "run_configured",
            StepKind::AdminAction { .. } => "admin_action",
            StepKind::UserMessage { .. } => "user_message",
            StepKind::ModelRequest { .. } => "model_request",
            StepKind::ModelResponse { .. } => "model_response",
            StepKind::ToolCall { .. } => "tool_call",
            StepKind::PolicyDecision { .. } => "policy_decision",
            StepKind::ApprovalRequested { .. } => "approval_requested",
            StepKind::ApprovalDecided { .. } => "approval_decided",
            StepKind::ToolResult { .. } => "tool_result",
            StepKind::ToolError { .. } => "tool_error",
            StepKind::FinalAnswer { .. } => "final_answer",
            StepKind::RunFailed { .. } => "run_failed",
            StepKind::RunCancelled { .. } => "run_cancelled",
        }
    }

    /// Every kind tag, for validating query filters.
    pub const KIND_NAMES: [&'static str; 14] = [
        "run_configured",
        "admin_action",
        "user_message",
        "model_request",
        "model_response",
        "tool_call",
        "policy_decision",
        "approval_requested",
        "approval_decided",
        "tool_result",
        "tool_error",
        "final_answer",
        "run_failed",
        "run_cancelled",
    ];

    /// The run's status after this step.
    pub fn status_after(&self) -> RunStatus {
        match self {
            StepKind::ApprovalRequested { .. } => RunStatus::AwaitingApproval,
            StepKind::FinalAnswer { .. } => RunStatus::Completed,
            StepKind::RunFailed { .. } => RunStatus::Failed,
            StepKind::RunCancelled { .. } => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }

    /// The plugin this step concerns, if any (indexed for auditors' filters).
    pub fn plugin_id(&self) -> Option<&PluginId> {
        match self {
            StepKind::ToolCall { plugin_id, .. }
            | StepKind::PolicyDecision { plugin_id, .. }
            | StepKind::ApprovalRequested { plugin_id, .. }
            | StepKind::ToolResult { plugin_id, .. }
            | StepKind::ToolError { plugin_id, .. }
            | StepKind::AdminAction { plugin_id, .. } => plugin_id.as_ref(),
            _ => None,
        }
    }

    /// The tool this step concerns, if any (indexed for auditors' filters).
    pub fn tool_name(&self) -> Option<&ToolCallName> {
        match self {
            StepKind::ToolCall { tool_name, .. }
            | StepKind::ApprovalRequested { tool_name, .. }
            | StepKind::ToolResult { tool_name, .. }
            | StepKind::ToolError { tool_name, .. } => Some(tool_name),
            StepKind::PolicyDecision { tool_name, .. } => tool_name.as_ref(),
            _ => None,
        }
    }
}

/// The JSON Schema of a stored step ([`crate::StepRecord`]), as committed in
/// `schemas/audit-step.schema.json`.
pub fn step_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(crate::model::StepRecord);
    schema.to_value()
}
