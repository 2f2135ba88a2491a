//! Embedded model benchmark (BENCHMARKS.md, "Embedded model"): load time, prompt and
//! decode tokens/s on `embedded_prompt.txt` with 128 greedy tokens, time to first token
//! with and without the cached tool prefix, peak RSS.
//!
//! cargo bench -p cairn-model --bench embedded [-- --json] [--threads N] [--format q8_0|q4_0|as-stored]
//!
//! Compare with `llama_cpp_reference.py` (same prompt, same thread count).

use std::time::Instant;

use cairn_model::embedded::{DEFAULT_GGUF, WeightFormat, default_model_dir};
use cairn_model::{
    ChatMessage, ChatRequest, EmbeddedConfig, EmbeddedModel, ModelError, ToolChoice, ToolDefinition,
};
use serde_json::json;

const PROMPT: &str = include_str!("embedded_prompt.txt");
const NEW_TOKENS: usize = 128;
const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn tools() -> Vec<ToolDefinition> {
    let t = |name: &str, description: &str, parameters| ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters,
    };
    vec![
        t(
            "get_weather",
            "Current weather for a city.",
            json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}),
        ),
        t(
            "search_docs",
            "Search the company's documents and wiki pages by keyword.",
            json!({"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer","minimum":1,"maximum":20}},"required":["query"]}),
        ),
        t(
            "create_task",
            "Create a task in the tracker with a title, a priority and optional tags.",
            json!({"type":"object","properties":{"title":{"type":"string"},"priority":{"type":"string","enum":["low","medium","high"]}},"required":["title","priority"]}),
        ),
        t(
            "send_email",
            "Send an email to a colleague.",
            json!({"type":"object","properties":{"to":{"type":"string"},"subject":{"type":"string"},"body":{"type":"string"}},"required":["to","subject","body"]}),
        ),
    ]
}

fn tool_request(system: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system(system),
            ChatMessage::user("Find the runbook for database failover."),
        ],
        tools: tools(),
        tool_choice: ToolChoice::Required,
        max_tokens: Some(1),
        ..ChatRequest::default()
    }
}

fn main() -> Result<(), ModelError> {
    let args: Vec<String> = std::env::args().collect();
    let json_out = args.iter().any(|a| a == "--json");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: usize = arg("--threads").and_then(|t| t.parse().ok()).unwrap_or(1);
    let format = match arg("--format").as_deref() {
        Some("q4_0") => WeightFormat::Q4_0,
        Some("as-stored") => WeightFormat::AsStored,
        _ => WeightFormat::Q8_0,
    };
    let config = EmbeddedConfig {
        gguf_path: default_model_dir().join(DEFAULT_GGUF),
        threads,
        weight_format: format,
        ..EmbeddedConfig::default()
    };

    let start = Instant::now();
    let model = EmbeddedModel::load(config)?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;

    let mut prompt_tps = Vec::new();
    let mut decode_tps = Vec::new();
    let mut prompt_tokens = 0;
    for _ in 0..RUNS {
        let raw = model.measure_raw(PROMPT, NEW_TOKENS)?;
        prompt_tokens = raw.prompt_tokens;
        prompt_tps.push(raw.prompt_tokens as f64 / raw.prompt_secs);
        decode_tps.push(raw.new_tokens as f64 / raw.decode_secs);
    }

    // Time to first token of a tool request: a new system prompt each time (the prefix
    // is computed), then the same one again (its KV cache is reused).
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut request_tokens = 0;
    for i in 0..RUNS {
        let system = format!("You are Cairn's assistant #{i}. Use the tools when needed.");
        let (resp, t) = model.chat_blocking(&tool_request(&system))?;
        request_tokens = resp.usage.map_or(0, |u| u.input_tokens);
        cold.push(t.first_token_secs * 1000.0);
        let (_, t) = model.chat_blocking(&tool_request(&system))?;
        warm.push(t.first_token_secs * 1000.0);
    }

    let report = json!({
        "engine": "candle (cairn-model embedded)",
        "weights": format!("{format:?}"),
        "threads": threads,
        "load_ms": (load_ms * 10.0).round() / 10.0,
        "prompt_tokens": prompt_tokens,
        "prompt_tok_s": (median(prompt_tps) * 10.0).round() / 10.0,
        "new_tokens": NEW_TOKENS,
        "decode_tok_s": (median(decode_tps) * 10.0).round() / 10.0,
        "tool_request_tokens": request_tokens,
        "ttft_ms_no_prefix_cache": (median(cold) * 10.0).round() / 10.0,
        "ttft_ms_cached_prefix": (median(warm) * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
    });
    if json_out {
        println!("{report}");
    } else {
        println!("| metric | value |\n|---|---|");
        if let Some(map) = report.as_object() {
            for (k, v) in map {
                println!("| {k} | {v} |");
            }
        }
    }
    Ok(())
}
