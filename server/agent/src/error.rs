//! What can go wrong when driving a run, as seen by the caller (the API).
//!
//! Failures the *run* survives (a tool error, an invalid call, a denial) never appear
//! here: they go back to the model. Failures that end the run in an orderly way (model
//! error, step budget, deadline) are a [`RunOutcome::Failed`](crate::RunOutcome::Failed).
//! What remains is what the caller must act on: bad requests (wrong state, unknown call
//! ids, another tenant's run) and the ledger refusing a write, after which nothing more
//! may happen because it could not be recorded.

use cairn_audit::{LedgerError, RunId, RunStatus};

/// Everything [`Agent`](crate::Agent) can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The ledger refused or could not take a write (or read), so the run stopped before
    /// the next action: an action that is not recorded must not happen.
    #[error(
        "run {}: the audit ledger failed during {during}; the run was stopped: {source}",
        MaybeRun(.run)
    )]
    Ledger {
        /// The run concerned, if one had been started.
        run: Option<RunId>,
        /// What the loop was recording or reading, e.g. `append tool_call`.
        during: String,
        /// The ledger's error.
        #[source]
        source: LedgerError,
    },
    /// No such run for this tenant (also what another tenant's run looks like, so run ids
    /// cannot be probed across tenants).
    #[error("run {0} not found")]
    RunNotFound(RunId),
    /// The run is not waiting for approval, so there is nothing to decide.
    #[error("run {run} is {status:?}, not awaiting approval")]
    NotAwaitingApproval {
        /// The run.
        run: RunId,
        /// Where it stands.
        status: RunStatus,
    },
    /// A decision names a call that is not pending on this run.
    #[error("run {run}: call {call_id:?} is not pending approval (pending: [{pending}])")]
    CallNotPending {
        /// The run.
        run: RunId,
        /// The call id given.
        call_id: String,
        /// The calls that are pending, comma-separated.
        pending: String,
    },
    /// Some pending calls were left without a decision; all are decided together so the
    /// model sees every result of its turn at once.
    #[error("run {run}: no decision given for pending calls [{missing}]")]
    UndecidedCalls {
        /// The run.
        run: RunId,
        /// The pending call ids without a decision, comma-separated.
        missing: String,
    },
    /// A decision names arguments (by their SHA-256) other than those of the pending
    /// call: the person decided on something else than what would run. Nothing was
    /// recorded or run; the run still waits.
    #[error(
        "run {run}: call {call_id:?} has arguments with SHA-256 {pending}, but the decision was made on {decided}; nothing was run, fetch the run again and decide on what it shows"
    )]
    ArgumentsMismatch {
        /// The run.
        run: RunId,
        /// The call.
        call_id: String,
        /// The pending call's arguments hash (hex).
        pending: String,
        /// The hash the decision named (hex).
        decided: String,
    },
    /// The same call was decided twice in one request.
    #[error("run {run}: call {call_id:?} is decided more than once")]
    DuplicateDecision {
        /// The run.
        run: RunId,
        /// The call id repeated.
        call_id: String,
    },
    /// The run is already being driven (in this process, or another resume won the race
    /// in the ledger); nothing was executed by this request.
    #[error("run {0} is already being driven by another request")]
    RunBusy(RunId),
    /// The caller may not decide or cancel this run: another user started it and the
    /// caller holds none of the policy's `approver_roles` (or a decision was made out in
    /// someone else's name).
    #[error("run {run}: {reason}")]
    NotPermitted {
        /// The run.
        run: RunId,
        /// What was refused and who may do it instead.
        reason: String,
    },
    /// The run has ended; it cannot be cancelled or resumed.
    #[error("run {run} has already ended ({status:?})")]
    RunEnded {
        /// The run.
        run: RunId,
        /// How it ended.
        status: RunStatus,
    },
    /// The ledger's trail of the run cannot be replayed (it was not written by this loop,
    /// or is damaged).
    #[error("run {run}: cannot replay the trail: {reason}")]
    Replay {
        /// The run.
        run: RunId,
        /// What did not fit.
        reason: String,
    },
    /// The tool executor could not list the tenant's tools.
    #[error("listing the tools available to the tenant failed: {0}")]
    Tools(String),
    /// A direct invocation named a tool the tenant has no enabled plugin for.
    #[error("the tenant has no enabled tool {tool:?} in plugin {plugin:?}")]
    UnknownTool {
        /// The plugin named.
        plugin: String,
        /// The tool named.
        tool: String,
    },
    /// A direct invocation's arguments do not match the tool's input schema; nothing was
    /// recorded or run.
    #[error("{field}: {message}")]
    InvalidArguments {
        /// Where, as a path like `arguments.priority`.
        field: String,
        /// What is wrong there.
        message: String,
    },
    /// A value did not parse into a ledger identifier.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// The agent's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    /// Wraps a ledger error met while doing `during`.
    pub(crate) fn ledger(
        run: Option<RunId>,
        during: impl Into<String>,
        source: LedgerError,
    ) -> Self {
        AgentError::Ledger {
            run,
            during: during.into(),
            source,
        }
    }
}

/// Formats a run id that may be absent, for [`AgentError::Ledger`]'s message.
pub(crate) struct MaybeRun<'a>(pub &'a Option<RunId>);

impl std::fmt::Display for MaybeRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => r.fmt(f),
            None => f.write_str("(not started)"),
        }
    }
}
