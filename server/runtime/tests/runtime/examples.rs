//! The example plugins under `plugins/` load: their components build, link against the
//! host, and their `describe()` matches their manifests.

use cairn_manifest::Manifest;
use cairn_runtime::LoadSource;

use crate::helpers::{default_config, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_plugin_loads_and_matches_its_manifest() {
    // TODO(runtime): EXAMPLE_PLUGINS is empty while the example plugins do not build
    // for wasm32-wasip2; see cairn-test-plugins' build.rs.
    let rt = runtime(default_config());
    for example in cairn_test_plugins::EXAMPLE_PLUGINS {
        let manifest = Manifest::from_path(example.manifest.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", example.name));
        let bytes = std::fs::read(example.component).unwrap();
        // Required settings get a placeholder; the rest take their defaults.
        let config = manifest
            .config
            .iter()
            .filter(|(_, s)| s.required)
            .map(|(k, _)| (k.clone(), "test".to_string()))
            .collect();
        let plugin = rt
            .load(&bytes, manifest, config)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", example.name));
        assert!(!plugin.describe().is_empty(), "{}", example.name);
        assert!(matches!(
            plugin.load_source(),
            LoadSource::Compiled | LoadSource::Cache
        ));
    }
}
