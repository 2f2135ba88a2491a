//! Plugin runtime benchmarks, side by side in one run (`cargo bench -p cairn-runtime`):
//! a fresh-instance call of the trivial `noop` tool next to the same call on a reused
//! instance and the same logic as a native function; cold compile next to a cache load;
//! host start-up; and throughput of concurrent calls on one and two worker threads.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_manifest::Manifest;
use cairn_runtime::{CallContext, LoadSource, Plugin, Runtime, RuntimeConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

use cairn_test_plugins::HOSTILE_TOOLS;

fn hostile_manifest() -> Manifest {
    let tools: Vec<Value> = HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "description": name,
                "input_schema": { "type": "object" },
                "output_schema": { "type": "object" },
            })
        })
        .collect();
    let manifest = json!({
        "id": "hostile", "version": "0.1.0", "publisher": "bench",
        "description": "bench", "tools": tools,
    });
    Manifest::from_json_str(&manifest.to_string()).unwrap()
}

/// A plugin to load: the hostile plugin or an example plugin that built.
struct BenchPlugin {
    name: String,
    bytes: Vec<u8>,
    manifest: Manifest,
    config: BTreeMap<String, String>,
}

fn plugins() -> Vec<BenchPlugin> {
    let mut all = vec![BenchPlugin {
        name: "hostile".to_string(),
        bytes: std::fs::read(cairn_test_plugins::HOSTILE).unwrap(),
        manifest: hostile_manifest(),
        config: BTreeMap::new(),
    }];
    for example in cairn_test_plugins::EXAMPLE_PLUGINS {
        let manifest = Manifest::from_path(Path::new(example.manifest)).unwrap();
        let config = manifest
            .config
            .iter()
            .filter(|(_, s)| s.required)
            .map(|(k, _)| (k.clone(), "bench".to_string()))
            .collect();
        all.push(BenchPlugin {
            name: example.name.to_string(),
            bytes: std::fs::read(example.component).unwrap(),
            manifest,
            config,
        });
    }
    all
}

fn tokio_rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn load_hostile(rt: &tokio::runtime::Runtime, cache: &Path) -> (Runtime, Plugin) {
    let runtime = Runtime::new(RuntimeConfig::new(cache)).unwrap();
    let plugin = rt
        .block_on(runtime.load(
            &std::fs::read(cairn_test_plugins::HOSTILE).unwrap(),
            hostile_manifest(),
            BTreeMap::new(),
        ))
        .unwrap();
    (runtime, plugin)
}

/// The guest's `noop`, natively: parse the arguments, answer `{}`.
fn native_noop(arguments: &str) -> String {
    let _: Value = serde_json::from_str(arguments).unwrap();
    "{}".to_string()
}

fn calls(c: &mut Criterion) {
    let rt = tokio_rt(2);
    let cache = tempfile::TempDir::new().unwrap();
    let (_runtime, plugin) = load_hostile(&rt, cache.path());
    let ctx = CallContext::new("bench", "bench");

    let mut group = c.benchmark_group("noop_call");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("fresh_instance", |b| {
        b.to_async(&rt)
            .iter(|| async { plugin.call(&ctx, "noop", "{}").await.unwrap() })
    });
    group.bench_function("reused_instance", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (plugin, ctx) = (&plugin, &ctx);
            async move {
                plugin
                    .bench_reused_instance(ctx, "noop", "{}", iters)
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("native_fn", |b| b.iter(|| native_noop(black_box("{}"))));
    group.finish();
}

fn loading(c: &mut Criterion) {
    let rt = tokio_rt(2);
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(8));
    for BenchPlugin {
        name,
        bytes,
        manifest,
        config,
    } in plugins()
    {
        // Cold: a new runtime on an empty cache directory each time (set-up not timed).
        group.bench_function(BenchmarkId::new("cold_compile", &name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::TempDir::new().unwrap();
                    let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
                    let started = Instant::now();
                    let plugin = rt
                        .block_on(runtime.load(&bytes, manifest.clone(), config.clone()))
                        .unwrap();
                    total += started.elapsed();
                    assert_eq!(plugin.load_source(), LoadSource::Compiled);
                }
                total
            })
        });
        let dir = tempfile::TempDir::new().unwrap();
        let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
        rt.block_on(runtime.load(&bytes, manifest.clone(), config.clone()))
            .unwrap();
        group.bench_function(BenchmarkId::new("cache_load", &name), |b| {
            b.iter(|| {
                let plugin = rt
                    .block_on(runtime.load(&bytes, manifest.clone(), config.clone()))
                    .unwrap();
                assert_eq!(plugin.load_source(), LoadSource::Cache);
                plugin
            })
        });
    }
    group.finish();
}

fn startup(c: &mut Criterion) {
    let rt = tokio_rt(2);
    let all = plugins();
    let dir = tempfile::TempDir::new().unwrap();
    {
        let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
        for p in &all {
            rt.block_on(runtime.load(&p.bytes, p.manifest.clone(), p.config.clone()))
                .unwrap();
        }
    }
    let mut group = c.benchmark_group("startup");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(
        format!("runtime_new_and_load_{}_plugins_from_cache", all.len()),
        |b| {
            b.iter(|| {
                let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
                let loaded: Vec<Plugin> = all
                    .iter()
                    .map(|p| {
                        rt.block_on(runtime.load(&p.bytes, p.manifest.clone(), p.config.clone()))
                            .unwrap()
                    })
                    .collect();
                (runtime, loaded)
            })
        },
    );
    group.finish();
}

/// Calls per batch in the throughput benchmark.
const BATCH: u64 = 256;

fn throughput(c: &mut Criterion) {
    let cache = tempfile::TempDir::new().unwrap();
    let mut group = c.benchmark_group("concurrent_noop_calls");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for workers in [1usize, 2] {
        let rt = tokio_rt(workers);
        let (_runtime, plugin) = load_hostile(&rt, cache.path());
        group.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.to_async(&rt).iter(|| {
                let plugin = plugin.clone();
                async move {
                    // Two tasks per worker, each making its share of the batch.
                    let tasks: Vec<_> = (0..workers * 2)
                        .map(|_| {
                            let plugin = plugin.clone();
                            tokio::spawn(async move {
                                let ctx = CallContext::new("bench", "bench");
                                for _ in 0..BATCH / (workers as u64 * 2) {
                                    plugin.call(&ctx, "noop", "{}").await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, calls, loading, startup, throughput);
criterion_main!(benches);
