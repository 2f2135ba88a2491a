//! What [`Agent`] does with runs, its public face: `start` a run, `resume` it with approval
//! decisions (in this process or any other over the same ledger), `cancel` it, ask its
//! `run_status`.

use std::collections::{HashMap, HashSet};

use cairn_audit::{
    Actor, ApprovalOutcome, ConversationId, ForcedTool, Hash, LedgerError, NewRun, Run, RunId,
    RunStatus, StepKind, TenantId, UserId,
};
use chrono::Utc;
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::error::{AgentError, Result};
use crate::replay::{PendingCall, Transcript};
use crate::run::{Actors, RunCtx, planned_from_pending};
use crate::settings::RunSettings;
use crate::state::{ActiveGuard, Agent, CancelRequest, RunOutcome};

/// A request to start a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRun {
    /// Whose data the run may touch.
    pub tenant: TenantId,
    /// Who asked.
    pub user: UserId,
    /// The client's conversation, if any (recorded on the run).
    pub conversation_id: Option<ConversationId>,
    /// What they asked.
    pub message: String,
    /// What the run asks for itself beyond the deployment's settings (recorded with it).
    pub settings: RunSettings,
}

/// A direct invocation: one tool of an enabled plugin, with arguments, as a person named
/// it. It takes the loop's path for a call (approval policy, schemas, the ledger before
/// the action, egress records, one `error.type` mapping) without a model.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeTool {
    /// Whose data the call may touch.
    pub tenant: TenantId,
    /// Who asked.
    pub user: UserId,
    /// The plugin, by its manifest id.
    pub plugin: String,
    /// The tool, by its manifest name.
    pub tool: String,
    /// The arguments, checked against the tool's `input_schema` before anything is
    /// recorded.
    pub arguments: serde_json::Value,
    /// The caller is the person the call acts for and named this exact call: where the
    /// policy asks for approval, the invocation is recorded as that person's approval and
    /// the call runs. `false` for callers that act for someone else (an agent over MCP):
    /// the run then pauses for a decision like any other.
    pub approved_by_caller: bool,
}

/// A person's decision on one pending call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// The call decided (`gen_ai.tool.call.id` from [`PendingCall::call_id`]).
    pub call_id: String,
    /// Run it, or not.
    pub approve: bool,
    /// Who decided (recorded).
    pub by: UserId,
    /// Why, if they said (recorded, and told to the model on denial).
    pub reason: Option<String>,
    /// The SHA-256 of the canonical arguments the person was shown
    /// ([`PendingCall::arguments_sha256`]), if their client sent it: a decision on other
    /// arguments than the pending call's is refused ([`AgentError::ArgumentsMismatch`]).
    /// Without it the decision is taken to be on the pending call as recorded. Either
    /// way that hash is recorded with the decision and an approved call runs only with
    /// arguments that hash to it.
    pub arguments_sha256: Option<Hash>,
}

/// Who asks to decide or stop a run. A run belongs to the user who started it: only they,
/// someone holding one of the approval policy's `approver_roles`, or the host itself may
/// approve, deny or cancel it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person (a token's subject) with the roles their token carries.
    User {
        /// Who.
        id: UserId,
        /// Their roles, by name (matched against the policy's `approver_roles`).
        roles: Vec<String>,
    },
    /// The host acting on its own account (e.g. ending a run whose tool calls went back
    /// to the client), recorded as this actor.
    Host(Actor),
}

impl Caller {
    /// A person with these roles.
    pub fn user<S: Into<String>>(id: UserId, roles: impl IntoIterator<Item = S>) -> Self {
        Caller::User {
            id,
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// The actor a cancellation by this caller is recorded as.
    fn actor(&self) -> Result<Actor> {
        match self {
            Caller::Host(actor) => Ok(actor.clone()),
            Caller::User { id, .. } => {
                Actor::parse(format!("user:{id}")).map_err(|e| AgentError::Invalid {
                    what: "actor",
                    reason: e.to_string(),
                })
            }
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::User { id, .. } => write!(f, "user:{id}"),
            Caller::Host(actor) => actor.fmt(f),
        }
    }
}

/// A run as the ledger has it, with the calls it waits on.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Header and status.
    pub run: Run,
    /// The calls awaiting a decision (empty unless the status is awaiting approval).
    pub pending: Vec<PendingCall>,
}

/// The model a direct invocation's run records: no model takes part.
pub const DIRECT_INVOKE_MODEL: &str = "direct-invoke";

impl Agent {
    /// Refuses `caller` unless the run is theirs, they hold an approver role, or they
    /// are the host.
    fn authorize(&self, caller: &Caller, owner: &UserId, run: RunId, action: &str) -> Result<()> {
        let Caller::User { id, roles } = caller else {
            return Ok(());
        };
        let policy = self.policy();
        if id == owner || policy.may_act_for_others(roles) {
            return Ok(());
        }
        let who = if policy.approver_roles.is_empty() {
            "only the user who started it".to_owned()
        } else {
            format!(
                "only the user who started it or a holder of the role {}",
                policy.approver_roles.join(" or ")
            )
        };
        Err(AgentError::NotPermitted {
            run,
            reason: format!("{who} may {action} it"),
        })
    }

    /// Records a new run and registers it as driven here; the guard unregisters it.
    async fn open_run(
        &self,
        new: NewRun,
        actors: Actors,
        catalog: Catalog,
        settings: RunSettings,
    ) -> Result<(ActiveGuard<'_>, RunCtx<'_>)> {
        let (tenant, user) = (new.tenant.clone(), new.user.clone());
        let run = self
            .deps
            .ledger
            .start_run(new)
            .await
            .map_err(|e| AgentError::ledger(None, "start_run", e))?;
        tracing::Span::current().record("run", tracing::field::display(run.id));
        let (guard, cancel) = self.register(&tenant, &user, run.id)?;
        let cx = RunCtx {
            agent: self,
            tenant,
            user,
            run: run.id,
            actors,
            transcript: Transcript::default(),
            catalog,
            cancel,
            deadline: Instant::now() + self.config.deadline,
            settings,
        };
        Ok((guard, cx))
    }

    /// The tenant's tools and the run's client tools, narrowed by the selector (if any) to
    /// those for `request`; none offered when the run asked for none.
    async fn catalog(
        &self,
        tenant: &TenantId,
        request: Option<&str>,
        settings: &RunSettings,
    ) -> Result<Catalog> {
        let mut tools = self
            .deps
            .tools
            .tools(tenant)
            .await
            .map_err(|e| AgentError::Tools(e.to_string()))?;
        let client = settings
            .client_available_tools()
            .map_err(|reason| AgentError::Invalid {
                what: "client tool",
                reason,
            })?;
        tools.extend(client);
        let forced = match &settings.forced_tool {
            Some(ForcedTool::Function { name }) => Some(name.as_str()),
            _ => None,
        };
        let selection = match (&self.selector, request) {
            _ if settings.no_tools || forced.is_some() => None,
            (Some(selector), Some(request)) => match selector.select(request, &tools).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "tool selection failed; offering every tool");
                    None
                }
            },
            _ => None,
        };
        let mut catalog = Catalog::build(tools, &self.schemas).map_err(AgentError::Tools)?;
        if settings.no_tools {
            catalog.restrict(&[], false);
        } else if let Some(name) = forced {
            // The client named the call: that tool alone is offered, and the first
            // request must make it.
            let i = catalog
                .index_of_model_name(name)
                .ok_or_else(|| AgentError::Invalid {
                    what: "tool_choice",
                    reason: format!("no tool named {name:?} is offered to this run"),
                })?;
            catalog.restrict(&[i], true);
        } else if let Some(s) = selection {
            catalog.restrict(&s.offered, s.require_first);
        }
        Ok(catalog)
    }

    /// Starts a run: records it and the user's message, then asks the model and runs
    /// tools until the run completes, fails, is cancelled, or pauses for approval.
    ///
    /// `Err` only when the run could not be recorded (the ledger refused a write, after
    /// which nothing more was done) or the tenant's tools could not be listed.
    #[tracing::instrument(skip(self, request), fields(tenant = %request.tenant, user = %request.user, run))]
    pub async fn start(&self, request: StartRun) -> Result<RunOutcome> {
        let StartRun {
            tenant,
            user,
            conversation_id,
            message,
            settings,
        } = request;
        let actors = Actors::new(&user)?;
        let catalog = self.catalog(&tenant, Some(&message), &settings).await?;
        let new = NewRun {
            tenant,
            user,
            conversation_id,
            model: self.deps.model.name().to_string(),
        };
        let (_guard, mut cx) = self.open_run(new, actors, catalog, settings).await?;
        let user_actor = cx.actors.user.clone();
        let result = async {
            cx.record_settings().await?;
            cx.append(&user_actor, StepKind::UserMessage { text: message })
                .await?;
            cx.drive().await
        }
        .await;
        self.settle(&mut cx, result).await
    }

    /// Runs one tool directly, as [`InvokeTool`] names it, through the loop's path for a
    /// call: the approval policy decides (a denial is recorded and ends the run as
    /// `failed` with `denied_by_policy`; a tool that needs approval is approved by the
    /// caller's invocation when [`InvokeTool::approved_by_caller`], recorded as their
    /// decision, and otherwise pauses the run like any other, to be resumed through
    /// [`Agent::resume`]), the call is recorded before it runs, egress decisions and the
    /// result (checked against the output schema) are recorded after, and the tool's
    /// result is the run's answer.
    ///
    /// `Err` before anything is recorded for an unknown tool
    /// ([`AgentError::UnknownTool`]) or arguments that do not match its input schema
    /// ([`AgentError::InvalidArguments`]).
    #[tracing::instrument(skip(self, request), fields(tenant = %request.tenant, user = %request.user, plugin = %request.plugin, tool = %request.tool, run))]
    pub async fn invoke(&self, request: InvokeTool) -> Result<RunOutcome> {
        let InvokeTool {
            tenant,
            user,
            plugin,
            tool,
            arguments,
            approved_by_caller,
        } = request;
        let settings = RunSettings {
            mode: cairn_audit::RunMode::Direct,
            ..RunSettings::default()
        };
        let catalog = self.catalog(&tenant, None, &settings).await?;
        let entry = catalog
            .by_plugin_tool(&plugin, &tool)
            .filter(|e| e.plugin.as_str() != crate::settings::CLIENT_PLUGIN)
            .cloned()
            .ok_or_else(|| AgentError::UnknownTool {
                plugin: plugin.clone(),
                tool: tool.clone(),
            })?;
        if let Some((field, message)) = entry.schemas.first_input_violation(&arguments) {
            return Err(AgentError::InvalidArguments { field, message });
        }
        let actors = Actors::new(&user)?;
        let new = NewRun {
            tenant,
            user,
            conversation_id: None,
            model: DIRECT_INVOKE_MODEL.to_owned(),
        };
        let (_guard, mut cx) = self.open_run(new, actors, catalog, settings).await?;
        let result = async {
            cx.record_settings().await?;
            let user_actor = cx.actors.user.clone();
            let text = format!("direct invocation of {plugin}.{tool} with {arguments}");
            cx.append(&user_actor, StepKind::UserMessage { text })
                .await?;
            match cx.direct(&entry, arguments).await? {
                RunOutcome::AwaitingApproval { pending, .. } if approved_by_caller => {
                    let by = cx.actors.user.clone();
                    let mut planned = Vec::with_capacity(pending.len());
                    for p in &pending {
                        cx.append(
                            &by,
                            StepKind::ApprovalDecided {
                                call_id: p.call_id.clone(),
                                decided_by: cx.user.clone(),
                                decided_at: Utc::now(),
                                decision: ApprovalOutcome::Approve,
                                reason: Some("the caller invoked the tool directly".into()),
                                arguments_sha256: Some(p.arguments_sha256),
                            },
                        )
                        .await?;
                        planned.push(planned_from_pending(&cx, p, true, String::new()));
                    }
                    if let Some(outcome) = cx.execute_and_record(planned).await? {
                        return Ok(outcome);
                    }
                    cx.answer_direct().await
                }
                outcome => Ok(outcome),
            }
        }
        .await;
        self.settle(&mut cx, result).await
    }

    /// Resumes a run paused for approval with a decision for every pending call.
    ///
    /// The run's conversation is rebuilt from the ledger, so this works in any process
    /// over the same ledger, after a restart too. The decisions are recorded (who, when,
    /// why), approved calls run, denied ones go back to the model as errors, and the run
    /// continues as after [`start`](Agent::start).
    ///
    /// Only the run's owner, a holder of one of the policy's `approver_roles`, or the
    /// host may decide ([`AgentError::NotPermitted`] otherwise), and each decision must be
    /// made out in the caller's own name.
    #[tracing::instrument(skip(self, decisions), fields(tenant = %tenant, run = %run_id, by = %caller, decisions = decisions.len()))]
    pub async fn resume(
        &self,
        tenant: &TenantId,
        run_id: RunId,
        caller: &Caller,
        decisions: Vec<ApprovalDecision>,
    ) -> Result<RunOutcome> {
        let run = self.ledger_run(tenant, run_id).await?;
        self.authorize(caller, &run.user, run_id, "approve or deny calls of")?;
        if let Caller::User { id, .. } = caller
            && let Some(d) = decisions.iter().find(|d| &d.by != id)
        {
            return Err(AgentError::NotPermitted {
                run: run_id,
                reason: format!(
                    "call {:?}: a decision is recorded as its caller's, not {}'s",
                    d.call_id, d.by
                ),
            });
        }
        awaiting_approval(&run)?;
        // Claim the run, then read again where it stands: a cancellation recorded from
        // this process before the claim is seen here, so no approved call runs after it.
        let (_guard, cancel) = self.register(tenant, &run.user, run_id)?;
        let run = self.ledger_run(tenant, run_id).await?;
        awaiting_approval(&run)?;
        let trail = self
            .deps
            .ledger
            .trail(tenant, run_id)
            .await
            .map_err(|e| AgentError::ledger(Some(run_id), "read trail", e))?;
        let transcript = Transcript::replay(&trail).map_err(|reason| AgentError::Replay {
            run: run_id,
            reason,
        })?;
        let pending = transcript.pending().to_vec();
        let decisions = match_decisions(run_id, &pending, decisions)?;
        let settings = RunSettings::from_trail(&trail);
        let request = match settings.mode {
            cairn_audit::RunMode::Loop => transcript.last_user_message(),
            cairn_audit::RunMode::Direct => None,
        };
        let catalog = self.catalog(tenant, request, &settings).await?;
        let mut cx = RunCtx {
            agent: self,
            tenant: tenant.clone(),
            user: run.user.clone(),
            run: run_id,
            actors: Actors::new(&run.user)?,
            transcript,
            catalog,
            cancel,
            deadline: Instant::now() + self.config.deadline,
            settings,
        };
        let expected_seq = trail.len() as u64;
        let result = async {
            let mut planned = Vec::with_capacity(pending.len());
            for (i, (p, d)) in pending.iter().zip(&decisions).enumerate() {
                let by =
                    Actor::parse(format!("user:{}", d.by)).map_err(|e| AgentError::Invalid {
                        what: "actor",
                        reason: e.to_string(),
                    })?;
                let record = cx
                    .append(
                        &by,
                        StepKind::ApprovalDecided {
                            call_id: p.call_id.clone(),
                            decided_by: d.by.clone(),
                            decided_at: Utc::now(),
                            decision: if d.approve {
                                ApprovalOutcome::Approve
                            } else {
                                ApprovalOutcome::Deny
                            },
                            reason: d.reason.clone(),
                            arguments_sha256: Some(p.arguments_sha256),
                        },
                    )
                    .await?;
                if i == 0 && record.seq != expected_seq {
                    // Another process appended to this run since we read it: it is
                    // resuming too. It got there first; this request runs nothing.
                    return Err(AgentError::RunBusy(run_id));
                }
                let denial = match &d.reason {
                    Some(r) => format!("{} denied this call: {r}", d.by),
                    None => format!("{} denied this call", d.by),
                };
                planned.push(planned_from_pending(&cx, p, d.approve, denial));
            }
            if let Some(outcome) = cx.execute_and_record(planned).await? {
                return Ok(outcome);
            }
            match cx.settings.mode {
                cairn_audit::RunMode::Loop => cx.drive().await,
                cairn_audit::RunMode::Direct => cx.answer_direct().await,
            }
        }
        .await;
        match result {
            Err(AgentError::RunBusy(r)) => Err(AgentError::RunBusy(r)),
            other => self.settle(&mut cx, other).await,
        }
    }

    /// Asks a run to stop, on behalf of its owner, a holder of an approver role, or the
    /// host ([`AgentError::NotPermitted`] otherwise).
    ///
    /// A run driven in this process stops before its next action: a model request in
    /// flight is abandoned, tool calls in flight finish and their results are recorded,
    /// then `run_cancelled`. So a tool never runs after the run is sealed, and every call
    /// that ran has its result on file. A paused run, or one driven by another process,
    /// gets `run_cancelled` appended here, which seals it (the other process's next append
    /// then fails and it stops); while that is written the run is claimed in this
    /// process, so a `resume` here cannot start an approved call meanwhile.
    ///
    /// Limit: across processes the ledger has no compare-and-append yet, so a
    /// cancellation from one host can seal a run whose approved call another host has
    /// just started; that call's result is then not recorded.
    #[tracing::instrument(skip(self, reason), fields(tenant = %tenant, run = %run_id, by = %caller))]
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        run_id: RunId,
        caller: &Caller,
        reason: Option<String>,
    ) -> Result<()> {
        let by = caller.actor()?;
        {
            let active = self.active();
            if let Some(a) = active.get(&run_id) {
                if &a.tenant != tenant {
                    return Err(AgentError::RunNotFound(run_id));
                }
                self.authorize(caller, &a.owner, run_id, "cancel")?;
                a.cancel.send_replace(Some(CancelRequest { by, reason }));
                return Ok(());
            }
        }
        let run = self.ledger_run(tenant, run_id).await?;
        self.authorize(caller, &run.user, run_id, "cancel")?;
        // Claim the run while the cancellation is written, so no resume here starts an
        // approved call in between. A driver that registered since the read is told
        // instead.
        let _claim = match self.register(tenant, &run.user, run_id) {
            Ok((guard, _)) => guard,
            Err(AgentError::RunBusy(_)) => {
                if let Some(a) = self.active().get(&run_id) {
                    a.cancel.send_replace(Some(CancelRequest { by, reason }));
                    return Ok(());
                }
                return Err(AgentError::RunBusy(run_id));
            }
            Err(e) => return Err(e),
        };
        if run.status.is_terminal() {
            return Err(AgentError::RunEnded {
                run: run_id,
                status: run.status,
            });
        }
        self.deps
            .ledger
            .append(
                tenant,
                run_id,
                cairn_audit::NewStep {
                    actor: by.clone(),
                    step: StepKind::RunCancelled {
                        cancelled_by: by,
                        reason,
                    },
                },
            )
            .await
            .map_err(|e| match e {
                LedgerError::RunEnded(_) => AgentError::RunEnded {
                    run: run_id,
                    status: RunStatus::Completed,
                },
                e => AgentError::ledger(Some(run_id), "append run_cancelled", e),
            })?;
        Ok(())
    }

    /// Where a run stands, and what it waits for.
    #[tracing::instrument(skip(self), fields(tenant = %tenant, run = %run_id))]
    pub async fn run_status(&self, tenant: &TenantId, run_id: RunId) -> Result<RunInfo> {
        let run = self.ledger_run(tenant, run_id).await?;
        let pending = if run.status == RunStatus::AwaitingApproval {
            let trail = self
                .deps
                .ledger
                .trail(tenant, run_id)
                .await
                .map_err(|e| AgentError::ledger(Some(run_id), "read trail", e))?;
            Transcript::replay(&trail)
                .map_err(|reason| AgentError::Replay {
                    run: run_id,
                    reason,
                })?
                .pending()
                .to_vec()
        } else {
            Vec::new()
        };
        Ok(RunInfo { run, pending })
    }

    async fn ledger_run(&self, tenant: &TenantId, run_id: RunId) -> Result<Run> {
        self.deps
            .ledger
            .run(tenant, run_id)
            .await
            .map_err(|e| match e {
                LedgerError::RunNotFound(_) => AgentError::RunNotFound(run_id),
                e => AgentError::ledger(Some(run_id), "read run", e),
            })
    }

    /// Turns the result of driving a run into what the caller gets. When a write failed
    /// the run is marked failed if the ledger still takes a write (best effort: the
    /// caller gets the original error either way). When the run was ended meanwhile by a
    /// cancellation appended from elsewhere, that is the outcome.
    async fn settle(&self, cx: &mut RunCtx<'_>, result: Result<RunOutcome>) -> Result<RunOutcome> {
        match result {
            Ok(outcome) => Ok(outcome),
            Err(AgentError::Ledger {
                source: LedgerError::RunEnded(_),
                run,
                during,
            }) => match self.ledger_run(&cx.tenant, cx.run).await {
                Ok(r) if r.status == RunStatus::Cancelled => {
                    Ok(RunOutcome::Cancelled { run_id: cx.run })
                }
                _ => Err(AgentError::Ledger {
                    run,
                    during,
                    source: LedgerError::RunEnded(cx.run.to_string()),
                }),
            },
            Err(e @ AgentError::Ledger { .. }) => {
                let message = e.to_string();
                if let Err(again) = cx.fail("ledger_error", message).await {
                    tracing::error!(error = %again, "could not record the run's failure either");
                }
                Err(e)
            }
            Err(e) => {
                let message = e.to_string();
                if let Err(again) = cx.fail("internal_error", message).await {
                    tracing::error!(error = %again, "could not record the run's failure");
                }
                Err(e)
            }
        }
    }
}

/// Refuses to resume a run that has ended or is not paused for approval.
fn awaiting_approval(run: &Run) -> Result<()> {
    if run.status.is_terminal() {
        return Err(AgentError::RunEnded {
            run: run.id,
            status: run.status,
        });
    }
    if run.status != RunStatus::AwaitingApproval {
        return Err(AgentError::NotAwaitingApproval {
            run: run.id,
            status: run.status,
        });
    }
    Ok(())
}

/// Lines up decisions with the pending calls, in pending order, refusing unknown,
/// repeated and missing ones.
fn match_decisions(
    run: RunId,
    pending: &[PendingCall],
    decisions: Vec<ApprovalDecision>,
) -> Result<Vec<ApprovalDecision>> {
    let ids: HashSet<&str> = pending.iter().map(|p| p.call_id.as_str()).collect();
    let mut by_id: HashMap<String, ApprovalDecision> = HashMap::new();
    for d in decisions {
        if !ids.contains(d.call_id.as_str()) {
            return Err(AgentError::CallNotPending {
                run,
                call_id: d.call_id,
                pending: pending
                    .iter()
                    .map(|p| p.call_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if by_id.contains_key(&d.call_id) {
            return Err(AgentError::DuplicateDecision {
                run,
                call_id: d.call_id,
            });
        }
        by_id.insert(d.call_id.clone(), d);
    }
    let missing: Vec<&str> = pending
        .iter()
        .map(|p| p.call_id.as_str())
        .filter(|id| !by_id.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        return Err(AgentError::UndecidedCalls {
            run,
            missing: missing.join(", "),
        });
    }
    for p in pending {
        if let Some(decided) = by_id.get(&p.call_id).and_then(|d| d.arguments_sha256)
            && decided != p.arguments_sha256
        {
            return Err(AgentError::ArgumentsMismatch {
                run,
                call_id: p.call_id.clone(),
                pending: p.arguments_sha256.to_hex(),
                decided: decided.to_hex(),
            });
        }
    }
    Ok(pending
        .iter()
        .filter_map(|p| by_id.remove(&p.call_id))
        .collect())
}
