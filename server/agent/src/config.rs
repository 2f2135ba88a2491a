//! How the loop behaves: budgets, deadline, prompt and approval policy.

use std::sync::Arc;
use std::time::Duration;

use cairn_audit::Ledger;
use cairn_model::ChatModel;

use crate::policy::ApprovalPolicy;
use crate::tools::ToolExecutor;

/// The loop's settings. The API crate maps its own configuration onto this.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Instructions sent as the first (system) message of every model request. Not
    /// recorded per run: it is deployment configuration.
    pub system_prompt: Option<String>,
    /// The step budget: the most model requests one run may make. A run that would need
    /// another fails with `step_budget_exhausted`, so a model that keeps calling tools (or
    /// keeps getting them wrong) cannot run forever.
    pub max_model_calls: u32,
    /// The wall-clock bound on each stretch of work: from `start` until the run ends or
    /// pauses, and from each `resume` likewise (a pause for approval may last days and
    /// does not count). Passing it fails the run with `deadline_exceeded`.
    pub deadline: Duration,
    /// Cap on generated tokens per model request.
    pub max_tokens: Option<u32>,
    /// Whether a request that forces a tool call gets
    /// [`forced_call_token_budget`](cairn_model::forced_call_token_budget) of `max_tokens`
    /// instead of `max_tokens` itself: right for a deployment's default cap (there to stop
    /// rambling text answers), wrong for a client's explicit `max_tokens`, which is a hard
    /// limit. Off by default.
    pub widen_forced_calls: bool,
    /// Sampling temperature; `None` keeps the provider's default.
    pub temperature: Option<f32>,
    /// Whether the model may call several tools in one turn (they run concurrently).
    pub parallel_tool_calls: bool,
    /// Which calls need a person's approval.
    pub approval: ApprovalPolicy,
    /// The deployment's time zone, as its offset from UTC: every model request carries
    /// the run's current time at this offset ([`RunClock`](cairn_model::RunClock)), so
    /// "tomorrow" in a request means the user's tomorrow. UTC by default.
    pub utc_offset: chrono::FixedOffset,
}

impl Default for AgentConfig {
    /// Eight model requests, two minutes, parallel calls, approval unless read-only.
    fn default() -> Self {
        Self {
            system_prompt: None,
            max_model_calls: 8,
            deadline: Duration::from_secs(120),
            max_tokens: None,
            widen_forced_calls: false,
            temperature: None,
            parallel_tool_calls: true,
            approval: ApprovalPolicy::default(),
            utc_offset: chrono::FixedOffset::east_opt(0).expect("zero is a valid offset"),
        }
    }
}

/// What the loop joins: a model, the ledger and the tools, each behind a trait so the loop
/// compiles and is tested without wasmtime, a database driver or a network.
#[derive(Clone)]
pub struct AgentDeps {
    /// The chat model every run talks to.
    pub model: Arc<dyn ChatModel>,
    /// Where every step is recorded before the next action.
    pub ledger: Arc<dyn Ledger>,
    /// Lists and runs the tenant's tools.
    pub tools: Arc<dyn ToolExecutor>,
}
