//! Host overhead of the reasoning loop per agent step, with PostgreSQL ledger writes
//! included and model time excluded.
//!
//! `cargo bench -p cairn-agent --bench agent_loop [-- --json] [-- --runs N] [-- --store postgres|sqlite]`
//!
//! Each run is the smallest complete tool-using run: user message, model request and
//! response (one tool call), tool call, tool result, model request and response (text),
//! final answer: 8 ledger steps, 2 model turns. Tools are an in-process executor that
//! answers at once (plugin time is the runtime's own benchmark), validated against real
//! schemas. Two models:
//! - *instant*: an in-process `ChatModel` that answers at once: run time is all host time.
//! - *scripted*: the OpenAI-compatible provider against `cairn-scripted-model` over
//!   loopback HTTP; time spent inside `ChatModel::chat` (client, HTTP and server) is
//!   measured at that boundary and subtracted.
//!
//! The figure is (run time − model time) / 8 steps; *no-ledger* also subtracts the time
//! spent inside ledger writes (measured by a decorator), i.e. the loop's own cost. PostgreSQL comes from
//! `CAIRN_TEST_DATABASE_URL` (default the local server); a scratch database is created
//! and dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cairn_agent::{
    Agent, AgentConfig, AgentDeps, AvailableTool, RunOutcome, StartRun, ToolExecution,
    ToolExecutor, ToolFailure, ToolInvocation,
};
use cairn_audit::{Ledger, TenantId, UserId};
use cairn_manifest::{PluginId, ToolSpec};
use cairn_model::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError, Role,
    ToolCall, Usage,
};
use cairn_scripted_model::{ScriptedCall, ScriptedServer, Step};
use serde_json::json;
use sqlx::Connection;

const STEPS_PER_RUN: f64 = 8.0;

/// Answers at once: a tool call when the last message is the user's, text after a result.
struct InstantModel;

#[async_trait]
impl ChatModel for InstantModel {
    fn name(&self) -> &str {
        "instant"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let after_tool = request
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Tool);
        let message = if after_tool {
            ChatMessage::assistant("Done: you have 3 open tasks.")
        } else {
            ChatMessage {
                role: Role::Assistant,
                content: None,
                reasoning: Some("The user wants their list.".into()),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "list_tasks".into(),
                    arguments: r#"{"status":"open"}"#.into(),
                }],
                tool_call_id: None,
            }
        };
        Ok(ChatResponse {
            finish_reason: if after_tool {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            message,
            usage: Some(Usage {
                input_tokens: 300,
                output_tokens: 20,
            }),
            model: "instant".into(),
        })
    }

    async fn chat_stream(&self, _request: &ChatRequest) -> Result<ChatStream, ModelError> {
        Err(ModelError::Malformed("not used".into()))
    }
}

/// Measures time spent inside the wrapped model.
struct Timed {
    inner: Arc<dyn ChatModel>,
    nanos: AtomicU64,
}

#[async_trait]
impl ChatModel for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let r = self.inner.chat(request).await;
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        self.inner.chat_stream(request).await
    }
}

/// Measures time spent inside the ledger's writes (`start_run`, `append`).
struct TimedLedger {
    inner: Arc<dyn Ledger>,
    nanos: AtomicU64,
}

impl TimedLedger {
    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let r = f.await;
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }
}

#[async_trait]
impl Ledger for TimedLedger {
    fn backend(&self) -> cairn_audit::Backend {
        self.inner.backend()
    }
    fn database(&self) -> cairn_audit::Database {
        self.inner.database()
    }
    async fn start_run(&self, new: cairn_audit::NewRun) -> cairn_audit::Result<cairn_audit::Run> {
        self.timed(self.inner.start_run(new)).await
    }
    async fn append(
        &self,
        tenant: &TenantId,
        run: cairn_audit::RunId,
        step: cairn_audit::NewStep,
    ) -> cairn_audit::Result<cairn_audit::StepRecord> {
        self.timed(self.inner.append(tenant, run, step)).await
    }
    async fn run(
        &self,
        tenant: &TenantId,
        run: cairn_audit::RunId,
    ) -> cairn_audit::Result<cairn_audit::Run> {
        self.inner.run(tenant, run).await
    }
    async fn trail(
        &self,
        tenant: &TenantId,
        run: cairn_audit::RunId,
    ) -> cairn_audit::Result<Vec<cairn_audit::StepRecord>> {
        self.inner.trail(tenant, run).await
    }
    async fn query(
        &self,
        query: &cairn_audit::StepQuery,
    ) -> cairn_audit::Result<cairn_audit::StepPage> {
        self.inner.query(query).await
    }
    async fn purge_before(
        &self,
        tenant: &TenantId,
        cutoff: chrono::DateTime<chrono::Utc>,
        actor: &cairn_audit::Actor,
    ) -> cairn_audit::Result<cairn_audit::PurgeReport> {
        self.inner.purge_before(tenant, cutoff, actor).await
    }
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
    ) -> cairn_audit::Result<cairn_audit::VerifyReport> {
        self.inner.verify(tenant, from, to).await
    }
}

/// The `tasks` plugin's real manifest, answered in-process.
struct InstantTools {
    tools: Vec<AvailableTool>,
}

impl InstantTools {
    fn new() -> Self {
        let manifest_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plugins/tasks/cairn-plugin.json"
        );
        let manifest =
            cairn_manifest::Manifest::from_path(manifest_path.as_ref()).expect("tasks manifest");
        let plugin: PluginId = manifest.id.clone();
        let tools = manifest
            .tools
            .iter()
            .map(|spec: &ToolSpec| AvailableTool {
                plugin: plugin.clone(),
                spec: spec.clone(),
            })
            .collect();
        Self { tools }
    }
}

#[async_trait]
impl ToolExecutor for InstantTools {
    async fn tools(&self, _tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        Ok(self.tools.clone())
    }

    async fn execute(&self, _call: ToolInvocation) -> ToolExecution {
        ToolExecution {
            outcome: Ok(json!({
                "count": 3,
                "tasks": [
                    { "id": "1", "title": "Renew passport", "priority": "high", "done": false },
                    { "id": "2", "title": "Call Anna", "priority": "normal", "done": false },
                    { "id": "3", "title": "Book venue", "priority": "low", "done": false, "due": "2027-03-12" }
                ]
            })),
            records: Vec::new(),
        }
    }
}

fn admin_url() -> String {
    std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(serde::Serialize)]
struct Figures {
    store: String,
    model: &'static str,
    runs: usize,
    steps_per_run: f64,
    host_ms_per_step_p50: f64,
    host_ms_per_step_p95: f64,
    loop_only_ms_per_step_p50: f64,
    run_ms_p50: f64,
    model_ms_per_run_p50: f64,
    ledger_append_ms_p50: f64,
}

/// `runs` sequential runs; returns per-run (total, model) durations.
async fn drive(
    agent: &Agent,
    timed: &Timed,
    ledger: &TimedLedger,
    runs: usize,
) -> Vec<(Duration, Duration, Duration)> {
    let tenant = TenantId::parse("bench").expect("tenant");
    let user = UserId::parse("alice").expect("user");
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        timed.nanos.store(0, Ordering::Relaxed);
        ledger.nanos.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = agent
            .start(StartRun {
                tenant: tenant.clone(),
                user: user.clone(),
                conversation_id: None,
                message: "What's on my list?".into(),
                settings: cairn_agent::RunSettings::default(),
            })
            .await
            .expect("run");
        let total = started.elapsed();
        assert!(
            matches!(outcome, RunOutcome::Completed { .. }),
            "{outcome:?}"
        );
        out.push((
            total,
            Duration::from_nanos(timed.nanos.load(Ordering::Relaxed)),
            Duration::from_nanos(ledger.nanos.load(Ordering::Relaxed)),
        ));
    }
    out
}

/// The median latency of one bare append on this ledger, for comparison.
async fn append_baseline(ledger: &Arc<dyn Ledger>, n: usize) -> f64 {
    use cairn_audit::{Actor, NewRun, NewStep, StepKind};
    let tenant = TenantId::parse("bench-baseline").expect("tenant");
    let run = ledger
        .start_run(NewRun {
            tenant: tenant.clone(),
            user: UserId::parse("alice").expect("user"),
            conversation_id: None,
            model: "none".into(),
        })
        .await
        .expect("run");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        ledger
            .append(
                &tenant,
                run.id,
                NewStep {
                    actor: Actor::parse("agent").expect("actor"),
                    step: StepKind::UserMessage {
                        text: format!("message {i}"),
                    },
                },
            )
            .await
            .expect("append");
        lat.push(started.elapsed().as_secs_f64() * 1e3);
    }
    pct(&mut lat, 0.5)
}

fn figures(
    store: &str,
    model: &'static str,
    samples: Vec<(Duration, Duration, Duration)>,
    append_ms: f64,
) -> Figures {
    let mut per_step: Vec<f64> = samples
        .iter()
        .map(|(t, m, _)| (t.saturating_sub(*m)).as_secs_f64() * 1e3 / STEPS_PER_RUN)
        .collect();
    let mut loop_only: Vec<f64> = samples
        .iter()
        .map(|(t, m, l)| (t.saturating_sub(*m + *l)).as_secs_f64() * 1e3 / STEPS_PER_RUN)
        .collect();
    let mut run_ms: Vec<f64> = samples
        .iter()
        .map(|(t, _, _)| t.as_secs_f64() * 1e3)
        .collect();
    let mut model_ms: Vec<f64> = samples
        .iter()
        .map(|(_, m, _)| m.as_secs_f64() * 1e3)
        .collect();
    Figures {
        store: store.into(),
        model,
        runs: samples.len(),
        steps_per_run: STEPS_PER_RUN,
        host_ms_per_step_p50: pct(&mut per_step, 0.5),
        host_ms_per_step_p95: pct(&mut per_step, 0.95),
        loop_only_ms_per_step_p50: pct(&mut loop_only, 0.5),
        run_ms_p50: pct(&mut run_ms, 0.5),
        model_ms_per_run_p50: pct(&mut model_ms, 0.5),
        ledger_append_ms_p50: append_ms,
    }
}

async fn bench(store: &str, runs: usize) -> Vec<Figures> {
    let (ledger, db, _dir) = if store == "postgres" {
        let name = format!("cairn_agent_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("admin");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .expect("create database");
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let ledger = <dyn Ledger>::open(&format!("{base}/{name}"))
            .await
            .expect("ledger");
        (ledger, Some(name), None)
    } else {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
        (
            <dyn Ledger>::open(&url).await.expect("ledger"),
            None,
            Some(dir),
        )
    };
    let tools: Arc<dyn ToolExecutor> = Arc::new(InstantTools::new());
    let append_ms = append_baseline(&ledger, 200).await;
    let timed_ledger = Arc::new(TimedLedger {
        inner: Arc::clone(&ledger),
        nanos: AtomicU64::new(0),
    });
    let mut out = Vec::new();

    // Instant in-process model.
    let timed = Arc::new(Timed {
        inner: Arc::new(InstantModel),
        nanos: AtomicU64::new(0),
    });
    let agent = Agent::new(
        AgentConfig::default(),
        AgentDeps {
            model: timed.clone(),
            ledger: timed_ledger.clone(),
            tools: Arc::clone(&tools),
        },
    );
    drive(&agent, &timed, &timed_ledger, runs / 10 + 1).await;
    out.push(figures(
        store,
        "instant",
        drive(&agent, &timed, &timed_ledger, runs).await,
        append_ms,
    ));

    // The real provider against the scripted server: two answers per run.
    let total = runs + runs / 10 + 1;
    let script = (0..total).flat_map(|_| {
        [
            Step::tool_calls([ScriptedCall::new("list_tasks", json!({ "status": "open" }))])
                .usage(300, 20),
            Step::text("Done: you have 3 open tasks.").usage(400, 10),
        ]
    });
    let server = ScriptedServer::start(script).await;
    let provider = cairn_model::OpenAiCompatible::new(cairn_model::OpenAiConfig::new(
        server.url(),
        "scripted",
    ))
    .expect("provider");
    let timed = Arc::new(Timed {
        inner: Arc::new(provider),
        nanos: AtomicU64::new(0),
    });
    let agent = Agent::new(
        AgentConfig::default(),
        AgentDeps {
            model: timed.clone(),
            ledger: timed_ledger.clone(),
            tools,
        },
    );
    drive(&agent, &timed, &timed_ledger, runs / 10 + 1).await;
    out.push(figures(
        store,
        "scripted",
        drive(&agent, &timed, &timed_ledger, runs).await,
        append_ms,
    ));

    drop(agent);
    drop(timed_ledger);
    drop(ledger);
    if let Some(name) = db
        && let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = value("--runs").and_then(|v| v.parse().ok()).unwrap_or(300);
    let stores: Vec<String> = match value("--store") {
        Some(s) => vec![s],
        None => vec!["postgres".into(), "sqlite".into()],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = Mutex::new(Vec::new());
    rt.block_on(async {
        for store in &stores {
            let figures = bench(store, runs).await;
            results.lock().expect("results").extend(figures);
        }
    });
    let results = results.into_inner().expect("results");
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("json"));
        return;
    }
    println!(
        "{:<10} {:<9} {:>5} {:>16} {:>16} {:>10} {:>14} {:>14}",
        "store",
        "model",
        "runs",
        "host/step p50",
        "host/step p95",
        "run p50",
        "model/run p50",
        "append p50"
    );
    for f in &results {
        println!(
            "{:<10} {:<9} {:>5} {:>13.3} ms {:>13.3} ms {:>13.3} ms {:>7.2} ms {:>11.2} ms {:>11.3} ms",
            f.store,
            f.model,
            f.runs,
            f.host_ms_per_step_p50,
            f.host_ms_per_step_p95,
            f.loop_only_ms_per_step_p50,
            f.run_ms_p50,
            f.model_ms_per_run_p50,
            f.ledger_append_ms_p50
        );
    }
}
