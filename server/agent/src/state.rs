//! The agent itself and what it holds: configuration, dependencies, the approval policy,
//! and the runs driven in this process (their cancellation channels), plus what a drive
//! ends in. The public operations on runs are in `agent`, the state machine that drives
//! one in `run`; both use this module, which uses neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use cairn_audit::{Actor, RunId, TenantId, UserId};
use tokio::sync::watch;

use crate::catalog::SchemaCache;
use crate::config::{AgentConfig, AgentDeps};
use crate::error::{AgentError, Result};
use crate::policy::ApprovalPolicy;
use crate::replay::PendingCall;
use crate::selection::ToolSelector;
use crate::tools::{ToolExecution, ToolInvocation};

/// How far a call to [`Agent::start`] or [`Agent::resume`] got. Nothing is held open in
/// any case: a paused run lives only in the ledger until it is resumed.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The model answered; the run is sealed.
    Completed {
        /// The run.
        run_id: RunId,
        /// The answer.
        answer: String,
    },
    /// Calls wait for a person's approval; resume with [`Agent::resume`].
    AwaitingApproval {
        /// The run.
        run_id: RunId,
        /// The calls to decide.
        pending: Vec<PendingCall>,
    },
    /// The run failed (model error, step budget, deadline); the failure is recorded.
    Failed {
        /// The run.
        run_id: RunId,
        /// `error.type`, e.g. `step_budget_exhausted`, `deadline_exceeded`, `model_timeout`.
        error_type: String,
        /// What happened.
        message: String,
    },
    /// The run was cancelled; the cancellation is recorded.
    Cancelled {
        /// The run.
        run_id: RunId,
    },
}

impl RunOutcome {
    /// The run this outcome is about.
    pub fn run_id(&self) -> RunId {
        match self {
            RunOutcome::Completed { run_id, .. }
            | RunOutcome::AwaitingApproval { run_id, .. }
            | RunOutcome::Failed { run_id, .. }
            | RunOutcome::Cancelled { run_id } => *run_id,
        }
    }
}

/// A request to stop a run, carried to the task driving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CancelRequest {
    pub by: Actor,
    pub reason: Option<String>,
}

/// A run being driven in this process (or being cancelled here): its tenant (so `cancel`
/// cannot reach across tenants), its owner (who may cancel it), and the channel its
/// driver watches.
pub(crate) struct Active {
    pub(crate) tenant: TenantId,
    pub(crate) owner: UserId,
    pub(crate) cancel: watch::Sender<Option<CancelRequest>>,
}

/// Removes a run from the active registry when its driver returns, however it returns.
pub(crate) struct ActiveGuard<'a> {
    agent: &'a Agent,
    run: RunId,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.agent.active().remove(&self.run);
    }
}

/// The reasoning loop. One per process, shared by every request (`Arc<Agent>`); it keeps
/// no run state of its own beyond the cancellation channels of runs it is driving right
/// now, so any process with the same ledger can resume any run.
pub struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) deps: AgentDeps,
    policy: RwLock<Arc<ApprovalPolicy>>,
    pub(crate) schemas: SchemaCache,
    active: Mutex<HashMap<RunId, Active>>,
    pub(crate) selector: Option<Arc<dyn ToolSelector>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("model", &self.deps.model.name())
            .field("ledger", &self.deps.ledger.backend())
            .finish()
    }
}

impl Agent {
    /// An agent over `deps` with `config`.
    pub fn new(config: AgentConfig, deps: AgentDeps) -> Self {
        Self {
            policy: RwLock::new(Arc::new(config.approval.clone())),
            config,
            deps,
            schemas: SchemaCache::default(),
            active: Mutex::new(HashMap::new()),
            selector: None,
        }
    }

    /// Offers the model only the tools `selector` picks for each request (e.g. a
    /// [`RetrievalSelector`](crate::RetrievalSelector)'s top k) instead of every enabled
    /// tool. The selection is made once per `start` and per `resume`, and what was
    /// offered is recorded in each `model_request` step.
    pub fn with_tool_selector(mut self, selector: Arc<dyn ToolSelector>) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Replaces the approval policy; runs use it from their next decision on. Policy is
    /// data an administrator edits, so it changes without restarting the host.
    pub fn set_approval_policy(&self, policy: ApprovalPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    pub(crate) fn policy(&self) -> Arc<ApprovalPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a run as driven here; refuses if it already is.
    pub(crate) fn register(
        &self,
        tenant: &TenantId,
        owner: &UserId,
        run: RunId,
    ) -> Result<(ActiveGuard<'_>, watch::Receiver<Option<CancelRequest>>)> {
        let mut active = self.active();
        if active.contains_key(&run) {
            return Err(AgentError::RunBusy(run));
        }
        let (tx, rx) = watch::channel(None);
        active.insert(
            run,
            Active {
                tenant: tenant.clone(),
                owner: owner.clone(),
                cancel: tx,
            },
        );
        Ok((ActiveGuard { agent: self, run }, rx))
    }

    /// Runs one tool call through the executor.
    #[tracing::instrument(skip(self, invocation), fields(plugin = %invocation.plugin, tool = %invocation.tool, call_id))]
    pub(crate) async fn dispatch(
        &self,
        invocation: ToolInvocation,
        call_id: &str,
    ) -> ToolExecution {
        tracing::Span::current().record("call_id", call_id);
        let execution = self.deps.tools.execute(invocation).await;
        if let Err(f) = &execution.outcome {
            tracing::info!(error_type = %f.error_type, "tool call failed");
        }
        execution
    }
}
