//! Fair call slots: one tenant floods the host while another tenant's calls are timed.
//!
//! `cargo bench -p cairn-runtime --bench fair_slots -- [--json] [--seconds N]`
//!
//! The host has 8 call slots. Tenant `flood` keeps 32 calls of a tool that spins for
//! 200 ms of CPU in flight (retrying at once when refused); tenant `quiet` makes `echo`
//! calls one after another and we record their latency. Run twice: with no per-tenant
//! share (8 of 8, waits of 30 s: the behaviour before issue 10) and with a share of 2 (and
//! a 100 ms wait, so the flood is refused rather than queued). Prints p50/p95/max of the
//! quiet tenant's latency, and the flood's completed and refused calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_manifest::Manifest;
use cairn_runtime::{CallContext, CallError, HostCeilings, Runtime, RuntimeConfig};
use cairn_test_plugins::HOSTILE_TOOLS;
use serde_json::{Value, json};

fn manifest() -> Manifest {
    let tools: Vec<Value> = HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name, "description": name,
                "input_schema": { "type": "object" }, "output_schema": { "type": "object" },
            })
        })
        .collect();
    let manifest = json!({
        "id": "hostile", "version": "0.1.0", "publisher": "bench", "description": "bench",
        "tools": tools, "permissions": { "cpu_ms_per_call": 200 },
    });
    Manifest::from_json_str(&manifest.to_string()).unwrap()
}

struct Figures {
    share: u32,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    quiet_calls: usize,
    flood_done: u64,
    flood_refused: u64,
}

async fn scenario(share: u32, wait: Duration, seconds: u64) -> Figures {
    let cache = std::env::temp_dir().join("cairn-bench-fair-slots");
    let runtime = Runtime::new(RuntimeConfig {
        ceilings: HostCeilings::default(),
        max_concurrent_calls: 8,
        max_concurrent_calls_per_tenant: share,
        call_wait: wait,
        ..RuntimeConfig::new(cache)
    })
    .unwrap();
    let bytes = std::fs::read(cairn_test_plugins::HOSTILE).unwrap();
    let plugin = runtime
        .load(&bytes, manifest(), Default::default())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..32 {
        let (plugin, stop, done, refused) = (
            plugin.clone(),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&refused),
        );
        flood.push(tokio::spawn(async move {
            let ctx = CallContext::new("flood", format!("bot{i}"));
            while !stop.load(Ordering::Relaxed) {
                match plugin.call(&ctx, "infinite_loop", "{}").await {
                    Err(f) if matches!(f.error, CallError::Busy { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        // A client honouring Retry-After would wait; a hostile one does not.
                        tokio::task::yield_now().await;
                    }
                    _ => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ctx = CallContext::new("quiet", "alice");
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let outcome = plugin.call(&ctx, "echo", r#"{"hello":"world"}"#).await;
        let elapsed = started.elapsed();
        if outcome.is_ok() {
            latencies.push(elapsed.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        share,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: at(1.0),
        quiet_calls: latencies.len(),
        flood_done: done.load(Ordering::Relaxed),
        flood_refused: refused.load(Ordering::Relaxed),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let as_json = args.iter().any(|a| a == "--json");
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // `cargo bench` passes `--bench`; nothing else here is a criterion option.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = rt.block_on(async {
        vec![
            scenario(8, Duration::from_secs(30), seconds).await,
            scenario(2, Duration::from_millis(100), seconds).await,
        ]
    });
    for f in &runs {
        if as_json {
            println!(
                "{}",
                json!({
                    "bench": "fair_slots", "host_slots": 8, "tenant_share": f.share,
                    "quiet_p50_ms": f.p50_ms, "quiet_p95_ms": f.p95_ms, "quiet_max_ms": f.max_ms,
                    "quiet_calls": f.quiet_calls, "flood_completed": f.flood_done,
                    "flood_refused": f.flood_refused, "seconds": seconds,
                })
            );
        } else {
            println!(
                "share {}/8: quiet echo p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} calls); flood {} completed, {} refused",
                f.share, f.p50_ms, f.p95_ms, f.max_ms, f.quiet_calls, f.flood_done, f.flood_refused
            );
        }
    }
}
