//! The state of one call's `Store`: WASI (sandboxed), `wasi:http` with the egress hooks,
//! Cairn's own imports (logging, kv, config), and the limit bookkeeping.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{config, kv, logging};
use crate::egress::EgressHooks;
use crate::kv::{KvError, KvScope, KvStore, check_key};
use crate::limits::MemoryLimiter;

/// How much of the guest's stderr is kept, for panic messages in trap reports.
const STDERR_CAPTURE_BYTES: usize = 4096;

pub(crate) struct CallState {
    /// Built on the guest's first WASI call: most tool calls never make one, and building
    /// a context (random number generators, clocks, boxed streams) was a tenth of a
    /// fresh-instance call. Each call still gets its own, never a shared one.
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: EgressHooks,
    pub(crate) host: HostCapabilities,
    pub(crate) limiter: MemoryLimiter,
    /// Epoch ticks the guest has been seen running, and the budget.
    pub(crate) ticks: u64,
    pub(crate) tick_budget: u64,
    pub(crate) cpu_exhausted: bool,
    /// The guest's stderr, captured once the WASI context exists.
    stderr: Option<MemoryOutputPipe>,
}

/// What the plugin's own imports reach: logging, kv and config, already scoped.
pub(crate) struct HostCapabilities {
    pub(crate) scope: KvScope,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) kv_quota_bytes: u64,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) log_lines_left: u32,
    pub(crate) log_lines_dropped: u32,
    pub(crate) log_line_bytes: usize,
}

impl CallState {
    pub(crate) fn new(
        hooks: EgressHooks,
        host: HostCapabilities,
        memory_bytes: u64,
        tick_budget: u64,
    ) -> Self {
        Self {
            wasi: None,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks,
            host,
            limiter: MemoryLimiter::new(memory_bytes),
            ticks: 0,
            tick_budget: tick_budget.max(1),
            cpu_exhausted: false,
            stderr: None,
        }
    }

    /// The tail of what the guest wrote to stderr (a panic message, usually).
    pub(crate) fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|pipe| String::from_utf8_lossy(&pipe.contents()).trim().to_string())
            .unwrap_or_default()
    }
}

/// This call's WASI context: closed (no preopens, env, args or network) and writing stderr
/// into a bounded in-memory pipe. The builder's defaults are already closed; they are
/// spelled out so a change of defaults upstream cannot open anything.
fn sandboxed_wasi() -> (WasiCtx, MemoryOutputPipe) {
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
    let wasi = WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .stderr(stderr.clone())
        .build();
    (wasi, stderr)
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi.get_or_insert_with(|| {
            let (wasi, stderr) = sandboxed_wasi();
            self.stderr = Some(stderr);
            wasi
        });
        WasiCtxView {
            ctx: wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl logging::Host for CallState {
    async fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let host = &mut self.host;
        if host.log_lines_left == 0 {
            host.log_lines_dropped = host.log_lines_dropped.saturating_add(1);
            return Ok(());
        }
        host.log_lines_left -= 1;
        let message = truncate(&message, host.log_line_bytes);
        let (plugin, tenant, user) = (&host.scope.plugin, &host.scope.tenant, &host.scope.user);
        match level {
            logging::Level::Trace => {
                tracing::trace!(target: "cairn::plugin", plugin, tenant, user, "{message}")
            }
            logging::Level::Debug => {
                tracing::debug!(target: "cairn::plugin", plugin, tenant, user, "{message}")
            }
            logging::Level::Info => {
                tracing::info!(target: "cairn::plugin", plugin, tenant, user, "{message}")
            }
            logging::Level::Warn => {
                tracing::warn!(target: "cairn::plugin", plugin, tenant, user, "{message}")
            }
            logging::Level::Error => {
                tracing::error!(target: "cairn::plugin", plugin, tenant, user, "{message}")
            }
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn to_wit(e: KvError) -> kv::KvError {
    match e {
        KvError::QuotaExceeded { .. } => kv::KvError::QuotaExceeded,
        KvError::InvalidKey(m) => kv::KvError::InvalidKey(m),
        KvError::Store(m) => kv::KvError::Store(m),
    }
}

impl kv::Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        let h = &self.host;
        if let Err(e) = check_key(&key) {
            return Ok(Err(to_wit(e)));
        }
        Ok(h.kv.get(&h.scope, &key).await.map_err(to_wit))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let h = &self.host;
        if let Err(e) = check_key(&key) {
            return Ok(Err(to_wit(e)));
        }
        Ok(h.kv
            .set(&h.scope, &key, value, h.kv_quota_bytes)
            .await
            .map_err(to_wit))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv::KvError>> {
        let h = &self.host;
        if let Err(e) = check_key(&key) {
            return Ok(Err(to_wit(e)));
        }
        Ok(h.kv.delete(&h.scope, &key).await.map_err(to_wit))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, kv::KvError>> {
        let h = &self.host;
        Ok(h.kv.list_keys(&h.scope, &prefix).await.map_err(to_wit))
    }
}

impl config::Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.host.config.get(&key).cloned())
    }
}

// `use types.{...}` in the WIT gives `types` its own (empty) host trait.
impl crate::bindings::cairn::plugin::types::Host for CallState {}
