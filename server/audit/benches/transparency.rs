//! Checkpoints and proofs against a real PostgreSQL ledger holding a tenant of a million
//! seals: how long filling it takes, inclusion-proof size, proof serving time through
//! [`Transparency`] (cold, then p50/p99 warm, and the old rebuild-per-request path for
//! comparison), the bundle of a real run and its offline verification time, and append
//! throughput with scheduled checkpointing on and off (same process, alternating rounds).
//!
//! `cargo bench -p cairn-audit --bench transparency -- [--json] [--seals N] [--rounds N]
//! [--seconds S] [--fillers N] [--verify]`. PostgreSQL comes from `CAIRN_TEST_DATABASE_URL`
//! (default the local server); a scratch database is created and dropped.
//!
//! The tenant is filled through the ledger's own append path (`start_run` and one
//! `final_answer` per run: two seals each, `--fillers` concurrent writers), so every seal,
//! step and hash is what the server would have written and `verify` accepts it
//! (`--verify` times that too). A real 20-step run sits in the middle of the tree; its
//! bundle is the one measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_audit::checkpoint::{self, CheckpointSigner};
use cairn_audit::merkle;
use cairn_audit::transparency::{Transparency, verify_bundle, verify_consistency};
use cairn_audit::*;
use serde::Serialize;

use sqlx::Connection;

#[derive(Serialize, Default)]
struct Figures {
    seals: u64,
    fill_seconds: f64,
    fill_seals_per_s: f64,
    fillers: usize,
    /// `Ledger::verify` of the whole tenant (with `--verify`).
    verify_seconds: Option<f64>,
    tree_memory_mib: f64,
    /// First proof request: the server reads every seal hash and builds the tree.
    proof_cold_ms: f64,
    /// Later requests: the kept tree, grown by what was added since (nothing here).
    proof_warm_requests: usize,
    proof_warm_p50_us: f64,
    proof_warm_p99_us: f64,
    /// Warm requests while 8 writers append to other tenants and one to this one.
    proof_under_appends_p50_us: f64,
    proof_under_appends_p99_us: f64,
    /// What each request cost before the tree was kept: read all hashes, build, prove.
    proof_rebuild_per_request_ms: f64,
    root_ms: f64,
    inclusion_proof_hashes: usize,
    inclusion_proof_bytes: usize,
    inclusion_verify_us: f64,
    consistency_from: u64,
    consistency_proof_hashes: usize,
    consistency_proof_bytes: usize,
    consistency_verify_us: f64,
    bundle_bytes: usize,
    bundle_steps: usize,
    /// Whole offline check: parse, signature, steps, seals, two inclusion proofs.
    bundle_verify_ms: f64,
    writers: usize,
    rounds: usize,
    round_seconds: u64,
    checkpoint_interval_ms: u64,
    checkpoints_published: u64,
    append_per_s_off: Vec<f64>,
    append_per_s_on: Vec<f64>,
    /// Median of per-round on/off ratios.
    ratio_on_to_off: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `p`-th percentile (0..=100) of `v`.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i]
}

/// Fills `t` with runs of one step (two seals each) from `fillers` concurrent writers
/// until `seals` seals exist (counting those already there).
async fn fill(l: Arc<dyn Ledger>, t: &TenantId, seals: u64, fillers: usize) {
    let have = l.seal_hashes_from(t, 0).await.unwrap().len() as u64;
    let runs = Arc::new(AtomicU64::new(seals.saturating_sub(have) / 2));
    let tasks: Vec<_> = (0..fillers)
        .map(|_| {
            let (l, t, runs) = (l.clone(), t.clone(), runs.clone());
            tokio::spawn(async move {
                while runs
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    run_of(&*l, &t, 1).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Inclusion proofs of random seals below `size`, `n` of them one after another; each
/// request's time in microseconds.
async fn serve(server: &Transparency, t: &TenantId, size: u64, n: usize, seed: u64) -> Vec<f64> {
    let mut x = seed | 1;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        // xorshift: a different seal each time, reproducibly.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let start = Instant::now();
        let proof = server.inclusion(t, x % size, size).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(!proof.is_empty());
    }
    times
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run_of(l: &dyn Ledger, t: &TenantId, steps: usize) -> Run {
    let run = l
        .start_run(NewRun {
            tenant: t.clone(),
            user: UserId::parse("alice").unwrap(),
            conversation_id: None,
            model: "m".into(),
        })
        .await
        .unwrap();
    for i in 0..steps {
        let step = if i + 1 == steps {
            StepKind::FinalAnswer {
                text: "done".into(),
            }
        } else {
            StepKind::UserMessage {
                text: format!("message {i} with some text to hash"),
            }
        };
        l.append(
            t,
            run.id,
            NewStep {
                actor: Actor::parse("user:alice").unwrap(),
                step,
            },
        )
        .await
        .unwrap();
    }
    run
}

/// Appends for `seconds` with `writers` concurrent writers; steps per second.
async fn append_round(l: Arc<dyn Ledger>, writers: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = vec![];
    for w in 0..writers {
        let (l, done, stop) = (l.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let t = TenantId::parse(format!("t{}", w % 4)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                run_of(&*l, &t, 10).await;
                done.fetch_add(10, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let n = arg(&args, "--seals", 1_000_000);
    let rounds = arg(&args, "--rounds", 3) as usize;
    let seconds = arg(&args, "--seconds", 8);
    let fillers = arg(&args, "--fillers", 24) as usize;
    let mut f = Figures {
        seals: n,
        fillers,
        writers: 8,
        rounds,
        round_seconds: seconds,
        checkpoint_interval_ms: 1000,
        ..Figures::default()
    };

    let admin = std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("cairn_bench_tr_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut c)
        .await
        .unwrap();
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let ledger: Arc<dyn Ledger> = Arc::new(
        PgLedger::connect(
            &url,
            LedgerOptions {
                operation_timeout: Duration::from_secs(60),
                max_connections: 32,
                ..LedgerOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let (secret, public) = checkpoint::generate_key("bench.cairn/audit");
    let keys = vec![public];
    let server = Transparency::new(
        ledger.clone(),
        Some(CheckpointSigner::from_key(&secret).unwrap()),
    );

    // A million real seals, with a real 20-step run in the middle.
    let t = TenantId::parse("big").unwrap();
    let start = Instant::now();
    fill(ledger.clone(), &t, n / 2, fillers).await;
    let run = run_of(&*ledger, &t, 20).await;
    fill(ledger.clone(), &t, n, fillers).await;
    f.fill_seconds = start.elapsed().as_secs_f64();
    let size = ledger.seal_hashes_from(&t, 0).await.unwrap().len() as u64;
    f.seals = size;
    f.fill_seals_per_s = size as f64 / f.fill_seconds;
    f.tree_memory_mib = (2 * size * 32) as f64 / (1 << 20) as f64;
    eprintln!(
        "filled {size} seals in {:.0} s ({:.0}/s)",
        f.fill_seconds, f.fill_seals_per_s
    );
    if args.iter().any(|a| a == "--verify") {
        let start = Instant::now();
        let report = ledger.verify(Some(&t), None, None).await.unwrap();
        assert!(report.is_ok(), "{report}");
        f.verify_seconds = Some(start.elapsed().as_secs_f64());
    }

    // Proofs through the server, as the API serves them.
    let start = Instant::now();
    let first = server.inclusion(&t, 0, size).await.unwrap();
    f.proof_cold_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(!first.is_empty());
    f.proof_warm_requests = 2000;
    let mut warm = serve(&server, &t, size, f.proof_warm_requests, 7).await;
    f.proof_warm_p50_us = percentile(&mut warm, 50.0);
    f.proof_warm_p99_us = percentile(&mut warm, 99.0);
    {
        let stop = Arc::new(AtomicBool::new(false));
        let appenders: Vec<_> = (0..9)
            .map(|w| {
                let (l, stop) = (ledger.clone(), stop.clone());
                let tw = if w == 8 {
                    t.clone()
                } else {
                    TenantId::parse(format!("t{}", w % 4)).unwrap()
                };
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        run_of(&*l, &tw, 3).await;
                    }
                })
            })
            .collect();
        let mut busy = serve(&server, &t, size, f.proof_warm_requests, 11).await;
        stop.store(true, Ordering::Relaxed);
        for a in appenders {
            a.await.unwrap();
        }
        f.proof_under_appends_p50_us = percentile(&mut busy, 50.0);
        f.proof_under_appends_p99_us = percentile(&mut busy, 99.0);
    }
    let reps = 3;
    let start = Instant::now();
    for i in 0..reps {
        let tree = server.tree(&t).await.unwrap();
        tree.inclusion(i, size).unwrap();
    }
    f.proof_rebuild_per_request_ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;

    let tree = server.tree(&t).await.unwrap();
    let start = Instant::now();
    let root = tree.root(size).unwrap();
    f.root_ms = start.elapsed().as_secs_f64() * 1e3;
    let seals = ledger.run_seals(&t, run.id).await.unwrap();
    let sealed = &seals[1];
    let proof = tree.inclusion(sealed.seal_seq, size).unwrap();
    f.inclusion_proof_hashes = proof.len();
    f.inclusion_proof_bytes = proof.len() * 32;
    let reps = 1000;
    let start = Instant::now();
    for _ in 0..reps {
        merkle::check_inclusion(&proof, size, &root, sealed.seal_seq, &sealed.hash).unwrap();
    }
    f.inclusion_verify_us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let old = size / 2 + (size / 80).min(12_345);
    let cproof = tree.consistency(old, size).unwrap();
    f.consistency_from = old;
    f.consistency_proof_hashes = cproof.len();
    f.consistency_proof_bytes = cproof.len() * 32;
    let signer = CheckpointSigner::from_key(&secret).unwrap();
    let old_note = signer
        .sign(&t, old, &tree.root(old).unwrap(), chrono::Utc::now())
        .unwrap();
    let note = signer.sign(&t, size, &root, chrono::Utc::now()).unwrap();
    let old_cp = checkpoint::verify(&old_note, &keys, None).unwrap();
    let new_cp = checkpoint::verify(&note, &keys, None).unwrap();
    let start = Instant::now();
    for _ in 0..reps {
        verify_consistency(&old_cp, &new_cp, &cproof).unwrap();
    }
    f.consistency_verify_us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
    drop(tree);
    // The run's bundle as the server makes it (publishing a checkpoint of the tenant).
    let bundle = server.bundle(&t, run.id).await.unwrap();
    let bytes = serde_json::to_vec_pretty(&bundle).unwrap();
    f.bundle_bytes = bytes.len();
    f.bundle_steps = bundle.steps.len();
    let reps = 50;
    let start = Instant::now();
    for _ in 0..reps {
        verify_bundle(&bytes, &keys).unwrap();
    }
    f.bundle_verify_ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
    drop(server);

    // Appends with checkpointing off and on, alternating, in the same process.
    let published = Arc::new(AtomicU64::new(0));
    let mut ratios = vec![];
    for r in 0..rounds {
        let mut pair = [0.0; 2];
        for on in if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let stop = Arc::new(AtomicBool::new(false));
            let publisher = on.then(|| {
                let server = Transparency::new(
                    ledger.clone(),
                    Some(CheckpointSigner::from_key(&secret).unwrap()),
                );
                let (stop, published) = (stop.clone(), published.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(1000));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let k = server.publish_grown().await.unwrap();
                        published.fetch_add(k as u64, Ordering::Relaxed);
                    }
                })
            });
            let rate = append_round(ledger.clone(), f.writers, seconds).await;
            stop.store(true, Ordering::Relaxed);
            if let Some(p) = publisher {
                p.await.unwrap();
            }
            pair[on as usize] = rate;
        }
        f.append_per_s_off.push(pair[0]);
        f.append_per_s_on.push(pair[1]);
        ratios.push(pair[1] / pair[0]);
    }
    f.ratio_on_to_off = median(ratios);
    f.checkpoints_published = published.load(Ordering::Relaxed);
    drop(ledger);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut c)
        .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&f).unwrap());
    } else {
        println!(
            "{} seals (filled in {:.0} s); proof cold {:.0} ms, warm p50 {:.0} us p99 {:.0} us, \
             under appends p50 {:.0} us p99 {:.0} us, rebuild per request {:.0} ms; root {:.2} ms; \
             inclusion {} hashes ({} B) verified in {:.1} us; \
             consistency {}->{} {} hashes ({} B) in {:.1} us; bundle {} B ({} steps) verified in {:.2} ms; \
             appends/s off {:?} on {:?}, ratio {:.3} ({} checkpoints)",
            f.seals,
            f.fill_seconds,
            f.proof_cold_ms,
            f.proof_warm_p50_us,
            f.proof_warm_p99_us,
            f.proof_under_appends_p50_us,
            f.proof_under_appends_p99_us,
            f.proof_rebuild_per_request_ms,
            f.root_ms,
            f.inclusion_proof_hashes,
            f.inclusion_proof_bytes,
            f.inclusion_verify_us,
            f.consistency_from,
            f.seals,
            f.consistency_proof_hashes,
            f.consistency_proof_bytes,
            f.consistency_verify_us,
            f.bundle_bytes,
            f.bundle_steps,
            f.bundle_verify_ms,
            f.append_per_s_off,
            f.append_per_s_on,
            f.ratio_on_to_off,
            f.checkpoints_published
        );
    }
}
