//! The store-independent interface.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{LedgerError, Result};
use crate::ids::{Actor, RunId, TenantId};
use crate::model::{NewRun, NewStep, PurgeReport, PurgeRequest, Run, StepRecord};
use crate::query::{StepPage, StepQuery};
use crate::seal_store::{SealEntry, StoredCheckpoint};
use crate::verify::VerifyReport;

/// Which database a ledger writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the production store.
    Postgres,
    /// SQLite: the embedded default.
    Sqlite,
}

/// Tuning that matters for failing closed.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// Upper bound on any one store operation, connection acquisition included. When it
    /// passes, the operation fails with [`LedgerError::Unavailable`].
    pub operation_timeout: Duration,
    /// Pool size.
    pub max_connections: u32,
    /// Run the embedded migrations on open.
    pub migrate: bool,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(5),
            max_connections: 16,
            migrate: true,
        }
    }
}

/// The database a ledger writes to, for the host state kept beside the ledger's tables
/// (installations, plugin key-value data, run settings: `cairn-store`). One pool per
/// process: the host's state and its ledger live in one database, so several hosts share
/// both through it. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Database {
    /// A PostgreSQL pool.
    Postgres(sqlx::PgPool),
    /// A SQLite pool.
    Sqlite(sqlx::SqlitePool),
}

/// The audit ledger. Both stores implement it with the same behaviour (one test suite
/// runs against both); callers hold an `Arc<dyn Ledger>`.
///
/// Every write returns only after its transaction committed. A run's steps get seq 0, 1,
/// 2, … in append order; when a run's terminal step (`final_answer`, `run_failed`,
/// `run_cancelled`) is appended, the run is sealed into its tenant's chain in the same
/// transaction.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// The database under this ledger, for the host state stored beside it.
    fn database(&self) -> Database;

    /// Starts a run: records its header, whose hash is the `prev_hash` of step 0, and
    /// anchors it in its tenant's chain (a `run_opened` record) in the same transaction,
    /// so that the run cannot later be removed unnoticed, finished or not.
    async fn start_run(&self, new: NewRun) -> Result<Run>;

    /// Appends one step to a running run of `tenant`. Fails with
    /// [`LedgerError::RunNotFound`] for an unknown run or another tenant's run,
    /// [`LedgerError::RunEnded`] after a terminal step, and
    /// [`LedgerError::Unavailable`] when the database cannot be reached in time.
    async fn append(&self, tenant: &TenantId, run: RunId, step: NewStep) -> Result<StepRecord>;

    /// A run's header and current state.
    async fn run(&self, tenant: &TenantId, run: RunId) -> Result<Run>;

    /// A run's full trail, in seq order.
    async fn trail(&self, tenant: &TenantId, run: RunId) -> Result<Vec<StepRecord>>;

    /// One page of steps matching the query, oldest first.
    async fn query(&self, query: &StepQuery) -> Result<StepPage>;

    /// Removes the runs of `request.tenant` sealed before its cutoff (only sealed runs)
    /// and records the purge (who asked, why, and on PostgreSQL the database role that ran
    /// it) in the tenant chain, so verification still passes and says what was removed.
    /// Refused for a blank reason or a cutoff later than now minus the minimum retention;
    /// on PostgreSQL the database refuses, too, any role but the retention role.
    ///
    /// The default forwards to [`Ledger::purge_before`] and loses the reason: only for
    /// wrappers written before this method existed; both stores implement it.
    async fn purge(&self, request: &PurgeRequest) -> Result<PurgeReport> {
        request.check(Utc::now())?;
        self.purge_before(&request.tenant, request.cutoff, &request.actor)
            .await
    }

    /// [`Ledger::purge`] with no minimum retention and the reason `unspecified`; kept for
    /// callers that predate it.
    async fn purge_before(
        &self,
        tenant: &TenantId,
        cutoff: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<PurgeReport> {
        self.purge(&PurgeRequest {
            tenant: tenant.clone(),
            cutoff,
            actor: actor.clone(),
            reason: "unspecified".into(),
            min_retention: chrono::Duration::zero(),
        })
        .await
    }

    /// Recomputes every hash (of one tenant or all) and reports the first broken link.
    /// `from`/`to` restrict the runs checked to those started in `[from, to)`; seal chains
    /// are always checked whole.
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<VerifyReport>;

    /// The chain hashes of every seal of `tenant`, in order: the leaves of its Merkle tree.
    async fn seal_hashes(&self, tenant: &TenantId) -> Result<Vec<crate::Hash>> {
        let _ = tenant;
        Err(unsupported("seal_hashes"))
    }

    /// The chain hashes of `tenant`'s seals from position `from` on, with their positions,
    /// in order: what a tree kept between requests grows by. The default reads them all.
    async fn seal_hashes_from(
        &self,
        tenant: &TenantId,
        from: u64,
    ) -> Result<Vec<(u64, crate::Hash)>> {
        Ok(self
            .seal_hashes(tenant)
            .await?
            .into_iter()
            .zip(0u64..)
            .skip_while(|(_, i)| *i < from)
            .map(|(h, i)| (i, h))
            .collect())
    }

    /// The seals of one run: its `run_opened` record and, once it ended, its `run` seal.
    async fn run_seals(&self, tenant: &TenantId, run: RunId) -> Result<Vec<SealEntry>> {
        let _ = (tenant, run);
        Err(unsupported("run_seals"))
    }

    /// Records a published checkpoint (insert only).
    async fn store_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<()> {
        let _ = checkpoint;
        Err(unsupported("store_checkpoint"))
    }

    /// The largest (then newest) checkpoint published for `tenant`.
    async fn latest_checkpoint(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>> {
        let _ = tenant;
        Err(unsupported("latest_checkpoint"))
    }

    /// Every tenant with a seal chain.
    async fn tenants(&self) -> Result<Vec<TenantId>> {
        Err(unsupported("tenants"))
    }

    /// Every step matching the query (the cursor and page size of `query` are where it
    /// starts and how many rows are fetched at a time), as a stream read page by page:
    /// memory stays at one page however large the export.
    fn export(&self, query: StepQuery) -> BoxStream<'_, Result<StepRecord>> {
        let pages = stream::try_unfold(Some(query), move |q| async move {
            let Some(q) = q else { return Ok(None) };
            let page = self.query(&q).await?;
            let next = page.next.map(|c| {
                let mut n = q.clone();
                n.after = Some(c);
                n
            });
            Ok::<_, LedgerError>(Some((stream::iter(page.steps.into_iter().map(Ok)), next)))
        });
        pages.try_flatten().boxed()
    }
}

use futures::TryStreamExt;

/// The transparency methods' default, for wrappers written before they existed.
fn unsupported(operation: &'static str) -> LedgerError {
    LedgerError::Invalid {
        what: "ledger",
        reason: format!("{operation} is not supported by this ledger"),
    }
}
