//! A harness for profiling the fresh-instance call under callgrind, which counts
//! instructions and so gives steady per-call figures on a shared, noisy machine:
//!
//! ```text
//! cargo build --release -p cairn-runtime --example call_profile
//! target/release/examples/call_profile /tmp/cairn-profile-cache 10   # compiles, caches
//! valgrind --tool=callgrind --toggle-collect='*Plugin::call*' \
//!     target/release/examples/call_profile /tmp/cairn-profile-cache 2000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! It loads the hostile test plugin with ONE call slot (valgrind cannot reserve the
//! address space of the default 64-slot pool) and makes `calls` fresh-instance `noop`
//! calls one after another on a current-thread runtime. Divide the collected
//! instructions by `calls`.

use std::collections::BTreeMap;

use cairn_manifest::Manifest;
use cairn_runtime::{CallContext, Runtime, RuntimeConfig};
use serde_json::{Value, json};

fn main() {
    let mut args = std::env::args().skip(1);
    let cache = args
        .next()
        .unwrap_or_else(|| "/tmp/cairn-profile-cache".into());
    let calls: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let tools: Vec<Value> = cairn_test_plugins::HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name, "description": name,
                "input_schema": { "type": "object" }, "output_schema": { "type": "object" },
            })
        })
        .collect();
    let manifest = Manifest::from_json_str(
        &json!({
            "id": "hostile", "version": "0.1.0", "publisher": "profile",
            "description": "profile", "tools": tools,
        })
        .to_string(),
    )
    .expect("manifest");
    let mut config = RuntimeConfig::new(cache);
    config.max_concurrent_calls = 1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let runtime = Runtime::new(config).expect("runtime");
        let bytes = std::fs::read(cairn_test_plugins::HOSTILE).expect("hostile plugin built");
        let plugin = runtime
            .load(&bytes, manifest, BTreeMap::new())
            .await
            .expect("load");
        let ctx = CallContext::new("profile", "profile");
        let started = std::time::Instant::now();
        for _ in 0..calls {
            plugin.call(&ctx, "noop", "{}").await.expect("call");
        }
        let per_call = started.elapsed() / calls.max(1) as u32;
        println!("{calls} fresh-instance noop calls, {per_call:?} each");
    });
}
