//! Tool selection in the loop: a selector narrows the tools offered to the model, what
//! was offered is recorded, and only offered tools may be called. Then the real thing:
//! all-MiniLM-L6-v2 retrieval choosing among the real plugins' tools, and the embedded
//! SmolLM2-135M model driving a whole run against the real `tasks` plugin.
//!
//! The models come from `scripts/fetch-models`; without them these tests fail with that
//! instruction rather than skip.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use cairn_agent::*;
use cairn_audit::StepKind;
use cairn_model::embedded::{DEFAULT_GGUF, default_model_dir};
use cairn_model::retrieval::{DEFAULT_NO_TOOL_THRESHOLD, SentenceEmbedder};
use cairn_model::{EmbeddedConfig, EmbeddedModel};
use serde_json::{Value, json};

use crate::helpers::*;

/// Offers the named tools, in this order, whatever the request.
struct Fixed(Vec<&'static str>);

/// Offers the named tool and requires the first request to call it.
struct Decided(&'static str);

#[async_trait]
impl ToolSelector for Decided {
    async fn select(
        &self,
        _request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        let i = tools
            .iter()
            .position(|t| t.spec.name.as_str() == self.0)
            .unwrap();
        Ok(ToolSelection {
            offered: vec![i],
            require_first: true,
        })
    }
}

#[async_trait]
impl ToolSelector for Fixed {
    async fn select(
        &self,
        _request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        let offered = self
            .0
            .iter()
            .filter_map(|n| tools.iter().position(|t| t.spec.name.as_str() == *n))
            .collect();
        Ok(ToolSelection {
            offered,
            require_first: false,
        })
    }
}

/// Always fails: the loop must fall back to offering every tool.
struct Broken;

#[async_trait]
impl ToolSelector for Broken {
    async fn select(
        &self,
        _request: &str,
        _tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        Err(ToolFailure::new("retrieval_error", "the ranker is down"))
    }
}

fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn offered(step: &StepKind) -> Vec<String> {
    match step {
        StepKind::ModelRequest { tools_offered, .. } => {
            tools_offered.iter().map(|t| t.to_string()).collect()
        }
        other => panic!("expected model_request, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_sees_and_the_ledger_records_only_the_selected_tools() {
    let w = world([
        call("list_tasks", json!({})),
        text("Nothing is on your list."),
    ])
    .selector(Arc::new(Fixed(vec!["list_tasks", "add_task"])))
    .build()
    .await;
    let outcome = w.start("What's on my list?").await.unwrap();
    let RunOutcome::Completed { run_id, .. } = outcome else {
        panic!("{outcome:?}")
    };
    for request in w.server.requests() {
        assert_eq!(tool_names(&request), ["list_tasks", "add_task"]);
    }
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
                "final_answer",
            ],
        )
        .await;
    assert_eq!(offered(&steps[1]), ["list_tasks", "add_task"]);
    assert_eq!(offered(&steps[5]), ["list_tasks", "add_task"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_enabled_tool_that_was_not_offered_is_unknown_to_the_model() {
    let w = world([
        call(
            "sort_rows",
            json!({ "rows": [], "by": [{ "column": "n" }] }),
        ),
        text("Sorry."),
    ])
    .selector(Arc::new(Fixed(vec!["list_tasks"])))
    .build()
    .await;
    let outcome = w.start("Sort this table").await.unwrap();
    let RunOutcome::Completed { run_id, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(w.tools.executed(), 0, "a tool that was not offered ran");
    let steps = w
        .assert_trail(
            run_id,
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
    let (error_type, message) = tool_error(&steps[4]);
    assert_eq!(error_type, "unknown_tool");
    assert!(message.contains("[list_tasks]"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_selection_offers_no_tools_and_a_failed_one_offers_all() {
    let w = world([text("Hello!")])
        .selector(Arc::new(Fixed(vec![])))
        .build()
        .await;
    let outcome = w.start("Hi there").await.unwrap();
    let steps = w
        .assert_trail(
            outcome.run_id(),
            &[
                "user_message",
                "model_request",
                "model_response",
                "final_answer",
            ],
        )
        .await;
    assert!(offered(&steps[1]).is_empty());
    assert!(w.server.requests()[0].get("tools").is_none());

    let w = world([text("Hello!")])
        .selector(Arc::new(Broken))
        .build()
        .await;
    w.start("Hi there").await.unwrap();
    let names = tool_names(&w.server.requests()[0]);
    assert!(names.len() > 10, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_selection_forces_the_first_call_and_no_call_after() {
    let w = world([call("list_tasks", json!({})), text("Nothing yet.")])
        .selector(Arc::new(Decided("list_tasks")))
        .build()
        .await;
    let outcome = w.start("What's on my list?").await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let requests = w.server.requests();
    assert_eq!(tool_names(&requests[0]), ["list_tasks"]);
    assert_eq!(
        requests[0]["tool_choice"],
        json!({ "type": "function", "function": { "name": "list_tasks" } })
    );
    // The plan was one call: the next request answers from its result.
    assert_eq!(requests[1]["tool_choice"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_call_gets_room_for_its_arguments_and_the_answer_keeps_the_cap() {
    let pasted = "Add up the amounts for each month:\nmonth,amount\nJan,100\nFeb,70";
    let w = world([call("list_tasks", json!({})), text("Done.")])
        .selector(Arc::new(Decided("list_tasks")))
        .config(|c| {
            c.max_tokens = Some(64);
            c.widen_forced_calls = true;
        })
        .build()
        .await;
    w.start(pasted).await.unwrap();
    let requests = w.server.requests();
    let budget = cairn_model::forced_call_token_budget(64, pasted);
    assert!(budget >= cairn_model::FORCED_CALL_MIN_TOKENS + pasted.len() as u32 / 2);
    assert_eq!(requests[0]["max_tokens"], json!(budget));
    assert_eq!(requests[1]["max_tokens"], json!(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_token_limit_holds_for_forced_calls_too() {
    let w = world([call("list_tasks", json!({})), text("Done.")])
        .selector(Arc::new(Decided("list_tasks")))
        .config(|c| c.max_tokens = Some(64))
        .build()
        .await;
    w.start("What's on my list?").await.unwrap();
    for request in w.server.requests() {
        assert_eq!(request["max_tokens"], json!(64));
    }
}

/// Selection is made again on resume, from the run's user message; the call that waited
/// for approval runs whatever is offered now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_runs_its_approved_call_and_offers_the_selection_again() {
    let w = world([
        call("add_task", json!({ "title": "Buy milk" })),
        text("Added."),
    ])
    .selector(Arc::new(Fixed(vec!["add_task", "list_tasks"])))
    .build()
    .await;
    let outcome = w.start("Add 'buy milk' to my tasks").await.unwrap();
    let RunOutcome::AwaitingApproval { run_id, pending } = outcome else {
        panic!("{outcome:?}")
    };
    let outcome = w
        .agent
        .resume(
            &tenant(),
            run_id,
            &approver(),
            vec![approve(&pending[0].call_id)],
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(w.tools.executed(), 1);
    let requests = w.server.requests();
    assert_eq!(tool_names(&requests[1]), ["add_task", "list_tasks"]);
}

// ------------------------------------------------------------- real retrieval and model

fn embedder() -> Arc<SentenceEmbedder> {
    static EMBEDDER: OnceLock<Arc<SentenceEmbedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = SentenceEmbedder::default_dir();
            Arc::new(
                SentenceEmbedder::load(&dir).unwrap_or_else(|e| {
                    panic!("{e}: run scripts/fetch-models ({})", dir.display())
                }),
            )
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_offers_the_top_k_tools_for_the_request() {
    let selector = RetrievalSelector::new(
        embedder(),
        RetrievalConfig {
            k: 2,
            ..RetrievalConfig::default()
        },
    );
    let w = world([text("Done."), text("Done.")])
        .selector(Arc::new(selector))
        .build()
        .await;
    w.start("put 'renew the car insurance' on my to-do list")
        .await
        .unwrap();
    w.start("sort these rows by price, cheapest first")
        .await
        .unwrap();
    let requests = w.server.requests();
    let first = tool_names(&requests[0]);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0], "add_task", "{first:?}");
    let second = tool_names(&requests[1]);
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[0], "sort_rows", "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_with_a_threshold_offers_nothing_for_small_talk() {
    let selector = RetrievalSelector::new(
        embedder(),
        RetrievalConfig {
            no_tool_threshold: Some(DEFAULT_NO_TOOL_THRESHOLD),
            ..RetrievalConfig::default()
        },
    );
    let w = world([text("Hello!")])
        .selector(Arc::new(selector))
        .build()
        .await;
    w.start("good morning! how are you today?").await.unwrap();
    assert!(tool_names(&w.server.requests()[0]).is_empty());
}

fn embedded_model() -> Arc<EmbeddedModel> {
    static MODEL: OnceLock<Arc<EmbeddedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = default_model_dir().join(DEFAULT_GGUF);
            assert!(
                path.exists(),
                "{} is missing: run scripts/fetch-models first",
                path.display()
            );
            Arc::new(
                EmbeddedModel::load(EmbeddedConfig {
                    gguf_path: path,
                    ..EmbeddedConfig::default()
                })
                .expect("the embedded model loads"),
            )
        })
        .clone()
}

/// The zero-config default for real: retrieval picks among the real plugins' tools, SmolLM2
/// (greedy) calls the `tasks` plugin's `add_task` with arguments valid under its schema,
/// the person approves, the plugin adds the task, the model answers, and the ledger
/// holds the whole trail and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_adds_a_task_through_the_real_plugin() {
    // Retrieval decides and the model fills the arguments (margin 0: always decide).
    // Offered three tools to choose from, SmolLM2 answered this request in text instead.
    let selector = RetrievalSelector::new(
        embedder(),
        RetrievalConfig {
            no_tool_threshold: Some(DEFAULT_NO_TOOL_THRESHOLD),
            decide_margin: Some(0.0),
            ..RetrievalConfig::default()
        },
    );
    let w = world([])
        .chat_model(embedded_model())
        .selector(Arc::new(selector))
        .config(|c| {
            c.system_prompt = Some(
                "You are Cairn, an assistant in an office suite. When a tool can do what \
                 the user asks, call it with arguments taken from the user's message; \
                 otherwise answer briefly."
                    .into(),
            );
            c.temperature = Some(0.0);
            c.max_tokens = Some(64);
        })
        .build()
        .await;
    let started = std::time::Instant::now();
    let mut outcome = w.start("Add a task to buy milk").await.unwrap();
    while let RunOutcome::AwaitingApproval { run_id, pending } = &outcome {
        let decisions = pending.iter().map(|p| approve(&p.call_id)).collect();
        outcome = w
            .agent
            .resume(&tenant(), *run_id, &approver(), decisions)
            .await
            .unwrap();
    }
    let RunOutcome::Completed { run_id, answer } = &outcome else {
        let kinds: Vec<&str> = w
            .trail(outcome.run_id())
            .await
            .iter()
            .map(|s| s.step.kind_name())
            .collect();
        panic!("{outcome:?}: {kinds:?}")
    };
    eprintln!("answer {answer:?} in {:?}", started.elapsed());
    let steps: Vec<StepKind> = w.trail(*run_id).await.into_iter().map(|s| s.step).collect();
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind_name()).collect();
    eprintln!("trail {kinds:?}");
    assert_eq!(kinds.first(), Some(&"user_message"));
    assert_eq!(kinds.last(), Some(&"final_answer"));

    let StepKind::ToolCall {
        plugin_id,
        tool_name,
        arguments,
        call_id,
    } = steps
        .iter()
        .find(|s| matches!(s, StepKind::ToolCall { .. }))
        .expect("the model called a tool")
    else {
        unreachable!()
    };
    assert_eq!(
        (plugin_id.as_ref().unwrap().as_str(), tool_name.as_str()),
        ("tasks", "add_task"),
        "{arguments}"
    );
    let title = arguments["title"].as_str().unwrap_or_default();
    assert!(title.to_lowercase().contains("milk"), "{arguments}");
    let result = steps
        .iter()
        .find_map(|s| match s {
            StepKind::ToolResult {
                call_id: c, result, ..
            } if c == call_id => Some(result),
            _ => None,
        })
        .expect("the call ran and its result (valid under the output schema) is recorded");
    assert!(
        result.to_string().to_lowercase().contains("milk"),
        "{result}"
    );
    assert!(
        w.tools
            .names
            .lock()
            .unwrap()
            .iter()
            .all(|n| n == "add_task"),
        "only add_task ran"
    );
    // Retrieval's top tool was the one offered.
    assert_eq!(offered(&steps[1]), ["add_task"]);
}
