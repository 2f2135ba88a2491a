//! Load test of `POST /v1/chat/completions`, and the ledger check that follows it.
//!
//! Cairn runs in-process on a fresh PostgreSQL database with the real `tasks` plugin
//! installed and the scripted OpenAI-compatible model, which answers every run's first
//! request with a `list_tasks` call and the second with a short answer: one plugin call
//! per request, so each run is 7 ledger steps written before each action. `--concurrency`
//! clients send `--requests` requests; the report gives requests/s, p50/p99 latency and
//! errors by status. Afterwards every answered request's run must be in the ledger,
//! completed, with its whole trail; the ledger must hold no other completed run; and the
//! whole ledger must verify. Any miss makes the command exit non-zero.
//!
//! The bound: the ledger alone, on the same PostgreSQL server in the same run, just before
//! and just after the load: 16 writers append runs of as many steps as one request's run
//! has, through `cairn_audit` with the server's ledger options. Its appends/s ÷ steps per
//! run is the most runs/s any host could answer with this ledger; the report gives the
//! load's answered/s as a fraction of it (`ratio_to_bound`).
//!
//! With `--hosts 2` two Cairn hosts (two `Application`s, each with its own pool, plugin
//! cache, run notifier and listener) serve the same database; the plugin is installed
//! through the first and clients alternate between them. Both share this process's
//! runtime and the machine's cores, so the figure shows what coordination through the
//! database costs, not what a second machine adds.
//!
//! With `--restart-db` PostgreSQL is restarted (`pg_ctlcluster … restart`, so this mode
//! needs a local cluster and root) once a third of the requests are answered: requests
//! fail while it is down, and afterwards no answered run may be missing (a run whose
//! last commit raced the restart may be complete although its request failed: it is
//! counted as `completed_without_answer`, not an error).
//!
//! ```text
//! cargo bench -p cairn-server --bench load -- [--requests 2000] [--concurrency 16] [--hosts 1]
//!     [--bound-steps 16000] [--restart-db] [--json]
//! ```

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_audit::{
    Actor, NewRun, NewStep, PluginId, RunId, RunStatus, StepKind, TenantId, ToolCallName, UserId,
};
use cairn_scripted_model::{ScriptedServer, Step};
use cairn_server::config::{AgentSettings, AuthConfig, Config, ModelConfig, OpenAiSettings};
use cairn_server::package::Package;
use cairn_server::startup::Application;
use serde_json::{Value, json};
use sqlx::Connection;

struct Args {
    requests: usize,
    concurrency: usize,
    hosts: usize,
    bound_steps: usize,
    restart_db: bool,
    json: bool,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str, default: usize| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .map_or(default, |v| v.parse().expect("a number"))
        };
        Self {
            requests: value("--requests", 2000),
            concurrency: value("--concurrency", 16),
            hosts: value("--hosts", 1).max(1),
            bound_steps: value("--bound-steps", 16_000),
            restart_db: args.iter().any(|a| a == "--restart-db"),
            json: args.iter().any(|a| a == "--json"),
        }
    }
}

/// What one request got.
struct Outcome {
    status: u16,
    latency: Duration,
    run: Option<RunId>,
}

fn tasks_package() -> Vec<u8> {
    let plugin = cairn_test_plugins::EXAMPLE_PLUGINS
        .iter()
        .find(|p| p.name == "tasks")
        .expect("the tasks example plugin did not build (wasm32-wasip2 target missing?)");
    let manifest = std::fs::read_to_string(plugin.manifest).expect("read the manifest");
    let component = std::fs::read(plugin.component).expect("read the component");
    let mut bytes = Vec::new();
    Package::new(manifest, component)
        .expect("package")
        .write_to(&mut bytes)
        .expect("write the package");
    bytes
}

/// The scripted model's answer to any request: call `list_tasks` first, then answer.
fn conversational(request: &Value) -> Step {
    let after_tool = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool");
    if after_tool {
        Step::text("You have no open tasks.").usage(60, 6)
    } else {
        Step::tool_call("list_tasks", json!({})).usage(50, 8)
    }
}

/// A fresh database named `cairn_<purpose>_<pid>` on the server `DATABASE_URL` points at
/// (default: local PostgreSQL).
async fn fresh_database(purpose: &str) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to PostgreSQL (set DATABASE_URL)");
    let name = format!("cairn_{purpose}_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .expect("drop the old database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the database");
    let (prefix, _) = base.rsplit_once('/').expect("a database URL");
    format!("{prefix}/{name}")
}

/// Writers appending to the ledger alone for the bound: as many as the load's clients.
///
/// The ledger's own append rate, in steps/s: `writers` tasks append runs of
/// `steps_per_run` steps (started, then model and tool steps, then a final answer, which
/// seals the run, as a request's run does) until `total` steps are written, on a fresh
/// database of the same server, with the options the server opens its ledger with.
async fn ledger_bound(writers: usize, steps_per_run: usize, total: usize) -> f64 {
    let url = fresh_database("bound").await;
    let ledger = cairn_audit::open(&url, cairn_audit::LedgerOptions::default())
        .await
        .expect("open the bound's ledger");
    let per_writer = total.div_ceil(writers);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                let tenant = TenantId::parse("dev").expect("tenant");
                let mut written = 0;
                while written < per_writer {
                    let run = ledger
                        .start_run(NewRun {
                            tenant: tenant.clone(),
                            user: UserId::parse(format!("user{w}")).expect("user"),
                            conversation_id: None,
                            model: "scripted".into(),
                        })
                        .await
                        .expect("start a run");
                    for i in 0..steps_per_run {
                        let step = bound_step(i, i + 1 == steps_per_run);
                        ledger.append(&tenant, run.id, step).await.expect("append");
                        written += 1;
                    }
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await.expect("bound writer");
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    drop(ledger);
    drop_database(&url).await;
    rate
}

/// Step `i` of a bound run: a model response and a tool call in turn, of the sizes a
/// request's run records, and the final answer last.
fn bound_step(i: usize, last: bool) -> NewStep {
    let actor = Actor::parse("model").expect("actor");
    let step = if last {
        StepKind::FinalAnswer {
            text: "You have no open tasks.".into(),
        }
    } else if i % 2 == 1 {
        StepKind::ToolCall {
            plugin_id: Some(PluginId::parse("tasks").expect("plugin")),
            tool_name: ToolCallName::parse("list_tasks").expect("tool"),
            call_id: format!("call-{i}"),
            arguments: json!({}),
        }
    } else {
        StepKind::ModelResponse {
            response_model: Some("scripted".into()),
            reasoning: None,
            text: None,
            finish_reasons: vec!["tool_calls".into()],
            input_tokens: 50,
            output_tokens: 8,
        }
    };
    NewStep { actor, step }
}

fn restart_postgres() -> Duration {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster (/etc/postgresql)")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL version");
    let start = Instant::now();
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster restart failed");
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let database_url = fresh_database("load").await;
    let model = ScriptedServer::start(
        (0..args.requests * 2 + 64).map(|_| Step::respond_with(conversational)),
    )
    .await;
    let data_dirs: Vec<_> = (0..args.hosts)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut bases = Vec::new();
    for (host, data_dir) in data_dirs.iter().enumerate() {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: Some(database_url.clone()),
            data_dir: data_dir.path().to_owned(),
            cache_dir: std::env::temp_dir().join(format!("cairn-load-compiled-{host}")),
            max_body_bytes: 64 * 1024,
            max_package_bytes: 64 * 1024 * 1024,
            max_concurrent_calls: 64,
            auth: AuthConfig::Dev,
            model: ModelConfig::OpenAi(OpenAiSettings {
                base_url: model.url(),
                model: "scripted".into(),
                api_key: None,
                timeout_seconds: 30,
            }),
            agent: AgentSettings::default(),
            ..Config::default()
        };
        let app = Application::build(config).await.expect("build Cairn");
        bases.push(format!("http://127.0.0.1:{}", app.port()));
        tokio::spawn(app.run_until_stopped());
    }
    let base = bases[0].clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    let installed: Value = client
        .post(format!("{base}/v1/plugins"))
        .header("content-type", "application/octet-stream")
        .body(tasks_package())
        .send()
        .await
        .expect("install")
        .json()
        .await
        .expect("install answer");
    let id = installed["id"]
        .as_str()
        .expect("installation id")
        .to_owned();
    let enabled = client
        .post(format!("{base}/v1/plugins/{id}/enable"))
        .send()
        .await
        .expect("enable");
    assert!(enabled.status().is_success(), "enabling the plugin failed");

    let body = json!({
        "model": "cairn",
        "messages": [{ "role": "user", "content": "What is on my task list?" }]
    });
    // One request per host first, outside the figures: each host loads the plugin, and
    // the first run's trail says how many steps a run has (the bound's run shape).
    let mut warm_up_runs = Vec::new();
    for host in &bases {
        let answer: Value = client
            .post(format!("{host}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("warm-up request")
            .json()
            .await
            .expect("warm-up answer");
        let run = answer["cairn_run_id"]
            .as_str()
            .and_then(|s| s.parse::<RunId>().ok())
            .unwrap_or_else(|| panic!("the warm-up request failed: {answer}"));
        warm_up_runs.push(run);
    }
    let steps_per_run = {
        let ledger = cairn_audit::open(&database_url, cairn_audit::LedgerOptions::default())
            .await
            .expect("open the ledger");
        let tenant = TenantId::parse("dev").expect("tenant");
        ledger
            .trail(&tenant, warm_up_runs[0])
            .await
            .expect("the warm-up run's trail")
            .len()
    };
    let bound_before = ledger_bound(args.concurrency, steps_per_run, args.bound_steps).await;

    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let restart = args.restart_db.then(|| {
        let answered = Arc::clone(&answered);
        let third = args.requests / 3;
        tokio::spawn(async move {
            while answered.load(Ordering::Relaxed) < third {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::task::spawn_blocking(restart_postgres)
                .await
                .expect("restart task")
        })
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency)
        .map(|c| {
            let base = bases[c % bases.len()].clone();
            let (client, body) = (client.clone(), body.clone());
            let (next, answered, total) = (Arc::clone(&next), Arc::clone(&answered), args.requests);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await;
                    let (status, run) = match response {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let answer: Value = r.json().await.unwrap_or(Value::Null);
                            let run = answer["cairn_run_id"]
                                .as_str()
                                .and_then(|s| s.parse::<RunId>().ok());
                            (status, run)
                        }
                        Err(_) => (0, None),
                    };
                    if status == 200 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes.push(Outcome {
                        status,
                        latency: sent.elapsed(),
                        run,
                    });
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    let downtime = match restart {
        Some(r) => Some(r.await.expect("restart")),
        None => None,
    };
    let bound_after = ledger_bound(args.concurrency, steps_per_run, args.bound_steps).await;

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for o in &outcomes {
        *by_status.entry(o.status).or_default() += 1;
    }
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let mut latencies: Vec<Duration> = ok.iter().map(|o| o.latency).collect();
    latencies.sort();

    // The ledger check, through the library, after the load.
    let ledger = cairn_audit::open(&database_url, cairn_audit::LedgerOptions::default())
        .await
        .expect("open the ledger");
    let tenant = TenantId::parse("dev").expect("tenant");
    let mut problems = Vec::new();
    for o in &ok {
        let Some(run) = o.run else {
            problems.push("an answer without cairn_run_id".to_owned());
            continue;
        };
        match ledger.run(&tenant, run).await {
            Ok(r) if r.status == RunStatus::Completed => {}
            Ok(r) => problems.push(format!("run {run} answered but {:?}", r.status)),
            Err(e) => problems.push(format!("run {run} answered but missing: {e}")),
        }
        match ledger.trail(&tenant, run).await {
            Ok(trail)
                if trail.first().map(|s| s.step.kind_name()) == Some("user_message")
                    && trail.last().map(|s| s.step.kind_name()) == Some("final_answer")
                    && trail.iter().any(|s| s.step.kind_name() == "tool_result") => {}
            Ok(trail) => problems.push(format!(
                "run {run}: incomplete trail ({} steps)",
                trail.len()
            )),
            Err(e) => problems.push(format!("run {run}: trail unreadable: {e}")),
        }
    }
    let mut db = sqlx::PgConnection::connect(&database_url)
        .await
        .expect("connect to the load database");
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_run_heads WHERE status = 'completed'")
            .fetch_one(&mut db)
            .await
            .expect("count completed runs");
    // A restart can cut the connection after a commit and before its acknowledgement:
    // that run is complete in the ledger though its request failed. Nothing answered may
    // be missing, though, and without a restart the counts must match exactly.
    // Install and enable are admin actions, each recorded as a completed run of its own.
    const ADMIN_RUNS: usize = 2;
    let unanswered_completed = completed - (ok.len() + warm_up_runs.len() + ADMIN_RUNS) as i64;
    if unanswered_completed < 0 || (!args.restart_db && unanswered_completed != 0) {
        problems.push(format!(
            "{completed} completed runs in the ledger for {} answered requests (and {} warm-up and {ADMIN_RUNS} admin runs)",
            ok.len(),
            warm_up_runs.len()
        ));
    }
    let report = ledger.verify(None, None, None).await.expect("verify");
    if !report.is_ok() {
        problems.push(format!("verification failed: {report}"));
    }

    let answered_per_second = ok.len() as f64 / elapsed.as_secs_f64();
    let bound_appends = (bound_before + bound_after) / 2.0;
    let bound_runs = bound_appends / steps_per_run as f64;
    let figures = json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "hosts": args.hosts,
        "steps_per_run": steps_per_run,
        "ledger_appends_per_second_before": bound_before,
        "ledger_appends_per_second_after": bound_after,
        "bound_runs_per_second": bound_runs,
        "ratio_to_bound": answered_per_second / bound_runs,
        "restart_db": args.restart_db,
        "seconds": elapsed.as_secs_f64(),
        "answered": ok.len(),
        "requests_per_second": answered_per_second,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "by_status": by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "db_restart_seconds": downtime.map(|d| d.as_secs_f64()),
        "ledger_completed_runs": completed,
        "completed_without_answer": unanswered_completed,
        "ledger_verified": report.is_ok(),
        "problems": problems,
    });
    if args.json {
        println!("{figures}");
    } else {
        println!(
            "{} requests, concurrency {}{}: {:.0} answered/s, p50 {:.1} ms, p99 {:.1} ms, by status {:?}",
            args.requests,
            args.concurrency,
            if args.restart_db {
                ", PostgreSQL restarted mid-run"
            } else {
                ""
            },
            figures["requests_per_second"].as_f64().unwrap_or(0.0),
            figures["p50_ms"].as_f64().unwrap_or(0.0),
            figures["p99_ms"].as_f64().unwrap_or(0.0),
            by_status,
        );
        println!(
            "bound: the ledger alone appends {bound_before:.0} steps/s before and {bound_after:.0} after ({steps_per_run} steps a run: {bound_runs:.0} runs/s); answered/bound {:.2} ({} host{})",
            answered_per_second / bound_runs,
            args.hosts,
            if args.hosts == 1 { "" } else { "s" },
        );
        println!(
            "ledger: {completed} completed runs for {} answered requests; verify {}",
            ok.len(),
            if report.is_ok() { "OK" } else { "FAILED" }
        );
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    drop(db);
    drop(ledger);
    drop_database(&database_url).await;
    if !problems.is_empty() {
        std::process::exit(1);
    }
}

/// Drops the load database (its connections first).
async fn drop_database(url: &str) {
    let (prefix, name) = url.rsplit_once('/').expect("a database URL");
    let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{prefix}/postgres")).await else {
        return;
    };
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
