//! Per-call limits: the manifest asks, the host's ceilings cap.

use std::time::Duration;

use cairn_manifest::Permissions;

/// Host-wide maxima. A manifest may ask for less, never for more: every effective limit is
/// `min(manifest, ceiling)`, so an administrator bounds what any installed plugin can use.
#[derive(Debug, Clone)]
pub struct HostCeilings {
    /// Linear memory per call, MiB. Also sizes the pooling allocator's memory slots.
    pub memory_mib: u32,
    /// CPU (guest execution) time per call, ms; enforced with epoch ticks.
    pub cpu_ms_per_call: u32,
    /// Total time per call including HTTP waits, ms.
    pub wall_clock_ms_per_call: u32,
    /// Size of a tool's JSON result, bytes.
    pub max_output_bytes: u64,
    /// Size of one HTTP response body, bytes.
    pub max_http_response_bytes: u64,
    /// Size of one HTTP request body the plugin sends, bytes.
    pub max_http_request_bytes: u64,
    /// Outbound requests per call.
    pub max_outbound_requests: u32,
    /// Key-value bytes per (tenant, plugin, user) scope.
    pub kv_quota_bytes: u64,
    /// Bytes of a tool's own error message (`tool-error.message`); longer ones are cut.
    /// Also capped by `max_output_bytes`.
    pub max_tool_error_bytes: usize,
    /// Log lines a call may write; later lines are dropped and counted.
    pub log_lines_per_call: u32,
    /// Bytes per log line; longer lines are cut.
    pub log_line_bytes: usize,
    /// Wasm stack per call, bytes; deeper recursion traps with a stack overflow.
    pub wasm_stack_bytes: usize,
}

impl Default for HostCeilings {
    fn default() -> Self {
        Self {
            memory_mib: 256,
            cpu_ms_per_call: 10_000,
            wall_clock_ms_per_call: 60_000,
            max_output_bytes: 4 << 20,
            max_http_response_bytes: 16 << 20,
            max_http_request_bytes: 4 << 20,
            max_outbound_requests: 64,
            kv_quota_bytes: 16 << 20,
            max_tool_error_bytes: 4096,
            log_lines_per_call: 200,
            log_line_bytes: 4096,
            wasm_stack_bytes: 512 * 1024,
        }
    }
}

impl HostCeilings {
    pub(crate) fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }
}

/// The limits one plugin's calls run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Linear memory cap, bytes.
    pub memory_bytes: u64,
    /// CPU budget per call.
    pub cpu: Duration,
    /// Wall-clock budget per call.
    pub wall_clock: Duration,
    /// Result size cap, bytes.
    pub max_output_bytes: u64,
    /// HTTP response body cap, bytes.
    pub max_http_response_bytes: u64,
    /// HTTP request body cap, bytes.
    pub max_http_request_bytes: u64,
    /// Outbound requests per call.
    pub max_outbound_requests: u32,
    /// Key-value quota per scope, bytes.
    pub kv_quota_bytes: u64,
    /// A tool error's message cap, bytes.
    pub max_tool_error_bytes: usize,
    /// Log lines per call.
    pub log_lines_per_call: u32,
    /// Bytes per log line.
    pub log_line_bytes: usize,
    /// The most the plugin may hand the host in one transfer: its result (or tool
    /// error), or the arguments of one host function it calls. Checked by wasmtime while
    /// lifting, before anything is copied (the store's hostcall fuel), so a plugin cannot
    /// make the host allocate more than this for it, whatever its memory cap. A KV
    /// store that accepts values over [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES) would
    /// see larger writes fail here first.
    pub transfer_bytes: usize,
}

/// The per-transfer cap's floor: room for the largest key-value write (a value and its
/// key) with slack for the other host functions' arguments, so a small `max_output_bytes`
/// does not make honest imports fail.
pub(crate) const MIN_TRANSFER_BYTES: usize = crate::kv::MAX_VALUE_BYTES + (64 << 10);

impl EffectiveLimits {
    /// Clamps what the manifest asks for by the host's ceilings.
    pub fn clamp(asked: &Permissions, ceilings: &HostCeilings) -> Self {
        let max_output_bytes = asked.max_output_bytes.min(ceilings.max_output_bytes);
        Self {
            memory_bytes: u64::from(asked.memory_mib.min(ceilings.memory_mib)) << 20,
            cpu: Duration::from_millis(u64::from(
                asked.cpu_ms_per_call.min(ceilings.cpu_ms_per_call),
            )),
            wall_clock: Duration::from_millis(u64::from(ceilings.wall_clock_ms_per_call)),
            max_output_bytes,
            max_http_response_bytes: asked
                .max_http_response_bytes
                .min(ceilings.max_http_response_bytes),
            max_http_request_bytes: ceilings.max_http_request_bytes,
            max_outbound_requests: asked
                .max_outbound_requests
                .min(ceilings.max_outbound_requests),
            kv_quota_bytes: asked.kv_quota_bytes.min(ceilings.kv_quota_bytes),
            max_tool_error_bytes: ceilings
                .max_tool_error_bytes
                .min(usize::try_from(max_output_bytes).unwrap_or(usize::MAX)),
            log_lines_per_call: ceilings.log_lines_per_call,
            log_line_bytes: ceilings.log_line_bytes,
            transfer_bytes: usize::try_from(max_output_bytes)
                .unwrap_or(usize::MAX)
                .max(MIN_TRANSFER_BYTES),
        }
    }
}

/// Caps the total linear memory of one call's store and remembers a refusal, so a failed
/// call can be reported as [`CallError::MemoryLimit`](crate::CallError::MemoryLimit)
/// rather than as the `unreachable` trap the guest's allocator turns it into.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    total: u64,
    pub(crate) refused: Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            total: 0,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let wanted = self.total.saturating_add(grow);
        if wanted > self.limit {
            self.refused = Some(wanted);
            return Ok(false);
        }
        self.total = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any honest plugin.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transfer_cap_follows_max_output_bytes_above_its_floor() {
        let ceilings = HostCeilings::default();
        let small = Permissions {
            max_output_bytes: 10_000,
            ..Permissions::default()
        };
        assert_eq!(
            EffectiveLimits::clamp(&small, &ceilings).transfer_bytes,
            MIN_TRANSFER_BYTES
        );
        // Asking for more than the host's ceiling gets the ceiling, here too.
        let large = Permissions {
            max_output_bytes: 64 << 20,
            ..Permissions::default()
        };
        let limits = EffectiveLimits::clamp(&large, &ceilings);
        assert_eq!(limits.transfer_bytes, 4 << 20);
        assert_eq!(limits.max_output_bytes, 4 << 20);
    }
}
