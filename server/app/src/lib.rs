//! Cairn's application layer: what the host *does*, whatever transport asked.
//!
//! Why a crate of its own, and not a module of `cairn-server`: the HTTP routes, and next
//! the MCP server and the task pane's endpoints, must all reach a tool, a run or a policy
//! through the same functions, so a rule (the approval policy, egress records, one
//! mapping of failures to `error.type` and to [`AppError`]) lives in one place. A crate
//! boundary makes that checkable: this crate does not depend on axum (or any web
//! framework), so nothing here can parse a request or render a response, and a route can
//! only parse, authorise, call [`App`] and render. It also keeps compile times sane: a
//! route change recompiles `cairn-server` only.
//!
//! What it owns:
//! - [`runs`]: start, view, decide, cancel and follow runs (event following wakes on the
//!   store's notifications — PostgreSQL `LISTEN/NOTIFY` between hosts — never by polling).
//! - [`invoke`]: direct invocation of one tool through the loop's one tool-call path.
//! - [`openai`]: the OpenAI-compatible chat completions translation (request → run
//!   settings, outcome → `chat.completion` or its chunks).
//! - [`policy`]: the approval policy per tenant, stored in the database and changed only
//!   as an audited admin action, read by every host before it decides a call.
//! - [`admin`]: the one way an admin action is recorded in the ledger (who, when, before
//!   and after), used by the plugin registry too.
//!
//! What it does not own (yet): the plugin registry (installations, loading) stays in
//! `cairn-server` until the package format moves out of that crate (issue #9 point 8);
//! this crate sees installations through [`Installations`].

#![warn(missing_docs)]

pub mod admin;
mod error;
pub mod invoke;
pub mod openai;
pub mod policy;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_agent::{
    Agent, AgentConfig, AgentDeps, ApprovalPolicy, AvailableTool, Caller, ToolExecutor,
    ToolFailure, ToolSelector,
};
use cairn_audit::{Ledger, TenantId, UserId};
use cairn_model::ChatModel;
use cairn_store::RunNotifier;
use uuid::Uuid;

pub use error::{AppError, AppResult};

/// Who is asking: the tenant whose data they may touch, the user, and their roles (as the
/// identity provider names them). Transports build it from their own credentials and
/// check roles themselves before calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller.
    pub user: UserId,
    /// Their roles, by name (matched against the policy's `approver_roles`).
    pub roles: Vec<String>,
}

impl Principal {
    /// The caller as the loop checks it (owner or approver).
    pub fn caller(&self) -> Caller {
        Caller::user(self.user.clone(), self.roles.iter().map(String::as_str))
    }
}

/// The installations the application calls tools of (the plugin registry).
#[async_trait]
pub trait Installations: Send + Sync {
    /// The manifest plugin id of the tenant's installation `installation`, if it is
    /// enabled: [`AppError::NotFound`] for none (or another tenant's), a conflict
    /// (`plugin_disabled`) for a disabled one.
    async fn enabled_plugin_id(&self, tenant: &TenantId, installation: Uuid) -> AppResult<String>;
}

/// How the loop behaves, from the deployment's settings.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Instructions sent first in every model request.
    pub system_prompt: Option<String>,
    /// The most model requests one run may make.
    pub max_model_calls: u32,
    /// How long a run may work from its start or each resume.
    pub deadline: Duration,
    /// Cap on generated tokens per model request.
    pub max_tokens: Option<u32>,
    /// The deployment's approval policy (a file, if configured): the global rules and
    /// every tenant's default until an admin stores the tenant's own ([`policy`]).
    pub approval: ApprovalPolicy,
}

/// What the application runs over.
pub struct AppDeps {
    /// The chat model.
    pub model: Arc<dyn ChatModel>,
    /// The ledger (appends wake followers through `notifier`).
    pub ledger: Arc<dyn Ledger>,
    /// Run notifications: what event following waits on.
    pub notifier: RunNotifier,
    /// The tenant's tools and how one is called.
    pub tools: Arc<dyn ToolExecutor>,
    /// Narrows the tools offered to a run, if set.
    pub selector: Option<Arc<dyn ToolSelector>>,
    /// The installations direct invocation resolves.
    pub installations: Arc<dyn Installations>,
}

/// The application: one per host, shared by every request (`Arc<App>`). It holds the one
/// [`Agent`], so every run, direct invocation, approval and cancellation goes through it.
pub struct App {
    agent: Arc<Agent>,
    ledger: Arc<dyn Ledger>,
    notifier: RunNotifier,
    tools: Arc<dyn ToolExecutor>,
    model_name: String,
    started_at: i64,
    installations: Arc<dyn Installations>,
    policies: policy::Policies,
}

impl App {
    /// The application over `deps`, configured by `config`.
    pub fn new(config: AppConfig, deps: AppDeps) -> Self {
        let agent_config = AgentConfig {
            system_prompt: config.system_prompt,
            max_model_calls: config.max_model_calls,
            deadline: config.deadline,
            max_tokens: config.max_tokens,
            // The deployment's cap is for text answers; forced calls get room.
            widen_forced_calls: true,
            approval: config.approval.clone(),
            ..AgentConfig::default()
        };
        let model_name = deps.model.name().to_owned();
        let agent = Agent::new(
            agent_config,
            AgentDeps {
                model: deps.model,
                ledger: Arc::clone(&deps.ledger),
                tools: Arc::clone(&deps.tools),
            },
        );
        let agent = match deps.selector {
            Some(s) => agent.with_tool_selector(s),
            None => agent,
        };
        Self {
            agent: Arc::new(agent),
            policies: policy::Policies::new(deps.ledger.database(), config.approval),
            ledger: deps.ledger,
            notifier: deps.notifier,
            tools: deps.tools,
            model_name,
            started_at: chrono::Utc::now().timestamp(),
            installations: deps.installations,
        }
    }

    /// The shared agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The tools `tenant`'s runs are offered: its enabled plugins'.
    pub async fn server_tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        self.tools.tools(tenant).await
    }

    /// The model's name, as runs record it.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// When this application was built (Unix seconds): the `created` of the models it
    /// serves.
    pub fn started_at(&self) -> i64 {
        self.started_at
    }
}
