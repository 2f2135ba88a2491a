//! Running a package's tools in the real sandbox, as `cairn-plugin test` does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cairn_runtime::{CallContext, CallFailure, JsonFileKv, Plugin, Runtime, RuntimeConfig};

use cairn_package::Package;

/// Where compiled components are cached between runs (`CAIRN_CACHE_DIR`, default
/// `~/.cache/cairn/compiled`, the server's default too).
pub fn compiled_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("cairn").join("compiled")
}

/// Opens a runtime with the host's default ceilings and the on-disk compiled-component
/// cache ([`compiled_cache_dir`]); the key-value store is in memory, or the JSON file at
/// `kv_file` so that state survives from one `cairn-plugin test` to the next.
pub fn open_runtime(kv_file: Option<&Path>) -> anyhow::Result<Runtime> {
    let cache_dir = compiled_cache_dir();
    let mut config = RuntimeConfig::new(&cache_dir);
    if let Some(path) = kv_file {
        let kv = JsonFileKv::open(path)
            .with_context(|| format!("cannot open the key-value file {}", path.display()))?;
        config.kv = Arc::new(kv);
    }
    Runtime::new(config).with_context(|| {
        format!(
            "cannot start the plugin runtime (cache {})",
            cache_dir.display()
        )
    })
}

/// Loads a package, which also checks the component's tools against its manifest.
pub async fn load(
    runtime: &Runtime,
    package: &Package,
    config: BTreeMap<String, String>,
) -> anyhow::Result<Plugin> {
    let plugin = runtime
        .load(package.component(), package.manifest().clone(), config)
        .await?;
    Ok(plugin)
}

/// A failed tool call, with what the sandbox recorded about it.
#[derive(Debug)]
pub struct ToolCallFailed(CallFailure);

impl fmt::Display for ToolCallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.error)?;
        for record in &self.0.egress {
            let verdict = serde_json::to_string(&record.verdict).unwrap_or_default();
            write!(f, "\n  egress: {} {} {verdict}", record.method, record.url)?;
        }
        Ok(())
    }
}

impl std::error::Error for ToolCallFailed {}

/// Calls one tool and returns its result as JSON.
pub async fn call(
    plugin: &Plugin,
    tenant: &str,
    user: &str,
    tool: &str,
    arguments: &serde_json::Value,
) -> Result<serde_json::Value, ToolCallFailed> {
    let context = CallContext::new(tenant, user);
    let outcome = plugin
        .call(&context, tool, &arguments.to_string())
        .await
        .map_err(ToolCallFailed)?;
    // The runtime checked the output is JSON within its size cap; keep the text if a
    // plugin somehow returns something else, rather than hiding it.
    Ok(serde_json::from_str(&outcome.output).unwrap_or(serde_json::Value::String(outcome.output)))
}
