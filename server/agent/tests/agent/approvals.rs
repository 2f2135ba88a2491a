//! Consequence gating: pausing for approval, resuming from the ledger (in a brand-new
//! agent over the same PostgreSQL database), denial, policy modes, and the typed errors
//! of bad decisions.

use std::sync::Arc;

use cairn_agent::*;
use cairn_audit::{Actor, ApprovalOutcome, Ledger, PolicyOutcome, RunStatus, StepKind, TenantId};
use cairn_model::OpenAiCompatible;
use serde_json::{Value, json};

use crate::helpers::*;

fn paused(outcome: &RunOutcome) -> Vec<PendingCall> {
    match outcome {
        RunOutcome::AwaitingApproval { pending, .. } => pending.clone(),
        other => panic!("expected a pause, got {other:?}"),
    }
}

const PAUSED: &[&str] = &[
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
        .resume(&tenant(), run, vec![approve("call_1_1")])
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
        .resume(&tenant(), run, vec![deny("call_1_1", "I still need it")])
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
        .resume(&tenant(), run, vec![approve("call_1_1")])
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
        .resume(&tenant(), run, vec![approve("call_9")])
        .await;
    assert!(
        matches!(&r, Err(AgentError::CallNotPending { call_id, .. }) if call_id == "call_9"),
        "{r:?}"
    );
    let r = w
        .agent
        .resume(&tenant(), run, vec![approve("call_1_1")])
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
        .resume(&other, run, vec![approve("call_1_1"), approve("call_1_2")])
        .await;
    assert!(
        matches!(r, Err(AgentError::RunNotFound(id)) if id == run),
        "{r:?}"
    );
    let r = w
        .agent
        .cancel(&other, run, Actor::parse("user:mallory").unwrap(), None)
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
        .resume(&tenant(), run, vec![approve("call_1_1")])
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
    let r = w.agent.resume(&tenant(), latest, vec![]).await;
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
        .cancel(&tenant(), latest, Actor::parse("system").unwrap(), None)
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
        .cancel(&tenant(), run, Actor::parse("user:alice").unwrap(), None)
        .await
        .unwrap();
    w.assert_trail(run, &[PAUSED, &["run_cancelled"]].concat())
        .await;
    let r = w
        .agent
        .resume(&tenant(), run, vec![approve("call_1_1")])
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
