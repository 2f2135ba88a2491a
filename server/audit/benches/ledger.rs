//! Ledger benchmarks: hash-chained appends against plain INSERTs of the same rows, filtered
//! paginated queries over a million steps, and export rate; for PostgreSQL and SQLite.
//!
//! `cargo bench -p cairn-audit --bench ledger -- [--json] [--store postgres|sqlite]
//! [--steps N] [--bulk N] [--rounds N]`
//! PostgreSQL comes from `CAIRN_TEST_DATABASE_URL` (default the local server); a scratch
//! database is created and dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_audit::*;
use serde::Serialize;
use sqlx::{Connection, Row};

const WRITERS: usize = 16;
const STEPS_PER_RUN: usize = 20;
const QUERIES: usize = 300;

#[derive(Serialize, Default)]
struct Figures {
    store: &'static str,
    writers: usize,
    appended_steps: usize,
    /// Rounds of (ledger appends, plain INSERTs), back to back, alternating which goes first.
    rounds: usize,
    /// Median over the rounds.
    ledger_append_per_s: f64,
    /// p95 of single appends in the round with the median rate.
    ledger_append_p95_ms: f64,
    /// In the round with the median rate, p50 ms of a run start (which writes its
    /// `run_opened` chain record), a non-terminal step, and a terminal step (which seals).
    run_start_p50_ms: f64,
    step_p50_ms: f64,
    terminal_step_p50_ms: f64,
    /// p50 ms of a non-terminal step appended by a lone writer (nothing to share a commit
    /// with), over `LONE_STEPS` appends taken between the rounds.
    lone_step_p50_ms: f64,
    /// PostgreSQL: steps per transaction over all the appended steps (rows written by one
    /// transaction share its `xmin`), i.e. how many appends a commit carried on average.
    steps_per_commit: f64,
    /// Median over the rounds.
    plain_insert_per_s: f64,
    /// Median of the per-round ratios (each round's appends over its own plain INSERTs).
    ratio_ledger_to_plain: f64,
    /// Every round's ratio, in order: the spread says how much the machine's load moved.
    ratio_per_round: Vec<f64>,
    query_steps_in_table: i64,
    query_p50_ms: f64,
    query_p95_ms: f64,
    export_rows: u64,
    export_rows_per_s: f64,
    verify_steps_per_s: f64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn step(i: usize) -> NewStep {
    let actor = Actor::parse("model").unwrap();
    let step = if i.is_multiple_of(2) {
        StepKind::ToolCall {
            plugin_id: Some(PluginId::parse("tasks").unwrap()),
            tool_name: ToolCallName::parse(format!("tool_{}", i % 10)).unwrap(),
            call_id: format!("call-{i}"),
            arguments: serde_json::json!({"title": "Renew passport", "due": i}),
        }
    } else {
        StepKind::ModelResponse {
            response_model: Some("smollm2-135m".into()),
            reasoning: Some("the user wants a task created for the passport".into()),
            text: None,
            finish_reasons: vec!["tool_calls".into()],
            input_tokens: 412,
            output_tokens: 57,
        }
    };
    NewStep { actor, step }
}

/// Sequential appends by one writer for the lone-append latency, per round.
const LONE_STEPS: usize = 200;

/// One writer appending `LONE_STEPS` steps to one run, one after another: the latency of
/// an append with nothing else in flight. Returns each append's ms.
async fn lone_appends(l: &Arc<dyn Ledger>) -> Vec<f64> {
    let t = TenantId::parse("lone").unwrap();
    let run = l
        .start_run(NewRun {
            tenant: t.clone(),
            user: UserId::parse("lone").unwrap(),
            conversation_id: None,
            model: "smollm2-135m".into(),
        })
        .await
        .unwrap();
    let mut ms = Vec::with_capacity(LONE_STEPS);
    for i in 0..LONE_STEPS {
        let t0 = Instant::now();
        l.append(&t, run.id, step(i)).await.unwrap();
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms
}

/// What one round of ledger appends came to.
struct AppendRound {
    /// Steps appended per second (all writers).
    rate: f64,
    /// p95 latency of one append, ms.
    p95_ms: f64,
    /// p50 latencies, ms: a run start, a non-terminal step, a terminal step (which seals).
    p50_ms: [f64; 3],
}

/// 16 writers, each running runs of 20 steps until `total` steps are written.
async fn ledger_appends(l: Arc<dyn Ledger>, total: usize) -> AppendRound {
    let per_writer = total / WRITERS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let t = TenantId::parse("bench").unwrap();
            let (mut opens, mut steps, mut terminals) = (Vec::new(), Vec::new(), Vec::new());
            let mut written = 0;
            while written < per_writer {
                let t_open = Instant::now();
                let run = l
                    .start_run(NewRun {
                        tenant: t.clone(),
                        user: UserId::parse(format!("user{w}")).unwrap(),
                        conversation_id: None,
                        model: "smollm2-135m".into(),
                    })
                    .await
                    .unwrap();
                opens.push(t_open.elapsed().as_secs_f64() * 1000.0);
                for i in 0..STEPS_PER_RUN {
                    let s = if i == STEPS_PER_RUN - 1 {
                        NewStep {
                            actor: Actor::parse("model").unwrap(),
                            step: StepKind::FinalAnswer {
                                text: "done".into(),
                            },
                        }
                    } else {
                        step(i)
                    };
                    let t0 = Instant::now();
                    l.append(&t, run.id, s).await.unwrap();
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    if i == STEPS_PER_RUN - 1 {
                        terminals.push(ms);
                    } else {
                        steps.push(ms);
                    }
                    written += 1;
                }
            }
            (opens, steps, terminals)
        }));
    }
    let (mut opens, mut steps, mut terminals) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let (o, s, e) = t.await.unwrap();
        opens.extend(o);
        steps.extend(s);
        terminals.extend(e);
    }
    let rate = (steps.len() + terminals.len()) as f64 / start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = steps.iter().chain(&terminals).copied().collect();
    AppendRound {
        rate,
        p95_ms: pct(&mut all, 0.95),
        p50_ms: [
            pct(&mut opens, 0.5),
            pct(&mut steps, 0.5),
            pct(&mut terminals, 0.5),
        ],
    }
}

/// Ledger appends and plain INSERTs of the same rows, `rounds` times back to back (odd
/// rounds start with the INSERTs), so each round's ratio compares the two under the same
/// machine load; the figures are medians over the rounds.
async fn paired_rounds<F, Fut>(
    f: &mut Figures,
    rounds: usize,
    l: &Arc<dyn Ledger>,
    template: &Arc<Vec<PlainRow>>,
    total: usize,
    plain: F,
) where
    F: Fn(Vec<PlainRow>) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut appends = Vec::with_capacity(rounds);
    let mut plains = Vec::with_capacity(rounds);
    let mut lone = Vec::new();
    for round in 0..rounds {
        lone.extend(lone_appends(l).await);
        let rows = copy_rows(template, total);
        let (append, plain_rate) = if round % 2 == 0 {
            let a = ledger_appends(l.clone(), total).await;
            (a, plain(rows).await)
        } else {
            let p = plain(rows).await;
            (ledger_appends(l.clone(), total).await, p)
        };
        f.ratio_per_round.push(append.rate / plain_rate);
        appends.push(append);
        plains.push(plain_rate);
    }
    f.rounds = rounds;
    f.lone_step_p50_ms = pct(&mut lone, 0.5);
    appends.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let median = &appends[rounds / 2];
    (f.ledger_append_per_s, f.ledger_append_p95_ms) = (median.rate, median.p95_ms);
    [f.run_start_p50_ms, f.step_p50_ms, f.terminal_step_p50_ms] = median.p50_ms;
    f.plain_insert_per_s = pct(&mut plains, 0.5);
    f.ratio_ledger_to_plain = pct(&mut f.ratio_per_round.clone(), 0.5);
}

/// `total` rows copied from what the ledger wrote (repeated as needed), each under a fresh
/// run id so the unique `(run_id, seq)` index never refuses one.
fn copy_rows(template: &[PlainRow], total: usize) -> Vec<PlainRow> {
    (0..total)
        .map(|i| {
            let r = &template[i % template.len()];
            PlainRow {
                tenant: r.tenant.clone(),
                run_id: uuid::Uuid::now_v7(),
                seq: r.seq,
                kind: r.kind.clone(),
                actor: r.actor.clone(),
                at: r.at,
                at_micros: r.at_micros,
                user_id: r.user_id.clone(),
                plugin_id: r.plugin_id.clone(),
                tool_name: r.tool_name.clone(),
                payload: r.payload.clone(),
                prev_hash: r.prev_hash.clone(),
                hash: r.hash.clone(),
            }
        })
        .collect()
}

struct PlainRow {
    tenant: String,
    run_id: uuid::Uuid,
    seq: i64,
    kind: String,
    actor: String,
    at: chrono::DateTime<chrono::Utc>,
    at_micros: i64,
    user_id: String,
    plugin_id: Option<String>,
    tool_name: Option<String>,
    payload: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

async fn plain_inserts_pg(pool: &sqlx::PgPool, rows: Arc<Vec<PlainRow>>) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (pool, rows) = (pool.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            for r in rows.iter().skip(w).step_by(WRITERS) {
                sqlx::query(
                    "INSERT INTO bench_plain (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                         tool_name, payload, prev_hash, hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::json, $11, $12)",
                )
                .bind(&r.tenant)
                .bind(r.run_id)
                .bind(r.seq)
                .bind(&r.kind)
                .bind(&r.actor)
                .bind(r.at)
                .bind(&r.user_id)
                .bind(&r.plugin_id)
                .bind(&r.tool_name)
                .bind(&r.payload)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .execute(&pool)
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

async fn plain_inserts_sqlite(pool: &sqlx::SqlitePool, rows: Arc<Vec<PlainRow>>) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (pool, rows) = (pool.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            for r in rows.iter().skip(w).step_by(WRITERS) {
                sqlx::query(
                    "INSERT INTO bench_plain (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                         tool_name, payload, prev_hash, hash)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.tenant)
                .bind(r.run_id)
                .bind(r.seq)
                .bind(&r.kind)
                .bind(&r.actor)
                .bind(r.at_micros)
                .bind(&r.user_id)
                .bind(&r.plugin_id)
                .bind(&r.tool_name)
                .bind(&r.payload)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .execute(&pool)
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

/// Filtered, paginated queries: a tool, a user or a kind filter, 50 rows from a random
/// position, then the next page through the cursor.
async fn queries(l: &dyn Ledger, max_id: i64) -> (f64, f64) {
    let mut lat = Vec::with_capacity(QUERIES);
    let t = TenantId::parse("bulk").unwrap();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for i in 0..QUERIES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut q = StepQuery::new(t.clone());
        q.limit = 50;
        match i % 3 {
            0 => q.tool = Some(ToolCallName::parse(format!("tool_{}", seed % 10)).unwrap()),
            1 => q.user = Some(UserId::parse(format!("user{}", seed % 50)).unwrap()),
            _ => q = q.kind("model_response").unwrap(),
        }
        q.after = Cursor::decode(&format!("c1.{:x}", seed as i64 % max_id.max(1))).ok();
        let t0 = Instant::now();
        let page = l.query(&q).await.unwrap();
        if let Some(c) = page.next {
            q.after = Some(c);
            l.query(&q).await.unwrap();
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0 / 2.0);
    }
    (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.95))
}

struct Sink;
impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn export(l: &dyn Ledger) -> (u64, f64) {
    let mut q = StepQuery::new(TenantId::parse("bulk").unwrap());
    q.limit = 5000;
    let t0 = Instant::now();
    let n = write_jsonl(l.export(q), Sink).await.unwrap();
    (n, n as f64 / t0.elapsed().as_secs_f64())
}

async fn verify_rate(l: &dyn Ledger) -> f64 {
    let t0 = Instant::now();
    let r = l
        .verify(Some(&TenantId::parse("bench").unwrap()), None, None)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    r.counts.steps as f64 / t0.elapsed().as_secs_f64()
}

async fn postgres(total: usize, bulk: i64, rounds: usize) -> Figures {
    let admin = std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cairn_audit_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin_conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin_conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let opts = LedgerOptions {
        max_connections: WRITERS as u32 + 2,
        operation_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let pg = PgLedger::connect(&url, opts).await.unwrap();
    let pool = pg.pool().clone();
    let l: Arc<dyn Ledger> = Arc::new(pg);
    sqlx::query("CREATE TABLE bench_plain (LIKE audit_steps INCLUDING ALL)")
        .execute(&pool)
        .await
        .unwrap();

    // Warm up, then ledger and plain alternately, best of two each.
    ledger_appends(l.clone(), WRITERS * STEPS_PER_RUN).await;
    let rows: Vec<PlainRow> = sqlx::query(
        "SELECT tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name, payload::text AS payload,
                prev_hash, hash FROM audit_steps ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| PlainRow {
        tenant: r.get("tenant"),
        run_id: r.get("run_id"),
        seq: r.get("seq"),
        kind: r.get("kind"),
        actor: r.get("actor"),
        at: r.get("at"),
        at_micros: 0,
        user_id: r.get("user_id"),
        plugin_id: r.get("plugin_id"),
        tool_name: r.get("tool_name"),
        payload: r.get("payload"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
    .collect();
    let template = Arc::new(rows);
    let mut best = Figures {
        store: "postgres",
        writers: WRITERS,
        appended_steps: total,
        ..Default::default()
    };
    let plain = |rows: Vec<PlainRow>| {
        let pool = pool.clone();
        async move { plain_inserts_pg(&pool, Arc::new(rows)).await }
    };
    paired_rounds(&mut best, rounds, &l, &template, total, plain).await;
    best.verify_steps_per_s = verify_rate(&*l).await;
    let (steps, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM audit_steps WHERE tenant = 'bench'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    best.steps_per_commit = steps as f64 / commits.max(1) as f64;

    // A million steps for the query and export figures.
    let runs: Vec<uuid::Uuid> = (0..bulk / 100)
        .map(|i| RunId::new_at(chrono::Utc::now() - chrono::Duration::seconds(i)).as_uuid())
        .collect();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SET LOCAL gin_pending_list_limit = '512MB'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name,
                                  payload, prev_hash, hash)
         SELECT 'bulk', r.id, g % 100, CASE WHEN g % 2 = 0 THEN 'tool_call' ELSE 'model_response' END,
                'model', now(), 'user' || (g % 50), CASE WHEN g % 2 = 0 THEN 'tasks' END,
                CASE WHEN g % 2 = 0 THEN 'tool_' || (g / 2 % 10) END,
                CASE WHEN g % 2 = 0 THEN
                  jsonb_build_object('kind', 'tool_call', 'cairn.plugin.id', 'tasks',
                     'gen_ai.tool.name', 'tool_' || (g / 2 % 10), 'gen_ai.tool.call.id', 'c' || g,
                     'arguments', jsonb_build_object('n', g, 'title', 'Renew passport'))
                ELSE
                  jsonb_build_object('kind', 'model_response', 'gen_ai.response.finish_reasons', '[]'::jsonb,
                     'gen_ai.usage.input_tokens', 412, 'gen_ai.usage.output_tokens', 57,
                     'reasoning', 'thinking about step ' || g)
                END,
                decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex')
         FROM generate_series(0, $1 - 1) g
         JOIN unnest($2::uuid[]) WITH ORDINALITY AS r(id, i) ON r.i = g / 100 + 1",
    )
    .bind(bulk)
    .bind(&runs)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("VACUUM ANALYZE audit_steps")
        .execute(&pool)
        .await
        .unwrap();
    let max_id: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_steps")
        .fetch_one(&pool)
        .await
        .unwrap();
    best.query_steps_in_table = sqlx::query_scalar("SELECT count(*) FROM audit_steps")
        .fetch_one(&pool)
        .await
        .unwrap();
    (best.query_p50_ms, best.query_p95_ms) = queries(&*l, max_id).await;
    (best.export_rows, best.export_rows_per_s) = export(&*l).await;

    drop(l);
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin_conn)
        .await
        .unwrap();
    best
}

async fn sqlite(total: usize, bulk: i64, rounds: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let s = SqliteLedger::connect(
        &url,
        LedgerOptions {
            max_connections: WRITERS as u32,
            operation_timeout: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pool = s.pool().clone();
    let l: Arc<dyn Ledger> = Arc::new(s);
    let ddl: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'audit_steps' AND type IN ('table', 'index') AND sql IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for d in ddl {
        let d = d.replace("audit_steps", "bench_plain");
        sqlx::query(&d).execute(&pool).await.unwrap();
    }
    // The same full-text indexing as the ledger table, so only the chain differs.
    sqlx::raw_sql(
        "CREATE VIRTUAL TABLE bench_plain_fts USING fts5(body, content = '', contentless_delete = 1);
         CREATE TRIGGER bench_plain_fts_insert AFTER INSERT ON bench_plain BEGIN
             INSERT INTO bench_plain_fts (rowid, body)
                 SELECT new.id, coalesce(group_concat(value, ' '), '')
                 FROM json_tree(new.payload) WHERE type = 'text';
         END;",
    )
    .execute(&pool)
    .await
    .unwrap();
    ledger_appends(l.clone(), WRITERS * STEPS_PER_RUN).await;
    let template: Vec<PlainRow> = sqlx::query(
        "SELECT tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name, payload, prev_hash, hash
         FROM audit_steps ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| PlainRow {
        tenant: r.get("tenant"),
        run_id: r.get("run_id"),
        seq: r.get("seq"),
        kind: r.get("kind"),
        actor: r.get("actor"),
        at: chrono::Utc::now(),
        at_micros: r.get("at"),
        user_id: r.get("user_id"),
        plugin_id: r.get("plugin_id"),
        tool_name: r.get("tool_name"),
        payload: r.get("payload"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
    .collect();
    let template = Arc::new(template);
    let mut best = Figures {
        store: "sqlite",
        writers: WRITERS,
        appended_steps: total,
        ..Default::default()
    };
    let plain = |rows: Vec<PlainRow>| {
        let pool = pool.clone();
        async move { plain_inserts_sqlite(&pool, Arc::new(rows)).await }
    };
    paired_rounds(&mut best, rounds, &l, &template, total, plain).await;
    best.verify_steps_per_s = verify_rate(&*l).await;

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n + 1 < ?)
         INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name,
                                  payload, prev_hash, hash)
         SELECT 'bulk', unhex(printf('%012x7%03x8%015x', 1700000000000 + n / 100, 0, n / 100)), n % 100,
                CASE WHEN n % 2 = 0 THEN 'tool_call' ELSE 'model_response' END, 'model', 0,
                'user' || (n % 50), CASE WHEN n % 2 = 0 THEN 'tasks' END,
                CASE WHEN n % 2 = 0 THEN 'tool_' || (n / 2 % 10) END,
                CASE WHEN n % 2 = 0 THEN
                  json_object('kind', 'tool_call', 'cairn.plugin.id', 'tasks',
                     'gen_ai.tool.name', 'tool_' || (n / 2 % 10), 'gen_ai.tool.call.id', 'c' || n,
                     'arguments', json_object('n', n, 'title', 'Renew passport'))
                ELSE
                  json_object('kind', 'model_response', 'gen_ai.response.finish_reasons', json('[]'),
                     'gen_ai.usage.input_tokens', 412, 'gen_ai.usage.output_tokens', 57,
                     'reasoning', 'thinking about step ' || n)
                END,
                zeroblob(32), zeroblob(32)
         FROM g",
    )
    .bind(bulk)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let max_id: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_steps")
        .fetch_one(&pool)
        .await
        .unwrap();
    best.query_steps_in_table = sqlx::query_scalar("SELECT count(*) FROM audit_steps")
        .fetch_one(&pool)
        .await
        .unwrap();
    (best.query_p50_ms, best.query_p95_ms) = queries(&*l, max_id).await;
    (best.export_rows, best.export_rows_per_s) = export(&*l).await;
    best
}

fn print(f: &Figures) {
    println!("== {} ({} writers) ==", f.store, f.writers);
    println!(
        "hash-chained append: {:.0} steps/s (p95 {:.2} ms); plain INSERT of the same rows: {:.0} rows/s; ratio {:.2} (median of {} rounds: {})",
        f.ledger_append_per_s,
        f.ledger_append_p95_ms,
        f.plain_insert_per_s,
        f.ratio_ledger_to_plain,
        f.rounds,
        f.ratio_per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "append p50 by operation: run start {:.2} ms, step {:.2} ms, terminal step {:.2} ms",
        f.run_start_p50_ms, f.step_p50_ms, f.terminal_step_p50_ms
    );
    println!(
        "lone append (one writer, nothing to share a commit with): p50 {:.3} ms",
        f.lone_step_p50_ms
    );
    if f.steps_per_commit > 0.0 {
        println!("steps per commit: {:.2}", f.steps_per_commit);
    }
    println!(
        "filtered paginated query over {} steps: p50 {:.2} ms, p95 {:.2} ms",
        f.query_steps_in_table, f.query_p50_ms, f.query_p95_ms
    );
    if f.export_rows > 0 {
        println!(
            "export JSONL: {} rows at {:.0} rows/s",
            f.export_rows, f.export_rows_per_s
        );
    }
    println!("verify: {:.0} steps/s", f.verify_steps_per_s);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = arg("--steps", 16_000);
    let bulk = arg("--bulk", 1_000_000) as i64;
    let rounds = arg("--rounds", 5).max(1);
    let only = args
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut all = Vec::new();
    if only.as_deref().is_none_or(|s| s == "postgres") {
        let f = postgres(total, bulk, rounds).await;
        if !json {
            print(&f);
        }
        all.push(f);
    }
    if only.as_deref().is_none_or(|s| s == "sqlite") {
        let f = sqlite(total, bulk, rounds).await;
        if !json {
            print(&f);
        }
        all.push(f);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap());
    }
}
