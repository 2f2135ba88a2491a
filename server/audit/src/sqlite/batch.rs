//! One transaction for a batch of queued appends (group commit), written with a handful of
//! statements however many steps it holds.
//!
//! SQLite runs one statement at a time per connection, and every statement is a round
//! trip to the connection's worker thread, so what a batch costs is mostly its statement
//! count. Appending steps one by one takes three per step (read the head, insert the step,
//! move the head) plus a savepoint pair; here a batch reads every head it needs in one
//! query, chains each step on its run's head in memory (several steps of one run chain on
//! each other, in queue order), and writes all the steps with one multi-row `INSERT` and
//! all the heads with one `UPDATE … FROM`. The checks are the same as a lone append's, made
//! before anything is written: a step of an unknown, foreign or ended run is refused alone
//! and the others still commit. Terminal steps (which also seal the run into the tenant
//! chain) take the one-by-one path under a savepoint, after the steps queued before them
//! are written.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{QueuedStep, append_in, micros, status_of};
use crate::canonical::{self, Hash, truncate_micros};
use crate::error::LedgerError;
use crate::ids::RunId;
use crate::model::StepRecord;
use crate::op::OpError;
use crate::step::RunStatus;

type Tx<'c> = sqlx::Transaction<'c, Sqlite>;
type Outcome = std::result::Result<StepRecord, OpError>;

/// A run's head as this batch has moved it so far.
struct Tip {
    tenant: String,
    user_id: String,
    next_seq: i64,
    last_hash: Hash,
    status: RunStatus,
    /// Moved by a step not yet written.
    dirty: bool,
}

/// A step computed and waiting for the batch's `INSERT`.
struct Computed {
    index: usize,
    record: StepRecord,
    payload: String,
}

/// Writes `batch` inside `tx`; one outcome per step, in order. `Err` means the batch as a
/// whole failed (the caller rolls back and every step gets the error).
pub(super) async fn write_many(
    tx: &mut Tx<'_>,
    batch: &[QueuedStep],
) -> std::result::Result<Vec<Outcome>, OpError> {
    let mut tips = read_tips(tx, batch).await?;
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut pending: Vec<Computed> = Vec::new();
    for (index, op) in batch.iter().enumerate() {
        if op.step.step.status_after().is_terminal() {
            flush(tx, &mut tips, &mut pending, &mut outcomes).await?;
            sqlx::query("SAVEPOINT step").execute(&mut **tx).await?;
            let outcome = append_in(tx, &op.tenant, op.run, &op.step).await;
            match &outcome {
                Ok(rec) => {
                    if let Some(tip) = tips.get_mut(&op.run) {
                        tip.next_seq = rec.seq as i64 + 1;
                        tip.last_hash = rec.hash;
                        tip.status = op.step.step.status_after();
                    }
                }
                Err(_) => {
                    sqlx::query("ROLLBACK TO step").execute(&mut **tx).await?;
                }
            }
            sqlx::query("RELEASE step").execute(&mut **tx).await?;
            outcomes[index] = Some(outcome);
            continue;
        }
        match compute(&mut tips, op) {
            Ok((record, payload)) => pending.push(Computed {
                index,
                record,
                payload,
            }),
            Err(e) => outcomes[index] = Some(Err(e)),
        }
    }
    flush(tx, &mut tips, &mut pending, &mut outcomes).await?;
    outcomes
        .into_iter()
        .map(|o| {
            o.ok_or_else(|| LedgerError::Corrupt("a batched step got no outcome".into()).into())
        })
        .collect()
}

/// The heads of the batch's runs, as stored.
async fn read_tips(
    tx: &mut Tx<'_>,
    batch: &[QueuedStep],
) -> std::result::Result<HashMap<Uuid, Tip>, OpError> {
    let mut runs: Vec<Uuid> = batch.iter().map(|op| op.run).collect();
    runs.sort_unstable();
    runs.dedup();
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT run_id, tenant, user_id, next_seq, last_hash, status FROM audit_run_heads
         WHERE run_id IN (",
    );
    let mut list = q.separated(", ");
    for run in &runs {
        list.push_bind(*run);
    }
    q.push(")");
    let mut tips = HashMap::with_capacity(runs.len());
    for row in q.build().fetch_all(&mut **tx).await? {
        tips.insert(
            row.try_get::<Uuid, _>("run_id")?,
            Tip {
                tenant: row.try_get("tenant")?,
                user_id: row.try_get("user_id")?,
                next_seq: row.try_get("next_seq")?,
                last_hash: Hash::from_slice(&row.try_get::<Vec<u8>, _>("last_hash")?)?,
                status: status_of(&row.try_get::<String, _>("status")?)?,
                dirty: false,
            },
        );
    }
    Ok(tips)
}

/// Chains `op` on its run's tip (checked exactly as a lone append checks it) and moves the
/// tip; nothing is written yet.
fn compute(
    tips: &mut HashMap<Uuid, Tip>,
    op: &QueuedStep,
) -> std::result::Result<(StepRecord, String), OpError> {
    let Some(tip) = tips
        .get_mut(&op.run)
        .filter(|t| t.tenant == op.tenant.as_str())
    else {
        return Err(LedgerError::RunNotFound(op.run.to_string()).into());
    };
    if tip.status.is_terminal() {
        return Err(LedgerError::RunEnded(op.run.to_string()).into());
    }
    let at = truncate_micros(Utc::now());
    let payload = serde_json::to_value(&op.step.step)?;
    let seq = tip.next_seq;
    let hash = canonical::step_hash(
        &tip.last_hash,
        &op.run.to_string(),
        &tip.tenant,
        seq as u64,
        op.step.actor.as_str(),
        &at,
        &payload,
    )?;
    let record = StepRecord {
        id: 0,
        tenant: op.tenant.clone(),
        run_id: RunId::from_uuid(op.run)?,
        seq: seq as u64,
        at,
        actor: op.step.actor.clone(),
        user: crate::ids::UserId::parse(tip.user_id.clone())?,
        step: op.step.step.clone(),
        prev_hash: tip.last_hash,
        hash,
    };
    tip.next_seq = seq + 1;
    tip.last_hash = hash;
    tip.status = op.step.step.status_after();
    tip.dirty = true;
    Ok((record, serde_json::to_string(&payload)?))
}

/// Writes the computed steps (one `INSERT`) and the heads they moved (one `UPDATE`).
async fn flush(
    tx: &mut Tx<'_>,
    tips: &mut HashMap<Uuid, Tip>,
    pending: &mut Vec<Computed>,
    outcomes: &mut [Option<Outcome>],
) -> std::result::Result<(), OpError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                                  tool_name, payload, prev_hash, hash) ",
    );
    insert.push_values(pending.iter(), |mut row, c| {
        let r = &c.record;
        row.push_bind(r.tenant.as_str())
            .push_bind(r.run_id.as_uuid())
            .push_bind(r.seq as i64)
            .push_bind(r.step.kind_name())
            .push_bind(r.actor.as_str())
            .push_bind(micros(&r.at))
            .push_bind(r.user.as_str())
            .push_bind(r.step.plugin_id().map(|p| p.as_str()))
            .push_bind(r.step.tool_name().map(|t| t.as_str()))
            .push_bind(c.payload.as_str())
            .push_bind(r.prev_hash.as_bytes().as_slice())
            .push_bind(r.hash.as_bytes().as_slice());
    });
    insert.push(" RETURNING id, run_id, seq");
    let mut ids = HashMap::with_capacity(pending.len());
    for row in insert.build().fetch_all(&mut **tx).await? {
        ids.insert(
            (
                row.try_get::<Uuid, _>("run_id")?,
                row.try_get::<i64, _>("seq")?,
            ),
            row.try_get::<i64, _>("id")?,
        );
    }
    let dirty: Vec<(&Uuid, &Tip)> = tips.iter().filter(|(_, t)| t.dirty).collect();
    let mut update = QueryBuilder::<Sqlite>::new(
        "UPDATE audit_run_heads SET next_seq = v.column2, last_hash = v.column3,
                                    status = v.column4
         FROM (",
    );
    update.push_values(dirty.iter(), |mut row, (run, tip)| {
        row.push_bind(**run)
            .push_bind(tip.next_seq)
            .push_bind(tip.last_hash.as_bytes().as_slice())
            .push_bind(tip.status.as_str());
    });
    update.push(") AS v WHERE audit_run_heads.run_id = v.column1");
    update.build().execute(&mut **tx).await?;
    for tip in tips.values_mut() {
        tip.dirty = false;
    }
    for mut c in pending.drain(..) {
        let key = (c.record.run_id.as_uuid(), c.record.seq as i64);
        let Some(&id) = ids.get(&key) else {
            return Err(LedgerError::Corrupt("a batched step was not inserted".into()).into());
        };
        c.record.id = id;
        outcomes[c.index] = Some(Ok(c.record));
    }
    Ok(())
}
