//! What announcing appends to other hosts costs the ledger, PostgreSQL: 16 writers
//! appending 20-step runs through the plain ledger and through `NotifyingLedger` with a
//! started `RunNotifier` (publishing to `cairn_steps` after each commit, batched), in
//! alternating order, on one scratch database.
//!
//! `cargo bench -p cairn-store --bench notify -- [--json] [--runs N] [--rounds N]`
//! (`--runs` per writer per round, default 25; PostgreSQL from `CAIRN_TEST_DATABASE_URL`).

use std::sync::Arc;
use std::time::Instant;

use cairn_audit::*;
use cairn_store::{NotifyingLedger, RunNotifier};
use serde::Serialize;
use sqlx::Connection;

const WRITERS: usize = 16;
const STEPS_PER_RUN: usize = 20;

#[derive(Serialize)]
struct Figures {
    writers: usize,
    steps_per_round: usize,
    plain_per_round: Vec<f64>,
    notifying_per_round: Vec<f64>,
    /// Median of the per-round ratios (notifying ÷ plain).
    ratio: f64,
}

/// Steps appended per second by 16 writers through `ledger`.
async fn round(ledger: Arc<dyn Ledger>, runs: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            let tenant = TenantId::parse("bench").unwrap();
            for _ in 0..runs {
                let run = ledger
                    .start_run(NewRun {
                        tenant: tenant.clone(),
                        user: UserId::parse(format!("user-{w}")).unwrap(),
                        conversation_id: None,
                        model: "bench".into(),
                    })
                    .await
                    .expect("start");
                for i in 0..STEPS_PER_RUN {
                    let step = if i + 1 == STEPS_PER_RUN {
                        StepKind::FinalAnswer {
                            text: "done".into(),
                        }
                    } else {
                        StepKind::UserMessage {
                            text: format!("message {i}"),
                        }
                    };
                    let actor = Actor::parse("model").unwrap();
                    ledger
                        .append(&tenant, run.id, NewStep { actor, step })
                        .await
                        .expect("append");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    (WRITERS * runs * STEPS_PER_RUN) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (runs, rounds) = (arg("--runs", 25), arg("--rounds", 3).max(1));
    let admin = std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cairn_notify_bench_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(&*admin, |(b, _)| b)
    );
    let plain = cairn_audit::open(&url, LedgerOptions::default())
        .await
        .expect("open");
    // A second host listening, as in a deployment: the notifications have a receiver.
    let other = cairn_audit::open(&url, LedgerOptions::default())
        .await
        .expect("open");
    let _listening = RunNotifier::start(&other.database()).await.expect("listen");
    let notifier = RunNotifier::start(&plain.database()).await.expect("listen");
    let notifying: Arc<dyn Ledger> = Arc::new(NotifyingLedger::new(Arc::clone(&plain), notifier));

    let (mut p, mut n, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (a, b) = if r % 2 == 0 {
            let a = round(Arc::clone(&plain), runs).await;
            (a, round(Arc::clone(&notifying), runs).await)
        } else {
            let b = round(Arc::clone(&notifying), runs).await;
            (round(Arc::clone(&plain), runs).await, b)
        };
        ratios.push(b / a);
        p.push(a);
        n.push(b);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let figures = Figures {
        writers: WRITERS,
        steps_per_round: WRITERS * runs * STEPS_PER_RUN,
        plain_per_round: p,
        notifying_per_round: n,
        ratio: sorted[sorted.len() / 2],
    };
    drop((notifying, plain, other, _listening));
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut c)
        .await;
    println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
}
