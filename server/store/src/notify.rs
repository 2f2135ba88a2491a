//! Run notifications, so that following a run's events reads each new step once, when it
//! is recorded, instead of re-reading the trail on a timer.
//!
//! [`RunNotifier`] fans "run R has steps up to seq N" out to the subscribers of R in this
//! process. Appends reach it through [`NotifyingLedger`], the [`Ledger`] wrapper every
//! host puts around its ledger, which calls [`RunNotifier::notify`] after each committed
//! append. On PostgreSQL the notifier also tells the other hosts: after the commit, a
//! background task sends `pg_notify('cairn_steps', '<run> <seq>')` (batched: one
//! statement for whatever appends are pending, the highest seq per run), and each host
//! holds one `LISTEN cairn_steps` connection from its pool and fans what arrives out
//! in-process. On SQLite (one process per database file) the in-process fan-out is all.
//!
//! Why not a trigger on `audit_steps`: a `NOTIFY` inside the appending transaction makes
//! every such commit take PostgreSQL's global notification lock and hold it through its
//! WAL flush, so concurrent appends stop sharing flushes. Measured (BENCHMARKS.md, "Run
//! notifications"), the ledger's 16-writer append rate fell from about 3,000 to 700
//! steps/s. Sent after the commit, outside the append, the notification costs the append
//! nothing but a channel send. The price: steps written by something other than a Cairn
//! host (no wrapper) are not announced, and its followers see them on the fallback read.
//!
//! The same connection carries installation changes ([`CATALOG_CHANNEL`], payload: the
//! tenant): each host keeps every tenant's list of enabled plugins in memory
//! ([`RunNotifier::catalog_version`] says whether a kept list is still current), and a
//! host that installs, enables, disables, upgrades or uninstalls a plugin announces it
//! with [`RunNotifier::catalog_changed`], so the others drop their copy. A lost
//! notification costs staleness, not safety: a reconnected listener changes every
//! tenant's version, the keeper re-reads after a bounded age anyway, and calling a tool
//! always reads the installation itself.
//!
//! A notification carries no data and no tenant: it only wakes a follower, which reads the
//! new steps through the ledger under its own tenant ([`follow`]). A lost notification (a
//! dropped `LISTEN` connection, a failed `pg_notify`) costs latency, not steps:
//! subscribers are woken when the listener reconnects, and [`follow`] also re-reads on a
//! slow timer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cairn_audit::{
    Backend, Cursor, Database, Ledger, NewRun, NewStep, PurgeReport, Run, RunId, RunStatus,
    StepPage, StepQuery, StepRecord, TenantId, VerifyReport,
};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// The PostgreSQL channel step notifications travel on.
pub const STEP_CHANNEL: &str = "cairn_steps";

/// The PostgreSQL channel on which hosts announce that a tenant's installations changed;
/// the payload is the tenant.
pub const CATALOG_CHANNEL: &str = "cairn_catalog";

/// Which version of a tenant's installations a host has heard of: equal versions mean no
/// change was announced in between. Opaque; compare with `==`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogVersion {
    epoch: u64,
    tenant: u64,
}

/// Announced installation changes per tenant, and an epoch for "anything may have
/// changed" (notifications lost while the listener was down).
#[derive(Default)]
struct Catalogs {
    epoch: AtomicU64,
    tenants: Mutex<HashMap<String, u64>>,
}

impl Catalogs {
    fn version(&self, tenant: &str) -> CatalogVersion {
        // The epoch is read first: a bump of either after this read makes the version a
        // keeper stores with its list older than the next one it is compared with.
        let epoch = self.epoch.load(Ordering::Acquire);
        let tenants = self.tenants.lock().expect("catalog versions lock");
        CatalogVersion {
            epoch,
            tenant: tenants.get(tenant).copied().unwrap_or(0),
        }
    }

    fn changed(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().expect("catalog versions lock");
        *tenants.entry(tenant.to_owned()).or_default() += 1;
    }

    fn all_changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The `LISTEN` connection could not be opened.
    #[error("listening for run notifications on {STEP_CHANNEL}: {0}")]
    Listen(#[from] sqlx::Error),
}

/// The latest seq known per followed run. Entries exist only while someone follows.
#[derive(Default)]
struct Runs {
    followed: Mutex<HashMap<Uuid, watch::Sender<Option<u64>>>>,
}

impl Runs {
    fn notify(&self, run: Uuid, seq: u64) {
        let followed = self.followed.lock().expect("run notifier lock");
        if let Some(tx) = followed.get(&run) {
            tx.send_if_modified(|known| {
                let newer = known.is_none_or(|k| seq > k);
                if newer {
                    *known = Some(seq);
                }
                newer
            });
        }
    }

    /// Wakes every subscriber: notifications may have been lost.
    fn wake_all(&self) {
        let followed = self.followed.lock().expect("run notifier lock");
        for tx in followed.values() {
            tx.send_modify(|_| {});
        }
    }
}

struct Shared {
    runs: Arc<Runs>,
    catalogs: Arc<Catalogs>,
    /// PostgreSQL: the pool installation changes are announced through.
    pool: Option<sqlx::PgPool>,
    /// PostgreSQL: where this host's appends are queued for `pg_notify`.
    publish: Option<mpsc::Sender<(Uuid, u64)>>,
    /// PostgreSQL: the listener and publisher tasks, stopped with the notifier.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Appends queued for `pg_notify` beyond this are dropped (followers then rely on their
/// fallback read): a notification is a hint, and an append never waits for one.
const PUBLISH_QUEUE: usize = 4096;

/// Tells this process's followers of a run that it has new steps. Cheap to clone; one per
/// host.
#[derive(Clone)]
pub struct RunNotifier {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunNotifier")
            .field("postgres", &self.shared.publish.is_some())
            .finish()
    }
}

impl RunNotifier {
    /// A notifier fed only by [`RunNotifier::notify`] (through [`NotifyingLedger`]): for
    /// SQLite, where one process owns the database, and for tests.
    pub fn local() -> Self {
        Self {
            shared: Arc::new(Shared {
                runs: Arc::default(),
                catalogs: Arc::default(),
                pool: None,
                publish: None,
                tasks: Vec::new(),
            }),
        }
    }

    /// The notifier for `db`: on PostgreSQL it listens on [`STEP_CHANNEL`] over one
    /// connection of the pool (held for the notifier's life, re-opened if it drops), so it
    /// hears every host's appends, and publishes this host's; on SQLite it is
    /// [`RunNotifier::local`]. Fails when the `LISTEN` connection cannot be opened, so a
    /// misconfigured host fails at start-up.
    pub async fn start(db: &Database) -> Result<Self, NotifyError> {
        let Database::Postgres(pool) = db else {
            return Ok(Self::local());
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all([STEP_CHANNEL, CATALOG_CHANNEL]).await?;
        let runs = Arc::<Runs>::default();
        let catalogs = Arc::<Catalogs>::default();
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let tasks = vec![
            tokio::spawn(listen(listener, Arc::clone(&runs), Arc::clone(&catalogs))),
            tokio::spawn(publish_all(pool.clone(), queue)),
        ];
        Ok(Self {
            shared: Arc::new(Shared {
                runs,
                catalogs,
                pool: Some(pool.clone()),
                publish: Some(publish),
                tasks,
            }),
        })
    }

    /// Records that an append of `run` at `seq` committed on this host: wakes its
    /// followers here and, on PostgreSQL, queues the notification for the other hosts.
    pub fn notify(&self, run: RunId, seq: u64) {
        self.shared.runs.notify(run.as_uuid(), seq);
        if let Some(publish) = &self.shared.publish
            && publish.try_send((run.as_uuid(), seq)).is_err()
        {
            tracing::debug!("run notification queue full; followers elsewhere fall back");
        }
    }

    /// Starts following `run`: the subscription is woken by every later notification of
    /// it. Subscribe before reading the steps already there, so none falls in between.
    /// There is no tenant here: a notification carries no data, and the reader checks the
    /// tenant when it reads the steps.
    pub fn subscribe(&self, run: RunId) -> RunSubscription {
        let run = run.as_uuid();
        let mut followed = self.shared.runs.followed.lock().expect("run notifier lock");
        let rx = followed
            .entry(run)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        RunSubscription {
            rx,
            run,
            runs: Arc::clone(&self.shared.runs),
        }
    }

    /// The version of `tenant`'s installations this host has heard of. Read it before
    /// reading the installations, and keep the list only while it stays the same.
    pub fn catalog_version(&self, tenant: &str) -> CatalogVersion {
        self.shared.catalogs.version(tenant)
    }

    /// Announces that `tenant`'s installations changed (after the change committed): at
    /// once on this host, and through [`CATALOG_CHANNEL`] on the others. A failed
    /// announcement is logged; other hosts then see the change when their kept list
    /// expires.
    pub async fn catalog_changed(&self, tenant: &str) {
        self.shared.catalogs.changed(tenant);
        if let Some(pool) = &self.shared.pool
            && let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CATALOG_CHANNEL)
                .bind(tenant)
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, tenant, "announcing an installation change failed");
        }
    }

    /// How many runs this process follows (for tests and metrics).
    pub fn followed_runs(&self) -> usize {
        self.shared
            .runs
            .followed
            .lock()
            .expect("run notifier lock")
            .len()
    }
}

/// The listener task: one `LISTEN` connection per host, fanned out in-process.
async fn listen(
    mut listener: sqlx::postgres::PgListener,
    runs: Arc<Runs>,
    catalogs: Arc<Catalogs>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == CATALOG_CHANNEL => catalogs.changed(n.payload()),
            Ok(Some(n)) => match parse_payload(n.payload()) {
                Some((run, seq)) => runs.notify(run, seq),
                None => tracing::warn!(payload = n.payload(), "malformed step notification"),
            },
            Ok(None) => {
                // The connection dropped and was re-opened: anything sent meanwhile is lost.
                tracing::warn!("the run notification connection dropped; followers re-read");
                runs.wake_all();
                catalogs.all_changed();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "run notifications unavailable; retrying in 1 s");
                runs.wake_all();
                catalogs.all_changed();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The publisher task: sends this host's appends as notifications, after their commits,
/// as many per statement as are waiting (the highest seq per run: a follower reads
/// everything up to it anyway).
async fn publish_all(pool: sqlx::PgPool, mut queue: mpsc::Receiver<(Uuid, u64)>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 1024).await > 0 {
        let mut highest: HashMap<Uuid, u64> = HashMap::with_capacity(batch.len());
        for (run, seq) in batch.drain(..) {
            let known = highest.entry(run).or_insert(seq);
            *known = (*known).max(seq);
        }
        let payloads: Vec<String> = highest
            .into_iter()
            .map(|(run, seq)| format!("{run} {seq}"))
            .collect();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(STEP_CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "sending run notifications failed; followers fall back");
        }
    }
}

/// `<run uuid> <seq>`, as [`publish_all`] writes it.
fn parse_payload(payload: &str) -> Option<(Uuid, u64)> {
    let (run, seq) = payload.split_once(' ')?;
    Some((Uuid::parse_str(run).ok()?, seq.parse().ok()?))
}

/// One follower's view of a run's notifications. Dropping it stops following.
pub struct RunSubscription {
    rx: watch::Receiver<Option<u64>>,
    run: Uuid,
    runs: Arc<Runs>,
}

impl RunSubscription {
    /// The highest seq notified so far, and marks it seen.
    pub fn latest(&mut self) -> Option<u64> {
        *self.rx.borrow_and_update()
    }

    /// Waits for a notification newer than the last [`RunSubscription::latest`] (or a
    /// wake-up after notifications may have been lost).
    pub async fn changed(&mut self) {
        // The sender lives while this subscription does (it is removed only when its last
        // receiver goes), so this cannot fail; if it did, waiting forever would be wrong.
        if self.rx.changed().await.is_err() {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for RunSubscription {
    fn drop(&mut self) {
        let mut followed = self.runs.followed.lock().expect("run notifier lock");
        // Under the lock no one can subscribe meanwhile; 1 is this receiver.
        if followed
            .get(&self.run)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            followed.remove(&self.run);
        }
    }
}

/// A [`Ledger`] that tells a [`RunNotifier`] about each committed append: how followers,
/// on this host and (PostgreSQL) every other, learn of new steps. Every host wraps its
/// ledger in one.
pub struct NotifyingLedger {
    inner: Arc<dyn Ledger>,
    notifier: RunNotifier,
}

impl NotifyingLedger {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Ledger>, notifier: RunNotifier) -> Self {
        Self { inner, notifier }
    }
}

#[async_trait]
impl Ledger for NotifyingLedger {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn database(&self) -> Database {
        self.inner.database()
    }

    async fn start_run(&self, new: NewRun) -> cairn_audit::Result<Run> {
        self.inner.start_run(new).await
    }

    async fn append(
        &self,
        tenant: &TenantId,
        run: RunId,
        step: NewStep,
    ) -> cairn_audit::Result<StepRecord> {
        let record = self.inner.append(tenant, run, step).await?;
        self.notifier.notify(run, record.seq);
        Ok(record)
    }

    async fn run(&self, tenant: &TenantId, run: RunId) -> cairn_audit::Result<Run> {
        self.inner.run(tenant, run).await
    }

    async fn trail(&self, tenant: &TenantId, run: RunId) -> cairn_audit::Result<Vec<StepRecord>> {
        self.inner.trail(tenant, run).await
    }

    async fn query(&self, query: &StepQuery) -> cairn_audit::Result<StepPage> {
        self.inner.query(query).await
    }

    async fn purge_before(
        &self,
        tenant: &TenantId,
        cutoff: DateTime<Utc>,
        actor: &cairn_audit::Actor,
    ) -> cairn_audit::Result<PurgeReport> {
        self.inner.purge_before(tenant, cutoff, actor).await
    }

    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> cairn_audit::Result<VerifyReport> {
        self.inner.verify(tenant, from, to).await
    }

    // Purges and the transparency log go to the store itself: the trait's defaults are
    // for old test wrappers and lose the reason or refuse outright.
    async fn purge(&self, request: &cairn_audit::PurgeRequest) -> cairn_audit::Result<PurgeReport> {
        self.inner.purge(request).await
    }

    async fn seal_hashes(&self, tenant: &TenantId) -> cairn_audit::Result<Vec<cairn_audit::Hash>> {
        self.inner.seal_hashes(tenant).await
    }

    async fn seal_hashes_from(
        &self,
        tenant: &TenantId,
        from: u64,
    ) -> cairn_audit::Result<Vec<(u64, cairn_audit::Hash)>> {
        self.inner.seal_hashes_from(tenant, from).await
    }

    async fn run_seals(
        &self,
        tenant: &TenantId,
        run: RunId,
    ) -> cairn_audit::Result<Vec<cairn_audit::SealEntry>> {
        self.inner.run_seals(tenant, run).await
    }

    async fn store_checkpoint(
        &self,
        checkpoint: &cairn_audit::StoredCheckpoint,
    ) -> cairn_audit::Result<()> {
        self.inner.store_checkpoint(checkpoint).await
    }

    async fn latest_checkpoint(
        &self,
        tenant: &TenantId,
    ) -> cairn_audit::Result<Option<cairn_audit::StoredCheckpoint>> {
        self.inner.latest_checkpoint(tenant).await
    }

    async fn tenants(&self) -> cairn_audit::Result<Vec<TenantId>> {
        self.inner.tenants().await
    }
}

/// What [`follow`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum FollowEvent {
    /// A step, in seq order.
    Step(Box<StepRecord>),
    /// The run completed, failed, was cancelled or paused for approval; nothing follows.
    End(RunStatus),
}

/// How [`follow`] reads.
#[derive(Clone, Copy, Debug)]
pub struct FollowOptions {
    /// How long to wait for a notification before reading anyway, in case one was lost.
    pub fallback_poll: Duration,
    /// Steps read per query.
    pub page: u32,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            fallback_poll: Duration::from_secs(2),
            page: 500,
        }
    }
}

struct Follower {
    ledger: Arc<dyn Ledger>,
    sub: RunSubscription,
    tenant: TenantId,
    run: RunId,
    options: FollowOptions,
    /// First seq to yield.
    next: u64,
    /// One past the last seq read (yielded or skipped).
    read_up_to: u64,
    /// Where the next read starts.
    cursor: Option<Cursor>,
    status: RunStatus,
    queue: VecDeque<StepRecord>,
    read_once: bool,
    done: bool,
}

impl Follower {
    /// Reads the steps after the cursor, page by page: only what is new.
    async fn read_new(&mut self) -> cairn_audit::Result<()> {
        loop {
            let mut q = StepQuery::new(self.tenant.clone());
            q.run = Some(self.run);
            q.after = self.cursor;
            q.limit = self.options.page;
            let page = self.ledger.query(&q).await?;
            for step in page.steps {
                // Within one run, storage ids grow with seq (appends to a run are
                // serialised), so the cursor never skips a step of this run.
                self.cursor = Some(cursor_at(step.id)?);
                self.status = step.step.status_after();
                self.read_up_to = step.seq + 1;
                if step.seq >= self.next {
                    self.next = step.seq + 1;
                    self.queue.push_back(step);
                }
            }
            if page.next.is_none() {
                return Ok(());
            }
        }
    }

    async fn next_event(&mut self) -> Option<cairn_audit::Result<FollowEvent>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(step) = self.queue.pop_front() {
                return Some(Ok(FollowEvent::Step(Box::new(step))));
            }
            if self.read_once
                && (self.status.is_terminal() || self.status == RunStatus::AwaitingApproval)
            {
                self.done = true;
                return Some(Ok(FollowEvent::End(self.status)));
            }
            if self.read_once {
                let known = self.sub.latest();
                if known.is_none_or(|seq| seq < self.read_up_to) {
                    let _ =
                        tokio::time::timeout(self.options.fallback_poll, self.sub.changed()).await;
                    self.sub.latest();
                }
            } else {
                self.sub.latest();
            }
            if let Err(e) = self.read_new().await {
                self.done = true;
                return Some(Err(e));
            }
            self.read_once = true;
        }
    }
}

/// The storage position of step `id`, as a query cursor (the ledger hands cursors out in
/// their text form).
fn cursor_at(id: i64) -> cairn_audit::Result<Cursor> {
    Cursor::decode(&format!("c1.{id:x}"))
}

/// Follows a run of `tenant`: its steps after seq `after` (all, if `None`), then each new
/// one when it is recorded, then [`FollowEvent::End`] once the run completes, fails, is
/// cancelled or pauses for approval. Each step is read once: the first read starts at the
/// run's beginning, every later one after the last step read, and a later read happens
/// when `notifier` says the run moved (or after `options.fallback_poll` without news). An
/// unknown run, or another tenant's, reads as a run with no steps yet: check it exists
/// first. A ledger error ends the stream after yielding it.
pub fn follow(
    ledger: Arc<dyn Ledger>,
    notifier: &RunNotifier,
    tenant: TenantId,
    run: RunId,
    after: Option<u64>,
    options: FollowOptions,
) -> impl Stream<Item = cairn_audit::Result<FollowEvent>> + Send + use<> {
    let follower = Follower {
        ledger,
        sub: notifier.subscribe(run),
        tenant,
        run,
        options,
        next: after.map_or(0, |a| a + 1),
        read_up_to: 0,
        cursor: None,
        status: RunStatus::Running,
        queue: VecDeque::new(),
        read_once: false,
        done: false,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let event = f.next_event().await?;
        Some((event, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notification_payload_parses_and_junk_does_not() {
        let run = Uuid::now_v7();
        assert_eq!(parse_payload(&format!("{run} 42")), Some((run, 42)));
        assert_eq!(parse_payload(&format!("{run}")), None);
        assert_eq!(parse_payload("nope 1"), None);
        assert_eq!(parse_payload(&format!("{run} -1")), None);
    }

    #[tokio::test]
    async fn a_subscription_sees_the_latest_seq_and_goes_away_when_dropped() {
        let n = RunNotifier::local();
        let run = RunId::new_at(Utc::now());
        n.notify(run, 1); // nobody follows: dropped
        assert_eq!(n.followed_runs(), 0);
        let mut a = n.subscribe(run);
        let mut b = n.subscribe(run);
        assert_eq!(a.latest(), None);
        n.notify(run, 3);
        n.notify(run, 2); // older than known: ignored
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .expect("woken");
        assert_eq!(a.latest(), Some(3));
        assert_eq!(b.latest(), Some(3));
        drop(a);
        assert_eq!(n.followed_runs(), 1);
        drop(b);
        assert_eq!(n.followed_runs(), 0);
    }
}
