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
        let message = escape_log_line(&message, host.log_line_bytes);
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

/// A plugin's log message made safe for a line-oriented log: control characters (a
/// newline would start a forged log line, an ANSI escape would rewrite the terminal),
/// line and paragraph separators and bidirectional overrides are written as `\u{..}`
/// escapes (`\n`, `\r`, `\t` for the common ones) and a backslash as `\\`, so an
/// escape in the output always came from here. Cut to at most `max` bytes, never inside
/// an escape.
fn escape_log_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let escaped: Option<String> = match c {
            '\\' => Some("\\\\".into()),
            '\n' => Some("\\n".into()),
            '\r' => Some("\\r".into()),
            '\t' => Some("\\t".into()),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                Some(c.escape_unicode().to_string())
            }
            _ => None,
        };
        let len = escaped.as_ref().map_or(c.len_utf8(), String::len);
        if out.len() + len > max {
            break;
        }
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

fn to_wit(e: KvError) -> kv::KvError {
    match e {
        KvError::QuotaExceeded { .. } => kv::KvError::QuotaExceeded,
        KvError::InvalidKey(m) => kv::KvError::InvalidKey(m),
        KvError::Store(m) => kv::KvError::Store(m),
        // The WIT has no variant for it (adding one would change the plugin ABI).
        e @ KvError::ValueTooLarge { .. } => kv::KvError::Store(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::escape_log_line;

    /// Regression (issue 10): a plugin's log line with a newline forged a second line.
    #[test]
    fn log_lines_cannot_forge_lines_or_escapes() {
        let forged =
            "ok\n2026-12-02T10:00:00Z  INFO cairn::auth: admin login\r\x1b[2K\u{2028}x\u{202e}";
        let line = escape_log_line(forged, 4096);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(
            !line.contains('\u{2028}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        assert_eq!(
            line,
            "ok\\n2026-12-02T10:00:00Z  INFO cairn::auth: admin login\\r\\u{1b}[2K\\u{2028}x\\u{202e}"
        );
        // A literal backslash-n in the message is not mistaken for an escaped newline.
        assert_eq!(escape_log_line("a\\nb", 64), "a\\\\nb");
        // Cut at the limit, never inside an escape or a character.
        assert_eq!(escape_log_line("abc\ndef", 4), "abc");
        assert_eq!(escape_log_line("ab\ncd", 4), "ab\\n");
        assert_eq!(escape_log_line("aé", 2), "a");
        assert_eq!(escape_log_line("plain text", 4096), "plain text");
    }
}
