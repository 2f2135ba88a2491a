//! The wasmtime host that runs Cairn plugins.
//!
//! A plugin is a WebAssembly component targeting the `cairn:plugin/plugin` world
//! (`sdk/wit`) plus a [`Manifest`](cairn_manifest::Manifest). [`Runtime::load`] compiles
//! it once (or loads the machine code from an on-disk cache), checks its `describe()`
//! export against the manifest, and pre-instantiates it; [`Plugin::call`] runs one tool
//! call in a fresh instance, under the manifest's limits clamped by the host's ceilings.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_runtime::{CallContext, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::new("/var/cache/cairn/plugins"))?;
//! let manifest = cairn_manifest::Manifest::from_path("plugins/tasks/cairn-plugin.json".as_ref())?;
//! let bytes = std::fs::read("tasks.wasm")?;
//! let plugin = runtime.load(&bytes, manifest, Default::default()).await?;
//! let outcome = plugin
//!     .call(&CallContext::new("acme", "alice"), "list_tasks", "{}")
//!     .await?;
//! println!("{} ({} outbound requests)", outcome.output, outcome.egress.len());
//! # Ok(()) }
//! ```
//!
//! Modules by concern: `engine` and `cache` (compilation), `limits`, `egress` (the one
//! deny-by-default hook), `kv` and `state` (host capabilities), `plugin` (calls), `error`.
#![warn(missing_docs)]

mod bindings;
mod cache;
mod deadline;
mod egress;
mod engine;
mod error;
mod kv;
mod limits;
mod plugin;
mod runtime;
mod slots;
mod state;

pub use cache::LoadSource;
pub use egress::{
    CeilingRule, CeilingViolation, DEFAULT_DENIED_RANGES, DEFAULT_DNS_TIMEOUT, EgressAuthorizer,
    EgressCeiling, EgressDenial, EgressRecord, EgressRequest, EgressVerdict, IpRange, IpRangeError,
    NoCredentials, blocked_class, redact_url,
};
pub use error::{CallError, Result, RuntimeError, SlotScope, TimeoutKind};
pub use kv::{
    JsonFileKv, KvError, KvScope, KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES, MemoryKv, check_key,
};
pub use limits::{EffectiveLimits, HostCeilings};
pub use plugin::{CallContext, CallFailure, CallOutcome, CallStats, Plugin};
pub use runtime::{Runtime, RuntimeConfig};
