//! Group commit for non-terminal steps: appends that arrive while another is being
//! written share the next commit.
//!
//! Every append puts its step on one queue and then waits either for its answer or for a
//! writer's turn ([`LANES`] batches may be in flight). Whoever gets a turn takes everything
//! queued (one step per run: a second step of the same run must chain on the first, so it
//! waits for the next batch; should it land in a concurrent batch anyway, its head check
//! fails and it is retried alone)
//! and writes it with ONE autocommitted statement: each step's run head moves only if it
//! still is the tip that step was hashed from, and the step is inserted under that head's
//! row lock, exactly as a lone append does. One round trip and one WAL flush then carry
//! the whole batch, where each append used to pay its own.
//!
//! Nothing about durability changes: a waiter is answered only after the statement that
//! holds its record has committed ("ledger before action"). A step whose head had moved is
//! not written and its appender retries alone, as before. A lone append (nothing else
//! queued) is written by the same single-row statement as before, so it pays only for a
//! mutex and a channel.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{ComputedStep, Head, PgLedger};
use crate::error::Result;
use crate::ids::TenantId;
use crate::model::{NewStep, StepRecord};
use crate::op::{OpError, batch_failure};

/// The most steps one group commit carries; the rest wait for the next.
const MAX_BATCH: usize = 256;

/// What became of a queued step.
pub(super) enum StepAnswer {
    /// Committed.
    Written(Box<(StepRecord, Head)>),
    /// Not written: its run head had moved (the current one, when known). The appender
    /// retries on its own.
    Moved(Option<Head>),
}

/// A non-terminal step waiting for a group commit.
pub(super) struct StepOp {
    pub(super) tenant: TenantId,
    pub(super) run: Uuid,
    pub(super) head: Head,
    pub(super) step: NewStep,
    pub(super) payload: serde_json::Value,
    pub(super) payload_text: String,
    pub(super) reply: oneshot::Sender<Result<StepAnswer>>,
}

/// Batches that may be in flight at once. Two, so that the next batch is already on its
/// way while one commits: with a single writer, every batch waited for the previous one's
/// round trip and for its writer task to be scheduled again, which on a loaded host cost
/// more than the commits saved.
const LANES: usize = 2;

/// The queue of non-terminal steps, shared by every tenant and run of one ledger.
pub(super) struct StepQueue {
    pending: Mutex<Vec<StepOp>>,
    /// One permit per batch in flight; the appenders without one queue meanwhile.
    writers: tokio::sync::Semaphore,
}

impl Default for StepQueue {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            writers: tokio::sync::Semaphore::new(LANES),
        }
    }
}

impl PgLedger {
    /// Queues `op` and returns its answer: written in another appender's batch while this
    /// one waited for the writer's turn, or in this appender's own batch once it comes.
    pub(super) async fn group_append(
        &self,
        op: StepOp,
        mut answer: oneshot::Receiver<Result<StepAnswer>>,
    ) -> std::result::Result<StepAnswer, OpError> {
        let queue = &self.steps;
        queue
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op);
        // A turn writes the queue's head, which need not hold this appender's own step
        // (one step per run goes in each batch), so a writer whose step is still queued
        // after its batch takes another turn: nobody else may be left to write it.
        loop {
            let turn = tokio::select! {
                biased;
                r = &mut answer => return super::answered(r, "append"),
                turn = queue.writers.acquire() => turn,
            };
            let written = self.write_queued_steps().await;
            drop(turn);
            if written == 0 {
                // Nothing was queued, so this step is in a batch in flight (or answered).
                return super::answered(answer.await, "append");
            }
        }
    }

    /// Takes the queued steps (at most one per run, at most [`MAX_BATCH`]) and writes
    /// them; the caller holds the writer's turn. Returns how many it took.
    async fn write_queued_steps(&self) -> usize {
        let batch = {
            let mut pending = self.steps.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut runs = HashSet::new();
            let mut batch = Vec::new();
            let mut later = Vec::new();
            for op in pending.drain(..) {
                if op.reply.is_closed() {
                    continue;
                }
                if batch.len() < MAX_BATCH && runs.insert(op.run) {
                    batch.push(op);
                } else {
                    later.push(op);
                }
            }
            *pending = later;
            batch
        };
        let taken = batch.len();
        match taken {
            0 => {}
            1 => {
                self.write_one(batch.into_iter().next().unwrap_or_else(|| unreachable!()))
                    .await
            }
            _ => self.write_many(batch).await,
        }
        taken
    }

    /// A batch of one: the lone append's single-row statement, unchanged.
    async fn write_one(&self, op: StepOp) {
        let result = async {
            let mut conn = self.pool.acquire().await?;
            self.append_once(
                &mut conn,
                &op.tenant,
                op.run,
                Some(&op.head),
                &op.step,
                &op.payload,
                &op.payload_text,
            )
            .await
        }
        .await;
        let answer = match result {
            Ok(Ok(written)) => Ok(StepAnswer::Written(Box::new(written))),
            Ok(Err(moved)) => Ok(StepAnswer::Moved(Some(moved.head))),
            Err(e) => Err(super::op_err("append")(e)),
        };
        drop(op.reply.send(answer));
    }

    /// Several steps in one statement, one commit.
    async fn write_many(&self, batch: Vec<StepOp>) {
        let computed: std::result::Result<Vec<ComputedStep>, OpError> = batch
            .iter()
            .map(|op| {
                ComputedStep::after(Some(&op.head), op.run, &op.tenant, &op.step, &op.payload)
            })
            .collect();
        let result = match computed {
            Ok(computed) => self
                .insert_many(&batch, &computed)
                .await
                .map(|ids| (ids, computed)),
            Err(e) => Err(e),
        };
        match result {
            Ok((written, computed)) => {
                for (op, c) in batch.into_iter().zip(computed) {
                    let answer = match written.iter().find(|(run, _, _)| *run == op.run) {
                        Some((_, id, user_id)) => {
                            let head = Head {
                                user_id: user_id.clone(),
                                ..op.head.clone()
                            };
                            self.record(*id, op.run, &head, c.seq, c.at, &op.step, c.hash, c.prev)
                                .map(|rec| {
                                    let next = Head {
                                        next_seq: c.seq + 1,
                                        last_hash: c.hash,
                                        status: op.step.step.status_after(),
                                        ..head
                                    };
                                    StepAnswer::Written(Box::new((rec, next)))
                                })
                        }
                        None => Ok(StepAnswer::Moved(None)),
                    };
                    drop(op.reply.send(answer));
                }
            }
            // The server refused the statement, so nothing of it was committed: each step
            // is retried alone and meets its own fate (one bad step must not sink the
            // others).
            Err(OpError::Sqlx(sqlx::Error::Database(e))) => {
                tracing::debug!(error = %e, steps = batch.len(), "group commit refused; retrying one by one");
                for op in batch {
                    drop(op.reply.send(Ok(StepAnswer::Moved(None))));
                }
            }
            // Anything else (a lost connection, a timeout) may or may not have committed:
            // every step of the batch fails rather than risk writing one twice.
            Err(e) => {
                let e = super::op_err("append")(e);
                for op in batch {
                    drop(op.reply.send(Err(batch_failure(&e, Duration::ZERO))));
                }
            }
        }
    }

    /// The batch statement: `(run, step id, user id)` of each step written.
    async fn insert_many(
        &self,
        batch: &[StepOp],
        computed: &[ComputedStep],
    ) -> std::result::Result<Vec<(Uuid, i64, String)>, OpError> {
        let n = batch.len();
        let mut run = Vec::with_capacity(n);
        let mut tenant = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut actor = Vec::with_capacity(n);
        let mut at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut plugin = Vec::with_capacity(n);
        let mut tool = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut prev = Vec::with_capacity(n);
        let mut hash = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        for (op, c) in batch.iter().zip(computed) {
            run.push(op.run);
            tenant.push(op.tenant.as_str());
            seq.push(c.seq);
            kind.push(op.step.step.kind_name());
            actor.push(op.step.actor.as_str());
            at.push(c.at);
            plugin.push(op.step.step.plugin_id().map(|p| p.as_str()));
            tool.push(op.step.step.tool_name().map(|t| t.as_str()));
            payload.push(op.payload_text.as_str());
            prev.push(c.prev.as_bytes().to_vec());
            hash.push(c.hash.as_bytes().to_vec());
            status.push(op.step.step.status_after().as_str());
        }
        // The lone append's statement, over arrays: each head moves only if it still is
        // the tip its step was hashed from, and only the steps whose head moved are
        // inserted. One statement, so one transaction and one commit.
        let rows = sqlx::query(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                      $6::timestamptz[], $7::text[], $8::text[], $9::text[],
                                      $10::bytea[], $11::bytea[], $12::text[])
                     WITH ORDINALITY AS i(run_id, tenant, seq, kind, actor, at, plugin_id,
                                          tool_name, payload, prev_hash, hash, status, ord)),
             head AS (
                 UPDATE audit_run_heads h
                 SET next_seq = i.seq + 1, last_hash = i.hash, status = i.status
                 FROM input i
                 WHERE h.run_id = i.run_id AND h.tenant = i.tenant AND h.next_seq = i.seq
                   AND h.last_hash = i.prev_hash
                   AND h.status IN ('running', 'awaiting_approval')
                 RETURNING h.run_id, h.user_id)
             INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                                      tool_name, payload, prev_hash, hash)
             SELECT i.tenant, i.run_id, i.seq, i.kind, i.actor, i.at, head.user_id, i.plugin_id,
                    i.tool_name, i.payload::json, i.prev_hash, i.hash
             FROM input i JOIN head ON head.run_id = i.run_id
             ORDER BY i.ord
             RETURNING id, run_id, user_id",
        )
        .bind(&run)
        .bind(&tenant)
        .bind(&seq)
        .bind(&kind)
        .bind(&actor)
        .bind(&at)
        .bind(&plugin)
        .bind(&tool)
        .bind(&payload)
        .bind(&prev)
        .bind(&hash)
        .bind(&status)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("run_id")?,
                    r.try_get("id")?,
                    r.try_get("user_id")?,
                ))
            })
            .collect()
    }
}
