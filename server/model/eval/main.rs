//! `cairn-eval`: how well Cairn picks tools, on `eval/requests.jsonl` and the example
//! plugins' manifests. A report, not a test: the figures go into BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p cairn-model --features eval --bin cairn-eval -- [--json] [--k 3]
//! ```
//!
//! Retrieval alone (always): top-1 and top-k hit rates per scoring configuration, and the
//! no-tool threshold that maximises selection accuracy when retrieval decides alone.
//! `--requests eval/heldout.jsonl` measures on the held-out set, which no option was
//! tuned on.
//!
//! With `--model embedded` (or `--model openai --base-url URL --model-name NAME`), a chat
//! model also answers every request, in these variants:
//! - `all-tools` (`--no-retrieval`): every tool offered, the model chooses;
//! - `forced-1`: retrieval's top tool, `tool_choice` forcing it, the model fills the
//!   arguments; below the no-tool threshold no tool is offered;
//! - `choose-k`: retrieval's top k offered, the model chooses (or answers) among them;
//!   below the threshold no tool is offered.
//!
//! When no tool is offered the decision is already made (no tool), so the model is not
//! called and the request's latency is retrieval's alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cairn_manifest::Manifest;
use cairn_model::retrieval::{
    IndexOptions, PreparedQuery, Scoring, SentenceEmbedder, ToolCandidate, ToolIndex,
};
use cairn_model::{
    ChatMessage, ChatModel, ChatRequest, RunClock, ToolChoice, ToolDefinition,
    forced_call_token_budget,
};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(about = "Measure tool retrieval and tool selection on the evaluation set")]
struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// How many retrieved tools count as a hit (and are offered to the model when it
    /// chooses).
    #[arg(long, default_value_t = 3)]
    k: usize,
    /// The no-tool threshold to report selection with (default: each configuration's own).
    #[arg(long)]
    threshold: Option<f32>,
    /// The evaluation set (default `eval/requests.jsonl`; `eval/heldout.jsonl` is the
    /// held-out one).
    #[arg(long)]
    requests: Option<PathBuf>,
    /// Run the chat-model variants with the scoring before lexical evidence and
    /// instruction extraction (`IndexOptions::SEMANTIC_ONLY`) instead of the default.
    #[arg(long)]
    semantic_only: bool,
    /// The folder holding the example plugins (each with a `cairn-plugin.json`).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder (default: the model cache).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// A chat model to measure tool selection and arguments with: `embedded` or `openai`.
    #[arg(long)]
    model: Option<ModelKind>,
    /// Offer every tool to the model instead of retrieval's picks (the `all-tools`
    /// variant only).
    #[arg(long)]
    no_retrieval: bool,
    /// The OpenAI-compatible server, for `--model openai`.
    #[arg(long)]
    base_url: Option<String>,
    /// The model name to ask the OpenAI-compatible server for.
    #[arg(long, default_value = "default")]
    model_name: String,
    /// Cap on generated tokens per answer (the server's `EMBEDDED_MAX_TOKENS`); a request
    /// that forces a call gets `forced_call_token_budget` of it, as in the server.
    #[arg(long, default_value_t = 160)]
    max_tokens: u32,
    /// Also run the `hybrid` variant: retrieval's top tool forced when it leads the
    /// second by at least this score margin, otherwise the top k offered and the model
    /// chooses.
    #[arg(long)]
    margin: Option<f32>,
    /// List every request's ranking under the default scoring, not only the misses.
    #[arg(long)]
    all: bool,
    /// Also report a grid of blend and lexical weights (for calibrating the defaults).
    #[arg(long)]
    grid: bool,
    /// Only run these variants (`forced-1`, `choose-k`, `hybrid`); default: all that apply.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModelKind {
    Embedded,
    Openai,
}

/// One line of `requests.jsonl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalRequest {
    request: String,
    expected_tool: Option<String>,
    #[serde(default)]
    expected_arguments: serde_json::Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    notes: String,
    /// The run's date, time and UTC offset (RFC 3339) the request is asked at, for
    /// relative dates ("tomorrow"); `arguments.jsonl` sets it on every line.
    #[serde(default)]
    now: Option<String>,
}

struct Tool {
    plugin: String,
    candidate: ToolCandidate,
    definition: ToolDefinition,
}

/// Hits out of a total, reported as a rate.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Rate {
    hits: usize,
    total: usize,
}

impl Rate {
    fn add(&mut self, hit: bool) {
        self.total += 1;
        self.hits += usize::from(hit);
    }
    fn pct(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.total as f64
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}% ({}/{})", self.pct(), self.hits, self.total)
    }
}

/// Retrieval alone under one scoring configuration.
#[derive(Debug, Serialize)]
struct RetrievalReport {
    label: String,
    options: IndexOptions,
    top1: Rate,
    topk: Rate,
    /// Selection when retrieval decides alone (top-1, or no tool below the threshold).
    selection_at_threshold: Rate,
    threshold: f32,
    /// The threshold that maximises that selection accuracy, and the accuracy there.
    best_threshold: f32,
    best_selection: Rate,
    per_plugin_top1: BTreeMap<String, Rate>,
    /// Best score of each no-tool request, and the lowest best score of a tool request:
    /// the margin the threshold sits in.
    no_tool_best_scores_max: f32,
    tool_best_scores_min: f32,
    /// How far the top tool leads the second on tool requests, sorted: where retrieval's
    /// top 1 was right, and where it was wrong (for choosing the hybrid's margin).
    margins_right: Vec<f32>,
    margins_wrong: Vec<f32>,
}

#[derive(Debug, Serialize)]
struct Report {
    requests: usize,
    tool_requests: usize,
    no_tool_requests: usize,
    tools: usize,
    k: usize,
    embed_ms_mean: f64,
    retrieval: Vec<RetrievalReport>,
    misses: Vec<Miss>,
    model: Option<String>,
    variants: Vec<VariantReport>,
}

/// A chat model's tool selection and arguments under one way of offering tools.
#[derive(Debug, Serialize)]
struct VariantReport {
    variant: String,
    /// Right tool, or rightly no tool.
    selection: Rate,
    /// Right tool and every expected argument right, over requests that list arguments.
    arguments: Rate,
    per_plugin_selection: BTreeMap<String, Rate>,
    /// Wall time per request: retrieval plus the model's answer.
    latency_ms_mean: f64,
    model_calls: usize,
    errors: usize,
    /// Every request whose selection was wrong: what was offered, and what came back.
    wrong: Vec<ModelMiss>,
    /// Every request with the right tool but wrong arguments.
    argument_misses: Vec<ArgumentMiss>,
}

/// A call to the right tool whose arguments were not the expected ones.
#[derive(Debug, Serialize)]
struct ArgumentMiss {
    request: String,
    expected: Value,
    /// The arguments as the model wrote them (`None`: no call came back).
    got: Option<String>,
}

/// A request the model variant got wrong.
#[derive(Debug, Serialize)]
struct ModelMiss {
    request: String,
    expected: Option<String>,
    /// The tools offered, best first (empty: retrieval decided on no tool).
    offered: Vec<String>,
    /// The tool the model called, if any.
    called: Option<String>,
    /// Why the model stopped (`None` when it was not asked).
    finish: Option<String>,
}

/// A tool request the default retrieval got wrong at top 1, for reading the failures.
#[derive(Debug, Serialize)]
struct Miss {
    request: String,
    expected: Option<String>,
    /// Ranked tools: name, score, semantic part, lexical part.
    got: Vec<(String, f32, f32, f32)>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plugins_dir = args
        .plugins
        .clone()
        .unwrap_or_else(|| crate_dir.join("../../plugins"));
    let requests_path = args
        .requests
        .clone()
        .unwrap_or_else(|| crate_dir.join("eval/requests.jsonl"));

    let tools = load_tools(&plugins_dir)?;
    let requests = load_requests(&requests_path)?;
    for r in &requests {
        if let Some(t) = &r.expected_tool
            && !tools.iter().any(|x| &x.candidate.name == t)
        {
            bail!("{}: expected tool {t} is in no manifest", r.request);
        }
    }

    let dir = args
        .embedder
        .clone()
        .unwrap_or_else(SentenceEmbedder::default_dir);
    let embedder = Arc::new(SentenceEmbedder::load(&dir)?);
    let candidates: Vec<ToolCandidate> = tools.iter().map(|t| t.candidate.clone()).collect();
    let index = ToolIndex::build(embedder.clone(), &candidates)?;

    // Prepare each request once per way of preparing it, the default's timed one at a
    // time as a server would.
    let started = Instant::now();
    let prepared_default = requests
        .iter()
        .map(|r| index.prepare(&r.request))
        .collect::<Result<Vec<_>, _>>()?;
    let embed_ms_mean = started.elapsed().as_secs_f64() * 1000.0 / requests.len() as f64;
    let whole = index.with_options(IndexOptions {
        instruction_only: false,
        ..IndexOptions::default()
    });
    let prepared_whole = requests
        .iter()
        .map(|r| whole.prepare(&r.request))
        .collect::<Result<Vec<_>, _>>()?;

    let plugin_of = |name: &str| {
        tools
            .iter()
            .find(|t| t.candidate.name == name)
            .map_or_else(|| "?".to_owned(), |t| t.plugin.clone())
    };
    let configurations = configurations(args.grid);
    let mut retrieval = Vec::new();
    let mut misses = Vec::new();
    for (i, (label, options)) in configurations.into_iter().enumerate() {
        let threshold = args.threshold.unwrap_or(options.no_tool_threshold);
        let idx = index.with_options(IndexOptions {
            no_tool_threshold: threshold,
            ..options
        });
        let queries: &[PreparedQuery] = if options.instruction_only {
            &prepared_default
        } else {
            &prepared_whole
        };
        let ranked: Vec<_> = queries
            .iter()
            .map(|q| idx.rank_prepared(q, args.k.max(1)))
            .collect();
        let mut top1 = Rate::default();
        let mut topk = Rate::default();
        let mut per_plugin_top1: BTreeMap<String, Rate> = BTreeMap::new();
        let mut no_tool_max = f32::MIN;
        let mut tool_min = f32::MAX;
        let (mut margins_right, mut margins_wrong) = (Vec::new(), Vec::new());
        for (r, ranked) in requests.iter().zip(&ranked) {
            let best = ranked.first().map_or(f32::MIN, |t| t.score);
            match &r.expected_tool {
                Some(expected) => {
                    let hit = ranked.first().is_some_and(|t| &t.name == expected);
                    top1.add(hit);
                    topk.add(ranked.iter().take(args.k).any(|t| &t.name == expected));
                    per_plugin_top1
                        .entry(plugin_of(expected))
                        .or_default()
                        .add(hit);
                    tool_min = tool_min.min(best);
                    if let [first, second, ..] = ranked.as_slice() {
                        let m = first.score - second.score;
                        if hit {
                            margins_right.push(m);
                        } else {
                            margins_wrong.push(m);
                        }
                    }
                    if i == 0 && (!hit || args.all) {
                        misses.push(miss(r, ranked));
                    }
                }
                None => {
                    no_tool_max = no_tool_max.max(best);
                    if i == 0 && (best >= threshold || args.all) {
                        misses.push(miss(r, ranked));
                    }
                }
            }
        }
        let selection = |th: f32| {
            let mut rate = Rate::default();
            for (r, ranked) in requests.iter().zip(&ranked) {
                let pick = ranked.first().filter(|t| t.score >= th).map(|t| &t.name);
                rate.add(pick == r.expected_tool.as_ref());
            }
            rate
        };
        let (mut best_threshold, mut best_selection) = (0.0, Rate::default());
        for step in 0..=120 {
            let th = step as f32 / 100.0;
            let rate = selection(th);
            if rate.hits > best_selection.hits {
                (best_threshold, best_selection) = (th, rate);
            }
        }
        retrieval.push(RetrievalReport {
            label,
            options,
            top1,
            topk,
            selection_at_threshold: selection(threshold),
            threshold,
            best_threshold,
            best_selection,
            per_plugin_top1,
            no_tool_best_scores_max: no_tool_max,
            tool_best_scores_min: tool_min,
            margins_right: sorted(margins_right),
            margins_wrong: sorted(margins_wrong),
        });
    }

    let report = Report {
        requests: requests.len(),
        tool_requests: requests
            .iter()
            .filter(|r| r.expected_tool.is_some())
            .count(),
        no_tool_requests: requests
            .iter()
            .filter(|r| r.expected_tool.is_none())
            .count(),
        tools: tools.len(),
        k: args.k,
        embed_ms_mean,
        retrieval,
        misses,
        model: None,
        variants: Vec::new(),
    };
    let mut report = report;
    if let Some(kind) = args.model {
        let model = make_model(kind, &args)?;
        report.model = Some(model.name().to_owned());
        let definitions: Vec<ToolDefinition> = tools.iter().map(|t| t.definition.clone()).collect();
        let mut variants: Vec<Variant> = if args.no_retrieval {
            vec![Variant::AllTools]
        } else {
            vec![Variant::Forced1, Variant::ChooseK(args.k)]
        };
        if let (Some(margin), false) = (args.margin, args.no_retrieval) {
            variants.push(Variant::Hybrid(args.k, margin));
        }
        if !args.only.is_empty() {
            variants.retain(|v| args.only.iter().any(|o| v.key() == o.as_str()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let options = if args.semantic_only {
            IndexOptions::SEMANTIC_ONLY
        } else {
            IndexOptions::default()
        };
        let options = IndexOptions {
            no_tool_threshold: args.threshold.unwrap_or(options.no_tool_threshold),
            ..options
        };
        for variant in variants {
            let v = runtime.block_on(run_variant(
                model.as_ref(),
                variant,
                &requests,
                &index.with_options(options),
                &definitions,
                &plugin_of,
                args.max_tokens,
            ))?;
            if !args.json {
                eprintln!(
                    "{}: selection {}, arguments {}",
                    v.variant, v.selection, v.arguments
                );
            }
            report.variants.push(v);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The scoring configurations reported, the default first (misses and per-plugin figures
/// are printed for it); each with its own no-tool threshold. `grid` adds blend weight ×
/// lexical weight combinations, for calibrating the defaults.
fn configurations(grid: bool) -> Vec<(String, IndexOptions)> {
    let default = IndexOptions::default();
    let old = IndexOptions::SEMANTIC_ONLY;
    let weight = |lexical_weight| IndexOptions {
        lexical_weight,
        ..default
    };
    let mut configurations: Vec<(String, IndexOptions)> = [
        ("default: instruction + lexical", default),
        ("semantic only, whole request (before)", old),
        (
            "semantic only, instruction",
            IndexOptions {
                instruction_only: true,
                ..old
            },
        ),
        (
            "whole request + lexical",
            IndexOptions {
                instruction_only: false,
                ..default
            },
        ),
        (
            "default, max scoring",
            IndexOptions {
                scoring: Scoring::Max,
                ..default
            },
        ),
        (
            "default, mean scoring",
            IndexOptions {
                scoring: Scoring::Blend { max_weight: 0.0 },
                ..default
            },
        ),
        ("default, lexical weight 0.2", weight(0.2)),
        ("default, lexical weight 0.6", weight(0.6)),
        ("default, lexical weight 0.8", weight(0.8)),
    ]
    .into_iter()
    .map(|(label, options)| (label.to_owned(), options))
    .collect();
    if grid {
        for max_weight in [0.3, 0.4, 0.5, 0.6, 0.7] {
            for lexical_weight in [0.2, 0.3, 0.4, 0.5, 0.6] {
                configurations.push((
                    format!("grid: blend {max_weight}, lexical {lexical_weight}"),
                    IndexOptions {
                        scoring: Scoring::Blend { max_weight },
                        lexical_weight,
                        ..default
                    },
                ));
            }
        }
    }
    configurations
}

fn miss(r: &EvalRequest, ranked: &[cairn_model::retrieval::RankedTool]) -> Miss {
    Miss {
        request: r.request.clone(),
        expected: r.expected_tool.clone(),
        got: ranked
            .iter()
            .map(|t| (t.name.clone(), t.score, t.semantic, t.lexical))
            .collect(),
    }
}

fn print_report(r: &Report) {
    println!(
        "{} requests ({} need a tool, {} none), {} tools; request embedding {:.1} ms mean",
        r.requests, r.tool_requests, r.no_tool_requests, r.tools, r.embed_ms_mean
    );
    println!();
    println!(
        "| configuration | scoring | lexical weight | top-1 | top-{} | selection @ threshold | best threshold | selection there |",
        r.k,
    );
    println!("|---|---|---|---|---|---|---|---|");
    for x in &r.retrieval {
        println!(
            "| {} | {} | {:.2} | {} | {} | {} @ {:.2} | {:.2} | {} |",
            x.label,
            scoring_name(x.options.scoring),
            x.options.lexical_weight,
            x.top1,
            x.topk,
            x.selection_at_threshold,
            x.threshold,
            x.best_threshold,
            x.best_selection
        );
    }
    println!();
    for x in &r.retrieval {
        let per: Vec<String> = x
            .per_plugin_top1
            .iter()
            .map(|(p, rate)| format!("{p} {rate}"))
            .collect();
        println!(
            "{}: top-1 {}; no-tool best up to {:.3}, tool best down to {:.3}",
            x.label,
            per.join(", "),
            x.no_tool_best_scores_max,
            x.tool_best_scores_min
        );
    }
    if let Some(x) = r.retrieval.first() {
        println!();
        let show = |v: &[f32]| {
            v.iter()
                .map(|m| format!("{m:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  top-1 lead over top-2 where right: {}",
            show(&x.margins_right)
        );
        println!(
            "  top-1 lead over top-2 where wrong: {}",
            show(&x.margins_wrong)
        );
    }
    if let Some(model) = &r.model {
        println!();
        println!("Model {model}:");
        println!("| variant | tool selection | arguments | mean latency | model calls | errors |");
        println!("|---|---|---|---|---|---|");
        for v in &r.variants {
            println!(
                "| {} | {} | {} | {:.0} ms | {} | {} |",
                v.variant, v.selection, v.arguments, v.latency_ms_mean, v.model_calls, v.errors
            );
        }
        for v in &r.variants {
            for m in &v.wrong {
                println!(
                    "  {} wrong: {:?} expected {} offered [{}] called {} ({})",
                    v.variant,
                    shorten(&m.request),
                    m.expected.as_deref().unwrap_or("none"),
                    m.offered.join(", "),
                    m.called.as_deref().unwrap_or("none"),
                    m.finish.as_deref().unwrap_or("model not asked")
                );
            }
        }
        for v in &r.variants {
            for m in &v.argument_misses {
                println!(
                    "  {} arguments: {:?} expected {} got {}",
                    v.variant,
                    shorten(&m.request),
                    m.expected,
                    m.got.as_deref().unwrap_or("no call")
                );
            }
        }
        for v in &r.variants {
            let per: Vec<String> = v
                .per_plugin_selection
                .iter()
                .map(|(p, rate)| format!("{p} {rate}"))
                .collect();
            println!("  {}: {}", v.variant, per.join("; "));
        }
    }
    if !r.misses.is_empty() {
        println!();
        println!("Retrieval misses (default scoring; every request with --all):");
        for m in &r.misses {
            let got: Vec<String> = m
                .got
                .iter()
                .map(|(n, s, sem, lex)| format!("{n} {s:.3} ({sem:.3}+{lex:.2})"))
                .collect();
            println!(
                "  {:?} expected {} got [{}]",
                shorten(&m.request),
                m.expected.as_deref().unwrap_or("none"),
                got.join(", ")
            );
        }
    }
}

fn sorted(mut v: Vec<f32>) -> Vec<f32> {
    v.sort_by(f32::total_cmp);
    v
}

fn scoring_name(s: Scoring) -> String {
    match s {
        Scoring::Max => "max".into(),
        Scoring::Blend { max_weight } => format!("blend {max_weight:.2}·max + mean"),
    }
}

fn shorten(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(60).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn load_tools(dir: &Path) -> Result<Vec<Tool>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("cairn-plugin.json")))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut tools = Vec::new();
    for path in paths {
        let manifest =
            Manifest::from_path(&path).with_context(|| format!("loading {}", path.display()))?;
        for spec in &manifest.tools {
            tools.push(Tool {
                plugin: manifest.id.as_str().to_owned(),
                candidate: ToolCandidate {
                    plugin: manifest.id.as_str().to_owned(),
                    name: spec.name.as_str().to_owned(),
                    description: spec.description.clone(),
                    examples: spec.examples.clone(),
                },
                definition: ToolDefinition {
                    name: spec.name.as_str().to_owned(),
                    description: spec.description.clone(),
                    parameters: spec.input_schema.clone(),
                },
            });
        }
    }
    if tools.is_empty() {
        bail!("no plugin manifests under {}", dir.display());
    }
    Ok(tools)
}

fn load_requests(path: &Path) -> Result<Vec<EvalRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    AllTools,
    Forced1,
    ChooseK(usize),
    /// Top 1 forced when it leads by the margin, else top k offered.
    Hybrid(usize, f32),
}

impl Variant {
    fn key(&self) -> &'static str {
        match self {
            Self::AllTools => "all-tools",
            Self::Forced1 => "forced-1",
            Self::ChooseK(_) => "choose-k",
            Self::Hybrid(..) => "hybrid",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AllTools => write!(f, "all-tools (no retrieval)"),
            Self::Forced1 => write!(f, "forced-1 (retrieval top 1, tool_choice forced)"),
            Self::ChooseK(k) => write!(f, "choose-{k} (retrieval top {k}, model chooses)"),
            Self::Hybrid(k, m) => write!(
                f,
                "hybrid (top 1 forced when it leads by ≥ {m:.2}, else top {k}, model chooses)"
            ),
        }
    }
}

const SYSTEM: &str = "You are Cairn, an assistant in an office suite. When a tool can do \
what the user asks, call it with arguments taken from the user's message; otherwise answer \
briefly.";

fn make_model(kind: ModelKind, args: &Args) -> Result<Box<dyn ChatModel>> {
    Ok(match kind {
        ModelKind::Embedded => Box::new(cairn_model::EmbeddedModel::load(
            cairn_model::EmbeddedConfig::default(),
        )?),
        ModelKind::Openai => {
            let Some(base_url) = &args.base_url else {
                bail!("--model openai needs --base-url");
            };
            let config = cairn_model::OpenAiConfig::new(base_url.clone(), args.model_name.clone());
            Box::new(cairn_model::OpenAiCompatible::new(config)?)
        }
    })
}

async fn run_variant(
    model: &dyn ChatModel,
    variant: Variant,
    requests: &[EvalRequest],
    index: &ToolIndex,
    definitions: &[ToolDefinition],
    plugin_of: &dyn Fn(&str) -> String,
    max_tokens: u32,
) -> Result<VariantReport> {
    let mut selection = Rate::default();
    let mut arguments = Rate::default();
    let mut per_plugin_selection: BTreeMap<String, Rate> = BTreeMap::new();
    let mut total_ms = 0.0;
    let (mut model_calls, mut errors) = (0, 0);
    let mut wrong = Vec::new();
    let mut argument_misses = Vec::new();
    for r in requests {
        let started = Instant::now();
        let (tools, choice): (Vec<ToolDefinition>, ToolChoice) = match variant {
            Variant::AllTools => (definitions.to_vec(), ToolChoice::Auto),
            Variant::Forced1 | Variant::ChooseK(_) | Variant::Hybrid(..) => {
                let k = match variant {
                    Variant::ChooseK(k) => k,
                    Variant::Hybrid(k, _) => k.max(2),
                    _ => 1,
                };
                let mut ranked = index.rank_async(r.request.clone(), k).await?;
                let forced = match variant {
                    Variant::Forced1 => true,
                    Variant::Hybrid(_, margin) => match ranked.as_slice() {
                        [first, second, ..] => first.score - second.score >= margin,
                        _ => true,
                    },
                    _ => false,
                };
                if forced {
                    ranked.truncate(1);
                }
                if index.probably_no_tool(&ranked) {
                    (Vec::new(), ToolChoice::None)
                } else {
                    let offered: Vec<ToolDefinition> = ranked
                        .iter()
                        .filter_map(|t| definitions.iter().find(|d| d.name == t.name).cloned())
                        .collect();
                    let choice = match (forced, offered.first()) {
                        (true, Some(d)) => ToolChoice::Tool(d.name.clone()),
                        _ => ToolChoice::Auto,
                    };
                    (offered, choice)
                }
            }
        };
        let offered: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
        let mut finish = None;
        let (picked, args_json) = if tools.is_empty() {
            (None, None)
        } else {
            model_calls += 1;
            let max_tokens = match choice {
                ToolChoice::Tool(_) => forced_call_token_budget(max_tokens, &r.request),
                _ => max_tokens,
            };
            let request = ChatRequest {
                messages: vec![ChatMessage::system(SYSTEM), ChatMessage::user(&r.request)],
                tools,
                tool_choice: choice,
                parallel_tool_calls: false,
                max_tokens: Some(max_tokens),
                temperature: Some(0.0),
                clock: r
                    .now
                    .as_deref()
                    .map(RunClock::fixed)
                    .transpose()
                    .with_context(|| format!("the `now` of {:?}", r.request))?,
            };
            match model.chat(&request).await {
                Ok(answer) => {
                    finish = Some(format!("{:?}", answer.finish_reason));
                    match answer.message.tool_calls.first() {
                        Some(call) => (Some(call.name.clone()), Some(call.arguments.clone())),
                        None => (None, None),
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("model error on {:?}: {e}", shorten(&r.request));
                    (None, None)
                }
            }
        };
        total_ms += started.elapsed().as_secs_f64() * 1000.0;
        let right = picked == r.expected_tool;
        selection.add(right);
        if !right {
            wrong.push(ModelMiss {
                request: r.request.clone(),
                expected: r.expected_tool.clone(),
                offered,
                called: picked,
                finish,
            });
        }
        let group = r
            .expected_tool
            .as_deref()
            .map_or_else(|| "(no tool)".to_owned(), plugin_of);
        per_plugin_selection.entry(group).or_default().add(right);
        if r.expected_tool.is_some() && !r.expected_arguments.is_empty() {
            let parsed: Option<Value> = args_json
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok());
            let ok = right
                && parsed.as_ref().is_some_and(|p| {
                    partial_match(&Value::Object(r.expected_arguments.clone()), p)
                });
            arguments.add(ok);
            if right && !ok {
                argument_misses.push(ArgumentMiss {
                    request: r.request.clone(),
                    expected: Value::Object(r.expected_arguments.clone()),
                    got: args_json,
                });
            }
        }
    }
    Ok(VariantReport {
        variant: variant.to_string(),
        selection,
        arguments,
        per_plugin_selection,
        latency_ms_mean: total_ms / requests.len().max(1) as f64,
        model_calls,
        errors,
        wrong,
        argument_misses,
    })
}

/// Every key of `expected` is in `got` with an equal value: strings compared ignoring
/// case and runs of whitespace, numbers by value (`"7"` matches `7`), arrays element by
/// element, objects recursively by the expected keys only.
fn partial_match(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => e
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| partial_match(v, gv))),
        (Value::Array(e), Value::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| partial_match(a, b))
        }
        (Value::String(_) | Value::Number(_), Value::String(_) | Value::Number(_)) => {
            normalise(expected) == normalise(got)
        }
        _ => expected == got,
    }
}

fn normalise(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
        other => other.to_string(),
    };
    let s = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    // "20" and 20 and "20.0" are the same number.
    s.parse::<f64>().map_or(s, |f| f.to_string())
}
