//! Errors: host failures at start-up and load time ([`RuntimeError`]) and the ways one
//! tool call can fail ([`CallError`]).
//!
//! Traps stay distinct from the plugin's own typed errors: a [`CallError::Tool`] is
//! something the plugin chose to return and the model may correct for, everything else is
//! the host stopping the plugin, and says which limit or rule did it.

use std::path::PathBuf;
use std::time::Duration;

use crate::egress::EgressDenial;

/// Result alias for host-level operations.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Failures of [`Runtime::new`](crate::Runtime::new) and [`Runtime::load`](crate::Runtime::load).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The wasmtime engine could not be configured (pooling allocator, epochs).
    #[error("configuring the wasmtime engine: {0}")]
    Engine(String),
    /// Linking WASI, `wasi:http` or Cairn's own imports failed.
    #[error("building the linker: {0}")]
    Linker(String),
    /// The precompiled-component cache could not be read or written.
    #[error("plugin cache at {path}: {source}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid component for this engine.
    #[error("compiling the component: {0}")]
    Compile(String),
    /// The component imports something the host does not grant, or does not export
    /// `cairn:plugin/tools`.
    #[error("the component does not fit the cairn:plugin world: {0}")]
    Incompatible(String),
    /// Instantiating or calling `describe()` at load time failed.
    #[error("calling describe() on the component: {0}")]
    Describe(String),
    /// The administrator's config does not fit the manifest's `config` declarations.
    #[error("plugin config: {0}")]
    Config(String),
    /// What the component's `describe()` says disagrees with its manifest.
    #[error("the manifest does not match the component: {0}")]
    ManifestMismatch(String),
}

/// Which pool of call slots was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotScope {
    /// The tenant's share (`max_concurrent_calls_per_tenant`).
    Tenant,
    /// The whole host (`max_concurrent_calls`).
    Host,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// Time spent running guest code (epoch ticks), bounded by `cpu_ms_per_call`.
    Cpu,
    /// Total time of the call including waits on HTTP, bounded by the host ceiling.
    WallClock,
}

/// Why one tool call failed. `Display` names the rule and the values involved so the
/// message can go to the model, the user and the audit ledger as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin returned its own typed error.
    #[error("tool error {code}: {message}")]
    Tool {
        /// The plugin's machine-readable code, e.g. `invalid_input`.
        code: String,
        /// The plugin's explanation.
        message: String,
    },
    /// The plugin has no tool by that name (checked before any instance is created).
    #[error("unknown tool {tool:?}; the plugin exports [{available}]")]
    UnknownTool {
        /// The name asked for.
        tool: String,
        /// The tools the plugin describes, comma-separated.
        available: String,
    },
    /// The call ran out of CPU or wall-clock time and was stopped.
    #[error("{}", timeout_message(*.kind, *.limit))]
    Timeout {
        /// Which budget ran out.
        kind: TimeoutKind,
        /// The budget.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "memory limit: the plugin asked for {requested_bytes} bytes of linear memory, over its cap of {limit_bytes} bytes (memory_mib)"
    )]
    MemoryLimit {
        /// The cap in bytes.
        limit_bytes: u64,
        /// The total size the refused growth asked for.
        requested_bytes: u64,
    },
    /// The result (or the tool error in its place) is larger than `max_output_bytes`.
    #[error(
        "output too large: {}, over the limit of {limit} bytes (max_output_bytes)",
        match actual {
            Some(n) => format!("{n} bytes"),
            None => "more than the host takes from a plugin at once, refused unread".to_string(),
        }
    )]
    OutputTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// The size the plugin returned; `None` when it was over the per-transfer cap
        /// ([`EffectiveLimits::transfer_bytes`](crate::EffectiveLimits::transfer_bytes))
        /// and so refused before the host read it.
        actual: Option<u64>,
    },
    /// The plugin returned something that is not JSON.
    #[error("the plugin returned invalid JSON: {message}")]
    InvalidOutput {
        /// The parse error.
        message: String,
    },
    /// The host refused an outbound request, and the call failed after it.
    #[error("egress denied: {0}")]
    EgressDenied(EgressDenial),
    /// An allowed response was larger than `max_http_response_bytes`, and the call
    /// failed after it.
    #[error(
        "HTTP response too large: {url} sent more than {limit} bytes (max_http_response_bytes)"
    )]
    HttpResponseTooLarge {
        /// The request's URL.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The plugin trapped: a panic, stack overflow, `unreachable`, an out-of-bounds
    /// access, or a call to `exit`.
    #[error("the plugin trapped: {message}")]
    Trap {
        /// The trap and, for a panic, the panic message the guest printed.
        message: String,
    },
    /// No call slot became free within the bounded wait; nothing ran. Try again later.
    #[error(
        "busy: all {limit} call slots {} were taken for {} ms; retry after {} s",
        match scope { SlotScope::Tenant => "of this tenant (max_concurrent_calls_per_tenant)", SlotScope::Host => "of the host (max_concurrent_calls)" },
        waited.as_millis(),
        retry_after.as_secs()
    )]
    Busy {
        /// Which pool was full.
        scope: SlotScope,
        /// Its size.
        limit: u32,
        /// How long the call waited.
        waited: Duration,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// The host itself failed to run the call (for example instantiation failed).
    #[error("host error running the plugin: {message}")]
    Host {
        /// What went wrong.
        message: String,
    },
}

fn timeout_message(kind: TimeoutKind, limit: Duration) -> String {
    match kind {
        TimeoutKind::Cpu => format!(
            "timeout: the call used its CPU budget of {} ms (cpu_ms_per_call) and was stopped",
            limit.as_millis()
        ),
        TimeoutKind::WallClock => format!(
            "timeout: the call ran past the host's wall-clock limit of {} ms and was stopped",
            limit.as_millis()
        ),
    }
}

/// Formats a wasmtime error with its whole context chain.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}
