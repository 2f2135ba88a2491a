//! The SQLite store: the embedded default.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::canonical::{self, Hash, canonical_json, hash_time, truncate_micros};
use crate::error::{LedgerError, Result};
use crate::ids::{RunId, TenantId};
use crate::ledger::{Backend, Ledger, LedgerOptions};
use crate::model::{NewRun, NewStep, PurgeReport, PurgeRequest, Run, SealBody, StepRecord};
use crate::op::{OpError, batch_failure, bounded};
use crate::query::{Cursor, StepPage, StepQuery};
use crate::step::RunStatus;
use crate::verify::{self, RunRow, SealRow, StepRow, TenantVerifier, VerifyCounts, VerifyReport};

mod batch;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite ledger. SQLite has one writer at a time, so writes are serialised in
/// process by a mutex (and `BEGIN IMMEDIATE` guards against other processes); reads run
/// concurrently in WAL mode. Appends that queue behind the mutex share one transaction
/// and one commit (group commit); each returns only after that commit. `sqlite::memory:` keeps one connection, since every
/// connection to it would be a different database.
pub struct SqliteLedger {
    pool: SqlitePool,
    options: LedgerOptions,
    write: tokio::sync::Mutex<()>,
    /// Appends waiting for the write lock; whoever gets it commits them all at once.
    queued: Mutex<Vec<QueuedStep>>,
}

const STEP_COLUMNS: &str = "s.id, s.tenant, s.run_id, s.seq, s.kind, s.actor, s.at, s.user_id, \
     s.plugin_id, s.tool_name, s.payload, s.prev_hash, s.hash";

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(m: i64) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(m)
        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp {m} out of range").into()))
}

fn step_row(r: &SqliteRow) -> std::result::Result<StepRow, sqlx::Error> {
    Ok(StepRow {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        run_id: r.try_get("run_id")?,
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        actor: r.try_get("actor")?,
        at: from_micros(r.try_get("at")?)?,
        user_id: r.try_get("user_id")?,
        plugin_id: r.try_get("plugin_id")?,
        tool_name: r.try_get("tool_name")?,
        payload: r.try_get("payload")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn status_of(s: &str) -> std::result::Result<RunStatus, OpError> {
    RunStatus::parse(s)
        .ok_or_else(|| OpError::Ledger(LedgerError::Corrupt(format!("run status {s:?}"))))
}

impl SqliteLedger {
    /// Opens (creating if missing) the database at `url` and runs the migrations.
    #[tracing::instrument(skip_all)]
    pub async fn connect(url: &str, options: LedgerOptions) -> Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| LedgerError::Invalid {
                what: "sqlite url",
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .busy_timeout(options.operation_timeout)
            .foreign_keys(false);
        if !memory {
            connect = connect
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
        }
        let mut pool = SqlitePoolOptions::new().acquire_timeout(options.operation_timeout);
        pool = if memory {
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(options.max_connections.max(2))
        };
        let start = std::time::Instant::now();
        let pool = pool
            .connect_with(connect)
            .await
            .map_err(|e| LedgerError::from_sqlx("connect", start.elapsed(), e))?;
        if options.migrate {
            MIGRATOR.run(&pool).await?;
        }
        Ok(Self {
            pool,
            options,
            write: tokio::sync::Mutex::new(()),
            queued: Mutex::new(Vec::new()),
        })
    }

    /// The connection pool, for callers that need to run their own SQL (tests, tools).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Queues an append and returns its answer: committed by another appender's batch
    /// while this one waited for the write lock, or by this appender's own batch of
    /// everything queued once the lock is its.
    async fn group_append(
        &self,
        op: QueuedStep,
        mut answer: oneshot::Receiver<Result<StepRecord>>,
    ) -> std::result::Result<StepRecord, OpError> {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op);
        let turn = tokio::select! {
            biased;
            r = &mut answer => return answered(r),
            turn = self.write.lock() => turn,
        };
        let batch: Vec<QueuedStep> = {
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            queued.retain(|op| !op.reply.is_closed());
            // The rest stay queued for the next writer (each of their appenders is waiting
            // for the lock): one statement binds 12 values per step, and SQLite caps a
            // statement's parameters.
            let n = queued.len().min(MAX_BATCH);
            queued.drain(..n).collect()
        };
        if !batch.is_empty() {
            self.write_batch(batch).await;
        }
        drop(turn);
        answered(answer.await)
    }

    /// Writes `batch` in one transaction, one commit; the caller holds the write lock. A
    /// step that is refused (say, its run has ended) is refused alone and the others still
    /// commit (`sqlite/batch.rs`).
    async fn write_batch(&self, batch: Vec<QueuedStep>) {
        let start = std::time::Instant::now();
        let result = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let outcomes = if let [op] = batch.as_slice() {
                // Alone: the lone append's statements; a refused step rolls the
                // transaction back (on drop).
                match append_in(&mut tx, &op.tenant, op.run, &op.step).await {
                    Ok(rec) => vec![Ok(rec)],
                    Err(e) => return Ok(vec![Err(e)]),
                }
            } else {
                batch::write_many(&mut tx, &batch).await?
            };
            tx.commit().await?;
            Ok::<_, OpError>(outcomes)
        }
        .await;
        match result {
            Ok(outcomes) => {
                for (op, outcome) in batch.into_iter().zip(outcomes) {
                    drop(op.reply.send(outcome.map_err(op_err(start))));
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: every appender in it gets the error.
                let e = op_err(start)(e);
                for op in batch {
                    drop(op.reply.send(Err(batch_failure(&e, start.elapsed()))));
                }
            }
        }
    }
}

/// The most appends one transaction carries.
const MAX_BATCH: usize = 512;

/// An append waiting for the next batch.
struct QueuedStep {
    tenant: TenantId,
    run: Uuid,
    step: NewStep,
    reply: oneshot::Sender<Result<StepRecord>>,
}

/// An append's answer, or the error for one that never came (its batch writer gave up).
fn answered(
    r: std::result::Result<Result<StepRecord>, oneshot::error::RecvError>,
) -> std::result::Result<StepRecord, OpError> {
    match r {
        Ok(r) => Ok(r?),
        Err(_) => Err(LedgerError::Unavailable {
            operation: "append",
            elapsed: Duration::ZERO,
            reason: "the batch carrying this write was abandoned".into(),
        }
        .into()),
    }
}

fn op_err(start: std::time::Instant) -> impl Fn(OpError) -> LedgerError {
    move |e| match e {
        OpError::Sqlx(e) => LedgerError::from_sqlx("append", start.elapsed(), e),
        OpError::Ledger(e) => e,
    }
}

/// Appends one step (sealing the run if it is terminal) inside `tx`, which holds the
/// write lock.
async fn append_in(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tenant: &TenantId,
    run: Uuid,
    step: &NewStep,
) -> std::result::Result<StepRecord, OpError> {
    let row = sqlx::query(
        "SELECT tenant, user_id, next_seq, last_hash, status FROM audit_run_heads WHERE run_id = ?",
    )
    .bind(run)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Err(LedgerError::RunNotFound(run.to_string()).into());
    };
    let head_tenant: String = row.try_get("tenant")?;
    let user_id: String = row.try_get("user_id")?;
    let seq: i64 = row.try_get("next_seq")?;
    let prev = Hash::from_slice(&row.try_get::<Vec<u8>, _>("last_hash")?)?;
    let status_now = status_of(&row.try_get::<String, _>("status")?)?;
    if head_tenant != tenant.as_str() {
        return Err(LedgerError::RunNotFound(run.to_string()).into());
    }
    if status_now.is_terminal() {
        return Err(LedgerError::RunEnded(run.to_string()).into());
    }
    let at = truncate_micros(Utc::now());
    let payload = serde_json::to_value(&step.step)?;
    let hash = canonical::step_hash(
        &prev,
        &run.to_string(),
        &head_tenant,
        seq as u64,
        step.actor.as_str(),
        &at,
        &payload,
    )?;
    let status = step.step.status_after();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_steps
             (tenant, run_id, seq, kind, actor, at, user_id, plugin_id, tool_name, payload, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&head_tenant)
    .bind(run)
    .bind(seq)
    .bind(step.step.kind_name())
    .bind(step.actor.as_str())
    .bind(micros(&at))
    .bind(&user_id)
    .bind(step.step.plugin_id().map(|p| p.as_str()))
    .bind(step.step.tool_name().map(|t| t.as_str()))
    .bind(serde_json::to_string(&payload)?)
    .bind(prev.as_bytes().as_slice())
    .bind(hash.as_bytes().as_slice())
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE audit_run_heads SET next_seq = ?, last_hash = ?, status = ?, ended_at = ? WHERE run_id = ?",
    )
    .bind(seq + 1)
    .bind(hash.as_bytes().as_slice())
    .bind(status.as_str())
    .bind(status.is_terminal().then(|| micros(&at)))
    .bind(run)
    .execute(&mut **tx)
    .await?;
    if status.is_terminal() {
        let (seal_seq, seal_prev) = tenant_head(tx, tenant).await?;
        let body = SealBody::Run {
            tenant: tenant.clone(),
            seal_seq,
            run_id: RunId::from_uuid(run)?,
            last_step_hash: hash,
            step_count: (seq + 1) as u64,
            sealed_at: hash_time(&at),
        };
        insert_seal(
            tx,
            tenant,
            seal_seq,
            &seal_prev,
            &body,
            Some(run),
            "run",
            at,
        )
        .await?;
    }
    Ok(StepRecord {
        id,
        tenant: tenant.clone(),
        run_id: RunId::from_uuid(run)?,
        seq: seq as u64,
        at,
        actor: step.actor.clone(),
        user: crate::ids::UserId::parse(user_id)?,
        step: step.step.clone(),
        prev_hash: prev,
        hash,
    })
}

/// The tenant's seal-chain tip (created if missing); the caller holds the write lock.
async fn tenant_head(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tenant: &TenantId,
) -> std::result::Result<(u64, Hash), OpError> {
    sqlx::query(
        "INSERT INTO audit_tenant_heads (tenant, next_seal_seq, last_seal_hash) VALUES (?, 0, ?)
         ON CONFLICT (tenant) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(Hash::ZERO.as_bytes().as_slice())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(
        "SELECT next_seal_seq, last_seal_hash FROM audit_tenant_heads WHERE tenant = ?",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let seq: i64 = row.try_get("next_seal_seq")?;
    Ok((
        seq as u64,
        Hash::from_slice(&row.try_get::<Vec<u8>, _>("last_seal_hash")?)?,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn insert_seal(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tenant: &TenantId,
    seal_seq: u64,
    prev: &Hash,
    body: &SealBody,
    run: Option<Uuid>,
    kind: &str,
    at: DateTime<Utc>,
) -> std::result::Result<Hash, OpError> {
    let canonical = canonical_json(body)?;
    let hash = Hash::chain(prev, &canonical);
    sqlx::query(
        "INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant.as_str())
    .bind(seal_seq as i64)
    .bind(kind)
    .bind(run)
    .bind(micros(&at))
    .bind(String::from_utf8_lossy(&canonical).into_owned())
    .bind(prev.as_bytes().as_slice())
    .bind(hash.as_bytes().as_slice())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE audit_tenant_heads SET next_seal_seq = ?, last_seal_hash = ? WHERE tenant = ?",
    )
    .bind(seal_seq as i64 + 1)
    .bind(hash.as_bytes().as_slice())
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(hash)
}

fn run_from_row(r: &SqliteRow) -> std::result::Result<Run, OpError> {
    let conv: Option<String> = r.try_get("conversation_id")?;
    let ended: Option<i64> = r.try_get("ended_at")?;
    Ok(Run {
        id: RunId::from_uuid(r.try_get("id")?)?,
        tenant: TenantId::parse(r.try_get::<String, _>("tenant")?)?,
        user: crate::ids::UserId::parse(r.try_get::<String, _>("user_id")?)?,
        conversation_id: conv.map(crate::ids::ConversationId::parse).transpose()?,
        model: r.try_get("model")?,
        started_at: from_micros(r.try_get("started_at")?)?,
        status: status_of(&r.try_get::<String, _>("status")?)?,
        ended_at: ended.map(from_micros).transpose()?,
        step_count: r.try_get::<i64, _>("next_seq")? as u64,
    })
}

#[async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn database(&self) -> crate::ledger::Database {
        crate::ledger::Database::Sqlite(self.pool.clone())
    }

    #[tracing::instrument(skip_all, fields(tenant = %new.tenant), err)]
    async fn start_run(&self, new: NewRun) -> Result<Run> {
        let started_at = truncate_micros(Utc::now());
        let id = RunId::new_at(started_at);
        let genesis = canonical::run_genesis(
            &id.to_string(),
            new.tenant.as_str(),
            new.user.as_str(),
            new.conversation_id.as_ref().map(|c| c.as_str()),
            &new.model,
            &started_at,
        )?;
        if new.model.contains('\0') {
            return Err(LedgerError::Invalid {
                what: "model",
                reason: "contains a NUL character".into(),
            });
        }
        bounded("start_run", self.options.operation_timeout, async {
            let _w = self.write.lock().await;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "INSERT INTO audit_runs (id, tenant, user_id, conversation_id, model, started_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id.as_uuid())
            .bind(new.tenant.as_str())
            .bind(new.user.as_str())
            .bind(new.conversation_id.as_ref().map(|c| c.as_str()))
            .bind(&new.model)
            .bind(micros(&started_at))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO audit_run_heads (run_id, tenant, user_id, next_seq, last_hash, status)
                 VALUES (?, ?, ?, 0, ?, 'running')",
            )
            .bind(id.as_uuid())
            .bind(new.tenant.as_str())
            .bind(new.user.as_str())
            .bind(genesis.as_bytes().as_slice())
            .execute(&mut *tx)
            .await?;
            // Anchored in the tenant chain from the start, so the run cannot vanish
            // unnoticed even if it never ends.
            let (seal_seq, seal_prev) = tenant_head(&mut tx, &new.tenant).await?;
            let body = SealBody::RunOpened {
                tenant: new.tenant.clone(),
                seal_seq,
                run_id: id,
                genesis,
                opened_at: hash_time(&started_at),
            };
            insert_seal(
                &mut tx,
                &new.tenant,
                seal_seq,
                &seal_prev,
                &body,
                Some(id.as_uuid()),
                "run_opened",
                started_at,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await?;
        Ok(Run {
            id,
            tenant: new.tenant,
            user: new.user,
            conversation_id: new.conversation_id,
            model: new.model,
            started_at,
            status: RunStatus::Running,
            ended_at: None,
            step_count: 0,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant, run = %run, kind = step.step.kind_name()), err)]
    async fn append(&self, tenant: &TenantId, run: RunId, step: NewStep) -> Result<StepRecord> {
        bounded("append", self.options.operation_timeout, async {
            let (reply, answer) = oneshot::channel();
            let op = QueuedStep {
                tenant: tenant.clone(),
                run: run.as_uuid(),
                step,
                reply,
            };
            self.group_append(op, answer).await
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant, run = %run), err)]
    async fn run(&self, tenant: &TenantId, run: RunId) -> Result<Run> {
        bounded("run", self.options.operation_timeout, async {
            let row = sqlx::query(
                "SELECT r.id, r.tenant, r.user_id, r.conversation_id, r.model, r.started_at,
                        h.status, h.ended_at, h.next_seq
                 FROM audit_runs r JOIN audit_run_heads h ON h.run_id = r.id
                 WHERE r.id = ? AND r.tenant = ?",
            )
            .bind(run.as_uuid())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(r) => run_from_row(&r),
                None => Err(LedgerError::RunNotFound(run.to_string()).into()),
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant, run = %run), err)]
    async fn trail(&self, tenant: &TenantId, run: RunId) -> Result<Vec<StepRecord>> {
        let rows = bounded("trail", self.options.operation_timeout, async {
            Ok(sqlx::query(&format!(
                "SELECT {STEP_COLUMNS} FROM audit_steps s WHERE s.run_id = ? AND s.tenant = ? ORDER BY s.seq"
            ))
            .bind(run.as_uuid())
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?)
        })
        .await?;
        rows.iter()
            .map(|r| {
                step_row(r)
                    .map_err(|e| LedgerError::Corrupt(e.to_string()))
                    .and_then(StepRow::into_record)
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(tenant = %query.tenant), err)]
    async fn query(&self, query: &StepQuery) -> Result<StepPage> {
        let limit = query.page_size();
        let rows = bounded("query", self.options.operation_timeout, async {
            let mut b: QueryBuilder<'_, Sqlite> =
                QueryBuilder::new(format!("SELECT {STEP_COLUMNS} FROM audit_steps s"));
            if let Some(status) = query.status {
                b.push(" JOIN audit_run_heads h ON h.run_id = s.run_id AND h.status = ");
                b.push_bind(status.as_str());
            }
            b.push(" WHERE s.tenant = ");
            b.push_bind(query.tenant.as_str());
            if let Some(u) = &query.user {
                b.push(" AND s.user_id = ").push_bind(u.as_str());
            }
            if let Some(p) = &query.plugin {
                b.push(" AND s.plugin_id = ").push_bind(p.as_str());
            }
            if let Some(t) = &query.tool {
                b.push(" AND s.tool_name = ").push_bind(t.as_str());
            }
            if let Some(k) = query.kind_filter() {
                b.push(" AND s.kind = ").push_bind(k);
            }
            if let Some(r) = &query.run {
                b.push(" AND s.run_id = ").push_bind(r.as_uuid());
            }
            if let Some(f) = query.from {
                b.push(" AND s.at >= ").push_bind(micros(&f));
            }
            if let Some(t) = query.to {
                b.push(" AND s.at < ").push_bind(micros(&t));
            }
            let terms = query.text_terms();
            if !terms.is_empty() {
                // Each word quoted, so FTS5 syntax in the input is just text.
                let m = terms
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(" ");
                b.push(
                    " AND s.id IN (SELECT rowid FROM audit_steps_fts WHERE audit_steps_fts MATCH ",
                )
                .push_bind(m)
                .push(")");
            }
            if let Some(c) = query.after {
                b.push(" AND s.id > ").push_bind(c.0);
            }
            b.push(" ORDER BY s.id LIMIT ")
                .push_bind(i64::from(limit) + 1);
            Ok(b.build().fetch_all(&self.pool).await?)
        })
        .await?;
        let more = rows.len() > limit as usize;
        let mut steps = Vec::with_capacity(rows.len().min(limit as usize));
        for r in rows.iter().take(limit as usize) {
            let row = step_row(r).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            steps.push(row.into_record()?);
        }
        let next = if more {
            steps.last().map(|s| Cursor(s.id))
        } else {
            None
        };
        Ok(StepPage { steps, next })
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.tenant, cutoff = %request.cutoff, actor = %request.actor), err)]
    async fn purge(&self, request: &PurgeRequest) -> Result<PurgeReport> {
        let now = truncate_micros(Utc::now());
        let cutoff = truncate_micros(request.cutoff);
        request.check(now)?;
        let (tenant, actor) = (&request.tenant, &request.actor);
        let start = std::time::Instant::now();
        let map = |e: sqlx::Error| LedgerError::from_sqlx("purge", start.elapsed(), e);
        let op = |e: OpError| match e {
            OpError::Sqlx(e) => LedgerError::from_sqlx("purge", start.elapsed(), e),
            OpError::Ledger(e) => e,
        };
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map)?;
        let (seal_seq, prev) = tenant_head(&mut tx, tenant).await.map_err(op)?;
        let rows = sqlx::query(
            "SELECT s.seal_seq, s.hash, s.run_id, json_extract(s.body, '$.step_count') AS steps
             FROM audit_seals s JOIN audit_runs r ON r.id = s.run_id
             WHERE s.tenant = ? AND s.kind = 'run' AND s.sealed_at < ? AND s.seal_seq < ?
             ORDER BY s.seal_seq",
        )
        .bind(tenant.as_str())
        .bind(micros(&cutoff))
        .bind(seal_seq as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
        let mut digest = Sha256::new();
        let (mut steps, mut first, mut last) = (0u64, None, None);
        let mut ids: Vec<Uuid> = Vec::with_capacity(rows.len());
        for r in &rows {
            let s: i64 = r.try_get("seal_seq").map_err(map)?;
            digest.update(r.try_get::<Vec<u8>, _>("hash").map_err(map)?);
            steps += r.try_get::<i64, _>("steps").map_err(map)? as u64;
            ids.push(r.try_get("run_id").map_err(map)?);
            first.get_or_insert(s as u64);
            last = Some(s as u64);
        }
        let runs = ids.len() as u64;
        // The controlled path through the DELETE triggers: open the gate, delete, close it,
        // all inside this write transaction.
        sqlx::query("INSERT INTO audit_purge_gate (opened_by) VALUES (?)")
            .bind(actor.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        let (mut n_steps, mut n_runs) = (0u64, 0u64);
        for id in &ids {
            n_steps += sqlx::query("DELETE FROM audit_steps WHERE run_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map)?
                .rows_affected();
            n_runs += sqlx::query("DELETE FROM audit_runs WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map)?
                .rows_affected();
            sqlx::query("DELETE FROM audit_run_heads WHERE run_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map)?;
        }
        sqlx::query("DELETE FROM audit_purge_gate")
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        if n_steps != steps || n_runs != runs {
            // Dropping the transaction rolls everything back.
            return Err(LedgerError::Corrupt(format!(
                "purge would remove {n_runs} runs and {n_steps} steps, but their seals say {runs} and {steps}"
            )));
        }
        let body = SealBody::Purge {
            tenant: tenant.clone(),
            seal_seq,
            cutoff: hash_time(&cutoff),
            actor: actor.clone(),
            reason: Some(request.reason.clone()),
            db_role: None,
            purged_at: hash_time(&now),
            runs_purged: runs,
            steps_purged: steps,
            first_seal_seq: first,
            last_seal_seq: last,
            purged_digest: Hash(digest.finalize().into()),
        };
        let hash = insert_seal(&mut tx, tenant, seal_seq, &prev, &body, None, "purge", now)
            .await
            .map_err(op)?;
        tx.commit().await.map_err(map)?;
        Ok(PurgeReport {
            tenant: tenant.clone(),
            cutoff,
            runs_purged: runs,
            steps_purged: steps,
            seal_seq,
            hash,
        })
    }

    async fn seal_hashes(&self, tenant: &TenantId) -> Result<Vec<crate::Hash>> {
        crate::seal_store::sqlite_seal_hashes(&self.pool, tenant).await
    }

    async fn seal_hashes_from(
        &self,
        tenant: &TenantId,
        from: u64,
    ) -> Result<Vec<(u64, crate::Hash)>> {
        crate::seal_store::sqlite_seal_hashes_from(&self.pool, tenant, from).await
    }

    async fn run_seals(
        &self,
        tenant: &TenantId,
        run: RunId,
    ) -> Result<Vec<crate::seal_store::SealEntry>> {
        crate::seal_store::sqlite_run_seals(&self.pool, tenant, run).await
    }

    async fn store_checkpoint(&self, cp: &crate::seal_store::StoredCheckpoint) -> Result<()> {
        crate::seal_store::sqlite_store_checkpoint(&self.pool, cp).await
    }

    async fn latest_checkpoint(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<crate::seal_store::StoredCheckpoint>> {
        crate::seal_store::sqlite_latest_checkpoint(&self.pool, tenant).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>> {
        crate::seal_store::sqlite_tenants(&self.pool).await
    }

    #[tracing::instrument(skip_all, err)]
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<VerifyReport> {
        let start = std::time::Instant::now();
        let map = |e: sqlx::Error| LedgerError::from_sqlx("verify", start.elapsed(), e);
        // A read transaction: one snapshot for the whole check.
        let mut tx = self.pool.begin().await.map_err(map)?;
        let tenants: Vec<String> = match tenant {
            Some(t) => vec![t.to_string()],
            None => sqlx::query_scalar(
                "SELECT tenant FROM audit_tenant_heads
                 UNION SELECT tenant FROM audit_runs
                 UNION SELECT tenant FROM audit_steps
                 ORDER BY 1",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?,
        };
        let lo = from.map(RunId::lower_bound).unwrap_or(Uuid::nil());
        let hi = to.map(RunId::lower_bound).unwrap_or(Uuid::max());
        let mut total = VerifyCounts::default();
        for t in tenants {
            let mut v = TenantVerifier::new(&t, from, to);
            let seals = sqlx::query(
                "SELECT seal_seq, body, prev_hash, hash FROM audit_seals WHERE tenant = ? ORDER BY seal_seq",
            )
            .bind(&t)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
            let mut broken = None;
            for r in seals {
                let body: String = r.try_get("body").map_err(map)?;
                let row = SealRow {
                    seal_seq: r.try_get("seal_seq").map_err(map)?,
                    body: serde_json::from_str(&body)?,
                    prev_hash: r.try_get("prev_hash").map_err(map)?,
                    hash: r.try_get("hash").map_err(map)?,
                };
                if let Err(b) = v.seal(row) {
                    broken = Some(*b);
                    break;
                }
            }
            if broken.is_none() && to.is_none() {
                let head = sqlx::query(
                    "SELECT next_seal_seq, last_seal_hash FROM audit_tenant_heads WHERE tenant = ?",
                )
                .bind(&t)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map)?;
                if let Some(h) = head {
                    let next: i64 = h.try_get("next_seal_seq").map_err(map)?;
                    let last: Vec<u8> = h.try_get("last_seal_hash").map_err(map)?;
                    broken = v.tenant_head(next, &last).err().map(|b| *b);
                }
            }
            if broken.is_none() {
                let runs = sqlx::query(
                    "SELECT r.id, r.tenant, r.user_id, r.conversation_id, r.model, r.started_at, h.next_seq,
                            h.last_hash
                     FROM audit_runs r LEFT JOIN audit_run_heads h ON h.run_id = r.id
                     WHERE r.tenant = ? AND r.id >= ? AND r.id < ?",
                )
                .bind(&t)
                .bind(lo)
                .bind(hi)
                .fetch_all(&mut *tx)
                .await
                .map_err(map)?;
                for r in runs {
                    v.run(RunRow {
                        id: r.try_get("id").map_err(map)?,
                        tenant: r.try_get("tenant").map_err(map)?,
                        user_id: r.try_get("user_id").map_err(map)?,
                        conversation_id: r.try_get("conversation_id").map_err(map)?,
                        model: r.try_get("model").map_err(map)?,
                        started_at: from_micros(r.try_get("started_at").map_err(map)?)
                            .map_err(map)?,
                        head_next_seq: r.try_get("next_seq").map_err(map)?,
                        head_last_hash: r.try_get("last_hash").map_err(map)?,
                    });
                }
                let sql = format!(
                    "SELECT {STEP_COLUMNS} FROM audit_steps s
                     WHERE s.tenant = ? AND s.run_id >= ? AND s.run_id < ?
                     ORDER BY s.run_id, s.seq"
                );
                let mut steps = sqlx::query(&sql).bind(&t).bind(lo).bind(hi).fetch(&mut *tx);
                while let Some(r) = steps.try_next().await.map_err(map)? {
                    if let Err(b) = v.step(step_row(&r).map_err(map)?) {
                        broken = Some(*b);
                        break;
                    }
                }
            }
            let (counts, fin) = match broken {
                Some(b) => (v.counts, Some(b)),
                None => v.finish(),
            };
            verify::add(&mut total, &counts);
            if fin.is_some() {
                return Ok(VerifyReport {
                    counts: total,
                    broken: fin,
                });
            }
        }
        let _ = Duration::ZERO;
        Ok(VerifyReport {
            counts: total,
            broken: None,
        })
    }
}
