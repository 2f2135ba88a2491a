//! The precompiled-component cache: a restart loads without compiling, and a corrupted
//! entry is detected and rebuilt rather than trusted.

use cairn_runtime::{LoadSource, RuntimeConfig};
use serde_json::json;

use crate::helpers::{hostile_bytes, hostile_manifest, runtime, test_ceilings};

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        ceilings: test_ceilings(),
        ..RuntimeConfig::new(dir)
    }
}

async fn load_source(dir: &std::path::Path) -> LoadSource {
    let rt = runtime(config(dir));
    let plugin = rt
        .load(
            hostile_bytes(),
            hostile_manifest(json!({}), json!({})),
            Default::default(),
        )
        .await
        .expect("loads");
    plugin
        .call(&crate::helpers::alice(), "noop", "{}")
        .await
        .expect("runs");
    plugin.load_source()
}

fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_loads_from_the_cache_and_a_corrupt_entry_is_rebuilt() {
    let dir = tempfile::TempDir::new().unwrap();
    assert_eq!(load_source(dir.path()).await, LoadSource::Compiled);
    // A new runtime (a restart) on the same directory does not compile.
    assert_eq!(load_source(dir.path()).await, LoadSource::Cache);

    let files = artifacts(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    // Corrupted: detected by its digest, recompiled, and the entry repaired.
    assert_eq!(load_source(dir.path()).await, LoadSource::Compiled);
    assert_eq!(load_source(dir.path()).await, LoadSource::Cache);

    // Truncated to nothing: same.
    std::fs::write(&files[0], b"").unwrap();
    assert_eq!(load_source(dir.path()).await, LoadSource::Compiled);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
