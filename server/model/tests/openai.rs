//! The OpenAI-compatible provider against the scripted server: what it sends, what it
//! makes of each answer shape, and how it retries, times out and fails.

use std::time::{Duration, Instant};

use cairn_model::reasoning::ReasoningReplay;
use cairn_model::{
    ApiKey, ChatDelta, ChatMessage, ChatModel, ChatRequest, ChatResponse, FinishReason, ModelError,
    OpenAiCompatible, OpenAiConfig, Role, ToolCall, ToolChoice, ToolDefinition, Usage,
    collect_stream,
};
use cairn_scripted_model::{ReasoningShape, ScriptedCall, ScriptedServer, Step};
use futures::StreamExt;
use serde_json::{Value, json};

const MODEL: &str = "test-model";

/// Tiny backoffs so retry tests take milliseconds; a generous timeout unless a test
/// is about timeouts.
fn config(server: &ScriptedServer) -> OpenAiConfig {
    OpenAiConfig {
        max_retries: 3,
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
        ..OpenAiConfig::new(server.url(), MODEL)
    }
}

fn provider(server: &ScriptedServer) -> OpenAiCompatible {
    OpenAiCompatible::new(config(server)).expect("a valid config")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user(text)],
        ..ChatRequest::default()
    }
}

fn add_task_tool() -> ToolDefinition {
    ToolDefinition {
        name: "add_task".into(),
        description: "Adds a task to the user's list.".into(),
        parameters: json!({
            "type": "object",
            "properties": { "title": { "type": "string" } },
            "required": ["title"],
        }),
    }
}

async fn stream_all(model: &OpenAiCompatible, request: &ChatRequest) -> Vec<ChatDelta> {
    let stream = model.chat_stream(request).await.expect("the stream opens");
    stream
        .map(|delta| delta.expect("no error mid-stream"))
        .collect()
        .await
}

async fn stream_collected(model: &OpenAiCompatible, request: &ChatRequest) -> ChatResponse {
    let stream = model.chat_stream(request).await.expect("the stream opens");
    collect_stream(stream, MODEL)
        .await
        .expect("the stream completes")
}

#[tokio::test]
async fn a_plain_answer_with_usage() {
    let server = ScriptedServer::start([Step::text("Hello, Ada.").usage(21, 4)]).await;
    let answer = provider(&server).chat(&ask("hi")).await.expect("an answer");

    assert_eq!(answer.message.role, Role::Assistant);
    assert_eq!(answer.message.content.as_deref(), Some("Hello, Ada."));
    assert_eq!(answer.message.reasoning, None);
    assert!(answer.message.tool_calls.is_empty());
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert_eq!(
        answer.usage,
        Some(Usage {
            input_tokens: 21,
            output_tokens: 4
        })
    );
    assert_eq!(answer.model, MODEL);

    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], MODEL);
    assert_eq!(sent[0]["stream"], false);
    assert_eq!(
        sent[0]["messages"],
        json!([{ "role": "user", "content": "hi" }])
    );
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token() {
    let server = ScriptedServer::start([Step::text("ok")]).await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        api_key: Some(ApiKey::new("sk-test-123")),
        ..config(&server)
    })
    .expect("a valid config");
    model.chat(&ask("hi")).await.expect("an answer");
    assert_eq!(
        server.received()[0].authorization.as_deref(),
        Some("Bearer sk-test-123")
    );
}

#[tokio::test]
async fn a_tool_call_with_arguments() {
    let server = ScriptedServer::start([Step::tool_call(
        "add_task",
        json!({ "title": "Buy milk", "due": "2025-01-31" }),
    )])
    .await;
    let request = ChatRequest {
        tools: vec![add_task_tool()],
        ..ask("remind me to buy milk")
    };
    let answer = provider(&server).chat(&request).await.expect("an answer");

    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    assert_eq!(answer.message.content, None);
    assert_eq!(answer.message.tool_calls.len(), 1);
    let call = &answer.message.tool_calls[0];
    assert_eq!(call.id, "call_1_1");
    assert_eq!(call.name, "add_task");
    let arguments: Value = serde_json::from_str(&call.arguments).expect("JSON arguments");
    assert_eq!(
        arguments,
        json!({ "title": "Buy milk", "due": "2025-01-31" })
    );
}

#[tokio::test]
async fn parallel_tool_calls_keep_their_order_and_ids() {
    let server = ScriptedServer::start([Step::tool_calls([
        ScriptedCall::new("add_task", json!({ "title": "a" })).id("first"),
        ScriptedCall::new("list_tasks", json!({})).id("second"),
    ])])
    .await;
    let answer = provider(&server)
        .chat(&ask("do both"))
        .await
        .expect("an answer");
    let calls: Vec<(&str, &str, &str)> = answer
        .message
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("first", "add_task", r#"{"title":"a"}"#),
            ("second", "list_tasks", "{}")
        ]
    );
}

#[tokio::test]
async fn the_request_has_tools_tool_choice_and_parallel_calls_in_openais_shape() {
    let server = ScriptedServer::start([Step::text("a"), Step::text("b"), Step::text("c")]).await;
    let model = provider(&server);
    let mut request = ChatRequest {
        tools: vec![add_task_tool()],
        tool_choice: ToolChoice::Tool("add_task".into()),
        parallel_tool_calls: true,
        max_tokens: Some(256),
        temperature: Some(0.25),
        ..ask("x")
    };
    model.chat(&request).await.expect("an answer");
    request.tool_choice = ToolChoice::Required;
    request.parallel_tool_calls = false;
    model.chat(&request).await.expect("an answer");
    request.tool_choice = ToolChoice::None;
    model.chat(&request).await.expect("an answer");

    let sent = server.requests();
    assert_eq!(
        sent[0]["tools"],
        json!([{
            "type": "function",
            "function": {
                "name": "add_task",
                "description": "Adds a task to the user's list.",
                "parameters": {
                    "type": "object",
                    "properties": { "title": { "type": "string" } },
                    "required": ["title"],
                },
            },
        }])
    );
    assert_eq!(
        sent[0]["tool_choice"],
        json!({ "type": "function", "function": { "name": "add_task" } })
    );
    assert_eq!(sent[0]["parallel_tool_calls"], true);
    assert_eq!(sent[0]["max_tokens"], 256);
    assert_eq!(sent[0]["temperature"], 0.25);
    assert_eq!(sent[1]["tool_choice"], "required");
    assert_eq!(sent[1]["parallel_tool_calls"], false);
    assert_eq!(sent[2]["tool_choice"], "none");
}

#[tokio::test]
async fn tool_calls_and_results_are_sent_back_in_openais_shape() {
    let server = ScriptedServer::start([Step::text("Done.")]).await;
    let request = ChatRequest {
        messages: vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("add milk"),
            ChatMessage {
                role: Role::Assistant,
                content: None,
                reasoning: None,
                tool_calls: vec![ToolCall {
                    id: "call_9".into(),
                    name: "add_task".into(),
                    arguments: r#"{"title":"milk"}"#.into(),
                }],
                tool_call_id: None,
            },
            ChatMessage::tool_result("call_9", r#"{"id":1}"#),
        ],
        tools: vec![add_task_tool()],
        ..ChatRequest::default()
    };
    provider(&server).chat(&request).await.expect("an answer");
    assert_eq!(
        server.requests()[0]["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "add milk" },
            {
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": "call_9",
                    "type": "function",
                    "function": { "name": "add_task", "arguments": "{\"title\":\"milk\"}" },
                }],
            },
            { "role": "tool", "tool_call_id": "call_9", "content": "{\"id\":1}" },
        ])
    );
}

#[tokio::test]
async fn streamed_text_arrives_in_pieces_and_reassembles() {
    let server =
        ScriptedServer::start([Step::text("The quick brown fox.").usage(9, 5).chunk_size(3)]).await;
    let deltas = stream_all(&provider(&server), &ask("hi")).await;

    let texts: Vec<&str> = deltas
        .iter()
        .filter_map(|d| match d {
            ChatDelta::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(texts.len() >= 5, "arrived in one piece: {texts:?}");
    assert_eq!(texts.concat(), "The quick brown fox.");
    assert_eq!(
        deltas.last(),
        Some(&ChatDelta::Finished {
            reason: FinishReason::Stop,
            usage: Some(Usage {
                input_tokens: 9,
                output_tokens: 5
            }),
        })
    );
    let sent = &server.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({ "include_usage": true }));
}

#[tokio::test]
async fn streamed_tool_call_fragments_reassemble_by_index() {
    let server = ScriptedServer::start([Step::tool_calls([
        (
            "add_task",
            json!({ "title": "Buy oat milk", "tags": ["shop"] }),
        ),
        ("list_tasks", json!({ "done": false })),
    ])
    .chunk_size(5)])
    .await;
    let model = provider(&server);
    let deltas = stream_all(&model, &ask("x")).await;

    let starts: Vec<(u32, &str, &str)> = deltas
        .iter()
        .filter_map(|d| match d {
            ChatDelta::ToolCallStart { index, id, name } => {
                Some((*index, id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        [(0, "call_1_1", "add_task"), (1, "call_1_2", "list_tasks")]
    );
    let fragments = deltas
        .iter()
        .filter(|d| matches!(d, ChatDelta::ToolCallArguments { .. }))
        .count();
    assert!(fragments > 4, "arguments were not fragmented: {fragments}");

    // The same script again, collected.
    server.push([Step::tool_calls([
        (
            "add_task",
            json!({ "title": "Buy oat milk", "tags": ["shop"] }),
        ),
        ("list_tasks", json!({ "done": false })),
    ])
    .chunk_size(5)]);
    let answer = stream_collected(&model, &ask("x")).await;
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    let arguments: Vec<Value> = answer
        .message
        .tool_calls
        .iter()
        .map(|c| serde_json::from_str(&c.arguments).expect("whole JSON"))
        .collect();
    assert_eq!(
        arguments,
        [
            json!({ "title": "Buy oat milk", "tags": ["shop"] }),
            json!({ "done": false })
        ]
    );
}

const THOUGHT: &str = "The user wants a greeting; keep it short.";

fn reasoning_step(shape: ReasoningShape) -> Step {
    Step::text("Hi!")
        .with_reasoning(shape, THOUGHT)
        .chunk_size(3)
}

#[tokio::test]
async fn each_reasoning_shape_is_normalised_when_not_streamed() {
    for shape in [
        ReasoningShape::ReasoningContent,
        ReasoningShape::Reasoning,
        ReasoningShape::ThinkTags,
    ] {
        let server = ScriptedServer::start([reasoning_step(shape)]).await;
        let answer = provider(&server).chat(&ask("hi")).await.expect("an answer");
        assert_eq!(
            answer.message.reasoning.as_deref(),
            Some(THOUGHT),
            "{shape:?}"
        );
        assert_eq!(answer.message.content.as_deref(), Some("Hi!"), "{shape:?}");
    }
}

#[tokio::test]
async fn each_reasoning_shape_is_normalised_when_streamed() {
    for shape in [
        ReasoningShape::ReasoningContent,
        ReasoningShape::Reasoning,
        ReasoningShape::ThinkTags,
    ] {
        let server = ScriptedServer::start([reasoning_step(shape)]).await;
        let model = provider(&server);
        let deltas = stream_all(&model, &ask("hi")).await;
        let reasoning_pieces = deltas
            .iter()
            .filter(|d| matches!(d, ChatDelta::Reasoning { .. }))
            .count();
        assert!(
            reasoning_pieces > 1,
            "{shape:?}: reasoning was not streamed"
        );
        let text: String = deltas
            .iter()
            .filter_map(|d| match d {
                ChatDelta::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Hi!", "{shape:?}: tags leaked into the text");

        server.push([reasoning_step(shape)]);
        let answer = stream_collected(&model, &ask("hi")).await;
        assert_eq!(
            answer.message.reasoning.as_deref(),
            Some(THOUGHT),
            "{shape:?}"
        );
        assert_eq!(answer.message.content.as_deref(), Some("Hi!"), "{shape:?}");
    }
}

#[tokio::test]
async fn a_think_block_split_inside_its_tags_is_still_found() {
    let chunk = |text: &str| {
        json!({ "choices": [{ "index": 0, "delta": { "content": text } }] }).to_string()
    };
    let server = ScriptedServer::start([Step::sse([
        chunk("  <th"),
        chunk("ink>\nFirst add, "),
        chunk("then answer.</thi"),
        chunk("nk>\n\nIt is "),
        chunk("4."),
        json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }).to_string(),
        "[DONE]".to_owned(),
    ])])
    .await;
    let answer = stream_collected(&provider(&server), &ask("2+2?")).await;
    assert_eq!(
        answer.message.reasoning.as_deref(),
        Some("First add, then answer.")
    );
    assert_eq!(answer.message.content.as_deref(), Some("It is 4."));
}

fn turn_with_reasoning() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::user("add milk"),
            ChatMessage {
                role: Role::Assistant,
                content: Some("On it.".into()),
                reasoning: Some("A task is needed.".into()),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "add_task".into(),
                    arguments: "{}".into(),
                }],
                tool_call_id: None,
            },
            ChatMessage::tool_result("c1", "ok"),
        ],
        tools: vec![add_task_tool()],
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn reasoning_is_replayed_only_as_configured() {
    let replays = [
        ReasoningReplay::None,
        ReasoningReplay::Field("reasoning_content".into()),
        ReasoningReplay::ThinkTags,
    ];
    let server = ScriptedServer::start(replays.iter().map(|_| Step::text("ok"))).await;
    for replay in &replays {
        let model = OpenAiCompatible::new(OpenAiConfig {
            reasoning_replay: replay.clone(),
            ..config(&server)
        })
        .expect("a valid config");
        model.chat(&turn_with_reasoning()).await.expect("an answer");
    }
    let sent = server.requests();
    let assistant = |i: usize| sent[i]["messages"][1].clone();

    assert_eq!(assistant(0)["content"], "On it.");
    assert!(assistant(0).get("reasoning_content").is_none());
    assert!(assistant(0).get("reasoning").is_none());

    assert_eq!(assistant(1)["reasoning_content"], "A task is needed.");
    assert_eq!(assistant(1)["content"], "On it.");

    assert_eq!(
        assistant(2)["content"],
        "<think>\nA task is needed.\n</think>\n\nOn it."
    );
    assert!(assistant(2).get("reasoning_content").is_none());
    // Never on other roles.
    assert!(sent[1]["messages"][0].get("reasoning_content").is_none());
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let server = ScriptedServer::start([Step::status(429).retry_after(1), Step::text("ok")]).await;
    let started = Instant::now();
    let answer = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect("a retry succeeds");
    assert_eq!(answer.message.content.as_deref(), Some("ok"));

    let received = server.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    // The backoff alone would be at most 20 ms.
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_millis(1500),
        "retried after {gap:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_retry_after_http_date_is_honoured_too() {
    let server = ScriptedServer::start([
        Step::status(503).retry_after_date(Duration::from_secs(2)),
        Step::text("ok"),
    ])
    .await;
    provider(&server)
        .chat(&ask("hi"))
        .await
        .expect("a retry succeeds");
    let received = server.received();
    let gap = received[1].at - received[0].at;
    // HTTP dates have whole seconds: the wait is between one and two.
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_millis(2500),
        "retried after {gap:?}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_is_not_waited_out() {
    let server = ScriptedServer::start([Step::status(429).retry_after(120)]).await;
    let started = Instant::now();
    let error = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect_err("gives up");
    assert_eq!(
        error,
        ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert!(error.retryable());
    assert_eq!(server.requests().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_500_then_success() {
    let server = ScriptedServer::start([Step::status(500), Step::text("recovered")]).await;
    let answer = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect("a retry succeeds");
    assert_eq!(answer.message.content.as_deref(), Some("recovered"));
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        server.requests()[0],
        server.requests()[1],
        "the same request is retried"
    );
}

#[tokio::test]
async fn a_stream_is_retried_before_it_starts() {
    let server = ScriptedServer::start([Step::status(502), Step::text("streamed")]).await;
    let answer = stream_collected(&provider(&server), &ask("hi")).await;
    assert_eq!(answer.message.content.as_deref(), Some("streamed"));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn persistent_500s_exhaust_the_retries() {
    let server =
        ScriptedServer::start((0..4).map(|_| Step::status(500).body("upstream exploded"))).await;
    let error = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect_err("retries run out");
    match &error {
        ModelError::Server { status, message } => {
            assert_eq!(*status, 500);
            assert!(message.contains("upstream exploded"), "{message}");
            assert!(message.contains("after 4 attempts"), "{message}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(error.retryable());
    // One attempt plus max_retries (3), and nothing after.
    assert_eq!(server.requests().len(), 4);
    assert_eq!(server.remaining(), 0);
}

#[tokio::test]
async fn a_400_is_rejected_with_the_servers_message_and_not_retried() {
    let server = ScriptedServer::start([
        Step::status(400).body(
            json!({ "error": { "message": "tool_choice names an unknown tool", "type": "invalid_request_error" } })
                .to_string(),
        ),
        Step::text("must not be used"),
    ])
    .await;
    let error = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect_err("rejected");
    assert_eq!(
        error,
        ModelError::Rejected {
            status: 400,
            message: "tool_choice names an unknown tool".into()
        }
    );
    assert!(!error.retryable());
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.remaining(), 1);
}

#[tokio::test]
async fn a_long_rejection_message_is_shortened() {
    let server = ScriptedServer::start([Step::status(422).body("x".repeat(5000))]).await;
    let error = provider(&server)
        .chat(&ask("hi"))
        .await
        .expect_err("rejected");
    let ModelError::Rejected { status, message } = error else {
        panic!("expected a rejection, got {error:?}");
    };
    assert_eq!(status, 422);
    assert!(message.chars().count() <= 301, "{} chars", message.len());
}

#[tokio::test]
async fn a_slow_server_times_out_within_the_bound() {
    let server = ScriptedServer::start([Step::delay(Duration::from_secs(5))]).await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        request_timeout: Duration::from_millis(300),
        ..config(&server)
    })
    .expect("a valid config");
    let started = Instant::now();
    let error = model.chat(&ask("hi")).await.expect_err("times out");
    let took = started.elapsed();
    assert_eq!(error, ModelError::Timeout(Duration::from_millis(300)));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
        "took {took:?}"
    );
    assert_eq!(server.requests().len(), 1, "a timeout is not retried");
}

#[tokio::test]
async fn a_stream_that_stalls_times_out() {
    let server = ScriptedServer::start([Step::text("slow words")
        .chunk_size(2)
        .chunk_delay(Duration::from_millis(600))])
    .await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        request_timeout: Duration::from_millis(200),
        ..config(&server)
    })
    .expect("a valid config");
    let started = Instant::now();
    let stream = model.chat_stream(&ask("hi")).await.expect("headers arrive");
    let error = collect_stream(stream, MODEL)
        .await
        .expect_err("the stream stalls");
    assert_eq!(error, ModelError::Timeout(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn malformed_json_is_malformed() {
    let server = ScriptedServer::start([
        Step::raw("{\"choices\": [ this is not json"),
        Step::raw(json!({ "object": "chat.completion", "choices": [] }).to_string()),
    ])
    .await;
    let model = provider(&server);
    for _ in 0..2 {
        let error = model.chat(&ask("hi")).await.expect_err("malformed");
        assert!(matches!(error, ModelError::Malformed(_)), "{error:?}");
        assert!(!error.retryable());
    }
    assert_eq!(
        server.requests().len(),
        2,
        "malformed answers are not retried"
    );
}

#[tokio::test]
async fn a_broken_stream_is_malformed() {
    let server = ScriptedServer::start([
        Step::sse([
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            "{oops",
        ]),
        // Ends without a finish reason or [DONE].
        Step::sse([r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#]),
    ])
    .await;
    let model = provider(&server);
    for _ in 0..2 {
        let stream = model.chat_stream(&ask("hi")).await.expect("opens");
        let error = collect_stream(stream, MODEL).await.expect_err("broken");
        assert!(matches!(error, ModelError::Malformed(_)), "{error:?}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported() {
    // Bind and drop a listener: nothing listens on that port now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let model = OpenAiCompatible::new(OpenAiConfig {
        max_retries: 2,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(2),
        ..OpenAiConfig::new(format!("http://127.0.0.1:{port}/v1"), MODEL)
    })
    .expect("a valid config");
    let error = model.chat(&ask("hi")).await.expect_err("nobody listens");
    match &error {
        ModelError::Unreachable(message) => {
            assert!(message.contains("after 3 attempts"), "{message}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_script_can_react_to_what_was_sent() {
    let server = ScriptedServer::start([Step::respond_with(|request| {
        let has_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
        Step::text(if has_tools { "tools seen" } else { "no tools" })
    })])
    .await;
    let request = ChatRequest {
        tools: vec![add_task_tool()],
        ..ask("x")
    };
    let answer = provider(&server).chat(&request).await.expect("an answer");
    assert_eq!(answer.message.content.as_deref(), Some("tools seen"));
}

#[tokio::test]
async fn an_exhausted_script_fails_loudly_naming_the_request() {
    let server = ScriptedServer::start([]).await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        max_retries: 0,
        ..config(&server)
    })
    .expect("a valid config");
    let error = model
        .chat(&ask("the unexpected question"))
        .await
        .expect_err("no step left");
    let ModelError::Server { status, message } = error else {
        panic!("expected a server error, got {error:?}");
    };
    assert_eq!(status, 500);
    assert!(message.contains("no step left for request 1"), "{message}");
    assert!(message.contains("the unexpected question"), "{message}");
}
