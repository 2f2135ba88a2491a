//! `/v1/runs`: runs of the reasoning loop driven by the scripted model against the real
//! `tasks` plugin, approvals, cancellation, the event stream, tenants and bad input.

use std::time::Duration;

use cairn_scripted_model::{ScriptedServer, Step};
use cairn_server::config::{EmbeddedSettings, ModelConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Options, TestApp, expect_error, expect_not_found, spawn_app_with, spawn_app_with_model,
};

/// A server over a scripted model with `steps`, and the `tasks` plugin installed and
/// enabled (its installation id returned).
pub async fn with_tasks(
    steps: impl IntoIterator<Item = Step>,
) -> (ScriptedServer, TestApp, String) {
    let model = ScriptedServer::start(steps).await;
    let app = spawn_app_with_model(model.url()).await;
    let plugin = app.install_tasks(None).await;
    (model, app, plugin)
}

/// `POST path` with a JSON body on a task of its own, for requests that wait on a run.
fn spawn_post(
    app: &TestApp,
    path: &str,
    body: Value,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app.client.post(app.url(path)).json(&body);
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// Starts a run with `message` (dev identity); asserts 201 and returns the view.
pub async fn start_run(app: &TestApp, message: &str) -> Value {
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `GET path` as JSON, asserting 200.
pub async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The kinds of a run's steps, from the audit trail.
pub async fn step_kinds(app: &TestApp, run: &str) -> Vec<String> {
    let trail = get_json(app, &format!("/v1/audit/runs/{run}")).await;
    trail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn decide(app: &TestApp, run: &str, decisions: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/runs/{run}/approvals")))
        .json(&json!({ "decisions": decisions }))
        .send()
        .await
        .unwrap()
}

async fn task_titles(app: &TestApp, plugin: &str) -> Vec<String> {
    let listed: Value = app
        .invoke(plugin, "list_tasks", json!({}), None)
        .await
        .json()
        .await
        .unwrap();
    listed["result"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

/// The tool messages the model was sent in request `n` (from 0).
fn tool_messages(server: &ScriptedServer, n: usize) -> Vec<String> {
    server.requests()[n]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_run_calls_a_plugin_and_completes_with_a_verified_trail() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("list_tasks", json!({})),
        Step::text("Your list is empty."),
    ])
    .await;

    let run = start_run(&app, "What is on my list?").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["answer"], "Your list is empty.");
    assert_eq!(run["pending_approvals"], json!([]));
    let id = run["id"].as_str().unwrap();

    // The model was offered the plugin's tools and got the tool's real result back.
    let requests = model.requests();
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&"add_task"), "{offered:?}");
    let results = tool_messages(&model, 1);
    assert_eq!(results.len(), 1);
    let result: Value = serde_json::from_str(&results[0]).unwrap();
    assert_eq!(result["count"], 0, "{result}");

    let kinds = step_kinds(&app, id).await;
    assert_eq!(
        kinds,
        [
            "user_message",
            "model_request",
            "model_response",
            "tool_call",
            "tool_result",
            "model_request",
            "model_response",
            "final_answer"
        ]
    );
    assert_eq!(get_json(&app, &format!("/v1/runs/{id}")).await, run);
    let verify = get_json(&app, "/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
}

#[tokio::test]
async fn a_call_with_side_effects_waits_for_approval_and_runs_once_approved() {
    let (_model, app, plugin) = with_tasks([
        Step::tool_call("add_task", json!({ "title": "Buy milk" })),
        Step::text("Added."),
    ])
    .await;

    let run = start_run(&app, "Remind me to buy milk").await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let pending = &run["pending_approvals"][0];
    assert_eq!(pending["tool"], "add_task");
    assert_eq!(pending["plugin"], "tasks");
    assert_eq!(pending["arguments"], json!({ "title": "Buy milk" }));
    assert!(pending["reason"].as_str().unwrap().contains("read-only"));
    let id = run["id"].as_str().unwrap();
    let call = pending["call_id"].as_str().unwrap();
    // Nothing ran yet.
    assert!(task_titles(&app, &plugin).await.is_empty());
    assert_eq!(
        get_json(&app, &format!("/v1/runs/{id}")).await["status"],
        "awaiting_approval"
    );

    let response = decide(&app, id, json!([{ "call_id": call, "approve": true }])).await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["answer"], "Added.");
    assert_eq!(task_titles(&app, &plugin).await, ["Buy milk"]);

    let trail = get_json(&app, &format!("/v1/audit/runs/{id}")).await;
    let decided = trail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"]["kind"] == "approval_decided")
        .expect("the decision is recorded");
    assert_eq!(decided["step"]["decided_by"], "dev");
    assert_eq!(decided["step"]["decision"], "approve");
    assert_eq!(
        get_json(&app, "/v1/audit/verify").await["ok"],
        true,
        "the trail verifies"
    );

    // The run has moved on: deciding again conflicts.
    let error = expect_error(
        decide(&app, id, json!([{ "call_id": call, "approve": true }])).await,
        409,
    )
    .await;
    assert_eq!(error["code"], "run_ended");
}

/// The decision names the arguments it was shown by their hash (issue #11, point 6): a
/// wrong hash is refused with 409 naming the call, nothing runs or is recorded and the run
/// still waits; the hash the pending view showed approves it, and is recorded with the
/// decision.
#[tokio::test]
async fn a_decision_is_bound_to_the_arguments_hash_it_was_shown() {
    let (_model, app, plugin) = with_tasks([
        Step::tool_call(
            "add_task",
            json!({ "title": "Buy milk", "priority": "high" }),
        ),
        Step::text("Added."),
    ])
    .await;
    let run = start_run(&app, "Remind me to buy milk").await;
    let id = run["id"].as_str().unwrap();
    let pending = &run["pending_approvals"][0];
    let call = pending["call_id"].as_str().unwrap();
    let shown = pending["arguments_sha256"].as_str().unwrap().to_owned();
    // SHA-256 of the RFC 8785 form, {"priority":"high","title":"Buy milk"}.
    assert_eq!(
        shown,
        "16da9e2013538f26e02e3cdcaff51630e8dbffd90dff5a1955151705a317747c"
    );
    let view = get_json(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(
        view["pending_approvals"][0]["arguments_sha256"],
        shown.as_str()
    );
    let steps_before = view["step_count"].clone();

    let wrong = "0".repeat(64);
    for approve in [true, false] {
        let error = expect_error(
            decide(
                &app,
                id,
                json!([{ "call_id": call, "approve": approve, "arguments_sha256": wrong }]),
            )
            .await,
            409,
        )
        .await;
        assert_eq!(error["code"], "arguments_mismatch", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(call) && message.contains(&shown),
            "{message}"
        );
    }
    let error = expect_error(
        decide(
            &app,
            id,
            json!([{ "call_id": call, "approve": true, "arguments_sha256": "not hex" }]),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(error["field"], "decisions[0].arguments_sha256", "{error}");
    assert!(task_titles(&app, &plugin).await.is_empty(), "nothing ran");
    let view = get_json(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(view["step_count"], steps_before, "nothing was recorded");

    let response = decide(
        &app,
        id,
        json!([{ "call_id": call, "approve": true, "arguments_sha256": shown }]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(task_titles(&app, &plugin).await, ["Buy milk"]);
    let trail = get_json(&app, &format!("/v1/audit/runs/{id}")).await;
    let hashes: Vec<(&str, &str)> = trail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let kind = s["step"]["kind"].as_str()?;
            Some((kind, s["step"]["arguments_sha256"].as_str()?))
        })
        .collect();
    assert_eq!(
        hashes,
        [
            ("approval_requested", shown.as_str()),
            ("approval_decided", shown.as_str())
        ]
    );
    assert_eq!(get_json(&app, "/v1/audit/verify").await["ok"], true);
}

#[tokio::test]
async fn a_denied_call_never_runs_and_the_model_is_told_why() {
    let (model, app, plugin) = with_tasks([
        Step::tool_call("add_task", json!({ "title": "Sell the car" })),
        Step::text("Understood, I left your list alone."),
    ])
    .await;

    let run = start_run(&app, "Remind me to sell the car").await;
    let id = run["id"].as_str().unwrap();
    let call = run["pending_approvals"][0]["call_id"].as_str().unwrap();

    // Decisions that do not fit are refused before anything is recorded.
    let error = expect_error(
        decide(&app, id, json!([{ "call_id": "nope", "approve": true }])).await,
        422,
    )
    .await;
    assert_eq!(error["field"], "decisions");
    let error = expect_error(decide(&app, id, json!([])).await, 400).await;
    assert_eq!(error["field"], "decisions");
    let error = expect_error(
        decide(&app, id, json!([{ "call_id": call, "approve": "yes" }])).await,
        400,
    )
    .await;
    assert_eq!(error["field"], "decisions[0].approve");

    let response = decide(
        &app,
        id,
        json!([{ "call_id": call, "approve": false, "reason": "not this year" }]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["answer"], "Understood, I left your list alone.");
    assert!(task_titles(&app, &plugin).await.is_empty());
    let told = tool_messages(&model, 1).join("\n");
    assert!(told.contains("denied"), "{told}");
    assert!(told.contains("not this year"), "{told}");
}

#[tokio::test]
async fn runs_are_cancelled_while_paused_and_while_working() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("add_task", json!({ "title": "x" })),
        Step::text("too late").delayed(Duration::from_secs(60)),
    ])
    .await;

    // Paused: cancelled at once, with the reason recorded.
    let run = start_run(&app, "add x").await;
    let id = run["id"].as_str().unwrap().to_owned();
    let response = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/cancel")))
        .json(&json!({ "reason": "changed my mind" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    let trail = get_json(&app, &format!("/v1/audit/runs/{id}")).await;
    let last = trail["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["step"]["kind"], "run_cancelled");
    assert_eq!(last["step"]["reason"], "changed my mind");
    assert_eq!(last["step"]["cancelled_by"], "user:dev");
    let error = expect_error(
        app.client
            .post(app.url(&format!("/v1/runs/{id}/cancel")))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(error["code"], "run_ended");

    // Working (the model takes a minute): the cancel stops it, and the request that
    // started it gets the cancelled run.
    let started = spawn_post(&app, "/v1/runs", json!({ "message": "slow" }));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let page = get_json(&app, "/v1/audit/steps?kind=user_message&status=running").await;
        if let Some(run) = page["steps"][0]["run_id"].as_str() {
            break run.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while model.requests().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the model was never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("the cancelled run's request returns at once")
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["id"], id.as_str());
}

/// A server-sent event: (event, id, data).
type Sse = (String, Option<String>, String);

pub fn parse_sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_owned();
            let mut id = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                }
            }
            (!data.is_empty()).then(|| (event, id, data.join("\n")))
        })
        .collect()
}

async fn events(app: &TestApp, run: &str, last: Option<u64>) -> Vec<Sse> {
    let mut request = app.client.get(app.url(&format!("/v1/runs/{run}/events")));
    if let Some(seq) = last {
        request = request.header("last-event-id", seq.to_string());
    }
    let response = tokio::time::timeout(Duration::from_secs(20), request.send())
        .await
        .expect("the stream answers")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends when the run does")
        .unwrap();
    parse_sse(&text)
}

#[tokio::test]
async fn the_event_stream_replays_and_follows_the_ledger_until_the_run_stops() {
    let (_model, app, _plugin) = with_tasks([
        Step::tool_call("add_task", json!({ "title": "Plan the offsite" })),
        Step::text("Planned.").delayed(Duration::from_millis(800)),
    ])
    .await;
    let run = start_run(&app, "plan the offsite").await;
    let id = run["id"].as_str().unwrap().to_owned();

    // Paused: every step so far, then `end` with the pause.
    let paused = events(&app, &id, None).await;
    let (last, rest) = paused.split_last().unwrap();
    assert_eq!(last.0, "end");
    assert_eq!(
        serde_json::from_str::<Value>(&last.2).unwrap()["status"],
        "awaiting_approval"
    );
    let seqs: Vec<String> = rest.iter().map(|e| e.1.clone().unwrap()).collect();
    let expected: Vec<String> = (0..rest.len()).map(|i| i.to_string()).collect();
    assert_eq!(seqs, expected);
    assert!(rest.iter().all(|e| e.0 == "step"));
    let first: Value = serde_json::from_str(&rest[0].2).unwrap();
    assert_eq!(first["step"]["kind"], "user_message");
    assert_eq!(first["run_id"], id.as_str());
    let seen = rest.len() as u64;

    // Approve (the model then takes a moment) and follow from where we left off.
    let call = run["pending_approvals"][0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approving = spawn_post(
        &app,
        &format!("/v1/runs/{id}/approvals"),
        json!({ "decisions": [{ "call_id": call, "approve": true }] }),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get_json(&app, &format!("/v1/runs/{id}")).await["status"] == "awaiting_approval" {
        assert!(
            std::time::Instant::now() < deadline,
            "the approval never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let followed = events(&app, &id, Some(seen - 1)).await;
    let kinds: Vec<String> = followed
        .iter()
        .filter(|e| e.0 == "step")
        .map(|e| {
            serde_json::from_str::<Value>(&e.2).unwrap()["step"]["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("approval_decided"));
    assert_eq!(kinds.last().map(String::as_str), Some("final_answer"));
    assert!(kinds.contains(&"tool_result".to_owned()), "{kinds:?}");
    let (last, _) = followed.split_last().unwrap();
    assert_eq!(last.0, "end");
    assert_eq!(
        serde_json::from_str::<Value>(&last.2).unwrap()["status"],
        "completed"
    );
    assert_eq!(followed[0].1.as_deref(), Some(seen.to_string().as_str()));
    assert_eq!(approving.await.unwrap().status(), 200);

    let error = expect_error(
        app.client
            .get(app.url(&format!("/v1/runs/{id}/events")))
            .header("last-event-id", "soon")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "Last-Event-ID");
}

#[tokio::test]
async fn another_tenants_run_is_not_found_and_roles_are_enforced() {
    let model = ScriptedServer::start([Step::text("Hello, acme.")]).await;
    let app = spawn_app_with(Options {
        oidc: true,
        model_url: Some(model.url()),
        ..Options::default()
    })
    .await;
    let oidc = app.oidc.as_ref().unwrap();
    let acme = oidc.token("acme-all").await;
    let globex = oidc.token("globex-all").await;
    let auditor = oidc.token("acme-auditor").await;

    let response = app
        .request(Method::POST, "/v1/runs", Some(&acme))
        .json(&json!({ "message": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["answer"], "Hello, acme.");
    let id = run["id"].as_str().unwrap();

    let response = app
        .request(Method::GET, &format!("/v1/runs/{id}"), Some(&acme))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_not_found(
        &app,
        vec![
            (Method::GET, format!("/v1/runs/{id}")),
            (Method::GET, format!("/v1/runs/{id}/events")),
            (Method::POST, format!("/v1/runs/{id}/cancel")),
        ],
        &globex,
    )
    .await;
    let error = expect_error(
        app.request(
            Method::POST,
            &format!("/v1/runs/{id}/approvals"),
            Some(&globex),
        )
        .json(&json!({ "decisions": [{ "call_id": "c", "approve": true }] }))
        .send()
        .await
        .unwrap(),
        404,
    )
    .await;
    assert_eq!(error["code"], "not_found");

    // An auditor without the user role may not start or read runs.
    let error = expect_error(
        app.request(Method::POST, "/v1/runs", Some(&auditor))
            .json(&json!({ "message": "hi" }))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(error["code"], "forbidden");
    expect_error(
        app.request(Method::GET, &format!("/v1/runs/{id}"), Some(&auditor))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    // No token at all.
    expect_error(
        app.request(Method::POST, "/v1/chat/completions", None)
            .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_eq!(
        model.requests().len(),
        1,
        "refused requests never reach the model"
    );
}

#[tokio::test]
async fn the_embedded_model_is_loaded_only_when_a_run_needs_it() {
    let models = tempfile::tempdir().unwrap();
    let app = spawn_app_with(Options {
        model: Some(ModelConfig::Embedded(EmbeddedSettings {
            model_dir: models.path().to_owned(),
            gguf: "absent.gguf".into(),
        })),
        ..Options::default()
    })
    .await;
    // The server started without the weights; the first run is what needs them.
    assert_eq!(get_json(&app, "/healthz").await["status"], "ok");
    let run = start_run(&app, "hello").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["type"], "model_error");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(message.contains("absent.gguf"), "{message}");
    assert_eq!(run["model"], "absent");
}

#[tokio::test]
async fn bad_run_requests_name_the_field() {
    let model = ScriptedServer::start([]).await;
    let app = spawn_app_with_model(model.url()).await;
    for (body, field) in [
        (json!({}), "message"),
        (json!({ "message": 3 }), "message"),
        (json!({ "message": "  " }), "message"),
        (json!({ "message": "hi", "colour": "red" }), "colour"),
        (
            json!({ "message": "hi", "conversation_id": "" }),
            "conversation_id",
        ),
    ] {
        let error = expect_error(
            app.client
                .post(app.url("/v1/runs"))
                .json(&body)
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(error["field"], field, "{body}");
    }
    let error = expect_error(
        app.client
            .post(app.url("/v1/runs"))
            .body("message=hi")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_eq!(error["code"], "unsupported_media_type");
    let error = expect_error(
        app.client.get(app.url("/v1/runs/42")).send().await.unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "id");
    // A v4 UUID is not a run id.
    let error = expect_error(
        app.client
            .get(app.url("/v1/runs/2f1c4a7e-8a52-4c8e-9a3e-1f0e6c2d9b11"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "id");
    let missing = "01900000-0000-7000-8000-000000000000";
    let error = expect_error(
        app.client
            .get(app.url(&format!("/v1/runs/{missing}")))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(error["code"], "not_found");
    let error = expect_error(
        app.client
            .post(app.url(&format!("/v1/runs/{missing}/cancel")))
            .header("content-type", "application/json")
            .body("{\"reason\": 1}")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "reason");
    assert!(model.requests().is_empty());
}
