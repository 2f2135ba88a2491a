//! Consequence gating: pausing for approval, resuming from the ledger (in a brand-new
//! agent over the same PostgreSQL database), denial, policy modes, and the typed errors
//! of bad decisions.

use std::sync::Arc;

use cairn_agent::*;
use cairn_audit::{
    Actor, ApprovalOutcome, Ledger, PolicyOutcome, RunStatus, StepKind, TenantId, UserId,
};
use cairn_model::OpenAiCompatible;
use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) fn paused(outcome: &RunOutcome) -> Vec<PendingCall> {
    match outcome {
        RunOutcome::AwaitingApproval { pending, .. } => pending.clone(),
        other => panic!("expected a pause, got {other:?}"),
    }
}

pub(crate) const PAUSED: &[&str] = &[
    "user_message",
    "model_request",
    "model_response",
    "tool_call",
    "policy_decision",
    "approval_requested",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_after_a_restart_in_a_new_agent() {
    let w = world([call(
        "add_task",
        json!({ "title": "Renew passport", "priority": "high" }),
    )
    .with_reasoning(
        ReasoningShape::ReasoningContent,
        "A task with side effects.",
    )])
    .postgres()
    .build()
    .await;
    let outcome = w.start("Remind me to renew my passport").await.unwrap();
    let run = outcome.run_id();
    let pending = paused(&outcome);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].call_id, "call_1_1");
    assert_eq!(pending[0].tool.as_str(), "add_task");
    assert_eq!(pending[0].plugin.as_ref().unwrap().as_str(), "tasks");
    assert_eq!(
        pending[0].arguments,
        json!({ "title": "Renew passport", "priority": "high" })
    );
    assert_eq!(w.tools.executed(), 0, "nothing runs before approval");
    let steps = w.assert_trail(run, PAUSED).await;
    let StepKind::PolicyDecision {
        decision,
        rule,
        reason,
        call_id,
        ..
    } = &steps[4]
    else {
        unreachable!()
    };
    assert_eq!(*decision, PolicyOutcome::Refused);
    assert_eq!(rule, "approval.default");
    assert!(reason.contains("not read-only"), "{reason}");
    assert_eq!(call_id.as_deref(), Some("call_1_1"));
    let StepKind::ApprovalRequested {
        call_id, tool_name, ..
    } = &steps[5]
    else {
        unreachable!()
    };
    assert_eq!(
        (call_id.as_str(), tool_name.as_str()),
        ("call_1_1", "add_task")
    );
    let info = w.agent.run_status(&tenant(), run).await.unwrap();
    assert_eq!(info.run.status, RunStatus::AwaitingApproval);
    assert_eq!(info.pending, pending);

    // "Restart": everything new except the database (the first agent is not used again).
    let ledger = <dyn Ledger>::open(&w.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    let model_server = ScriptedServer::start([text("Added \"Renew passport\".")]).await;
    let model = Arc::new(OpenAiCompatible::new(model_config(&model_server)).unwrap());
    let tools = Counting::new(Arc::new(RuntimeTools::new(plugins().await)));
    let agent = Agent::new(
        w.config.clone(),
        AgentDeps {
            model,
            ledger,
            tools: tools.clone(),
        },
    );
    let outcome = agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Completed {
            run_id: run,
            answer: "Added \"Renew passport\".".into()
        }
    );
    assert_eq!(tools.executed(), 1);
    let steps = w
        .assert_trail(
            run,
            &[
                PAUSED,
                &[
                    "approval_decided",
                    "tool_result",
                    "model_request",
                    "model_response",
                    "final_answer",
                ],
            ]
            .concat(),
        )
        .await;
    let StepKind::ApprovalDecided {
        call_id,
        decided_by,
        decision,
        reason,
        ..
    } = &steps[6]
    else {
        unreachable!()
    };
    assert_eq!(
        (call_id.as_str(), decided_by.as_str(), *decision, reason),
        ("call_1_1", "bob", ApprovalOutcome::Approve, &None)
    );
    let StepKind::ToolResult { result, .. } = &steps[7] else {
        unreachable!()
    };
    assert_eq!(result["title"], "Renew passport");
    assert_eq!(result["priority"], "high");

    // The new process rebuilt the conversation from the ledger alone.
    let request = &model_server.requests()[0];
    assert_eq!(request["messages"][0]["content"], "You are Cairn.");
    assert_eq!(
        request["messages"][1]["content"],
        "Remind me to renew my passport"
    );
    let assistant = &request["messages"][2];
    assert_eq!(assistant["reasoning_content"], "A task with side effects.");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "add_task");
    let told = tool_messages(request);
    assert_eq!(told[0].0, "call_1_1");
    assert_eq!(
        serde_json::from_str::<Value>(&told[0].1).unwrap()["title"],
        "Renew passport"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_goes_back_to_the_model_as_an_error() {
    let w = world([
        call("delete_task", json!({ "id": "1" })),
        text("OK, I left it."),
    ])
    .build()
    .await;
    let outcome = w.start("delete task 1").await.unwrap();
    let run = outcome.run_id();
    paused(&outcome);
    let outcome = w
        .agent
        .resume(
            &tenant(),
            run,
            &approver(),
            vec![deny("call_1_1", "I still need it")],
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(w.tools.executed(), 0);
    let steps = w
        .assert_trail(
            run,
            &[
                PAUSED,
                &[
                    "approval_decided",
                    "tool_error",
                    "model_request",
                    "model_response",
                    "final_answer",
                ],
            ]
            .concat(),
        )
        .await;
    let StepKind::ApprovalDecided {
        decision, reason, ..
    } = &steps[6]
    else {
        unreachable!()
    };
    assert_eq!(*decision, ApprovalOutcome::Deny);
    assert_eq!(reason.as_deref(), Some("I still need it"));
    let (kind, message) = tool_error(&steps[7]);
    assert_eq!(kind, "denied_by_user");
    assert_eq!(message, "bob denied this call: I still need it");
    let told = tool_messages(&w.server.requests()[1]);
    assert!(told[0].1.contains("denied_by_user"), "{told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_of_a_gated_turn_run_before_the_pause() {
    let w = world([
        calls(&[
            ("add_task", json!({ "title": "Call Anna" })),
            ("list_tasks", json!({})),
        ]),
        text("Added; your list was empty before."),
    ])
    .build()
    .await;
    // The title is the user's words: a title the request does not hold, taken from
    // add_task's own description, would go back to the model as ungrounded.
    let outcome = w
        .start("add a task to call Anna, and list my tasks")
        .await
        .unwrap();
    let run = outcome.run_id();
    assert_eq!(paused(&outcome).len(), 1);
    assert_eq!(w.tools.executed(), 1, "list_tasks ran, add_task waits");
    let outcome = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    w.assert_trail(
        run,
        &[
            "user_message",
            "model_request",
            "model_response",
            "tool_call",
            "policy_decision",
            "tool_call",
            "tool_result",
            "approval_requested",
            "approval_decided",
            "tool_result",
            "model_request",
            "model_response",
            "final_answer",
        ],
    )
    .await;
    // The model gets both results in call order, not record order.
    let told = tool_messages(&w.server.requests()[1]);
    assert_eq!(
        told.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["call_1_1", "call_1_2"]
    );
    assert_eq!(*w.tools.names.lock().unwrap(), ["list_tasks", "add_task"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_modes_always_ask_and_deny_are_data() {
    let policy = ApprovalPolicy::from_json_str(
        r#"{ "tenants": { "acme": { "tools": {
            "tasks.list_tasks": "always_ask",
            "tasks.add_task": "deny"
        } } } }"#,
    )
    .unwrap();
    let w = world([
        call("add_task", json!({ "title": "x" })),
        call("list_tasks", json!({})),
    ])
    .config(|c| c.approval = policy)
    .build()
    .await;
    let outcome = w.start("add x, then list").await.unwrap();
    let run = outcome.run_id();
    let pending = paused(&outcome);
    assert_eq!(pending[0].tool.as_str(), "list_tasks");
    assert!(
        pending[0].reason.contains("asks before every call"),
        "{}",
        pending[0].reason
    );
    assert_eq!(w.tools.executed(), 0, "the denied call never ran");
    let steps = w
        .assert_trail(
            run,
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "policy_decision",
                "tool_error",
                "model_request",
                "model_response",
                "tool_call",
                "policy_decision",
                "approval_requested",
            ],
        )
        .await;
    let StepKind::PolicyDecision { decision, rule, .. } = &steps[4] else {
        unreachable!()
    };
    assert_eq!(*decision, PolicyOutcome::Refused);
    assert_eq!(rule, "approval.tenants.acme.tools.tasks.add_task");
    assert_eq!(tool_error(&steps[5]).0, "denied_by_policy");
    let StepKind::PolicyDecision { rule, .. } = &steps[9] else {
        unreachable!()
    };
    assert_eq!(rule, "approval.tenants.acme.tools.tasks.list_tasks");
    let told = tool_messages(&w.server.requests()[1]);
    assert!(told[0].1.contains("denied_by_policy"), "{told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_decisions_are_typed_errors_and_change_nothing() {
    let w = world([
        calls(&[
            ("add_task", json!({ "title": "a" })),
            ("add_task", json!({ "title": "b" })),
        ]),
        text("done"),
        hang(),
    ])
    .build()
    .await;
    let outcome = w.start("two tasks").await.unwrap();
    let run = outcome.run_id();
    assert_eq!(paused(&outcome).len(), 2);
    let r = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_9")])
        .await;
    assert!(
        matches!(&r, Err(AgentError::CallNotPending { call_id, .. }) if call_id == "call_9"),
        "{r:?}"
    );
    let r = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await;
    assert!(
        matches!(&r, Err(AgentError::UndecidedCalls { missing, .. }) if missing == "call_1_2"),
        "{r:?}"
    );
    let r = w
        .agent
        .resume(
            &tenant(),
            run,
            &approver(),
            vec![
                approve("call_1_1"),
                deny("call_1_1", "x"),
                approve("call_1_2"),
            ],
        )
        .await;
    assert!(
        matches!(r, Err(AgentError::DuplicateDecision { .. })),
        "{r:?}"
    );
    let other = TenantId::parse("globex").unwrap();
    let r = w
        .agent
        .resume(
            &other,
            run,
            &approver(),
            vec![approve("call_1_1"), approve("call_1_2")],
        )
        .await;
    assert!(
        matches!(r, Err(AgentError::RunNotFound(id)) if id == run),
        "{r:?}"
    );
    let r = w
        .agent
        .cancel(
            &other,
            run,
            &Caller::user(UserId::parse("mallory").unwrap(), ["approver"]),
            None,
        )
        .await;
    assert!(matches!(r, Err(AgentError::RunNotFound(_))), "{r:?}");
    // Nothing was recorded by the refused requests.
    w.assert_trail(
        run,
        &[
            "user_message",
            "model_request",
            "model_response",
            "tool_call",
            "policy_decision",
            "tool_call",
            "policy_decision",
            "approval_requested",
            "approval_requested",
        ],
    )
    .await;
    let outcome = w
        .agent
        .resume(
            &tenant(),
            run,
            &approver(),
            vec![deny("call_1_2", "one is enough"), approve("call_1_1")],
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let r = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await;
    assert!(
        matches!(
            r,
            Err(AgentError::RunEnded {
                status: RunStatus::Completed,
                ..
            })
        ),
        "{r:?}"
    );

    // A run that is working, not waiting: resume is refused.
    let w = Arc::new(w);
    let running = {
        let w = w.clone();
        tokio::spawn(async move { w.start("hang").await })
    };
    requests_reach(&w.server, 3).await;
    let mut page = w
        .ledger
        .query(&cairn_audit::StepQuery::new(tenant()))
        .await
        .unwrap();
    let latest = page.steps.pop().unwrap().run_id;
    let r = w.agent.resume(&tenant(), latest, &approver(), vec![]).await;
    assert!(
        matches!(
            r,
            Err(AgentError::NotAwaitingApproval {
                status: RunStatus::Running,
                ..
            })
        ),
        "{r:?}"
    );
    w.agent
        .cancel(
            &tenant(),
            latest,
            &Caller::Host(Actor::parse("system").unwrap()),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        running.await.unwrap(),
        Ok(RunOutcome::Cancelled { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_can_be_cancelled_and_then_not_resumed() {
    let w = world([call("add_task", json!({ "title": "x" }))])
        .build()
        .await;
    let outcome = w.start("add x").await.unwrap();
    let run = outcome.run_id();
    paused(&outcome);
    w.agent
        .cancel(&tenant(), run, &owner(), None)
        .await
        .unwrap();
    w.assert_trail(run, &[PAUSED, &["run_cancelled"]].concat())
        .await;
    let r = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await;
    assert!(
        matches!(
            r,
            Err(AgentError::RunEnded {
                status: RunStatus::Cancelled,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(w.tools.executed(), 0);
}

/// Issue 10: a run belongs to the user who started it. Another user of the same tenant
/// may not approve, deny or cancel it unless the policy names one of their roles, and no
/// one may record a decision in someone else's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_approver_may_decide_or_cancel_a_run() {
    let w = world([call("add_task", json!({ "title": "x" })), text("Added.")])
        .build()
        .await;
    let outcome = w.start("add x").await.unwrap();
    let run = outcome.run_id();
    paused(&outcome);
    let mallory = UserId::parse("mallory").unwrap();
    let intruder = Caller::user(mallory.clone(), ["user", "admin", "auditor"]);
    let as_mallory = |approve: bool| ApprovalDecision {
        call_id: "call_1_1".into(),
        approve,
        by: mallory.clone(),
        reason: None,
        arguments_sha256: None,
    };
    for decision in [as_mallory(true), as_mallory(false)] {
        let r = w
            .agent
            .resume(&tenant(), run, &intruder, vec![decision])
            .await;
        assert!(
            matches!(&r, Err(AgentError::NotPermitted { reason, .. }) if reason.contains("approver")),
            "{r:?}"
        );
    }
    let r = w.agent.cancel(&tenant(), run, &intruder, None).await;
    assert!(matches!(r, Err(AgentError::NotPermitted { .. })), "{r:?}");
    // The owner cannot put a decision in the approver's name either.
    let r = w
        .agent
        .resume(&tenant(), run, &owner(), vec![approve("call_1_1")])
        .await;
    assert!(matches!(r, Err(AgentError::NotPermitted { .. })), "{r:?}");
    // A policy without approver roles leaves the run to its owner alone.
    w.agent.set_approval_policy(ApprovalPolicy {
        approver_roles: vec![],
        ..ApprovalPolicy::default()
    });
    let r = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve("call_1_1")])
        .await;
    assert!(matches!(r, Err(AgentError::NotPermitted { .. })), "{r:?}");
    w.assert_trail(run, PAUSED).await;
    assert_eq!(w.tools.executed(), 0, "no refused request ran the tool");

    let mine = ApprovalDecision {
        by: user(),
        ..approve("call_1_1")
    };
    let outcome = w
        .agent
        .resume(&tenant(), run, &owner(), vec![mine])
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(w.tools.executed(), 1);
}

/// A model that calls `add_task` until it sees a tool result, then answers: any number of
/// runs, whatever order their steps come in.
struct AddTaskModel;

#[async_trait::async_trait]
impl cairn_model::ChatModel for AddTaskModel {
    fn name(&self) -> &str {
        "add-task"
    }

    async fn chat(
        &self,
        request: &cairn_model::ChatRequest,
    ) -> Result<cairn_model::ChatResponse, cairn_model::ModelError> {
        let answered = request
            .messages
            .iter()
            .any(|m| m.role == cairn_model::Role::Tool);
        let mut message = cairn_model::ChatMessage::assistant("Added.");
        let finish_reason = if answered {
            cairn_model::FinishReason::Stop
        } else {
            message.content = None;
            message.tool_calls = vec![cairn_model::ToolCall {
                id: "call_1".into(),
                name: "add_task".into(),
                arguments: r#"{"title":"x"}"#.into(),
            }];
            cairn_model::FinishReason::ToolCalls
        };
        Ok(cairn_model::ChatResponse {
            message,
            finish_reason,
            usage: None,
            model: "add-task".into(),
        })
    }

    async fn chat_stream(
        &self,
        _: &cairn_model::ChatRequest,
    ) -> Result<cairn_model::ChatStream, cairn_model::ModelError> {
        Err(cairn_model::ModelError::Unreachable("not streamed".into()))
    }
}

/// Makes every tool call take a while, so a cancellation lands while one is in flight.
struct Slow(Arc<Counting>);

#[async_trait::async_trait]
impl ToolExecutor for Slow {
    async fn tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        self.0.tools(tenant).await
    }

    async fn execute(&self, call: ToolInvocation) -> ToolExecution {
        let started = std::time::Instant::now();
        let out = self.0.execute(call).await;
        tokio::time::sleep(std::time::Duration::from_millis(5).saturating_sub(started.elapsed()))
            .await;
        out
    }
}

/// Issue 10: a cancellation racing an approval. Whichever wins, a tool that ran has its
/// result recorded, no call runs after `run_cancelled`, and every run ends sealed. Raced
/// many times with the two requests started together and the cancel slightly staggered,
/// so every interleaving (cancel first, during the ledger reads, while the tool runs,
/// after it) is hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_an_approval_never_leaves_a_tool_run_unrecorded() {
    const ROUNDS: u64 = 40;
    let w = world([]).chat_model(Arc::new(AddTaskModel)).build().await;
    let agent = Arc::new(Agent::new(
        w.config.clone(),
        AgentDeps {
            model: Arc::new(AddTaskModel),
            ledger: Arc::clone(&w.ledger),
            tools: Arc::new(Slow(w.tools.clone())),
        },
    ));
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let outcome = agent
            .start(StartRun {
                tenant: tenant(),
                user: user(),
                conversation_id: None,
                message: "add x".into(),
                settings: cairn_agent::RunSettings::default(),
            })
            .await
            .unwrap();
        let run = outcome.run_id();
        let call_id = paused(&outcome)[0].call_id.clone();
        let decider = {
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                let decision = ApprovalDecision {
                    by: user(),
                    ..approve(&call_id)
                };
                agent.resume(&tenant(), run, &owner(), vec![decision]).await
            })
        };
        let canceller = {
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_micros(round * 250)).await;
                agent.cancel(&tenant(), run, &owner(), None).await
            })
        };
        let (resumed, cancelled) = (decider.await.unwrap(), canceller.await.unwrap());
        // Losing the race is a clean refusal, never an internal error.
        assert!(
            matches!(
                resumed,
                Ok(_) | Err(AgentError::RunBusy(_) | AgentError::RunEnded { .. })
            ),
            "round {round}: {resumed:?}"
        );
        assert!(
            matches!(cancelled, Ok(()) | Err(AgentError::RunEnded { .. })),
            "round {round}: {cancelled:?}"
        );
        runs.push(run);
    }
    // Give any driver still finishing (after a cancel it was told about) time to seal.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut recorded = 0;
    let mut cancelled = 0;
    for run in runs {
        let kinds: Vec<&'static str> = w
            .trail(run)
            .await
            .iter()
            .map(|s| s.step.kind_name())
            .collect();
        let last = *kinds.last().unwrap();
        assert!(
            matches!(last, "run_cancelled" | "final_answer"),
            "run {run} did not end: {kinds:?}"
        );
        cancelled += usize::from(last == "run_cancelled");
        recorded += kinds
            .iter()
            .filter(|k| matches!(**k, "tool_result" | "tool_error"))
            .count();
    }
    assert_eq!(
        w.tools.executed(),
        recorded,
        "every tool that ran has its result on file (cancelled {cancelled} of {ROUNDS})"
    );
    assert!(
        cancelled > 0,
        "the cancel never won: the race was not exercised"
    );
}
