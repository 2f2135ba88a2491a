//! Each attack of the hostile plugin is contained: the right error, a clear message, and
//! the host keeps serving the same plugin, during and after.

use std::time::{Duration, Instant};

use cairn_runtime::{CallError, TimeoutKind};
use serde_json::{Value, json};

use crate::heap;
use crate::helpers::{alice, contained, hostile};

fn limits() -> Value {
    json!({
        "cpu_ms_per_call": 200,
        "memory_mib": 32,
        "max_output_bytes": 10_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_at_the_cpu_deadline() {
    let (_rt, plugin) = hostile(limits()).await;
    let started = Instant::now();
    let failure = contained(&plugin, "infinite_loop", json!({}), true).await;
    let elapsed = started.elapsed();
    assert_eq!(
        failure.error,
        CallError::Timeout {
            kind: TimeoutKind::Cpu,
            limit: Duration::from_millis(200)
        }
    );
    assert!(
        failure
            .error
            .to_string()
            .contains("CPU budget of 200 ms (cpu_ms_per_call)"),
        "{}",
        failure.error
    );
    // The deadline counts ticks the guest was running; with benign calls sharing the two
    // cores it may take a little longer than 200 ms of wall time, never seconds.
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_millis(2500),
        "stopped after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    let (_rt, plugin) = hostile(limits()).await;
    let failure = contained(&plugin, "allocate_forever", json!({}), false).await;
    match &failure.error {
        CallError::MemoryLimit {
            limit_bytes,
            requested_bytes,
        } => {
            assert_eq!(*limit_bytes, 32 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(
        failure
            .error
            .to_string()
            .contains("cap of 33554432 bytes (memory_mib)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_traps() {
    let (_rt, plugin) = hostile(limits()).await;
    let failure = contained(&plugin, "recurse_forever", json!({}), false).await;
    match &failure.error {
        CallError::Trap { message } => {
            assert!(message.contains("call stack exhausted"), "{message}");
        }
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused() {
    let (_rt, plugin) = hostile(limits()).await;
    let failure = contained(&plugin, "huge_output", json!({ "bytes": 100_000 }), false).await;
    match failure.error {
        CallError::OutputTooLarge {
            limit,
            actual: Some(actual),
        } => {
            // Under the per-transfer cap: taken in, measured, refused.
            assert_eq!(limit, 10_000);
            assert!(actual > 100_000, "{actual}");
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
}

/// What the hostile plugin hands the host in one piece: 40 MiB, ten times the host's
/// default output ceiling and far over this plugin's `max_output_bytes`.
const HUGE: usize = 40 << 20;

/// Limits under which the guest can build [`HUGE`] bytes in its own memory.
fn huge_limits() -> Value {
    json!({ "cpu_ms_per_call": 5_000, "memory_mib": 64, "max_output_bytes": 10_000 })
}

/// Has the hostile plugin hand the host [`HUGE`] bytes `what` (`result`, `error` or
/// `log`, one guest allocation each), contained, and returns the failure with the largest
/// host allocation made meanwhile.
async fn hand_over_huge(what: &str) -> (cairn_runtime::CallFailure, usize) {
    let (_rt, plugin) = hostile(huge_limits()).await;
    let args = json!({ "bytes": HUGE, "as": what });
    heap::reset();
    let failure = contained(&plugin, "huge_output", args, false).await;
    (failure, heap::largest())
}

/// The host may copy at most its per-transfer cap (1 MiB and a little for this plugin)
/// out of a guest; a copy of the whole payload would be one allocation of [`HUGE`] bytes.
fn assert_not_copied(what: &str, largest: usize) {
    eprintln!("{what}: largest host allocation {largest} bytes for a {HUGE}-byte payload");
    assert!(
        largest < HUGE / 8,
        "{what}: the host made a {largest}-byte allocation for a {HUGE}-byte payload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_is_refused_before_the_host_copies_it() {
    let (failure, largest) = hand_over_huge("result").await;
    match &failure.error {
        CallError::OutputTooLarge { limit, actual } => {
            assert_eq!((*limit, *actual), (10_000, None));
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert!(
        failure.error.to_string().contains("refused unread"),
        "{}",
        failure.error
    );
    assert_not_copied("result", largest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_tool_error_is_refused_before_the_host_copies_it() {
    let (failure, largest) = hand_over_huge("error").await;
    // The tool error is the call's result (`result<string, tool-error>`): too large to
    // take in, it fails the call like an oversized result, and nothing of it is kept.
    match &failure.error {
        CallError::OutputTooLarge { limit, .. } => assert_eq!(*limit, 10_000),
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert_not_copied("error", largest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_log_line_is_refused_before_the_host_copies_it() {
    let (failure, largest) = hand_over_huge("log").await;
    match &failure.error {
        CallError::Trap { message } => {
            assert!(
                message.contains("in one call of a host function"),
                "{message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_not_copied("log", largest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_trap_with_the_panic_message() {
    let (_rt, plugin) = hostile(limits()).await;
    let failure = contained(&plugin, "panic", json!({}), false).await;
    match &failure.error {
        CallError::Trap { message } => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(
                message.contains("hostile plugin panicked on purpose"),
                "{message}"
            );
        }
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_sees_no_files_env_or_args() {
    // SAFETY: set before any other thread of this test reads the environment; the value
    // is only ever compared against.
    unsafe { std::env::set_var("CAIRN_SECRET_CANARY", "canary-7f3a") };
    let (_rt, plugin) = hostile(limits()).await;

    let files = plugin
        .call(&alice(), "read_file", "{}")
        .await
        .expect("read_file runs");
    let files: Value = serde_json::from_str(&files.output).unwrap();
    let results = files["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for result in results {
        assert_eq!(result["ok"], false, "{result}");
    }
    assert_eq!(files["root_entries"], Value::Null);

    let env = plugin
        .call(&alice(), "read_env", "{}")
        .await
        .expect("read_env runs");
    assert!(!env.output.contains("canary"), "{}", env.output);
    let env: Value = serde_json::from_str(&env.output).unwrap();
    assert_eq!(env["vars"], json!([]));
    assert_eq!(env["args"], json!([]));
    // The host's environment really has the canary: the guest just cannot see it.
    assert_eq!(std::env::var("CAIRN_SECRET_CANARY").unwrap(), "canary-7f3a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_per_call_leaks_no_state() {
    let (_rt, plugin) = hostile(limits()).await;
    for _ in 0..3 {
        let outcome = plugin.call(&alice(), "counter", "{}").await.unwrap();
        assert_eq!(outcome.output, r#"{"count":1}"#);
    }
}

/// A slot's memory is reset in place between calls (only the pages a call dirtied, when
/// the kernel can say which): after calls that dirty megabytes, grow memory past what a
/// slot keeps resident, or trap at the memory cap, the next instance in that slot still
/// starts from the initial image, concurrently as well as one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_reset_after_calls_that_dirty_grow_or_trap() {
    let (_rt, plugin) = hostile(json!({ "memory_mib": 32, "max_output_bytes": 8 << 20 })).await;
    let fresh = |plugin: cairn_runtime::Plugin| async move {
        let outcome = plugin.call(&alice(), "counter", "{}").await.unwrap();
        assert_eq!(outcome.output, r#"{"count":1}"#);
    };
    for round in 0..3 {
        let big = plugin
            .call(
                &alice(),
                "huge_output",
                &json!({ "bytes": (2 << 20) + round }).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(big.output.len(), (2 << 20) + round + 11);
        fresh(plugin.clone()).await;
        let failure = plugin
            .call(&alice(), "allocate_forever", "{}")
            .await
            .unwrap_err();
        assert!(
            matches!(failure.error, CallError::MemoryLimit { .. }),
            "{:?}",
            failure.error
        );
        fresh(plugin.clone()).await;
        let echo = plugin
            .call(&alice(), "echo", r#"{"round":1}"#)
            .await
            .unwrap();
        assert_eq!(echo.output, r#"{"round":1}"#);
    }
    let tasks: Vec<_> = (0..16)
        .map(|_| tokio::spawn(fresh(plugin.clone())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tool_is_refused_before_instantiation() {
    let (_rt, plugin) = hostile(limits()).await;
    let failure = plugin
        .call(&alice(), "format_disk", "{}")
        .await
        .unwrap_err();
    match &failure.error {
        CallError::UnknownTool { tool, available } => {
            assert_eq!(tool, "format_disk");
            assert!(available.starts_with("noop, echo"), "{available}");
        }
        other => panic!("expected UnknownTool, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_capped() {
    let (_rt, plugin) = hostile(limits()).await;
    let outcome = plugin
        .call(&alice(), "log_flood", r#"{"lines": 500}"#)
        .await
        .unwrap();
    // 200 lines per call by default; the rest are dropped and counted.
    assert_eq!(outcome.stats.log_lines_dropped, 300);
}

/// The guest yields to the executor on every epoch tick, so even on ONE worker thread a
/// spinning plugin does not starve other calls.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_plugin_does_not_starve_a_single_threaded_host() {
    // A longer budget than the other tests: on one thread the benign calls share the CPU
    // with the spinning guest tick by tick, and a debug build instantiates slowly.
    let (_rt, plugin) = hostile(json!({ "cpu_ms_per_call": 1500 })).await;
    let failure = contained(&plugin, "infinite_loop", json!({}), true).await;
    assert!(matches!(
        failure.error,
        CallError::Timeout {
            kind: TimeoutKind::Cpu,
            ..
        }
    ));
}
