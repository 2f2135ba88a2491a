//! The embedded provider against the real SmolLM2-135M-Instruct GGUF.
//!
//! The model file comes from `scripts/fetch-models`; without it these tests fail with
//! that instruction rather than skip. Generated text is never compared exactly (greedy
//! output shifts with quantization and summation order): tests assert structure, schema
//! validity, counts and timing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_model::embedded::{DEFAULT_GGUF, default_model_dir};
use cairn_model::{
    ChatDelta, ChatMessage, ChatModel, ChatRequest, EmbeddedConfig, EmbeddedModel, FinishReason,
    ModelError, ToolChoice, ToolDefinition,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn model() -> &'static EmbeddedModel {
    static MODEL: OnceLock<EmbeddedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = default_model_dir().join(DEFAULT_GGUF);
        assert!(
            path.exists(),
            "{} is missing: run scripts/fetch-models first",
            path.display()
        );
        EmbeddedModel::load(EmbeddedConfig {
            gguf_path: path,
            ..EmbeddedConfig::default()
        })
        .expect("the embedded model loads")
    })
}

fn tool(name: &str, description: &str, parameters: Value) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters,
    }
}

fn tools() -> Vec<ToolDefinition> {
    vec![
        tool(
            "get_weather",
            "Current weather for a city.",
            json!({"type": "object", "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["city"], "additionalProperties": false}),
        ),
        tool(
            "search_docs",
            "Search the company's documents.",
            json!({"type": "object", "properties": {
                "query": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20}
            }, "required": ["query", "limit"], "additionalProperties": false}),
        ),
        tool(
            "create_task",
            "Create a task in the tracker.",
            json!({"type": "object", "properties": {
                "title": {"type": "string", "maxLength": 80},
                "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
            }, "required": ["title", "priority"], "additionalProperties": false}),
        ),
        tool(
            "send_email",
            "Send an email.",
            json!({"type": "object", "properties": {
                "to": {"type": "string"},
                "subject": {"type": "string"},
                "urgent": {"type": "boolean"}
            }, "required": ["to", "subject", "urgent"], "additionalProperties": false}),
        ),
    ]
}

fn request(
    system: &str,
    user: &str,
    tools: Vec<ToolDefinition>,
    choice: ToolChoice,
) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::system(system), ChatMessage::user(user)],
        tools,
        tool_choice: choice,
        max_tokens: Some(120),
        ..ChatRequest::default()
    }
}

/// Every call names an offered tool and its arguments validate against its schema.
fn assert_valid_calls(offered: &[ToolDefinition], message: &ChatMessage) {
    for call in &message.tool_calls {
        assert!(
            call.id.starts_with("call_") && call.id.len() > 8,
            "call id {:?}",
            call.id
        );
        let tool = offered
            .iter()
            .find(|t| t.name == call.name)
            .unwrap_or_else(|| panic!("call to {:?}, which was not offered", call.name));
        let args: Value = serde_json::from_str(&call.arguments)
            .unwrap_or_else(|e| panic!("arguments {:?} do not parse: {e}", call.arguments));
        let validator = jsonschema::validator_for(&tool.parameters).expect("schema compiles");
        assert!(
            validator.is_valid(&args),
            "arguments {args} do not match {}'s schema",
            tool.name
        );
    }
}

#[test]
fn tokenizer_matches_llama_cpp_ids() {
    // Ids printed by llama.cpp for the same GGUF
    // (server/model/benches/llama_cpp_reference.py --tokenize ...).
    let cases: &[(&str, &[u32])] = &[
        ("Hello, world!", &[19556, 28, 905, 17]),
        (
            "In 2024, I paid $1,234.56 for 3 items.",
            &[
                788, 216, 34, 32, 34, 36, 28, 339, 5940, 1885, 33, 28, 34, 35, 36, 30, 37, 38, 327,
                216, 35, 3723, 30,
            ],
        ),
        (
            "  leading spaces and trailing  ",
            &[216, 2899, 5600, 284, 35079, 256],
        ),
        (
            "tabs\tand\nnewlines\n\nhere",
            &[100, 7366, 197, 397, 198, 2241, 5110, 198, 198, 1531],
        ),
        (
            "naïve café 東京 🦀 emoji",
            &[
                3546, 46494, 37366, 17097, 247, 126, 16736, 122, 15107, 116, 218, 649, 33777,
            ],
        ),
        (
            "don't you'll we're I'm",
            &[12420, 982, 346, 3060, 392, 2316, 339, 5248],
        ),
        (
            "{\"tool\": \"search\", \"arguments\": {\"q\": \"x\"}}",
            &[
                39428, 19324, 1799, 476, 7916, 1002, 476, 24370, 1799, 9583, 97, 1799, 476, 104,
                18, 17859,
            ],
        ),
    ];
    let tok = model().tokenizer();
    for (text, ids) in cases {
        assert_eq!(tok.encode(text), *ids, "encoding {text:?}");
        assert_eq!(tok.decode(ids), *text, "decoding {text:?}");
    }
    let chat = "<|im_start|>user\nWhat's 12+7?<|im_end|>\n";
    assert_eq!(
        tok.encode_with_specials(chat),
        [1, 4093, 198, 1780, 506, 216, 33, 34, 27, 39, 47, 2, 198]
    );
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    // Plain encoding treats a special token's spelling as text.
    assert!(!tok.encode("<|im_end|>").contains(&2));
}

#[test]
fn tokenizer_round_trips_varied_text() {
    let tok = model().tokenizer();
    for text in [
        "",
        " ",
        "\n\n\n",
        "x = [1, 22, 333]; // 4.5e-6",
        "Ünïcödé — “quotes” ‘single’ … 你好，世界 مرحبا Привет 😀👍🏽",
        "   indented\r\n\tcode();  ",
        "ALLCAPS CamelCase snake_case kebab-case 0x1F 1,000,000",
        "<tag attr=\"v\">&amp;</tag> https://example.com/a?b=c#d",
    ] {
        let ids = tok.encode(text);
        assert_eq!(tok.decode(&ids), text, "round trip of {text:?} via {ids:?}");
        assert!(ids.iter().all(|id| (*id as usize) < tok.vocab_size()));
    }
}

#[test]
fn missing_model_file_says_how_to_fetch_it() {
    let err = EmbeddedModel::load(EmbeddedConfig {
        gguf_path: "/nonexistent/model.gguf".into(),
        ..EmbeddedConfig::default()
    })
    .expect_err("no such file");
    let ModelError::Embedded(message) = &err else {
        panic!("unexpected error {err:?}")
    };
    assert!(message.contains("scripts/fetch-models"), "{message}");
}

#[test]
fn a_non_llama_gguf_is_refused() {
    use candle_core::quantized::gguf_file;
    let dir = std::env::temp_dir().join(format!("cairn-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bert.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    let arch = gguf_file::Value::String("bert".into());
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).expect("write gguf");
    drop(file);
    let err = EmbeddedModel::load(EmbeddedConfig {
        gguf_path: path.clone(),
        ..EmbeddedConfig::default()
    })
    .expect_err("not llama");
    assert!(err.to_string().contains("llama"), "{err}");

    std::fs::write(&path, b"not a gguf at all").expect("write");
    let err = EmbeddedModel::load(EmbeddedConfig {
        gguf_path: path,
        ..EmbeddedConfig::default()
    })
    .expect_err("garbage");
    assert!(err.to_string().contains("GGUF"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn required_calls_always_parse_and_match_an_offered_schema() {
    let all = tools();
    let cases: Vec<(&str, Vec<ToolDefinition>)> = vec![
        ("What's the weather like in Paris?", all.clone()),
        ("Find the onboarding guide for new engineers.", all.clone()),
        (
            "Remind me to renew the TLS certificate, it's urgent.",
            all.clone(),
        ),
        ("Email Dana that the report is late.", all[2..].to_vec()),
        (
            "Look up our refund policy.",
            vec![all[1].clone(), all[0].clone()],
        ),
    ];
    for (prompt, offered) in cases {
        let req = request(
            "You are a helpful assistant.",
            prompt,
            offered.clone(),
            ToolChoice::Required,
        );
        let resp = model().chat(&req).await.expect("chat");
        assert_eq!(
            resp.finish_reason,
            FinishReason::ToolCalls,
            "{prompt}: {resp:?}"
        );
        assert_eq!(resp.message.tool_calls.len(), 1, "{prompt}: {resp:?}");
        assert_valid_calls(&offered, &resp.message);
        let usage = resp.usage.expect("usage");
        assert!(
            usage.input_tokens > 100 && usage.output_tokens > 3,
            "{usage:?}"
        );
    }
}

#[tokio::test]
async fn tool_choice_is_honoured() {
    let all = tools();
    // A named tool: the call is to that tool, even when the prompt suggests another.
    let req = request(
        "You are a helpful assistant.",
        "What's the weather in Oslo?",
        all.clone(),
        ToolChoice::Tool("create_task".into()),
    );
    let req = ChatRequest {
        max_tokens: Some(256),
        ..req
    };
    let resp = model().chat(&req).await.expect("chat");
    assert_eq!(resp.message.tool_calls.len(), 1, "{resp:?}");
    assert_eq!(resp.message.tool_calls[0].name, "create_task");
    assert_valid_calls(&all, &resp.message);

    // None: a plain answer even with tools in the prompt.
    let req = request(
        "You are a helpful assistant.",
        "Say hello.",
        all.clone(),
        ToolChoice::None,
    );
    let resp = model().chat(&req).await.expect("chat");
    assert!(resp.message.tool_calls.is_empty(), "{resp:?}");
    assert!(!resp.message.content.as_deref().unwrap_or("").is_empty());
    assert!(matches!(
        resp.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));

    // Auto: either an answer or a valid call.
    for prompt in ["What's the weather in Rome?", "Tell me a joke about cats."] {
        let req = request(
            "You are a helpful assistant.",
            prompt,
            all.clone(),
            ToolChoice::Auto,
        );
        let resp = model().chat(&req).await.expect("chat");
        match resp.finish_reason {
            FinishReason::ToolCalls => assert_valid_calls(&all, &resp.message),
            FinishReason::Stop | FinishReason::Length => {
                assert!(resp.message.tool_calls.is_empty())
            }
            other => panic!("unexpected finish {other:?}"),
        }
    }

    // A tool that was not offered is the caller's mistake.
    let req = request("S", "U", all, ToolChoice::Tool("rm_rf".into()));
    assert!(model().chat(&req).await.is_err());
}

#[tokio::test]
async fn stream_deltas_add_up_to_the_response() {
    let all = tools();
    let req = request(
        "You are a helpful assistant.",
        "Find documents about the holiday calendar.",
        all.clone(),
        ToolChoice::Required,
    );
    let mut stream = model().chat_stream(&req).await.expect("stream");
    let (mut name, mut args, mut started, mut finished) = (String::new(), String::new(), 0, None);
    while let Some(delta) = stream.next().await {
        match delta.expect("delta") {
            ChatDelta::ToolCallStart { index, id, name: n } => {
                assert_eq!(index, 0);
                assert!(id.starts_with("call_"));
                name = n;
                started += 1;
            }
            ChatDelta::ToolCallArguments { index, fragment } => {
                assert_eq!(
                    (index, started),
                    (0, 1),
                    "arguments before the call started"
                );
                args.push_str(&fragment);
            }
            ChatDelta::Finished { reason, usage } => {
                assert!(usage.is_some());
                finished = Some(reason);
            }
            other => panic!("unexpected delta {other:?}"),
        }
    }
    assert_eq!(finished, Some(FinishReason::ToolCalls));
    let mut message = ChatMessage::assistant("");
    message.tool_calls.push(cairn_model::ToolCall {
        id: "call_streamed".into(),
        name,
        arguments: args,
    });
    assert_valid_calls(&all, &message);

    // Plain text streams as text deltas.
    let req = ChatRequest {
        messages: vec![ChatMessage::user("Write one sentence about the sea.")],
        max_tokens: Some(40),
        ..ChatRequest::default()
    };
    let mut stream = model().chat_stream(&req).await.expect("stream");
    let mut text = String::new();
    let mut last = None;
    while let Some(delta) = stream.next().await {
        match delta.expect("delta") {
            ChatDelta::Text { text: t } => text.push_str(&t),
            ChatDelta::Finished { reason, .. } => last = Some(reason),
            other => panic!("unexpected delta {other:?}"),
        }
    }
    assert!(!text.trim().is_empty());
    assert!(matches!(
        last,
        Some(FinishReason::Stop | FinishReason::Length)
    ));
}

#[tokio::test]
async fn the_fixed_prefix_kv_cache_is_reused() {
    let all = tools();
    let system = "You are the prefix-cache test assistant.";
    let (hits0, misses0) = model().prefix_cache_stats();
    for prompt in [
        "Weather in Lima?",
        "Weather in Quito?",
        "Weather in Bogotá?",
    ] {
        let req = request(system, prompt, all.clone(), ToolChoice::Required);
        let resp = model().chat(&req).await.expect("chat");
        assert_valid_calls(&all, &resp.message);
    }
    let (hits1, misses1) = model().prefix_cache_stats();
    // Other tests run concurrently and add their own prefixes: count at least ours.
    assert!(misses1 > misses0, "the first request computes the prefix");
    assert!(
        hits1 >= hits0 + 2,
        "later requests reuse it ({hits0} -> {hits1})"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn inference_never_blocks_the_async_runtime() {
    let long = ChatRequest {
        messages: vec![ChatMessage::user(
            "Write a long story about a lighthouse keeper.",
        )],
        max_tokens: Some(150),
        ..ChatRequest::default()
    };
    let short = request(
        "You are a helpful assistant.",
        "Weather in Cairo?",
        tools(),
        ToolChoice::Required,
    );
    let m = model();
    let generation = async { tokio::join!(m.chat(&long), m.chat(&short)) };
    // On a single-threaded runtime a timer only fires if inference is off the executor.
    let ticker = async {
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let start = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            worst = worst.max(start.elapsed().saturating_sub(Duration::from_millis(50)));
        }
        worst
    };
    let ((a, b), worst) = tokio::join!(generation, ticker);
    let (a, b) = (a.expect("long"), b.expect("short"));
    assert!(
        worst < Duration::from_millis(40),
        "timer was {worst:?} late"
    );
    assert!(a.usage.expect("usage").output_tokens > 0);
    assert_eq!(b.message.tool_calls.len(), 1);
}

/// Regression: tool schemas with local definitions (schemars writes enums as
/// `{"$ref": "#/$defs/Priority"}`) failed to compile because the tool's schema is nested
/// in the call grammar while references resolve against its root.
#[tokio::test]
async fn schemas_with_local_definitions_compile_and_constrain() {
    let defs_tool = |name: &str| {
        tool(
            name,
            "Adds a task to the to-do list with a priority.",
            json!({"type": "object", "properties": {
                "title": {"type": "string"},
                "priority": {"anyOf": [{"$ref": "#/$defs/Priority"}, {"type": "null"}]}
            }, "required": ["title", "priority"], "additionalProperties": false,
            "$defs": {"Priority": {"oneOf": [
                {"type": "string", "const": "low"},
                {"type": "string", "const": "high"}
            ]}}}),
        )
    };
    // Two tools with a definition of the same name: each keeps its own.
    let offered = vec![defs_tool("add_task"), defs_tool("add_chore")];
    let req = request(
        "You are a helpful assistant.",
        "Add 'renew passport' to my tasks, it's urgent.",
        offered.clone(),
        ToolChoice::Tool("add_task".into()),
    );
    let resp = model().chat(&req).await.expect("chat");
    assert_eq!(resp.message.tool_calls.len(), 1, "{resp:?}");
    assert_valid_calls(&offered, &resp.message);
    let args: Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert!(
        args["priority"].is_null() || args["priority"] == "low" || args["priority"] == "high",
        "{args}"
    );
}
