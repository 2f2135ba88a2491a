//! The embedded defaults for real: no model server, SmolLM2-135M run in-process with tool
//! retrieval choosing the tool, and the real `tasks` plugin in the sandbox. What the
//! README's first question does.

use serde_json::json;

use crate::helpers::spawn_app;
use crate::runs::{decide, get_json, start_run, step_kinds};

#[tokio::test]
async fn on_the_embedded_defaults_a_task_request_calls_the_tasks_plugin() {
    let app = spawn_app().await;
    app.install_tasks(None).await;

    // add_task has side effects: the run pauses on the model's call, arguments valid.
    let run = start_run(&app, "Please add a task to call the dentist on Friday").await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let pending = &run["pending_approvals"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{run}");
    assert_eq!(pending[0]["tool"], "add_task", "{run}");
    let title = pending[0]["arguments"]["title"]
        .as_str()
        .unwrap_or_default();
    assert!(!title.trim().is_empty(), "no title in {pending}");
    let id = run["id"].as_str().unwrap().to_owned();

    let call = pending[0]["call_id"].as_str().unwrap();
    let response = decide(&app, &id, json!([{ "call_id": call, "approve": true }])).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let run = get_json(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        run["answer"].as_str().is_some_and(|a| !a.trim().is_empty()),
        "{run}"
    );

    // The task exists, and the whole trail is in the ledger and verifies.
    let kinds = step_kinds(&app, &id).await;
    for kind in [
        "user_message",
        "tool_call",
        "approval_decided",
        "tool_result",
        "final_answer",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let verify = get_json(&app, "/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");

    // A question that needs a read-only tool completes without a pause.
    let run = start_run(&app, "What is on my to-do list?").await;
    assert_eq!(run["status"], "completed", "{run}");
    let kinds = step_kinds(&app, run["id"].as_str().unwrap()).await;
    assert!(kinds.iter().any(|k| k == "tool_result"), "{kinds:?}");
}
