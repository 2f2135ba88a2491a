//! The run state machine: `model_call → tool_calls → (awaiting_approval) → tool_results →
//! model_call … → completed | failed | cancelled`.
//!
//! Every transition is appended to the ledger before the next action: a model request is
//! recorded before it is sent, a tool call before it runs, a result before the model sees
//! it. When an append fails nothing further happens (see [`RunCtx::append`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use cairn_audit::{
    Actor, Hash, PluginId as LedgerPluginId, PolicyOutcome, RunId, StepKind, StepRecord, TenantId,
    ToolCallName, UserId,
};
use cairn_model::grounding::{Grounding, check_arguments};
use cairn_model::{
    ChatRequest, ChatResponse, FinishReason, ModelError, Role, RunClock, ToolCall, ToolChoice,
    forced_call_token_budget,
};
use futures::future::join_all;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::{Catalog, Entry};
use crate::error::{AgentError, Result};
use crate::policy::Gate;
use crate::replay::{CallResult, PendingCall, Transcript};
use crate::settings::{CLIENT_PLUGIN, RunSettings};
use crate::state::{Agent, CancelRequest, RunOutcome};
use crate::tools::{ToolExecution, ToolInvocation};

/// Why a run stopped before its next action.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    Cancelled(CancelRequest),
    Deadline,
}

/// The actors steps are attributed to, parsed once per run.
pub(crate) struct Actors {
    pub user: Actor,
    pub agent: Actor,
    pub model: Actor,
    pub policy: Actor,
}

impl Actors {
    pub(crate) fn new(user: &UserId) -> Result<Self> {
        let p = |s: String| {
            Actor::parse(s).map_err(|e| AgentError::Invalid {
                what: "actor",
                reason: e.to_string(),
            })
        };
        Ok(Self {
            user: p(format!("user:{user}"))?,
            agent: p("agent".into())?,
            model: p("model".into())?,
            policy: p("policy".into())?,
        })
    }
}

/// What the loop knows about one call of the current turn, and what to do with it.
pub(crate) struct Planned {
    pub call_id: String,
    pub plugin: Option<LedgerPluginId>,
    pub tool: ToolCallName,
    /// The arguments as recorded: the parsed object, or the raw text when it was not one.
    pub recorded_arguments: Value,
    pub action: Action,
}

/// The fate of one call.
pub(crate) enum Action {
    /// Refused before running (unknown tool, bad JSON, schema violation): the model is
    /// told so it can correct itself.
    Invalid {
        error_type: &'static str,
        message: String,
    },
    /// Refused by the approval policy.
    PolicyDenied { rule: String, reason: String },
    /// Waits for approval.
    Ask { rule: String, reason: String },
    /// Refused by the person asked.
    UserDenied { message: String },
    /// Runs. `approved` is the arguments hash a person approved, when the call waited
    /// for approval: it runs only if `arguments` still hash to it.
    Run {
        entry: Arc<Entry>,
        arguments: Value,
        approved: Option<Hash>,
    },
}

/// What a tool phase ended in.
enum Phase {
    /// All results recorded; ask the model again.
    Continue,
    /// Some calls wait for approval.
    Paused(Vec<PendingCall>),
    /// Cancelled or out of time (already recorded).
    Ended(RunOutcome),
}

/// One run being driven in this process.
pub(crate) struct RunCtx<'a> {
    pub agent: &'a Agent,
    pub tenant: TenantId,
    pub user: UserId,
    pub run: RunId,
    pub actors: Actors,
    pub transcript: Transcript,
    pub catalog: Catalog,
    pub cancel: watch::Receiver<Option<CancelRequest>>,
    pub deadline: Instant,
    /// What the run asked for itself (recorded as its `run_configured` step).
    pub settings: RunSettings,
}

impl RunCtx<'_> {
    /// Appends a step and applies it to the transcript. A failed append is final: the run
    /// stops here, so the action this step announces never happens.
    pub(crate) async fn append(&mut self, actor: &Actor, step: StepKind) -> Result<StepRecord> {
        let kind = step.kind_name();
        let record = self
            .agent
            .deps
            .ledger
            .append(
                &self.tenant,
                self.run,
                cairn_audit::NewStep {
                    actor: actor.clone(),
                    step,
                },
            )
            .await
            .map_err(|e| AgentError::ledger(Some(self.run), format!("append {kind}"), e))?;
        self.transcript
            .apply(&record.step)
            .map_err(|reason| AgentError::Replay {
                run: self.run,
                reason,
            })?;
        Ok(record)
    }

    /// Records the run's own settings, if it has any: before anything else, so a resume
    /// anywhere reads them back.
    pub(crate) async fn record_settings(&mut self) -> Result<()> {
        if let Some(step) = self.settings.step() {
            let actor = self.actors.user.clone();
            self.append(&actor, step).await?;
        }
        Ok(())
    }

    /// A direct invocation's one call: gated by the policy, recorded, run, and its
    /// outcome made the run's answer (or the run paused for approval).
    pub(crate) async fn direct(
        &mut self,
        entry: &Arc<Entry>,
        arguments: Value,
    ) -> Result<RunOutcome> {
        let call_id = format!("call_{}", uuid::Uuid::new_v4().simple());
        let planned = Planned {
            call_id: call_id.clone(),
            plugin: Some(entry.ledger_plugin.clone()),
            tool: entry.ledger_tool.clone(),
            recorded_arguments: arguments.clone(),
            action: self.gate(entry, arguments),
        };
        match self.tool_phase(vec![planned]).await? {
            Phase::Continue => self.answer_direct().await,
            Phase::Paused(pending) => Ok(RunOutcome::AwaitingApproval {
                run_id: self.run,
                pending,
            }),
            Phase::Ended(outcome) => Ok(outcome),
        }
    }

    /// Ends a direct invocation with its call's recorded outcome: the result is the
    /// answer; an error (the policy's or the user's denial included) fails the run with
    /// the same `error.type` the loop would have told the model.
    pub(crate) async fn answer_direct(&mut self) -> Result<RunOutcome> {
        let outcome = self
            .transcript
            .last_call_id()
            .and_then(|id| self.transcript.result_of(id))
            .cloned();
        match outcome {
            Some(CallResult::Ok(value)) => {
                let agent = self.actors.agent.clone();
                let text = value.to_string();
                self.append(&agent, StepKind::FinalAnswer { text: text.clone() })
                    .await?;
                Ok(RunOutcome::Completed {
                    run_id: self.run,
                    answer: text,
                })
            }
            Some(CallResult::Err {
                error_type,
                message,
            }) => self.fail(&error_type, message).await,
            None => {
                self.fail(
                    "internal_error",
                    "the direct invocation's call has no recorded outcome".into(),
                )
                .await
            }
        }
    }

    /// The stop that applies now, if any.
    fn stopped(&self) -> Option<Stop> {
        if let Some(c) = self.cancel.borrow().clone() {
            return Some(Stop::Cancelled(c));
        }
        (Instant::now() >= self.deadline).then_some(Stop::Deadline)
    }

    /// Awaits `fut` unless the run is cancelled or its deadline passes first (then `fut`
    /// is dropped, which stops a model request or plugin call in flight).
    async fn interruptible<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, Stop> {
        let deadline = self.deadline;
        let cancel = &mut self.cancel;
        tokio::select! {
            biased;
            Ok(c) = cancel.wait_for(Option::is_some) => {
                Err(c.clone().map_or(Stop::Deadline, Stop::Cancelled))
            }
            () = tokio::time::sleep_until(deadline) => Err(Stop::Deadline),
            v = fut => Ok(v),
        }
    }

    /// Awaits `fut` unless the deadline passes first. Tool calls run under this rather
    /// than [`interruptible`](Self::interruptible): a cancellation must not abandon a call
    /// that has started (its effect may have happened), so it waits for the results,
    /// which are recorded before `run_cancelled`.
    async fn until_deadline<T>(
        &self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, Stop> {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(self.deadline) => Err(Stop::Deadline),
            v = fut => Ok(v),
        }
    }

    /// Records a stop and says how the run ended.
    async fn end(&mut self, stop: Stop) -> Result<RunOutcome> {
        match stop {
            Stop::Cancelled(c) => {
                self.append(
                    &c.by.clone(),
                    StepKind::RunCancelled {
                        cancelled_by: c.by,
                        reason: c.reason,
                    },
                )
                .await?;
                Ok(RunOutcome::Cancelled { run_id: self.run })
            }
            Stop::Deadline => {
                let d = self.agent.config.deadline;
                self.fail(
                    "deadline_exceeded",
                    format!("deadline exceeded: the run worked for longer than {d:?}"),
                )
                .await
            }
        }
    }

    /// Records a failure that ends the run.
    pub(crate) async fn fail(&mut self, error_type: &str, message: String) -> Result<RunOutcome> {
        let agent = self.actors.agent.clone();
        self.append(
            &agent,
            StepKind::RunFailed {
                error_type: error_type.to_string(),
                message: message.clone(),
            },
        )
        .await?;
        Ok(RunOutcome::Failed {
            run_id: self.run,
            error_type: error_type.to_string(),
            message,
        })
    }

    /// Drives the run from "ready for the next model request" until it ends or pauses.
    pub(crate) async fn drive(&mut self) -> Result<RunOutcome> {
        let config = &self.agent.config;
        loop {
            if let Some(stop) = self.stopped() {
                return self.end(stop).await;
            }
            if self.transcript.model_calls >= config.max_model_calls {
                let n = config.max_model_calls;
                return self
                    .fail(
                        "step_budget_exhausted",
                        format!("step budget exhausted: the run used its {n} model requests without reaching an answer"),
                    )
                    .await;
            }
            let system = self.settings.system_prompt(config.system_prompt.as_deref());
            let messages = self
                .transcript
                .messages(system.as_deref(), |p, t| self.catalog.model_name_of(p, t));
            // A selector that decided the call makes the plan: the first request must
            // make that call, later ones answer from its result (`tool_choice: none`).
            // A client's `tool_choice: "required"` forces a call on the first request;
            // later ones (after server-side tools ran) may answer.
            let first = self.transcript.model_calls == 0;
            let tool_choice = match self.catalog.required_first() {
                Some(name) if first => ToolChoice::Tool(name.to_owned()),
                Some(_) => ToolChoice::None,
                None if first && self.settings.forced_tool.is_some() => ToolChoice::Required,
                None => ToolChoice::Auto,
            };
            // A forced call may have to carry the request's data in its arguments: unless
            // the cap is a client's hard limit, its budget grows with the latest user message.
            // A client's own cap is a hard limit, forced calls included.
            let widen = config.widen_forced_calls && self.settings.max_tokens.is_none();
            let max_tokens = match (&tool_choice, self.settings.max_tokens.or(config.max_tokens)) {
                (ToolChoice::Tool(_) | ToolChoice::Required, Some(cap)) if widen => {
                    let asked = messages
                        .iter()
                        .rev()
                        .find(|m| m.role == Role::User)
                        .and_then(|m| m.content.as_deref())
                        .unwrap_or_default();
                    Some(forced_call_token_budget(cap, asked))
                }
                (_, cap) => cap,
            };
            let request = ChatRequest {
                messages,
                tools: self.catalog.definitions().to_vec(),
                tool_choice,
                parallel_tool_calls: config.parallel_tool_calls,
                max_tokens,
                temperature: self.settings.temperature.or(config.temperature),
                clock: Some(RunClock::now_at(config.utc_offset)),
            };
            let agent = self.actors.agent.clone();
            self.append(
                &agent,
                StepKind::ModelRequest {
                    operation: "chat".into(),
                    model: self.agent.deps.model.name().to_string(),
                    tools_offered: self.catalog.offered().to_vec(),
                    message_count: request.messages.len() as u32,
                },
            )
            .await?;
            let model = Arc::clone(&self.agent.deps.model);
            let response = match self.interruptible(model.chat(&request)).await {
                Err(stop) => return self.end(stop).await,
                Ok(Err(e)) => return self.fail(model_error_type(&e), e.to_string()).await,
                Ok(Ok(r)) => r,
            };
            let turn = self.transcript.model_calls;
            let (response, calls) = normalise(response, turn);
            let model_actor = self.actors.model.clone();
            let usage = response.usage.unwrap_or_default();
            self.append(
                &model_actor,
                StepKind::ModelResponse {
                    response_model: Some(response.model.clone()),
                    reasoning: response.message.reasoning.clone(),
                    text: response.message.content.clone(),
                    finish_reasons: vec![finish_reason(&response.finish_reason)],
                    input_tokens: u64::from(usage.input_tokens),
                    output_tokens: u64::from(usage.output_tokens),
                },
            )
            .await?;
            if calls.is_empty() {
                let text = response.message.content.unwrap_or_default();
                if text.trim().is_empty() && response.finish_reason == FinishReason::Length {
                    // Cut off before it said anything: an empty "answer" would hide that.
                    let cap = request
                        .max_tokens
                        .map_or("its limit".to_owned(), |n| format!("{n} tokens"));
                    return self
                        .fail(
                            "model_reply_truncated",
                            format!("the model's reply reached its token cap ({cap}) before it produced an answer or a complete tool call"),
                        )
                        .await;
                }
                self.append(&agent, StepKind::FinalAnswer { text: text.clone() })
                    .await?;
                return Ok(RunOutcome::Completed {
                    run_id: self.run,
                    answer: text,
                });
            }
            let grounding = Grounding::new(&request.messages, request.clock.as_ref());
            let planned = calls
                .into_iter()
                .map(|c| self.plan(c, &grounding))
                .collect::<Result<Vec<_>>>()?;
            match self.tool_phase(planned).await? {
                Phase::Continue => {}
                Phase::Paused(pending) => {
                    return Ok(RunOutcome::AwaitingApproval {
                        run_id: self.run,
                        pending,
                    });
                }
                Phase::Ended(outcome) => return Ok(outcome),
            }
        }
    }

    /// Resolves one call the model made: which tool, whether its arguments are valid and
    /// grounded in the conversation, and what the approval policy says.
    fn plan(&self, call: ToolCall, grounding: &Grounding) -> Result<Planned> {
        let parsed: Option<Value> = serde_json::from_str::<Value>(&call.arguments)
            .ok()
            .filter(Value::is_object);
        let recorded_arguments = parsed
            .clone()
            .unwrap_or_else(|| Value::String(call.arguments.clone()));
        let Some(entry) = self.catalog.by_model_name(&call.name) else {
            let offered: Vec<&str> = self
                .catalog
                .definitions()
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            return Ok(Planned {
                call_id: call.id,
                plugin: None,
                tool: ledger_tool_name(&call.name)?,
                recorded_arguments,
                action: Action::Invalid {
                    error_type: "unknown_tool",
                    message: format!(
                        "there is no tool named {:?}; the tools are [{}]",
                        call.name,
                        offered.join(", ")
                    ),
                },
            });
        };
        let action = match parsed {
            None => Action::Invalid {
                error_type: "invalid_arguments",
                message: format!(
                    "the arguments must be a JSON object, got {:?}",
                    truncate(&call.arguments, 200)
                ),
            },
            Some(arguments) => match entry.schemas.check_input(&arguments) {
                Err(violations) => Action::Invalid {
                    error_type: "invalid_arguments",
                    message: format!(
                        "the arguments do not match the tool's input schema: {violations}"
                    ),
                },
                Ok(()) => match ungrounded(entry, &arguments, grounding) {
                    Some(message) => Action::Invalid {
                        error_type: "ungrounded_arguments",
                        message,
                    },
                    None => self.gate(entry, arguments),
                },
            },
        };
        Ok(Planned {
            call_id: call.id,
            plugin: Some(entry.ledger_plugin.clone()),
            tool: entry.ledger_tool.clone(),
            recorded_arguments,
            action,
        })
    }

    /// Applies the approval policy to a valid call.
    pub(crate) fn gate(&self, entry: &Arc<Entry>, arguments: Value) -> Action {
        if entry.plugin.as_str() == CLIENT_PLUGIN {
            return Action::Ask {
                rule: "client_tool".into(),
                reason: format!(
                    "{} is the client's tool: the client runs it",
                    entry.spec.name
                ),
            };
        }
        let policy = self.agent.policy();
        match policy.decide(
            self.tenant.as_str(),
            entry.plugin.as_str(),
            entry.spec.name.as_str(),
            &entry.spec.annotations,
        ) {
            Gate::Run => Action::Run {
                entry: Arc::clone(entry),
                arguments,
                approved: None,
            },
            Gate::Ask { rule, reason } => Action::Ask { rule, reason },
            Gate::Deny { rule, reason } => Action::PolicyDenied { rule, reason },
        }
    }

    /// Records the turn's calls (and the policy's refusals) before anything runs, runs
    /// what may run, records the results in call order, and pauses if anything waits for
    /// approval.
    async fn tool_phase(&mut self, planned: Vec<Planned>) -> Result<Phase> {
        // A direct invocation's call is the person's, not the model's.
        let model = match self.settings.mode {
            cairn_audit::RunMode::Loop => self.actors.model.clone(),
            cairn_audit::RunMode::Direct => self.actors.user.clone(),
        };
        let policy = self.actors.policy.clone();
        for p in &planned {
            self.append(
                &model,
                StepKind::ToolCall {
                    plugin_id: p.plugin.clone(),
                    tool_name: p.tool.clone(),
                    call_id: p.call_id.clone(),
                    arguments: p.recorded_arguments.clone(),
                },
            )
            .await?;
            let (rule, reason, what) = match &p.action {
                Action::PolicyDenied { rule, reason } => (rule, reason, "run"),
                Action::Ask { rule, reason } => (rule, reason, "run without approval"),
                _ => continue,
            };
            self.append(
                &policy,
                StepKind::PolicyDecision {
                    plugin_id: p.plugin.clone(),
                    tool_name: Some(p.tool.clone()),
                    call_id: Some(p.call_id.clone()),
                    subject: format!("{what}: {}", call_subject(p)),
                    decision: PolicyOutcome::Refused,
                    rule: rule.clone(),
                    reason: reason.clone(),
                },
            )
            .await?;
        }
        let (asks, now): (Vec<Planned>, Vec<Planned>) = planned
            .into_iter()
            .partition(|p| matches!(p.action, Action::Ask { .. }));
        if let Some(outcome) = self.execute_and_record(now).await? {
            return Ok(Phase::Ended(outcome));
        }
        if asks.is_empty() {
            return Ok(Phase::Continue);
        }
        let agent = self.actors.agent.clone();
        for p in &asks {
            let Action::Ask { reason, .. } = &p.action else {
                continue;
            };
            let arguments_sha256 = Some(hash_arguments(&p.recorded_arguments)?);
            self.append(
                &agent,
                StepKind::ApprovalRequested {
                    plugin_id: p.plugin.clone(),
                    tool_name: p.tool.clone(),
                    call_id: p.call_id.clone(),
                    reason: reason.clone(),
                    arguments_sha256,
                },
            )
            .await?;
        }
        Ok(Phase::Paused(self.transcript.pending().to_vec()))
    }

    /// Runs the calls marked [`Action::Run`] concurrently, then records every call's
    /// outcome in call order. `Some(outcome)` when the run was stopped meanwhile.
    ///
    /// A cancellation that arrived before the calls start stops them from starting; one
    /// that arrives while they run takes effect once their results are recorded. The
    /// run's own task appends `run_cancelled`, so no call runs after the run is sealed.
    pub(crate) async fn execute_and_record(
        &mut self,
        mut planned: Vec<Planned>,
    ) -> Result<Option<RunOutcome>> {
        for p in &mut planned {
            if let Some(message) = unapproved_arguments(&p.action) {
                p.action = Action::Invalid {
                    error_type: "arguments_not_approved",
                    message,
                };
            }
        }
        let runs: Vec<_> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.action {
                Action::Run {
                    entry, arguments, ..
                } => Some((i, Arc::clone(entry), arguments.clone())),
                _ => None,
            })
            .collect();
        let mut executed: HashMap<usize, (ToolExecution, u64)> = HashMap::new();
        if !runs.is_empty() {
            if let Some(stop) = self.stopped() {
                return self.end(stop).await.map(Some);
            }
            let agent = self.agent;
            let (tenant, user) = (self.tenant.clone(), self.user.clone());
            let calls = runs.into_iter().map(|(i, entry, arguments)| {
                let invocation = ToolInvocation {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    plugin: entry.plugin.clone(),
                    tool: entry.spec.name.to_string(),
                    arguments,
                };
                let call_id = planned[i].call_id.clone();
                async move {
                    let started = StdInstant::now();
                    let execution = agent.dispatch(invocation, &call_id).await;
                    (i, execution, started.elapsed().as_millis() as u64)
                }
            });
            match self.until_deadline(join_all(calls)).await {
                Err(stop) => return self.end(stop).await.map(Some),
                Ok(done) => {
                    for (i, execution, ms) in done {
                        executed.insert(i, (execution, ms));
                    }
                }
            }
        }
        let agent_actor = self.actors.agent.clone();
        for (i, p) in planned.into_iter().enumerate() {
            let error = |error_type: &str, message: String| StepKind::ToolError {
                plugin_id: p.plugin.clone(),
                tool_name: p.tool.clone(),
                call_id: p.call_id.clone(),
                error_type: error_type.to_string(),
                message,
            };
            match &p.action {
                Action::Invalid {
                    error_type,
                    message,
                } => {
                    self.append(&agent_actor, error(error_type, message.clone()))
                        .await?;
                }
                Action::PolicyDenied { reason, rule } => {
                    let message = format!("{reason} (rule {rule}); the call was not run");
                    self.append(&agent_actor, error("denied_by_policy", message))
                        .await?;
                }
                Action::UserDenied { message } => {
                    self.append(&agent_actor, error("denied_by_user", message.clone()))
                        .await?;
                }
                Action::Ask { .. } => {}
                Action::Run { entry, .. } => {
                    let Some((execution, duration_ms)) = executed.remove(&i) else {
                        continue;
                    };
                    let plugin_actor = plugin_actor(&entry.ledger_plugin)?;
                    let policy_actor = self.actors.policy.clone();
                    for r in execution.records {
                        self.append(
                            &policy_actor,
                            StepKind::PolicyDecision {
                                plugin_id: p.plugin.clone(),
                                tool_name: Some(p.tool.clone()),
                                call_id: Some(p.call_id.clone()),
                                subject: r.subject,
                                decision: r.decision,
                                rule: r.rule,
                                reason: r.reason,
                            },
                        )
                        .await?;
                    }
                    let step = match execution.outcome {
                        Err(f) => error(&f.error_type, f.message),
                        Ok(result) => match entry.schemas.check_output(&result) {
                            Err(violations) => error(
                                "invalid_output",
                                format!(
                                    "the tool's result does not match its output schema: {violations}"
                                ),
                            ),
                            Ok(()) => StepKind::ToolResult {
                                plugin_id: p.plugin.clone(),
                                tool_name: p.tool.clone(),
                                call_id: p.call_id.clone(),
                                result,
                                duration_ms,
                            },
                        },
                    };
                    self.append(&plugin_actor, step).await?;
                }
            }
        }
        let cancelled = self.cancel.borrow().clone();
        if let Some(c) = cancelled {
            return self.end(Stop::Cancelled(c)).await.map(Some);
        }
        Ok(None)
    }
}

/// The check that binds an approval to what runs: for a call a person approved, why it
/// must not run when the arguments about to run do not hash to the approved value (the
/// trail was changed between the request and now). `None` when it may run.
fn unapproved_arguments(action: &Action) -> Option<String> {
    let Action::Run {
        arguments,
        approved: Some(approved),
        ..
    } = action
    else {
        return None;
    };
    match cairn_audit::arguments_sha256(arguments) {
        Ok(h) if h == *approved => None,
        Ok(h) => Some(format!(
            "the arguments about to run hash to {h}, but {approved} was approved; the call was not run"
        )),
        Err(e) => Some(format!(
            "the arguments about to run cannot be hashed ({e}); {approved} was approved; the call was not run"
        )),
    }
}

/// The approval binding of a call's arguments (see [`cairn_audit::arguments_sha256`]).
pub(crate) fn hash_arguments(arguments: &Value) -> Result<Hash> {
    cairn_audit::arguments_sha256(arguments).map_err(|e| AgentError::Invalid {
        what: "arguments",
        reason: e.to_string(),
    })
}

/// `plugin:<id>`: tool results are attributed to the plugin that produced them.
fn plugin_actor(plugin: &LedgerPluginId) -> Result<Actor> {
    Actor::parse(format!("plugin:{plugin}")).map_err(|e| AgentError::Invalid {
        what: "actor",
        reason: e.to_string(),
    })
}

fn call_subject(p: &Planned) -> String {
    match &p.plugin {
        Some(plugin) => format!("{plugin}.{}", p.tool),
        None => p.tool.to_string(),
    }
}

/// Gives every call of a turn a usable, unique id (models sometimes send none, or repeat
/// one), so results and approvals can name it.
fn normalise(mut response: ChatResponse, turn: u32) -> (ChatResponse, Vec<ToolCall>) {
    let mut calls = std::mem::take(&mut response.message.tool_calls);
    let mut seen = std::collections::HashSet::new();
    for (i, c) in calls.iter_mut().enumerate() {
        if c.id.is_empty() || c.id.chars().count() > 256 || !seen.insert(c.id.clone()) {
            c.id = format!("cairn_call_{turn}_{i}");
            seen.insert(c.id.clone());
        }
    }
    (response, calls)
}

/// A name the ledger accepts for whatever the model called: unknown names are recorded
/// with characters outside `[A-Za-z0-9._-]` replaced, so even a garbled call is on file.
fn ledger_tool_name(name: &str) -> Result<ToolCallName> {
    if let Ok(n) = ToolCallName::parse(name) {
        return Ok(n);
    }
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let cleaned = if cleaned.is_empty() {
        "unnamed".to_string()
    } else {
        cleaned
    };
    ToolCallName::parse(cleaned).map_err(|e| AgentError::Invalid {
        what: "tool name",
        reason: e.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn finish_reason(r: &FinishReason) -> String {
    match r {
        FinishReason::Stop => "stop".into(),
        FinishReason::ToolCalls => "tool_calls".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(s) => s.clone(),
    }
}

/// `error.type` of a model failure (after the provider's own retries).
fn model_error_type(e: &ModelError) -> &'static str {
    match e {
        ModelError::Timeout(_) => "model_timeout",
        ModelError::RateLimited { .. } => "model_rate_limited",
        ModelError::Server { .. } => "model_server_error",
        ModelError::Rejected { .. } => "model_rejected",
        ModelError::Unreachable(_) => "model_unreachable",
        ModelError::Malformed(_) => "model_malformed",
        _ => "model_error",
    }
}

/// What in a valid call's arguments the conversation cannot have supplied (text from the
/// tool's descriptions or examples, an unresolved date), as an error the model can
/// correct; the call is not run or changed. The same check for every provider: the
/// embedded decoder's grammar already keeps such text out.
fn ungrounded(entry: &Entry, arguments: &Value, grounding: &Grounding) -> Option<String> {
    let mut reference: Vec<&str> = vec![entry.spec.description.as_str()];
    reference.extend(entry.spec.examples.iter().map(String::as_str));
    let problems = check_arguments(&entry.spec.input_schema, &reference, arguments, grounding);
    if problems.is_empty() {
        return None;
    }
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Some(format!(
        "the arguments must come from the conversation: {}",
        listed.join("; ")
    ))
}

/// Used by resume: the planned form of a call that was waiting for approval.
pub(crate) fn planned_from_pending(
    ctx: &RunCtx<'_>,
    pending: &PendingCall,
    approve: bool,
    denial: String,
) -> Planned {
    let entry = ctx
        .catalog
        .by_recorded(pending.plugin.as_ref(), &pending.tool);
    let action = match (approve, entry) {
        (false, _) => Action::UserDenied { message: denial },
        (true, Some(entry)) if entry.plugin.as_str() == CLIENT_PLUGIN => Action::Invalid {
            error_type: "client_tool",
            message: format!(
                "{} is the client's tool: the client runs it, Cairn does not",
                entry.spec.name
            ),
        },
        (true, None) => Action::Invalid {
            error_type: "unknown_tool",
            message: format!(
                "the tool {} is no longer available; the approved call was not run",
                pending.tool
            ),
        },
        (true, Some(entry)) => match entry.schemas.check_input(&pending.arguments) {
            Err(v) => Action::Invalid {
                error_type: "invalid_arguments",
                message: format!("the arguments do not match the tool's input schema: {v}"),
            },
            // The approval is the person's consent; only a policy that now denies the
            // tool outright still stops it.
            Ok(()) => match ctx.gate(entry, pending.arguments.clone()) {
                Action::PolicyDenied { rule, reason } => Action::PolicyDenied { rule, reason },
                _ => Action::Run {
                    entry: Arc::clone(entry),
                    arguments: pending.arguments.clone(),
                    approved: Some(pending.arguments_sha256),
                },
            },
        },
    };
    Planned {
        call_id: pending.call_id.clone(),
        plugin: pending.plugin.clone(),
        tool: pending.tool.clone(),
        recorded_arguments: pending.arguments.clone(),
        action,
    }
}
