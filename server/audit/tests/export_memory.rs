//! Exporting a million steps runs in constant memory. Its own test binary, so the peak
//! resident set measured is this test's alone.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use cairn_audit::*;
use common::*;

const STEPS: i64 = 1_000_000;
const PER_RUN: i64 = 100;

/// Counts bytes and throws them away.
struct Counting(Arc<AtomicU64>);

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_a_million_steps_uses_bounded_memory() {
    // This test is about memory, not latency: on a loaded 2-core CI machine one page of
    // the export can take longer than the default 5 s operation timeout.
    let h = Harness::pg_with(cairn_audit::LedgerOptions {
        operation_timeout: std::time::Duration::from_secs(120),
        ..Default::default()
    })
    .await;
    let Store::Pg { pool, .. } = &h.store else {
        unreachable!()
    };
    // Bulk-load a million steps server-side (hashes are placeholders: this is about export).
    let runs: Vec<uuid::Uuid> = (0..STEPS / PER_RUN)
        .map(|i| RunId::new_at(chrono::Utc::now() - chrono::Duration::seconds(i)).as_uuid())
        .collect();
    let t0 = std::time::Instant::now();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    // A large pending list lets the GIN index absorb the bulk load in big batches.
    sqlx::query("SET LOCAL gin_pending_list_limit = '512MB'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name,
                                  payload, prev_hash, hash)
         SELECT 'bulk', r.id, g % $2, 'tool_call', 'model', now(), 'user' || (g % 50), 'tasks', 'add_task',
                jsonb_build_object('kind', 'tool_call', 'cairn.plugin.id', 'tasks',
                                   'gen_ai.tool.name', 'add_task', 'gen_ai.tool.call.id', 'c' || g,
                                   'arguments', jsonb_build_object('n', g, 'title', 'Renew passport')),
                decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex')
         FROM generate_series(0, $1 - 1) g
         JOIN unnest($3::uuid[]) WITH ORDINALITY AS r(id, i) ON r.i = g / $2 + 1",
    )
    .bind(STEPS)
    .bind(PER_RUN)
    .bind(&runs)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    eprintln!("bulk load {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();

    // Reset the peak-RSS mark, then export everything.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmHWM:");
    let bytes = Arc::new(AtomicU64::new(0));
    let mut q = StepQuery::new(tenant("bulk"));
    q.limit = 5_000;
    let n = write_jsonl(h.ledger.export(q), Counting(bytes.clone()))
        .await
        .unwrap();
    let peak = status_kib("VmHWM:");
    eprintln!("export {:?}", t0.elapsed());
    assert_eq!(n, STEPS as u64);
    let written = bytes.load(Ordering::Relaxed);
    assert!(written > 200 * 1024 * 1024, "wrote {written} bytes");
    // Buffering the export would need more than the bytes written; one page is a few MB.
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "peak RSS grew by {growth_mib} MiB while exporting {} MiB",
        written / (1024 * 1024)
    );
    h.cleanup().await;
}
