//! The loop without approvals: tool use, parallel calls, errors the model corrects,
//! failures of tools, model and ledger, reasoning, cancellation, deadline and budget.

use std::time::Duration;

use cairn_agent::*;
use cairn_audit::{Actor, StepKind};
use cairn_model::ModelError;
use serde_json::{Value, json};

use crate::helpers::*;

fn rows() -> Value {
    json!([{ "name": "b", "n": 2 }, { "name": "a", "n": 1 }, { "name": "c", "n": 3 }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_tool_use_feeds_each_result_back_to_the_model() {
    let w = world([
        Step::call("list_tasks", json!({})),
        Step::call(
            "sort_rows",
            json!({ "rows": rows(), "by": [{ "column": "n" }], "limit": 2 }),
        ),
        Step::text("You have no tasks; the two smallest rows are a and b."),
    ])
    .build()
    .await;
    let outcome = w
        .start("What's on my list, and sort this table")
        .await
        .unwrap();
    let RunOutcome::Completed { run_id, answer } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        answer,
        "You have no tasks; the two smallest rows are a and b."
    );
    let steps = w
        .assert_trail(
            run_id,
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let StepKind::ModelRequest {
        operation,
        model,
        tools_offered,
        message_count,
    } = &steps[1]
    else {
        unreachable!()
    };
    assert_eq!(
        (operation.as_str(), model.as_str(), *message_count),
        ("chat", "scripted", 2)
    );
    assert!(tools_offered.iter().any(|t| t.as_str() == "add_task"));
    assert!(tools_offered.iter().any(|t| t.as_str() == "sort_rows"));
    let StepKind::ModelResponse {
        input_tokens,
        output_tokens,
        finish_reasons,
        response_model,
        ..
    } = &steps[2]
    else {
        unreachable!()
    };
    assert_eq!((*input_tokens, *output_tokens), (200, 20));
    assert_eq!(finish_reasons, &["tool_calls"]);
    assert_eq!(response_model.as_deref(), Some("scripted-1"));
    let StepKind::ToolCall {
        plugin_id,
        tool_name,
        call_id,
        ..
    } = &steps[3]
    else {
        unreachable!()
    };
    assert_eq!(
        (
            plugin_id.as_ref().unwrap().as_str(),
            tool_name.as_str(),
            call_id.as_str()
        ),
        ("tasks", "list_tasks", "call_0")
    );
    let StepKind::ToolResult { result, .. } = &steps[8] else {
        unreachable!()
    };
    assert_eq!(result["count"], 2);
    assert_eq!(result["rows"][0]["name"], "a");

    // The model saw each result: the third request holds both tool messages.
    let requests = w.model.requests();
    assert_eq!(requests.len(), 3);
    let tools = tool_messages(&requests[2]);
    assert_eq!(tools.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&tools[0].1).unwrap()["count"],
        0
    );
    assert_eq!(
        requests[2].messages[0].content.as_deref(),
        Some("You are Cairn.")
    );
    assert_eq!(w.tools.executed(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_run_together_and_are_recorded_in_call_order() {
    let w = world([
        Step::calls(&[
            (
                "sort_rows",
                json!({ "rows": rows(), "by": [{ "column": "name", "descending": true }] }),
            ),
            ("echo", json!({ "hello": "world" })),
            ("list_tasks", json!({ "status": "all" })),
        ]),
        Step::text("done"),
    ])
    .build()
    .await;
    let outcome = w.start("three things at once").await.unwrap();
    let run = outcome.run_id();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let steps = w
        .assert_trail(
            run,
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_call",
                "tool_call",
                "tool_result",
                "tool_result",
                "tool_result",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let ids: Vec<(String, String)> = steps[6..9]
        .iter()
        .map(|s| match s {
            StepKind::ToolResult {
                call_id, tool_name, ..
            } => (call_id.clone(), tool_name.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("call_0".into(), "sort_rows".into()),
            ("call_1".into(), "echo".into()),
            ("call_2".into(), "list_tasks".into())
        ]
    );
    let StepKind::ToolResult { result, .. } = &steps[7] else {
        unreachable!()
    };
    assert_eq!(result, &json!({ "hello": "world" }));
    assert_eq!(w.tools.executed(), 3);
    let tools = tool_messages(&w.model.requests()[1]);
    assert_eq!(
        tools.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["call_0", "call_1", "call_2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_go_back_to_the_model_which_corrects_them() {
    let w = world([
        // Missing the required `by`, and a bad type for `limit`.
        Step::call("sort_rows", json!({ "rows": rows(), "limit": "two" })),
        // Not JSON at all.
        Step::raw_calls(&[("sort_rows", "{\"rows\": [".into())]),
        Step::call(
            "sort_rows",
            json!({ "rows": rows(), "by": [{ "column": "n" }] }),
        ),
        Step::text("sorted"),
    ])
    .build()
    .await;
    let outcome = w.start("sort it").await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_error",
                "model_request",
                "model_response",
                "tool_call",
                "tool_error",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let (kind, message) = tool_error(&steps[4]);
    assert_eq!(kind, "invalid_arguments");
    assert!(
        message.contains("\"by\" is a required property"),
        "{message}"
    );
    assert!(message.contains("/limit"), "{message}");
    let (kind, message) = tool_error(&steps[8]);
    assert_eq!(kind, "invalid_arguments");
    assert!(message.contains("must be a JSON object"), "{message}");
    // Unparseable arguments are recorded as the raw text the model sent.
    let StepKind::ToolCall { arguments, .. } = &steps[7] else {
        unreachable!()
    };
    assert_eq!(arguments, &json!("{\"rows\": ["));
    // Only the corrected call ran.
    assert_eq!(w.tools.executed(), 1);
    // The model was told, and sees its own bad arguments again on the next turn.
    let requests = w.model.requests();
    let told = tool_messages(&requests[1]);
    assert!(told[0].1.contains("invalid_arguments"), "{told:?}");
    let last_assistant = requests[2]
        .messages
        .iter()
        .rev()
        .find(|m| !m.tool_calls.is_empty())
        .unwrap();
    assert_eq!(last_assistant.tool_calls[0].arguments, "{\"rows\": [");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tool_is_an_error_the_model_can_recover_from() {
    let w = world([
        Step::call("send_email", json!({ "to": "bob" })),
        Step::text("I cannot send mail."),
    ])
    .build()
    .await;
    let outcome = w.start("mail bob").await.unwrap();
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_error",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let StepKind::ToolCall {
        plugin_id,
        tool_name,
        ..
    } = &steps[3]
    else {
        unreachable!()
    };
    assert_eq!((plugin_id, tool_name.as_str()), (&None, "send_email"));
    let (kind, message) = tool_error(&steps[4]);
    assert_eq!(kind, "unknown_tool");
    assert!(
        message.contains("add_task"),
        "the error lists the tools: {message}"
    );
    assert_eq!(w.tools.executed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_or_spinning_tool_fails_that_call_only() {
    let w = world([
        Step::calls(&[("panic", json!({})), ("infinite_loop", json!({}))]),
        Step::call("echo", json!({ "still": "alive" })),
        Step::text("recovered"),
    ])
    .build()
    .await;
    let outcome = w.start("break things").await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_call",
                "tool_error",
                "tool_error",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let (kind, message) = tool_error(&steps[5]);
    assert_eq!(kind, "trap");
    assert!(message.contains("panicked on purpose"), "{message}");
    let (kind, message) = tool_error(&steps[6]);
    assert_eq!(kind, "timeout");
    assert!(message.contains("cpu_ms_per_call"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_is_recorded_and_passed_back_to_the_model() {
    let w = world([
        Step::call("list_tasks", json!({})).with_reasoning("The user wants their list."),
        Step::text("Nothing to do.").with_reasoning("The list is empty."),
    ])
    .build()
    .await;
    let outcome = w.start("my tasks?").await.unwrap();
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    let reasoning = |s: &StepKind| match s {
        StepKind::ModelResponse { reasoning, .. } => reasoning.clone(),
        _ => None,
    };
    assert_eq!(
        reasoning(&steps[2]).as_deref(),
        Some("The user wants their list.")
    );
    assert_eq!(reasoning(&steps[6]).as_deref(), Some("The list is empty."));
    let second = &w.model.requests()[1];
    let assistant = second
        .messages
        .iter()
        .find(|m| !m.tool_calls.is_empty())
        .unwrap();
    assert_eq!(
        assistant.reasoning.as_deref(),
        Some("The user wants their list.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failure_fails_the_run_and_is_recorded() {
    for (error, kind) in [
        (
            ModelError::Timeout(Duration::from_secs(30)),
            "model_timeout",
        ),
        (
            ModelError::RateLimited { retry_after: None },
            "model_rate_limited",
        ),
        (
            ModelError::Server {
                status: 500,
                message: "boom".into(),
            },
            "model_server_error",
        ),
    ] {
        let w = world([Step::Fail(error.clone())]).build().await;
        let outcome = w.start("hello").await.unwrap();
        let RunOutcome::Failed {
            run_id,
            error_type,
            message,
        } = &outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(error_type, kind);
        assert_eq!(message, &error.to_string());
        let steps = w
            .assert_trail(*run_id, &["user_message", "model_request", "run_failed"])
            .await;
        assert_eq!(
            steps[2],
            StepKind::RunFailed {
                error_type: kind.into(),
                message: error.to_string()
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_budget_ends_a_run_that_keeps_calling_tools() {
    let w = world([
        Step::call("list_tasks", json!({})),
        Step::call("list_tasks", json!({})),
        Step::call("list_tasks", json!({})),
    ])
    .config(|c| c.max_model_calls = 2)
    .build()
    .await;
    let outcome = w.start("loop").await.unwrap();
    let RunOutcome::Failed { error_type, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error_type, "step_budget_exhausted");
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "model_request",
                "model_response",
                "tool_call",
                "tool_result",
                "run_failed",
            ],
        )
        .await;
    let StepKind::RunFailed { message, .. } = &steps[9] else {
        unreachable!()
    };
    assert!(message.contains("2 model requests"), "{message}");
    assert_eq!(w.model.remaining(), 1, "no third request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_a_model_request_in_flight_and_is_recorded() {
    let w = std::sync::Arc::new(world([Step::Hang]).build().await);
    let run = {
        let w = w.clone();
        tokio::spawn(async move { w.start("wait forever").await })
    };
    w.model.hanging.notified().await;
    // The run is in flight; find it through the ledger.
    let page = w
        .ledger
        .query(&cairn_audit::StepQuery::new(tenant()))
        .await
        .unwrap();
    let run_id = page.steps[0].run_id;
    w.agent
        .cancel(
            &tenant(),
            run_id,
            Actor::parse("user:alice").unwrap(),
            Some("changed my mind".into()),
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, RunOutcome::Cancelled { run_id });
    let steps = w
        .assert_trail(run_id, &["user_message", "model_request", "run_cancelled"])
        .await;
    assert_eq!(
        steps[2],
        StepKind::RunCancelled {
            cancelled_by: Actor::parse("user:alice").unwrap(),
            reason: Some("changed my mind".into())
        }
    );
    let info = w.agent.run_status(&tenant(), run_id).await.unwrap();
    assert_eq!(info.run.status, cairn_audit::RunStatus::Cancelled);
    // Cancelling again is a typed error.
    let again = w
        .agent
        .cancel(&tenant(), run_id, Actor::parse("user:alice").unwrap(), None)
        .await;
    assert!(
        matches!(again, Err(AgentError::RunEnded { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_fails_a_run_that_takes_too_long() {
    let w = world([Step::Hang])
        .config(|c| c.deadline = Duration::from_millis(300))
        .build()
        .await;
    let outcome = w.start("slow").await.unwrap();
    let RunOutcome::Failed {
        error_type,
        message,
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(error_type, "deadline_exceeded");
    assert!(message.starts_with("deadline exceeded"), "{message}");
    w.assert_trail(
        outcome.run_id(),
        &["user_message", "model_request", "run_failed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_ledger_refuses_the_tool_call_the_tool_never_runs() {
    // Appends: 1 user_message, 2 model_request, 3 model_response, 4 tool_call (refused).
    let w = world([
        Step::call("list_tasks", json!({})),
        Step::text("unreachable"),
    ])
    .fail_append(4)
    .build()
    .await;
    let err = w.start("list").await.unwrap_err();
    let AgentError::Ledger {
        run,
        during,
        source,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(during, "append tool_call");
    assert!(source.is_unavailable());
    assert!(err.to_string().contains("the run was stopped"), "{err}");
    assert_eq!(w.tools.executed(), 0, "the tool must not run");
    assert_eq!(w.model.requests().len(), 1);
    // The ledger came back, so the failure itself is on record.
    let steps = w
        .assert_trail(
            run.unwrap(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "run_failed",
            ],
        )
        .await;
    let StepKind::RunFailed { error_type, .. } = &steps[3] else {
        unreachable!()
    };
    assert_eq!(error_type, "ledger_error");
}
