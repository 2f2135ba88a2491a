//! The embedded model fills tool arguments from the request, never from the tool's own
//! prompt: for every tool of the example plugins, a request that shares no word with the
//! tool's description, its schema's descriptions or its examples gets arguments holding
//! no word from them (values the schema itself lists, like `"high"`, aside).
//!
//! It cannot pass by luck: the requests are checked to share nothing with the prompt
//! text first, so any such word in the arguments came from the prompt. Without the
//! grounding grammar SmolLM2 copies `"Call Anna about the budget"` into `add_task`.
//! The model file comes from `scripts/fetch-models`; greedy, one forced call per tool.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use cairn_model::embedded::{DEFAULT_GGUF, default_model_dir};
use cairn_model::{
    ChatMessage, ChatModel, ChatRequest, EmbeddedConfig, EmbeddedModel, RunClock, ToolChoice,
    ToolDefinition, forced_call_token_budget,
};
use serde_json::Value;

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

/// Lower-cased runs of letters and digits.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every `description` and `title` in a schema (not `enum`/`const` values).
fn descriptions(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("description" | "title", Value::String(s)) => out.push(s.clone()),
                    ("enum" | "const", _) => {}
                    _ => descriptions(v, out),
                }
            }
        }
        Value::Array(xs) => xs.iter().for_each(|x| descriptions(x, out)),
        _ => {}
    }
}

/// Every string value a schema lists (`enum`, `const`): legitimate in any call.
fn listed(schema: &Value, out: &mut HashSet<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("const", Value::String(s)) => {
                        out.insert(s.to_lowercase());
                    }
                    ("enum", Value::Array(xs)) => {
                        out.extend(xs.iter().filter_map(|x| x.as_str().map(str::to_lowercase)));
                    }
                    _ => listed(v, out),
                }
            }
        }
        Value::Array(xs) => xs.iter().for_each(|x| listed(x, out)),
        _ => {}
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(xs) => xs.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// One request per tool, worded to share no word with that tool's prompt text.
const REQUESTS: &[(&str, &str)] = &[
    ("search_contacts", "Jot down Zoltan Kowalczyk"),
    ("get_account", "Bring forth record 7Q2-ZULU"),
    (
        "add_note",
        "Client 88-KAPPA: wants invoices printed atop yellow paper",
    ),
    ("outline", "Skim: '# Intro\n## Budget\n## Timeline'"),
    (
        "word_count",
        "Gauge 'Quick brown foxes jump over lazy dogs'",
    ),
    (
        "find_action_items",
        "Parse: 'Ravi shall paint walls; Mei buys ladders'",
    ),
    ("find_dates", "Scan 'Picnic happens Saturday'"),
    ("filter_rows", "Retain Oslo:\ncity,temp\nOslo,4\nRome,19"),
    ("sort_rows", "Rank via temp:\ncity,temp\nOslo,4\nRome,19"),
    ("summarize", "Typical temp:\ncity,temp\nOslo,4\nRome,19"),
    ("add_task", "Jot down: buy oat milk"),
    ("list_tasks", "Anything pending?"),
    ("complete_task", "Wrapped chore 314"),
    ("delete_task", "Scrap chore 271"),
];

struct Tool {
    definition: ToolDefinition,
    prompt_words: HashSet<String>,
    listed: HashSet<String>,
}

fn example_tools() -> Vec<Tool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut tools = Vec::new();
    for plugin in ["crm", "doctext", "table", "tasks"] {
        let text =
            std::fs::read_to_string(root.join(plugin).join("cairn-plugin.json")).expect("manifest");
        let manifest: Value = serde_json::from_str(&text).expect("manifest JSON");
        for t in manifest["tools"].as_array().expect("tools") {
            let description = t["description"].as_str().expect("description");
            let mut texts = vec![description.to_owned()];
            descriptions(&t["input_schema"], &mut texts);
            for e in t["examples"].as_array().into_iter().flatten() {
                texts.push(e.as_str().expect("example").to_owned());
            }
            let mut set = HashSet::new();
            listed(&t["input_schema"], &mut set);
            tools.push(Tool {
                definition: ToolDefinition {
                    name: t["name"].as_str().expect("name").to_owned(),
                    description: description.to_owned(),
                    parameters: t["input_schema"].clone(),
                },
                prompt_words: texts.iter().flat_map(|t| words(t)).collect(),
                listed: set,
            });
        }
    }
    tools
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn arguments_never_carry_the_tools_own_prompt_text() {
    let tools = example_tools();
    assert_eq!(tools.len(), 14, "every example tool has a request below");
    let clock = RunClock::fixed("2031-08-26T09:00:00+02:00").expect("clock");
    let mut failures = Vec::new();
    for tool in &tools {
        let name = tool.definition.name.as_str();
        let (_, request) = REQUESTS
            .iter()
            .find(|(t, _)| *t == name)
            .unwrap_or_else(|| panic!("no request for {name}"));
        let shared: Vec<_> = words(request)
            .intersection(&tool.prompt_words)
            .cloned()
            .collect();
        assert!(
            shared.is_empty(),
            "the request for {name} shares {shared:?} with the tool's prompt text"
        );
        let chat = ChatRequest {
            messages: vec![
                ChatMessage::system(
                    "You are Cairn. Call the tool with arguments from the user's message.",
                ),
                ChatMessage::user(*request),
            ],
            tools: vec![tool.definition.clone()],
            tool_choice: ToolChoice::Tool(name.to_owned()),
            max_tokens: Some(forced_call_token_budget(160, request)),
            temperature: Some(0.0),
            clock: Some(clock.clone()),
            ..ChatRequest::default()
        };
        let answer = model().chat(&chat).await.expect("the model answers");
        let call = answer
            .message
            .tool_calls
            .first()
            .unwrap_or_else(|| panic!("{name}: no call ({:?})", answer.finish_reason));
        let arguments: Value = serde_json::from_str(&call.arguments).expect("arguments parse");
        let mut values = Vec::new();
        strings(&arguments, &mut values);
        for v in values {
            if tool.listed.contains(&v.to_lowercase()) {
                continue;
            }
            let copied: Vec<_> = words(&v)
                .intersection(&tool.prompt_words)
                .cloned()
                .collect();
            if !copied.is_empty() {
                failures.push(format!(
                    "{name}: {v:?} holds {copied:?} from the tool's prompt ({arguments})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
