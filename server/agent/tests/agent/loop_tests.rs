//! The loop without approvals: tool use, parallel calls, errors the model corrects,
//! failures of tools, model and ledger, reasoning, cancellation, deadline and budget.

use std::time::Duration;

use cairn_agent::*;
use cairn_audit::{Actor, StepKind};
use serde_json::{Value, json};

use crate::helpers::*;

fn rows() -> Value {
    json!([{ "name": "b", "n": 2 }, { "name": "a", "n": 1 }, { "name": "c", "n": 3 }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_off_before_anything_fails_the_run_rather_than_answering_nothing() {
    let w = world([Step::text("").finish_reason("length").usage(100, 64)])
        .config(|c| c.max_tokens = Some(64))
        .build()
        .await;
    let outcome = w.start("Summarise everything").await.unwrap();
    let RunOutcome::Failed { error_type, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error_type, "model_reply_truncated");
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "run_failed",
            ],
        )
        .await;
    let StepKind::RunFailed { message, .. } = &steps[3] else {
        unreachable!()
    };
    assert!(message.contains("64 tokens"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_tool_use_feeds_each_result_back_to_the_model() {
    let w = world([
        call("list_tasks", json!({})),
        call(
            "sort_rows",
            json!({ "rows": rows(), "by": [{ "column": "n" }], "limit": 2 }),
        ),
        text("You have no tasks; the two smallest rows are a and b."),
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
    assert_eq!(response_model.as_deref(), Some("scripted"));
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
        ("tasks", "list_tasks", "call_1_1")
    );
    let StepKind::ToolResult { result, .. } = &steps[8] else {
        unreachable!()
    };
    assert_eq!(result["count"], 2);
    assert_eq!(result["rows"][0]["name"], "a");

    // The model saw each result: the third request holds both tool messages.
    let requests = w.server.requests();
    assert_eq!(requests.len(), 3);
    let tools = tool_messages(&requests[2]);
    assert_eq!(tools.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&tools[0].1).unwrap()["count"],
        0
    );
    assert_eq!(requests[2]["messages"][0]["content"], "You are Cairn.");
    assert_eq!(requests[0]["model"], "scripted");
    assert!(
        requests[0]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "add_task")
    );
    assert_eq!(w.tools.executed(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_run_together_and_are_recorded_in_call_order() {
    let w = world([
        calls(&[
            (
                "sort_rows",
                json!({ "rows": rows(), "by": [{ "column": "name", "descending": true }] }),
            ),
            ("echo", json!({ "hello": "world" })),
            ("list_tasks", json!({ "status": "all" })),
        ]),
        text("done"),
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
            ("call_1_1".into(), "sort_rows".into()),
            ("call_1_2".into(), "echo".into()),
            ("call_1_3".into(), "list_tasks".into())
        ]
    );
    let StepKind::ToolResult { result, .. } = &steps[7] else {
        unreachable!()
    };
    assert_eq!(result, &json!({ "hello": "world" }));
    assert_eq!(w.tools.executed(), 3);
    let tools = tool_messages(&w.server.requests()[1]);
    assert_eq!(
        tools.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["call_1_1", "call_1_2", "call_1_3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_go_back_to_the_model_which_corrects_them() {
    let w = world([
        // Missing the required `by`, and a bad type for `limit`.
        call("sort_rows", json!({ "rows": rows(), "limit": "two" })),
        // Not JSON at all.
        Step::tool_calls([ScriptedCall::raw("sort_rows", "{\"rows\": [")]),
        call(
            "sort_rows",
            json!({ "rows": rows(), "by": [{ "column": "n" }] }),
        ),
        text("sorted"),
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
    let requests = w.server.requests();
    let told = tool_messages(&requests[1]);
    assert!(told[0].1.contains("invalid_arguments"), "{told:?}");
    let assistants = assistant_calls(&requests[2]);
    assert_eq!(
        assistants[1]["tool_calls"][0]["function"]["arguments"],
        "{\"rows\": ["
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tool_is_an_error_the_model_can_recover_from() {
    let w = world([
        call("send_email", json!({ "to": "bob" })),
        text("I cannot send mail."),
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
        calls(&[("panic", json!({})), ("infinite_loop", json!({}))]),
        call("echo", json!({ "still": "alive" })),
        text("recovered"),
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
async fn reasoning_in_each_shape_is_recorded_and_passed_back_to_the_model() {
    for shape in [
        ReasoningShape::ReasoningContent,
        ReasoningShape::Reasoning,
        ReasoningShape::ThinkTags,
    ] {
        let w = world([
            call("list_tasks", json!({})).with_reasoning(shape, "The user wants their list."),
            text("Nothing to do.").with_reasoning(shape, "The list is empty."),
        ])
        .build()
        .await;
        let outcome = w.start("my tasks?").await.unwrap();
        assert_eq!(
            outcome,
            RunOutcome::Completed {
                run_id: outcome.run_id(),
                answer: "Nothing to do.".into()
            },
            "{shape:?}: the answer holds no reasoning"
        );
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
        let response = |s: &StepKind| match s {
            StepKind::ModelResponse {
                reasoning, text, ..
            } => (reasoning.clone(), text.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            response(&steps[2]).0.as_deref(),
            Some("The user wants their list."),
            "{shape:?}"
        );
        assert_eq!(
            response(&steps[6]),
            (
                Some("The list is empty.".to_string()),
                Some("Nothing to do.".to_string())
            ),
            "{shape:?}"
        );
        // Sent back on the next turn, as the provider is configured to.
        let assistants = assistant_calls(&w.server.requests()[1]);
        assert_eq!(
            assistants[0]["reasoning_content"], "The user wants their list.",
            "{shape:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_by_the_provider() {
    let w = world([
        Step::status(429).retry_after(0),
        Step::status(500),
        text("Hello."),
    ])
    .build()
    .await;
    let outcome = w.start("hello").await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(w.server.requests().len(), 3);
    // Retries are the provider's business: the run made one model request.
    w.assert_trail(
        outcome.run_id(),
        &[
            "user_message",
            "model_request",
            "model_response",
            "final_answer",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failure_after_retries_fails_the_run_and_is_recorded() {
    let cases: [(Vec<Step>, u64, &str, &str); 3] = [
        (vec![hang()], 200, "model_timeout", "did not answer within"),
        (
            vec![
                Step::status(429).retry_after(0),
                Step::status(429).retry_after(0),
            ],
            30_000,
            "model_rate_limited",
            "rate limiting",
        ),
        (
            vec![Step::status(500), Step::status(503)],
            30_000,
            "model_server_error",
            "HTTP 503",
        ),
    ];
    for (script, timeout_ms, kind, says) in cases {
        let w = world(script)
            .model(move |c| {
                c.max_retries = 1;
                c.request_timeout = Duration::from_millis(timeout_ms);
            })
            .build()
            .await;
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
        assert!(message.contains(says), "{kind}: {message}");
        let steps = w
            .assert_trail(*run_id, &["user_message", "model_request", "run_failed"])
            .await;
        assert_eq!(
            steps[2],
            StepKind::RunFailed {
                error_type: kind.into(),
                message: message.clone()
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_budget_ends_a_run_that_keeps_calling_tools() {
    let w = world([
        call("list_tasks", json!({})),
        call("list_tasks", json!({})),
        call("list_tasks", json!({})),
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
    assert_eq!(w.server.remaining(), 1, "no third request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_a_model_request_in_flight_and_is_recorded() {
    let w = std::sync::Arc::new(world([hang()]).build().await);
    let run = {
        let w = w.clone();
        tokio::spawn(async move { w.start("wait forever").await })
    };
    requests_reach(&w.server, 1).await;
    // The run is in flight; find it through the ledger.
    let page = w
        .ledger
        .query(&cairn_audit::StepQuery::new(tenant()))
        .await
        .unwrap();
    let run_id = page.steps[0].run_id;
    w.agent
        .cancel(&tenant(), run_id, &owner(), Some("changed my mind".into()))
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
    let again = w.agent.cancel(&tenant(), run_id, &owner(), None).await;
    assert!(
        matches!(again, Err(AgentError::RunEnded { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_fails_a_run_that_takes_too_long() {
    let w = world([hang()])
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
    let w = world([call("list_tasks", json!({})), text("unreachable")])
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
    assert_eq!(w.server.requests().len(), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_from_the_tools_prompt_or_unresolved_dates_go_back_to_the_model() {
    let w = world([
        // The `title` description's example, not the user's words.
        call("add_task", json!({ "title": "Call Anna about the budget" })),
        // A relative date where the schema asks for YYYY-MM-DD.
        call("list_tasks", json!({ "due_before": "next Friday" })),
        call("list_tasks", json!({ "status": "open" })),
        text("nothing due"),
    ])
    .build()
    .await;
    let outcome = w
        .start("Add a task to call the plumber, and what is due by next Friday?")
        .await
        .unwrap();
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
    assert_eq!(kind, "ungrounded_arguments");
    assert!(message.contains("/title"), "{message}");
    assert!(message.contains("description or examples"), "{message}");
    let (kind, message) = tool_error(&steps[8]);
    assert_eq!(kind, "ungrounded_arguments");
    // The error resolves the date at the run's clock (UTC by default) for the model.
    let today = chrono::Utc::now().date_naive();
    let friday = cairn_model::grounding::dates_in("next Friday", today)[0];
    assert!(message.contains("/due_before"), "{message}");
    assert!(
        message.contains(&friday.format("%Y-%m-%d").to_string()),
        "{message}"
    );
    // Neither ungrounded call ran or waited for approval; the model was told.
    assert_eq!(w.tools.executed(), 1);
    let told = tool_messages(&w.server.requests()[1]);
    assert!(told[0].1.contains("ungrounded_arguments"), "{told:?}");
}
