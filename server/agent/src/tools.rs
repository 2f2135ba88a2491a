//! The loop's view of tools: a [`ToolExecutor`] lists what a tenant may use and runs one
//! call. The production executor over the wasmtime runtime is
//! [`RuntimeTools`](crate::RuntimeTools) (feature `runtime`); tests plug in doubles.
//!
//! The executor knows nothing of the ledger, policy or schemas: the loop records each call
//! before asking the executor, validates arguments and results itself, and records the
//! [`PolicyRecord`]s (egress decisions) the executor reports.

use async_trait::async_trait;
use cairn_audit::{PolicyOutcome, TenantId, UserId};
use cairn_manifest::{PluginId, ToolSpec};
use serde_json::Value;

/// A tool a tenant may use, as its plugin's manifest declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct AvailableTool {
    /// The plugin that provides it.
    pub plugin: PluginId,
    /// The manifest's declaration: name, description, schemas, annotations.
    pub spec: ToolSpec,
}

/// One call to run, after the loop recorded and validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInvocation {
    /// Whose data the call acts on.
    pub tenant: TenantId,
    /// The user the run acts for.
    pub user: UserId,
    /// The plugin.
    pub plugin: PluginId,
    /// The tool's name within the plugin.
    pub tool: String,
    /// The arguments, already valid against the tool's `input_schema`.
    pub arguments: Value,
}

/// A decision the executor made while running a call (an outbound request allowed or
/// refused), for the ledger's `policy_decision` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// What was asked for, e.g. `egress GET https://api.example.com:443/v1/items`.
    pub subject: String,
    /// Allowed or refused.
    pub decision: PolicyOutcome,
    /// The rule that decided, e.g. `manifest.permissions.outbound_hosts`.
    pub rule: String,
    /// Why, in words an auditor can read.
    pub reason: String,
}

/// Why a call failed, in terms the model can act on and the ledger records
/// (`error.type` and a message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ToolFailure {
    /// `error.type`, e.g. `trap`, `timeout`, `tool_error`, `egress_denied`.
    pub error_type: String,
    /// What happened, safe to show the model and the user.
    pub message: String,
}

impl ToolFailure {
    /// A failure of type `error_type`.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

/// What running one call produced: its outcome and the decisions made on the way, which
/// are recorded whatever the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolExecution {
    /// The tool's result (JSON) or why it failed.
    pub outcome: Result<Value, ToolFailure>,
    /// Egress and other policy decisions made during the call, in order.
    pub records: Vec<PolicyRecord>,
}

/// Lists and runs tools. The agent holds it as `Arc<dyn ToolExecutor>`.
#[async_trait]
pub trait ToolExecutor: Send + Sync {
    /// The tools `tenant` may use now. Called at the start of each run and each resume,
    /// so enabling or disabling a plugin takes effect at the next one.
    async fn tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure>;

    /// Runs one call. Never called before the loop recorded the call in the ledger.
    async fn execute(&self, call: ToolInvocation) -> ToolExecution;
}
