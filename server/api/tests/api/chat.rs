//! `POST /v1/chat/completions`: OpenAI's format over the reasoning loop, driven by the
//! scripted model, with the real `tasks` plugin as a server-side tool.

use cairn_scripted_model::{ScriptedServer, Step};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_error, spawn_app_with_model};
use crate::runs::{decide, get_json, parse_sse, step_kinds, with_tasks};

async fn complete(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn complete_ok(app: &TestApp, body: Value) -> (Value, String) {
    let response = complete(app, body).await;
    let status = response.status();
    let header = response
        .headers()
        .get("x-cairn-run-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    (serde_json::from_str(&text).unwrap(), header)
}

#[tokio::test]
async fn a_plain_completion_is_an_openai_answer_and_a_recorded_run() {
    let model = ScriptedServer::start([Step::text("Hello! How can I help?").usage(12, 6)]).await;
    let app = spawn_app_with_model(model.url()).await;
    let (answer, header) = complete_ok(
        &app,
        json!({
            "model": "gpt-4o",
            "messages": [
                { "role": "system", "content": "Answer in one sentence." },
                { "role": "user", "content": [{ "type": "text", "text": "Hi" }] }
            ],
            "n": 1,
            "max_tokens": 50,
            "temperature": 0.25,
            "user": "someone",
            "top_p": 1,
            "stream_options": null
        }),
    )
    .await;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello! How can I help?"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["model"], "scripted");
    assert_eq!(answer["usage"]["prompt_tokens"], 12);
    assert_eq!(answer["usage"]["total_tokens"], 18);
    let run = answer["cairn_run_id"].as_str().unwrap();
    assert_eq!(answer["id"], format!("chatcmpl-{run}"));
    assert_eq!(header, run);
    assert_eq!(answer["cairn_status"], "completed");

    // The client's system message reached the model; the user's text is the run's message.
    let sent = &model.requests()[0]["messages"];
    assert_eq!(sent[0]["role"], "system");
    assert!(
        sent[0]["content"]
            .as_str()
            .unwrap()
            .contains("one sentence")
    );
    assert_eq!(sent[1]["content"], "Hi");
    assert_eq!(model.requests()[0]["max_tokens"], 50);
    assert_eq!(model.requests()[0]["temperature"], 0.25);
    let view = get_json(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["answer"], "Hello! How can I help?");
}

#[tokio::test]
async fn a_streamed_completion_sends_chunks_and_done() {
    let model = ScriptedServer::start([Step::text("Streamed hello.")]).await;
    let app = spawn_app_with_model(model.url()).await;
    let response = complete(
        &app,
        json!({ "messages": [{ "role": "user", "content": "Hi" }], "stream": true }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&response.text().await.unwrap());
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.2, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|e| serde_json::from_str(&e.2).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks.iter().all(|c| c["id"] == id));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Streamed hello.");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let run = last["cairn_run_id"].as_str().unwrap();
    assert_eq!(id, format!("chatcmpl-{run}"));
    assert_eq!(
        get_json(&app, &format!("/v1/runs/{run}")).await["answer"],
        "Streamed hello."
    );
}

#[tokio::test]
async fn enabled_plugins_are_server_side_tools() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("list_tasks", json!({})),
        Step::text("You have nothing to do."),
        Step::text("Sure."),
    ])
    .await;
    let (answer, _) = complete_ok(
        &app,
        json!({ "messages": [{ "role": "user", "content": "What's on my list?" }] }),
    )
    .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You have nothing to do."
    );
    // The client never sees the server's tool calls.
    assert!(answer["choices"][0]["message"]["tool_calls"].is_null());
    let run = answer["cairn_run_id"].as_str().unwrap();
    let kinds = step_kinds(&app, run).await;
    assert!(kinds.contains(&"tool_result".to_owned()), "{kinds:?}");
    let result = model.requests()[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the tool's result went back to the model")
        .clone();
    let result: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["count"], 0);

    // `tool_choice: "none"`: nothing is offered, not even the plugins.
    complete_ok(
        &app,
        json!({ "messages": [{ "role": "user", "content": "Just chat." }], "tool_choice": "none" }),
    )
    .await;
    let third = &model.requests()[2];
    assert!(
        third["tools"].as_array().is_none_or(Vec::is_empty),
        "{third}"
    );
}

#[tokio::test]
async fn client_tools_are_returned_as_tool_calls() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("get_weather", json!({ "city": "Paris" })),
        Step::text("It is sunny in Paris."),
    ])
    .await;
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"]
            }
        }
    }]);
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "Weather in Paris?" }],
            "tools": tools,
            "tool_choice": "auto"
        }),
    )
    .await;
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({ "city": "Paris" }));
    let call_id = call["id"].as_str().unwrap().to_owned();

    // The model was offered the client's tool beside the plugin's.
    let offered: Vec<String> = model.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(offered.contains(&"get_weather".to_owned()), "{offered:?}");
    assert!(offered.contains(&"list_tasks".to_owned()), "{offered:?}");

    // The run is recorded, the call included, and ended: the client runs the tool.
    let run = answer["cairn_run_id"].as_str().unwrap();
    assert_eq!(answer["cairn_status"], "cancelled");
    let kinds = step_kinds(&app, run).await;
    assert!(kinds.contains(&"tool_call".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"tool_result".to_owned()), "{kinds:?}");
    assert_eq!(kinds.last().unwrap(), "run_cancelled");

    // The client sends the result back: a new run, and the model sees the result.
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [
                { "role": "user", "content": "Weather in Paris?" },
                { "role": "assistant", "content": null, "tool_calls": [call] },
                { "role": "tool", "tool_call_id": call_id, "content": "{\"sky\": \"sunny\"}" }
            ],
            "tools": tools
        }),
    )
    .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "It is sunny in Paris."
    );
    assert_ne!(answer["cairn_run_id"].as_str().unwrap(), run);
    let sent = model.requests()[1]["messages"].to_string();
    assert!(sent.contains("sunny"), "{sent}");

    // A client tool may not shadow a server-side one.
    let error = expect_error(
        complete(
            &app,
            json!({
                "messages": [{ "role": "user", "content": "hi" }],
                "tools": [{ "type": "function", "function": { "name": "add_task" } }]
            }),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(error["field"], "tools[0].function.name");
}

#[tokio::test]
async fn a_completion_that_needs_approval_says_so() {
    let (_model, app, _plugin) = with_tasks([
        Step::tool_call("add_task", json!({ "title": "Book the venue" })),
        Step::text("Booked."),
    ])
    .await;
    let (answer, _) = complete_ok(
        &app,
        json!({ "messages": [{ "role": "user", "content": "Add: book the venue" }] }),
    )
    .await;
    assert_eq!(answer["cairn_status"], "awaiting_approval");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("approval"), "{text}");
    assert!(text.contains("tasks.add_task"), "{text}");
    let pending = &answer["cairn_pending_approvals"][0];
    assert_eq!(pending["tool"], "add_task");

    // Approving through the runs API finishes it.
    let run = answer["cairn_run_id"].as_str().unwrap();
    let response = decide(
        &app,
        run,
        json!([{ "call_id": pending["call_id"], "approve": true }]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["answer"], "Booked.", "{view}");
}

#[tokio::test]
async fn a_failed_run_is_a_502_naming_the_run() {
    let model = ScriptedServer::start([Step::status(400).body("{\"error\": \"bad model\"}")]).await;
    let app = spawn_app_with_model(model.url()).await;
    let error = expect_error(
        complete(
            &app,
            json!({ "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .await,
        502,
    )
    .await;
    assert_eq!(error["code"], "run_failed");
    assert!(
        error["message"].as_str().unwrap().contains("run "),
        "{error}"
    );
}

#[tokio::test]
async fn bad_completion_requests_name_the_field() {
    let model = ScriptedServer::start([]).await;
    let app = spawn_app_with_model(model.url()).await;
    let user = json!([{ "role": "user", "content": "hi" }]);
    for (body, field) in [
        (json!({}), "messages"),
        (json!({ "messages": [] }), "messages"),
        (json!({ "messages": user, "n": 2 }), "n"),
        (json!({ "messages": user, "temperature": 7 }), "temperature"),
        (
            json!({ "messages": user, "tool_choice": "required" }),
            "tool_choice",
        ),
        (
            json!({ "messages": user, "tool_choice": { "type": "function", "function": { "name": "nowhere" } } }),
            "tool_choice.function.name",
        ),
        (
            json!({ "messages": user, "tool_choice": { "type": "function" } }),
            "tool_choice.function.name",
        ),
        (
            json!({ "messages": user, "tool_choice": { "type": "allowed_tools" } }),
            "tool_choice",
        ),
        (
            json!({ "messages": user, "tool_choice": "always" }),
            "tool_choice",
        ),
        (
            json!({ "messages": [{ "role": "robot", "content": "hi" }] }),
            "messages[0].role",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] }),
            "messages[0].content[0]",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": 5 }] }),
            "messages[0].content",
        ),
        (
            json!({ "messages": [{ "role": "tool", "content": "x" }] }),
            "messages[0].tool_call_id",
        ),
        (
            json!({ "messages": user, "tools": [{ "type": "retrieval", "function": { "name": "x" } }] }),
            "tools[0].type",
        ),
        (
            json!({ "messages": user, "tools": [{ "type": "function", "function": { "name": "Get Weather" } }] }),
            "tools[0].function.name",
        ),
        (
            json!({ "messages": user, "tools": [{ "type": "function", "function": { "name": "a".repeat(65) } }] }),
            "tools[0].function.name",
        ),
        (
            json!({ "messages": user, "tools": [{ "type": "function", "function": { "name": "f", "parameters": [] } }] }),
            "tools[0].function.parameters",
        ),
    ] {
        let error = expect_error(complete(&app, body.clone()).await, 400).await;
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    assert!(model.requests().is_empty(), "nothing reached the model");
}

/// Issue 13: OpenAI clients list the models at start-up and check the one they were
/// configured with; `/v1/models` was a 404.
#[tokio::test]
async fn the_models_route_lists_the_served_model_in_openais_shape() {
    let app = crate::helpers::spawn_oidc_app().await;
    let token = app.oidc.as_ref().unwrap().token("acme-user").await;
    let get =
        |path: &str, token: Option<&str>| app.request(reqwest::Method::GET, path, token).send();

    expect_error(get("/v1/models", None).await.unwrap(), 401).await;
    expect_error(get("/v1/models/anything", None).await.unwrap(), 401).await;

    let response = get("/v1/models", Some(&token)).await.unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["object"], "list", "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let model = &data[0];
    assert_eq!(model["object"], "model", "{list}");
    assert_eq!(model["owned_by"], "cairn", "{list}");
    assert!(model["created"].as_i64().unwrap() > 0, "{list}");
    let id = model["id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());

    let response = get(&format!("/v1/models/{id}"), Some(&token))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), *model);

    let error = expect_error(get("/v1/models/gpt-4o", Some(&token)).await.unwrap(), 404).await;
    assert_eq!(error["code"], "not_found");
    assert!(
        error["message"].as_str().unwrap().contains("gpt-4o"),
        "{error}"
    );
}

/// A model id with a slash (as vLLM serves `Qwen/Qwen3-8B`) is retrieved by its id as
/// OpenAI clients put it in the path, unescaped.
#[tokio::test]
async fn a_model_id_with_a_slash_is_retrieved() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        model: Some(cairn_server::config::ModelConfig::OpenAi(
            cairn_server::config::OpenAiSettings {
                base_url: "http://127.0.0.1:9/v1".into(),
                model: "Qwen/Qwen3-8B".into(),
                api_key: None,
                timeout_seconds: 30,
            },
        )),
        ..Default::default()
    })
    .await;
    let response = app
        .client
        .get(app.url("/v1/models/Qwen/Qwen3-8B"))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let model: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(model["id"], "Qwen/Qwen3-8B", "{text}");
    let list: Value = app
        .client
        .get(app.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], "Qwen/Qwen3-8B", "{list}");
}

/// The tool names the model was offered in `request`.
fn offered(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The run's `run_configured` step.
async fn run_configured(app: &TestApp, run: &str) -> Value {
    let trail = get_json(app, &format!("/v1/audit/runs/{run}")).await;
    trail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].clone())
        .find(|s| s["kind"] == "run_configured")
        .expect("the run records its settings")
}

/// Issue 13: `tool_choice: "required"` was refused. It forces a call on the run's first
/// model request (the provider gets `"required"`); once a server-side tool ran, the model
/// may answer.
#[tokio::test]
async fn tool_choice_required_forces_the_first_call() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("list_tasks", json!({})),
        Step::text("You have no tasks."),
    ])
    .await;
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "Anything to do?" }],
            "tool_choice": "required"
        }),
    )
    .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You have no tasks."
    );
    let requests = model.requests();
    assert_eq!(requests[0]["tool_choice"], "required", "{}", requests[0]);
    assert!(offered(&requests[0]).contains(&"list_tasks".to_owned()));
    assert_eq!(requests[1]["tool_choice"], "auto", "{}", requests[1]);
    let run = answer["cairn_run_id"].as_str().unwrap();
    assert_eq!(
        run_configured(&app, run).await["forced_tool"],
        json!({ "type": "required" })
    );
}

/// A named client function is the only tool offered, and the provider is told to call it.
#[tokio::test]
async fn tool_choice_naming_a_client_function_offers_only_it() {
    let (model, app, _plugin) =
        with_tasks([Step::tool_call("get_weather", json!({ "city": "Oslo" }))]).await;
    let choice = json!({ "type": "function", "function": { "name": "get_weather" } });
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "Weather in Oslo?" }],
            "tools": [
                { "type": "function", "function": { "name": "get_weather", "parameters": {
                    "type": "object", "properties": { "city": { "type": "string" } } } } },
                { "type": "function", "function": { "name": "get_time" } }
            ],
            "tool_choice": choice
        }),
    )
    .await;
    let request = &model.requests()[0];
    assert_eq!(request["tool_choice"], choice, "{request}");
    assert_eq!(offered(request), ["get_weather"], "{request}");
    let choice0 = &answer["choices"][0];
    assert_eq!(choice0["finish_reason"], "tool_calls");
    assert_eq!(
        choice0["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let run = answer["cairn_run_id"].as_str().unwrap();
    assert_eq!(
        run_configured(&app, run).await["forced_tool"],
        json!({ "type": "function", "name": "get_weather" })
    );
}

/// A named server-side tool (a plugin's) is forced the same way; the model then answers
/// from its result (`tool_choice: "none"`).
#[tokio::test]
async fn tool_choice_naming_a_plugin_tool_runs_it_then_answers() {
    let (model, app, _plugin) = with_tasks([
        Step::tool_call("list_tasks", json!({})),
        Step::text("Nothing on your list."),
    ])
    .await;
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "My list?" }],
            "tool_choice": { "type": "function", "function": { "name": "list_tasks" } }
        }),
    )
    .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Nothing on your list."
    );
    let requests = model.requests();
    assert_eq!(offered(&requests[0]), ["list_tasks"], "{}", requests[0]);
    assert_eq!(
        requests[0]["tool_choice"],
        json!({ "type": "function", "function": { "name": "list_tasks" } })
    );
    assert_eq!(requests[1]["tool_choice"], "none", "{}", requests[1]);
    let kinds = step_kinds(&app, answer["cairn_run_id"].as_str().unwrap()).await;
    assert!(kinds.contains(&"tool_result".to_owned()), "{kinds:?}");
}

/// Issue 13: OpenAI allows function names `^[a-zA-Z0-9_-]{1,64}$` and frameworks generate
/// camelCase and dashed ones, which were refused. Cairn offers them in its own form and
/// answers with the client's names.
#[tokio::test]
async fn camel_case_and_dashed_client_tools_round_trip() {
    use cairn_scripted_model::ScriptedCall;
    let (model, app, _plugin) = with_tasks([Step::tool_calls([
        ScriptedCall::new("get_weather", json!({ "city": "Oslo" })),
        ScriptedCall::new("get_time", json!({})),
    ])])
    .await;
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "Weather and time in Oslo?" }],
            "tools": [
                { "type": "function", "function": { "name": "getWeather" } },
                { "type": "function", "function": { "name": "get-time" } }
            ]
        }),
    )
    .await;
    let offered = offered(&model.requests()[0]);
    assert!(offered.contains(&"get_weather".to_owned()), "{offered:?}");
    assert!(offered.contains(&"get_time".to_owned()), "{offered:?}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let names: Vec<&str> = choice["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["getWeather", "get-time"], "{answer}");
    // The run records the client's tools as the client spelled them.
    let run = answer["cairn_run_id"].as_str().unwrap();
    let configured = run_configured(&app, run).await;
    assert_eq!(configured["client_tools"][0]["name"], "getWeather");

    // A named choice uses the client's name too.
    model.push([Step::tool_call("get_weather", json!({ "city": "Rome" }))]);
    let (answer, _) = complete_ok(
        &app,
        json!({
            "messages": [{ "role": "user", "content": "Rome?" }],
            "tools": [{ "type": "function", "function": { "name": "getWeather" } }],
            "tool_choice": { "type": "function", "function": { "name": "getWeather" } }
        }),
    )
    .await;
    assert_eq!(
        model.requests()[1]["tool_choice"]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "getWeather"
    );

    // Mapped onto a server-side tool's name, it is refused, naming both spellings.
    let error = expect_error(
        complete(
            &app,
            json!({
                "messages": [{ "role": "user", "content": "hi" }],
                "tools": [{ "type": "function", "function": { "name": "listTasks" } }]
            }),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(error["field"], "tools[0].function.name", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("list_tasks"),
        "{error}"
    );
}
