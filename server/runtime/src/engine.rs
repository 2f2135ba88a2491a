//! The one wasmtime [`Engine`] per process and the epoch ticker that drives deadlines.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Result, RuntimeError};
use crate::limits::HostCeilings;

/// How many calls may run at once. The pooling allocator reserves slots for this many
/// instances up front; calls beyond it wait for a permit instead of failing.
pub(crate) fn pool_slots(max_concurrent_calls: u32) -> u32 {
    max_concurrent_calls.max(1)
}

/// Builds the engine: Cranelift, pooling allocator, epoch interruption.
///
/// Pool sizing for a small (2-core, 24 GiB) host: `max_concurrent_calls` component
/// instances, each with up to 16 core instances (a Rust `wasm32-wasip2` component has a
/// handful), one linear memory capped by the host's memory ceiling and a few tables. The
/// memory slots are virtual reservations; only touched pages cost RAM.
pub(crate) fn build_engine(ceilings: &HostCeilings, max_concurrent_calls: u32) -> Result<Engine> {
    let slots = pool_slots(max_concurrent_calls);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .max_core_instances_per_component(16)
        .total_core_instances(slots * 16)
        .total_memories(slots * 2)
        .max_memories_per_component(2)
        .total_tables(slots * 8)
        .max_tables_per_component(8)
        .total_stacks(slots)
        .max_memory_size(ceilings.memory_bytes() as usize);
    keep_resident(
        &mut pool,
        PoolingAllocationConfig::is_pagemap_scan_available(),
    );

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .max_wasm_stack(ceilings.wasm_stack_bytes);
    Engine::new(&config).map_err(|e| RuntimeError::Engine(crate::error::chain(&e)))
}

/// Memory a slot keeps resident between calls when the kernel can say which pages a call
/// dirtied (`PAGEMAP_SCAN`, Linux 6.7+): up to this much of what a call wrote is restored
/// in place, and only the rest is handed back with `madvise`.
pub(crate) const KEEP_RESIDENT_WITH_SCAN: usize = 1 << 20;

/// How a finished call's memory and tables are reset for the next instance.
///
/// Every call gets a fresh instance, so whatever the last one wrote must be reset. The
/// default, `madvise(MADV_DONTNEED)` of everything past a small prefix, was the largest
/// cost of a call (see BENCHMARKS.md): the syscall flushes the TLB of every core running
/// one of this process's threads (an inter-processor interrupt, dear in a VM), and the
/// next instance page-faults the same pages straight back in. It was also what kept two
/// workers from scaling, since each worker's reset interrupted the other. With
/// `PAGEMAP_SCAN` the pages a call dirtied are found and restored (copied back from the
/// image or zeroed) without any of that: a small call costs no syscall to reset but the
/// scan, and no page faults next time. Isolation is the same either way: the next
/// instance sees exactly the initial image. Without the scan, a small prefix is memset.
///
/// Resident cost: up to [`KEEP_RESIDENT_WITH_SCAN`] per memory slot (64 slots, 2 memories
/// each, by default: at most 128 MiB).
fn keep_resident(pool: &mut PoolingAllocationConfig, pagemap_scan: bool) {
    if pagemap_scan {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_WITH_SCAN)
            .table_keep_resident(64 * 1024);
    } else {
        pool.linear_memory_keep_resident(64 * 1024)
            .table_keep_resident(16 * 1024);
    }
}

/// Increments the engine's epoch every `tick` on a dedicated thread until dropped.
///
/// A plain thread rather than a tokio task: the ticker must keep going when every worker
/// thread is busy running guest code, which is exactly when deadlines matter.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("cairn-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once with `Disconnected`.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
