//! Plugin key-value store benchmark, PostgreSQL: `SqlKv` set and get under 16 concurrent
//! writers (readers), against a plain INSERT of the same rows into a table with the same
//! key and no quota, which is the bound.
//!
//! `cargo bench -p cairn-store --bench kv -- [--json] [--ops N] [--rounds N]`
//! PostgreSQL comes from `CAIRN_TEST_DATABASE_URL` (default the local server); a scratch
//! database is created and dropped. Each writer is its own user (own scope, as 16 users of
//! one plugin would be); a second set run puts all 16 writers in one scope, where the
//! quota makes them queue on the scope's usage row.

use std::sync::Arc;
use std::time::Instant;

use cairn_runtime::{KvScope, KvStore};
use cairn_store::SqlKv;
use serde::Serialize;
use sqlx::Connection;

const WRITERS: usize = 16;
const VALUE_BYTES: usize = 256;
const QUOTA: u64 = 1 << 30;

#[derive(Serialize, Default, Clone)]
struct Phase {
    ops: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize, Default)]
struct Figures {
    store: &'static str,
    writers: usize,
    value_bytes: usize,
    rounds: usize,
    /// Each phase: the round with the median rate.
    set_own_scope: Phase,
    set_shared_scope: Phase,
    get: Phase,
    plain_insert: Phase,
    /// Median over rounds of set (own scopes) ÷ plain INSERT, each round against its own.
    ratio_set_to_plain: f64,
    ratio_per_round: Vec<f64>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn scope(writer: usize, shared: bool) -> KvScope {
    KvScope {
        tenant: "bench".into(),
        plugin: "tasks".into(),
        user: if shared {
            "shared".into()
        } else {
            format!("user-{writer}")
        },
    }
}

/// Runs `op(writer, i)` `per_writer` times on each of 16 tasks; rate and latencies.
async fn run<F, Fut>(per_writer: usize, op: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                op(w, i).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    Phase {
        ops: lat.len(),
        per_s: lat.len() as f64 / elapsed,
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
    }
}

fn median_phase(mut phases: Vec<Phase>) -> Phase {
    phases.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    phases[phases.len() / 2].clone()
}

#[tokio::main(flavor = "multi_thread")]
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
    let ops = arg("--ops", 500);
    let rounds = arg("--rounds", 3).max(1);

    let admin = std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cairn_kv_bench_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(&*admin, |(b, _)| b)
    );
    let ledger = cairn_audit::open(&url, cairn_audit::LedgerOptions::default())
        .await
        .expect("open");
    let db = ledger.database();
    let cairn_audit::Database::Postgres(pool) = db.clone() else {
        unreachable!("a postgres url")
    };
    // The bound: the same rows, one plain INSERT each, no scope row, no quota.
    sqlx::query(
        "CREATE TABLE kv_plain (tenant text, plugin text, user_id text,
                                key text COLLATE \"C\", value bytea,
                                PRIMARY KEY (tenant, plugin, user_id, key))",
    )
    .execute(&pool)
    .await
    .expect("plain table");
    let kv = Arc::new(SqlKv::new(db));
    let value = Arc::new(vec![7u8; VALUE_BYTES]);

    let (mut own, mut shared, mut gets, mut plain, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let key = move |w: usize, i: usize| format!("r{round}-w{w}-k{i}");
        let set_own = {
            let (kv, value) = (Arc::clone(&kv), Arc::clone(&value));
            run(ops, move |w, i| {
                let (kv, value) = (Arc::clone(&kv), Arc::clone(&value));
                async move {
                    kv.set(&scope(w, false), &key(w, i), value.to_vec(), QUOTA)
                        .await
                        .expect("set");
                }
            })
        };
        let insert = {
            let (pool, value) = (pool.clone(), Arc::clone(&value));
            run(ops, move |w, i| {
                let (pool, value) = (pool.clone(), Arc::clone(&value));
                async move {
                    let s = scope(w, false);
                    sqlx::query("INSERT INTO kv_plain VALUES ($1, $2, $3, $4, $5)")
                        .bind(&s.tenant)
                        .bind(&s.plugin)
                        .bind(&s.user)
                        .bind(key(w, i))
                        .bind(value.as_slice())
                        .execute(&pool)
                        .await
                        .expect("insert");
                }
            })
        };
        // Alternate which goes first, so a load change on the machine hits both.
        let (s, p) = if round % 2 == 0 {
            let s = set_own.await;
            (s, insert.await)
        } else {
            let p = insert.await;
            (set_own.await, p)
        };
        ratios.push(s.per_s / p.per_s);
        own.push(s);
        plain.push(p);
        shared.push({
            let (kv, value) = (Arc::clone(&kv), Arc::clone(&value));
            run(ops, move |w, i| {
                let (kv, value) = (Arc::clone(&kv), Arc::clone(&value));
                async move {
                    kv.set(&scope(w, true), &key(w, i), value.to_vec(), QUOTA)
                        .await
                        .expect("set");
                }
            })
            .await
        });
        gets.push({
            let kv = Arc::clone(&kv);
            run(ops, move |w, i| {
                let kv = Arc::clone(&kv);
                async move {
                    let v = kv.get(&scope(w, false), &key(w, i)).await.expect("get");
                    assert_eq!(v.map(|v| v.len()), Some(VALUE_BYTES));
                }
            })
            .await
        });
    }
    let mut sorted = ratios.clone();
    let figures = Figures {
        store: "postgres",
        writers: WRITERS,
        value_bytes: VALUE_BYTES,
        rounds,
        set_own_scope: median_phase(own),
        set_shared_scope: median_phase(shared),
        get: median_phase(gets),
        plain_insert: median_phase(plain),
        ratio_set_to_plain: pct(&mut sorted, 0.5),
        ratio_per_round: ratios,
    };
    drop(kv);
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut c)
        .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
        return;
    }
    println!(
        "plugin KV, PostgreSQL, {WRITERS} writers, {VALUE_BYTES}-byte values, {rounds} rounds (median round)"
    );
    for (name, p) in [
        ("set (own scope)", &figures.set_own_scope),
        ("set (one shared scope)", &figures.set_shared_scope),
        ("get", &figures.get),
        ("plain INSERT", &figures.plain_insert),
    ] {
        println!(
            "  {name:<24} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ops)",
            p.per_s, p.p50_ms, p.p99_ms, p.ops
        );
    }
    println!(
        "  set ÷ plain INSERT: {:.2} (per round {:?})",
        figures.ratio_set_to_plain, figures.ratio_per_round
    );
}
