//! [`Plugin`]: a loaded component and how one tool call runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_manifest::{Manifest, ToolDescriptor};
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{self, PluginPre};
use crate::cache::LoadSource;
use crate::deadline;
use crate::egress::{CallEgress, EgressHooks, EgressPolicy, EgressRecord, EgressVerdict};
use crate::error::{CallError, TimeoutKind, chain};
use crate::kv::KvScope;
use crate::limits::EffectiveLimits;
use crate::runtime::Shared;
use crate::state::{CallState, HostCapabilities};

/// Who a call is for. The host scopes key-value data and credentials by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user: String,
}

impl CallContext {
    /// A context for `user` in `tenant`.
    pub fn new(tenant: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            user: user.into(),
        }
    }
}

/// Facts about one call, for logs, metrics and the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStats {
    /// Wall-clock time from the start of instantiation to the result.
    pub elapsed: Duration,
    /// Log lines dropped because the call passed its line budget.
    pub log_lines_dropped: u32,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The tool's result: JSON text, checked to parse and to fit `max_output_bytes`.
    pub output: String,
    /// Every outbound request the call made and what the host decided.
    pub egress: Vec<EgressRecord>,
    /// Facts about the call.
    pub stats: CallStats,
}

/// A failed call: the error, plus the egress decisions made before it failed (the
/// ledger records those whatever the outcome).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct CallFailure {
    /// What went wrong.
    pub error: CallError,
    /// Every outbound request the call made and what the host decided.
    pub egress: Vec<EgressRecord>,
    /// Facts about the call.
    pub stats: CallStats,
}

/// A loaded plugin. Cheap to clone; every [`call`](Plugin::call) runs in a fresh instance.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.inner.id)
            .field("tools", &self.inner.descriptors.len())
            .field("limits", &self.inner.limits)
            .field("source", &self.inner.source)
            .finish()
    }
}

pub(crate) struct PluginInner {
    pub(crate) runtime: Arc<Shared>,
    pub(crate) id: String,
    pub(crate) manifest: Manifest,
    pub(crate) descriptors: Vec<ToolDescriptor>,
    pub(crate) pre: PluginPre<CallState>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) limits: EffectiveLimits,
    pub(crate) egress: Arc<EgressPolicy>,
    pub(crate) source: LoadSource,
}

impl Plugin {
    /// The plugin's id, from its manifest.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The manifest the plugin was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// What the component's `describe()` export returned at load (it matched the
    /// manifest, or the load would have failed).
    pub fn describe(&self) -> &[ToolDescriptor] {
        &self.inner.descriptors
    }

    /// The limits calls run under: the manifest's, clamped by the host's ceilings.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.inner.limits
    }

    /// Whether the machine code was compiled at load or came from the cache.
    pub fn load_source(&self) -> LoadSource {
        self.inner.source
    }

    /// Calls `tool` with `arguments_json` in a fresh instance.
    ///
    /// A fresh `Store` and instance per call means nothing one user's call leaves in the
    /// plugin's memory is visible to the next; the pooling allocator and the
    /// pre-instantiated component keep that cheap. The call is bounded by the CPU
    /// budget (epoch ticks: the guest yields to other tasks every tick and is stopped
    /// at the budget), a wall-clock limit for time spent waiting on HTTP, the memory
    /// cap, the output cap and the egress policy. Calls beyond the runtime's
    /// `max_concurrent_calls` wait for a slot.
    #[tracing::instrument(skip(self, ctx, arguments_json), fields(plugin = %self.inner.id, tenant = %ctx.tenant, user = %ctx.user))]
    pub async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments_json: &str,
    ) -> Result<CallOutcome, CallFailure> {
        let inner = &self.inner;
        if !inner.descriptors.iter().any(|d| d.name == tool) {
            return Err(CallFailure {
                error: CallError::UnknownTool {
                    tool: tool.to_string(),
                    available: inner
                        .descriptors
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                egress: Vec::new(),
                stats: CallStats {
                    elapsed: Duration::ZERO,
                    log_lines_dropped: 0,
                },
            });
        }
        let _slot = match inner.runtime.slots.acquire(&ctx.tenant).await {
            Ok(slot) => slot,
            Err(error) => {
                return Err(CallFailure {
                    error,
                    egress: Vec::new(),
                    stats: CallStats {
                        elapsed: Duration::ZERO,
                        log_lines_dropped: 0,
                    },
                });
            }
        };
        let (mut store, egress) = inner.new_store(ctx);
        let started = Instant::now();
        let run = async {
            let instance = inner.pre.instantiate_async(&mut store).await?;
            instance
                .cairn_plugin_tools()
                .call_call(&mut store, tool, arguments_json)
                .await
        };
        let deadline = tokio::time::Instant::from_std(started) + inner.limits.wall_clock;
        let result = deadline::within(deadline, std::pin::pin!(run)).await;
        let stats = CallStats {
            elapsed: started.elapsed(),
            log_lines_dropped: store.data().host.log_lines_dropped,
        };
        let records = egress.take_records();
        let error = match result {
            Ok(Ok(Ok(output))) => match inner.check_output(output) {
                Ok(output) => {
                    return Ok(CallOutcome {
                        output,
                        egress: records,
                        stats,
                    });
                }
                Err(error) => error,
            },
            Ok(Ok(Err(bindings::ToolError { code, message }))) => {
                host_refusal(&records).unwrap_or_else(|| inner.tool_error(code, message))
            }
            Ok(Err(trap)) => inner.classify_trap(store.data(), &trap, &records),
            Err(_elapsed) => CallError::Timeout {
                kind: TimeoutKind::WallClock,
                limit: inner.limits.wall_clock,
            },
        };
        tracing::warn!(%error, "tool call failed");
        Err(CallFailure {
            error,
            egress: records,
            stats,
        })
    }

    /// Runs `iterations` calls of `tool` on ONE instance and returns the time they took.
    ///
    /// Only for benchmarks comparing fresh-instance calls with a reused instance: reusing
    /// an instance shares guest state between calls, which [`Plugin::call`] never does.
    #[doc(hidden)]
    pub async fn bench_reused_instance(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments_json: &str,
        iterations: u64,
    ) -> Result<Duration, CallError> {
        let inner = &self.inner;
        let _slot = inner.runtime.slots.acquire(&ctx.tenant).await?;
        let (mut store, _egress) = inner.new_store(ctx);
        // The CPU budget is per call; many calls on one instance would add up past it.
        store.data_mut().tick_budget = u64::MAX;
        let host = |e: wasmtime::Error| CallError::Host { message: chain(&e) };
        let instance = inner
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(host)?;
        let tools = instance.cairn_plugin_tools();
        let started = Instant::now();
        for _ in 0..iterations {
            tools
                .call_call(&mut store, tool, arguments_json)
                .await
                .map_err(host)?
                .map_err(|e| CallError::Tool {
                    code: e.code,
                    message: e.message,
                })?;
        }
        Ok(started.elapsed())
    }
}

impl PluginInner {
    /// A store for one call, with every limit installed.
    pub(crate) fn new_store(&self, ctx: &CallContext) -> (Store<CallState>, Arc<CallEgress>) {
        let rt = &self.runtime;
        let egress = Arc::new(CallEgress::new(
            Arc::clone(&self.egress),
            Arc::clone(&rt.authorizer),
            ctx.tenant.clone(),
            ctx.user.clone(),
            self.id.clone(),
        ));
        let host = HostCapabilities {
            scope: KvScope {
                tenant: ctx.tenant.clone(),
                plugin: self.id.clone(),
                user: ctx.user.clone(),
            },
            kv: Arc::clone(&rt.kv),
            kv_quota_bytes: self.limits.kv_quota_bytes,
            config: Arc::clone(&self.config),
            log_lines_left: self.limits.log_lines_per_call,
            log_lines_dropped: 0,
            log_line_bytes: self.limits.log_line_bytes,
        };
        let tick = rt.epoch_tick.as_nanos().max(1);
        let budget = self.limits.cpu.as_nanos().div_ceil(tick) as u64;
        let state = CallState::new(
            EgressHooks::new(Arc::clone(&egress)),
            host,
            self.limits.memory_bytes,
            budget,
        );
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Bounds every string and list the guest hands over (its result, its tool error,
        // a host function's arguments): wasmtime checks the length against this before it
        // copies anything, so the host never allocates a payload's size to find it too big.
        store.set_hostcall_fuel(self.limits.transfer_bytes);
        // Count the ticks the guest is seen running; yield to the executor on each so
        // one busy plugin cannot starve other calls, and stop it at the budget.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| {
            let state = cx.data_mut();
            state.ticks += 1;
            if state.ticks >= state.tick_budget {
                state.cpu_exhausted = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        (store, egress)
    }

    /// Calls `describe()` in a fresh instance, under the same limits as a tool call.
    pub(crate) async fn describe_component(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<bindings::ToolDescriptor>, CallError> {
        let _slot = self.runtime.slots.acquire(&ctx.tenant).await?;
        let (mut store, egress) = self.new_store(ctx);
        // The descriptors carry every tool's schemas: more than one result may hold.
        store.set_hostcall_fuel(self.limits.transfer_bytes.max(DESCRIBE_TRANSFER_BYTES));
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance
                .cairn_plugin_tools()
                .call_describe(&mut store)
                .await
        };
        let deadline = tokio::time::Instant::now() + self.limits.wall_clock;
        let result = deadline::within(deadline, std::pin::pin!(run)).await;
        match result {
            Ok(Ok(descriptors)) => Ok(descriptors),
            Ok(Err(trap)) => {
                let records = egress.take_records();
                Err(self.classify_trap(store.data(), &trap, &records))
            }
            Err(_) => Err(CallError::Timeout {
                kind: TimeoutKind::WallClock,
                limit: self.limits.wall_clock,
            }),
        }
    }

    /// The plugin's own error, cut to the host's limits: its message reaches the ledger
    /// (twice), the API and the model, so a plugin must not be able to make it huge.
    fn tool_error(&self, code: String, message: String) -> CallError {
        let limit = self.limits.max_tool_error_bytes;
        CallError::Tool {
            code: truncate(code, MAX_TOOL_ERROR_CODE_BYTES),
            message: truncate(message, limit),
        }
    }

    /// Checks a result the host took in: one no larger than the per-transfer cap, so
    /// this check costs at most that copy. Larger ones never get here (see
    /// [`transfer_refused`]).
    fn check_output(&self, output: String) -> Result<String, CallError> {
        let limit = self.limits.max_output_bytes;
        let actual = output.len() as u64;
        if actual > limit {
            return Err(CallError::OutputTooLarge {
                limit,
                actual: Some(actual),
            });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&output).map_err(|e| {
            CallError::InvalidOutput {
                message: e.to_string(),
            }
        })?;
        Ok(output)
    }

    /// Names the cause of a failed instance: a limit the host enforced if one tripped,
    /// else the trap itself.
    fn classify_trap(
        &self,
        state: &CallState,
        trap: &wasmtime::Error,
        records: &[EgressRecord],
    ) -> CallError {
        if state.cpu_exhausted {
            return CallError::Timeout {
                kind: TimeoutKind::Cpu,
                limit: self.limits.cpu,
            };
        }
        if let Some(requested) = state.limiter.refused {
            return CallError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
                requested_bytes: requested,
            };
        }
        match transfer_refused(trap) {
            Some(Transfer::Result) => {
                return CallError::OutputTooLarge {
                    limit: self.limits.max_output_bytes,
                    actual: None,
                };
            }
            Some(Transfer::HostCall) => {
                return CallError::Trap {
                    message: format!(
                        "the plugin handed the host more than {} bytes in one call of a host function; \
                         it was refused unread",
                        self.limits.transfer_bytes
                    ),
                };
            }
            None => {}
        }
        if let Some(refusal) = host_refusal(records) {
            return refusal;
        }
        if let Some(exit) = trap.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return CallError::Trap {
                message: format!("the plugin called exit({})", exit.0),
            };
        }
        let mut message = match trap.downcast_ref::<wasmtime::Trap>() {
            Some(code) => code.to_string(),
            None => chain(trap),
        };
        let stderr = state.stderr_text();
        if !stderr.is_empty() {
            message = format!("{message}; the plugin wrote: {stderr}");
        }
        CallError::Trap { message }
    }
}

/// The hostcall fuel of the `describe()` call at load: its descriptors hold every tool's
/// schemas, so it may be larger than one call's result.
const DESCRIBE_TRANSFER_BYTES: usize = 16 << 20;

/// Which transfer from the guest the host refused for its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// The export's return value: the result or the tool error.
    Result,
    /// The arguments of a host function the guest called.
    HostCall,
}

/// Whether `trap` is wasmtime refusing a transfer over the store's hostcall fuel, and
/// which one.
///
/// wasmtime reports the refusal as an error of a private type, so it is recognised by its
/// text. Where it came from is told by the backtrace: an import's arguments are lifted
/// while guest frames are on the stack, and the error unwinds through them and carries
/// their `WasmBacktrace`; the export's result is lifted after the guest returned, with no
/// guest frame left. Both cases are pinned by the hostile plugin's tests.
fn transfer_refused(trap: &wasmtime::Error) -> Option<Transfer> {
    if !chain(trap).contains("fuel allocated for hostcalls has been exhausted") {
        return None;
    }
    Some(match trap.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(_) => Transfer::HostCall,
        None => Transfer::Result,
    })
}

/// The longest error code kept; codes are meant to be short identifiers.
const MAX_TOOL_ERROR_CODE_BYTES: usize = 64;

/// `text` cut at a character boundary to at most `limit` bytes plus a note of how much
/// was cut.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(" [truncated by the host: {total} bytes]"));
    text
}

/// The first refusal the host made during the call, if any: when a call fails after the
/// host refused one of its requests, that refusal is the cause worth reporting.
fn host_refusal(records: &[EgressRecord]) -> Option<CallError> {
    records.iter().find_map(|r| match &r.verdict {
        EgressVerdict::Denied { denial } => Some(CallError::EgressDenied(denial.clone())),
        EgressVerdict::ResponseTooLarge { limit } => Some(CallError::HttpResponseTooLarge {
            url: r.url.clone(),
            limit: *limit,
        }),
        EgressVerdict::Allowed { .. } => None,
    })
}
