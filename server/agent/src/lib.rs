//! The reasoning loop: run state machine, tool dispatch, schema validation, approvals.
//!
//! An [`Agent`] joins three things it knows only through traits: a
//! [`ChatModel`](cairn_model::ChatModel), the audit [`Ledger`](cairn_audit::Ledger) and a
//! [`ToolExecutor`] ([`RuntimeTools`] over the wasmtime runtime with the `runtime`
//! feature). A run is a state machine whose every transition is appended to the ledger
//! *before* the next action; the ledger's trail is the only run state, so a run paused
//! for approval is resumed by any process, after a restart too.
//!
//! ```no_run
//! # async fn demo(deps: cairn_agent::AgentDeps) -> cairn_agent::Result<()> {
//! use cairn_agent::*;
//! use cairn_audit::{TenantId, UserId};
//!
//! let agent = Agent::new(AgentConfig::default(), deps);
//! let tenant = TenantId::parse("acme").unwrap();
//! let outcome = agent
//!     .start(StartRun {
//!         tenant: tenant.clone(),
//!         user: UserId::parse("alice").unwrap(),
//!         conversation_id: None,
//!         message: "Remind me to renew my passport".into(),
//!         settings: RunSettings::default(),
//!     })
//!     .await?;
//! if let RunOutcome::AwaitingApproval { run_id, pending } = outcome {
//!     let decisions = pending
//!         .iter()
//!         .map(|p| ApprovalDecision {
//!             call_id: p.call_id.clone(),
//!             approve: true,
//!             by: UserId::parse("alice").unwrap(),
//!             reason: None,
//!             // What the approver was shown: a decision on other arguments is refused.
//!             arguments_sha256: Some(p.arguments_sha256),
//!         })
//!         .collect();
//!     let owner = Caller::user(UserId::parse("alice").unwrap(), Vec::<String>::new());
//!     agent.resume(&tenant, run_id, &owner, decisions).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Tool retrieval is an optional hook: [`Agent::with_tool_selector`] with a
//! [`RetrievalSelector`] offers the model only the tools that best match the request.
//!
//! Modules: `run` (the state machine), `settings` (what one run asks for itself), `catalog` (tools offered, schema validation),
//! `selection` (which tools are offered),
//! `policy` (approval gating), `replay` (the conversation as a fold over ledger steps),
//! `agent` (the public API), `error`.
#![warn(missing_docs)]

mod agent;
mod catalog;
mod config;
mod error;
mod policy;
mod replay;
mod run;
#[cfg(feature = "runtime")]
mod runtime_tools;
mod selection;
mod settings;
mod state;
mod tools;

pub use agent::{ApprovalDecision, Caller, InvokeTool, RunInfo, StartRun};
pub use catalog::model_names;
pub use config::{AgentConfig, AgentDeps};
pub use error::{AgentError, Result};
pub use policy::{ApprovalMode, ApprovalPolicy, Gate, TenantApprovalPolicy};
pub use replay::PendingCall;
#[cfg(feature = "runtime")]
pub use runtime_tools::RuntimeTools;
pub use selection::{RetrievalConfig, RetrievalSelector, ToolSelection, ToolSelector};
pub use settings::{CLIENT_PLUGIN, RunSettings};
pub use state::{Agent, RunOutcome};
pub use tools::{
    AvailableTool, PolicyRecord, ToolExecution, ToolExecutor, ToolFailure, ToolInvocation,
};
