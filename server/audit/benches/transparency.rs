//! Checkpoints and proofs: append throughput with scheduled checkpointing on and off (same
//! process, alternating rounds), and proof sizes and verification times for a run in a
//! tenant of a million seals.
//!
//! `cargo bench -p cairn-audit --bench transparency -- [--json] [--seals N] [--rounds N]
//! [--seconds S]`. PostgreSQL comes from `CAIRN_TEST_DATABASE_URL` (default the local
//! server); a scratch database is created and dropped.
//!
//! The million-seal tree is built in memory: its first two leaves are the real seals of a
//! real run (so the bundle is a real one), the others synthetic hashes. Building a million
//! real seals through the ledger would take most of an hour on the shared machine and
//! would not change what is measured (the tree and proofs only see 32-byte leaf hashes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_audit::checkpoint::{self, CheckpointSigner};
use cairn_audit::merkle::{self, Tree};
use cairn_audit::transparency::{
    BUNDLE_FORMAT, Bundle, Transparency, verify_bundle, verify_consistency,
};
use cairn_audit::*;
use serde::Serialize;

use sqlx::Connection;

#[derive(Serialize, Default)]
struct Figures {
    seals: u64,
    tree_build_ms: f64,
    tree_memory_mib: f64,
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

fn synthetic(i: u64) -> Hash {
    Hash::chain(&Hash::ZERO, &i.to_be_bytes())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
    let mut f = Figures {
        seals: n,
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
        PgLedger::connect(&url, LedgerOptions::default())
            .await
            .unwrap(),
    );
    let (secret, public) = checkpoint::generate_key("bench.cairn/audit");
    let keys = vec![public];
    let signer = CheckpointSigner::from_key(&secret).unwrap();

    // A real run, its two real seals the first leaves of a million-leaf tree.
    let t = TenantId::parse("big").unwrap();
    let run = run_of(&*ledger, &t, 20).await;
    let seals = ledger.run_seals(&t, run.id).await.unwrap();
    let start = Instant::now();
    let mut tree = Tree::default();
    for s in &seals {
        tree.push(&s.hash);
    }
    for i in 2..n {
        tree.push(&synthetic(i));
    }
    f.tree_build_ms = start.elapsed().as_secs_f64() * 1e3;
    f.tree_memory_mib = (2 * n * 32) as f64 / (1 << 20) as f64;
    let start = Instant::now();
    let root = tree.root(n).unwrap();
    f.root_ms = start.elapsed().as_secs_f64() * 1e3;
    let note = signer.sign(&t, n, &root, chrono::Utc::now()).unwrap();
    let sealed = &seals[1];
    let proof = tree.inclusion(sealed.seal_seq, n).unwrap();
    f.inclusion_proof_hashes = proof.len();
    f.inclusion_proof_bytes = proof.len() * 32;
    let reps = 1000;
    let start = Instant::now();
    for _ in 0..reps {
        merkle::check_inclusion(&proof, n, &root, sealed.seal_seq, &sealed.hash).unwrap();
    }
    f.inclusion_verify_us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let old = n / 2 + 12_345;
    let cproof = tree.consistency(old, n).unwrap();
    f.consistency_from = old;
    f.consistency_proof_hashes = cproof.len();
    f.consistency_proof_bytes = cproof.len() * 32;
    let old_note = signer
        .sign(&t, old, &tree.root(old).unwrap(), chrono::Utc::now())
        .unwrap();
    let old_cp = checkpoint::verify(&old_note, &keys, None).unwrap();
    let new_cp = checkpoint::verify(&note, &keys, None).unwrap();
    let start = Instant::now();
    for _ in 0..reps {
        verify_consistency(&old_cp, &new_cp, &cproof).unwrap();
    }
    f.consistency_verify_us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.into(),
        run: ledger.run(&t, run.id).await.unwrap(),
        steps: ledger.trail(&t, run.id).await.unwrap(),
        opened: seals[0].clone(),
        sealed: seals[1].clone(),
        opened_proof: tree.inclusion(0, n).unwrap(),
        sealed_proof: proof.clone(),
        checkpoint: note.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&bundle).unwrap();
    f.bundle_bytes = bytes.len();
    f.bundle_steps = bundle.steps.len();
    let reps = 50;
    let start = Instant::now();
    for _ in 0..reps {
        verify_bundle(&bytes, &keys).unwrap();
    }
    f.bundle_verify_ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
    drop(tree);

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
            "{n} seals: tree {:.0} ms, root {:.2} ms; inclusion {} hashes ({} B) verified in {:.1} us; \
             consistency {}->{n} {} hashes ({} B) in {:.1} us; bundle {} B ({} steps) verified in {:.2} ms; \
             appends/s off {:?} on {:?}, ratio {:.3} ({} checkpoints)",
            f.tree_build_ms,
            f.root_ms,
            f.inclusion_proof_hashes,
            f.inclusion_proof_bytes,
            f.inclusion_verify_us,
            f.consistency_from,
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
