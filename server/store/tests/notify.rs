//! Following a run by notification: steps appended through one host reach a follower on
//! another (PostgreSQL `LISTEN/NOTIFY`), or on the same process (SQLite), each step read
//! once; a lost notification costs latency, not steps.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cairn_audit::*;
use cairn_store::{FollowEvent, FollowOptions, NotifyingLedger, RunNotifier, follow};
use chrono::{DateTime, Utc};
use common::TestDb;
use futures::{Stream, StreamExt};

/// A ledger that counts what its readers fetch, to show the follower reads each step once
/// and never the whole trail.
struct Counting {
    inner: Arc<dyn Ledger>,
    rows_read: AtomicU64,
    queries: AtomicU64,
    trails: AtomicU64,
}

#[async_trait]
impl Ledger for Counting {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn database(&self) -> Database {
        self.inner.database()
    }
    async fn start_run(&self, new: NewRun) -> Result<Run> {
        self.inner.start_run(new).await
    }
    async fn append(&self, tenant: &TenantId, run: RunId, step: NewStep) -> Result<StepRecord> {
        self.inner.append(tenant, run, step).await
    }
    async fn run(&self, tenant: &TenantId, run: RunId) -> Result<Run> {
        self.inner.run(tenant, run).await
    }
    async fn trail(&self, tenant: &TenantId, run: RunId) -> Result<Vec<StepRecord>> {
        self.trails.fetch_add(1, Ordering::SeqCst);
        self.inner.trail(tenant, run).await
    }
    async fn query(&self, query: &StepQuery) -> Result<StepPage> {
        let page = self.inner.query(query).await?;
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.rows_read
            .fetch_add(page.steps.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn purge_before(
        &self,
        tenant: &TenantId,
        cutoff: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<PurgeReport> {
        self.inner.purge_before(tenant, cutoff, actor).await
    }
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<VerifyReport> {
        self.inner.verify(tenant, from, to).await
    }
}

fn counting(inner: Arc<dyn Ledger>) -> Arc<Counting> {
    Arc::new(Counting {
        inner,
        rows_read: AtomicU64::new(0),
        queries: AtomicU64::new(0),
        trails: AtomicU64::new(0),
    })
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn start(ledger: &dyn Ledger) -> RunId {
    ledger
        .start_run(NewRun {
            tenant: tenant(),
            user: UserId::parse("alice").unwrap(),
            conversation_id: None,
            model: "test".into(),
        })
        .await
        .unwrap()
        .id
}

fn message(i: usize) -> NewStep {
    NewStep {
        actor: Actor::parse("user:alice").unwrap(),
        step: StepKind::UserMessage {
            text: format!("message {i}"),
        },
    }
}

fn answer() -> NewStep {
    NewStep {
        actor: Actor::parse("model").unwrap(),
        step: StepKind::FinalAnswer {
            text: "done".into(),
        },
    }
}

/// Only a notification can wake the follower within a test's patience.
const NO_FALLBACK: FollowOptions = FollowOptions {
    fallback_poll: Duration::from_secs(600),
    page: 500,
};

async fn next_within(
    events: &mut (impl Stream<Item = Result<FollowEvent>> + Unpin),
    limit: Duration,
) -> FollowEvent {
    tokio::time::timeout(limit, events.next())
        .await
        .expect("the follower was not woken in time")
        .expect("the stream ended early")
        .expect("the follower failed")
}

fn seq_of(event: &FollowEvent) -> u64 {
    match event {
        FollowEvent::Step(s) => s.seq,
        FollowEvent::End(status) => panic!("ended ({status:?}) where a step was due"),
    }
}

/// Appends `n` messages and an answer through `writer`, one at a time, and checks that
/// the follower yields each within `limit` of its append; then that it read every step
/// exactly once and never the trail. Returns the slowest step's latency.
async fn drive(
    writer: &dyn Ledger,
    reader: &Counting,
    events: &mut (impl Stream<Item = Result<FollowEvent>> + Unpin),
    run: RunId,
    n: usize,
    limit: Duration,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..=n {
        let step = if i == n { answer() } else { message(i) };
        let appended = Instant::now();
        writer.append(&tenant(), run, step).await.unwrap();
        let event = next_within(events, limit).await;
        slowest = slowest.max(appended.elapsed());
        assert_eq!(seq_of(&event), i as u64);
    }
    assert_eq!(
        next_within(events, limit).await,
        FollowEvent::End(RunStatus::Completed)
    );
    assert!(events.next().await.is_none());
    assert_eq!(
        reader.trails.load(Ordering::SeqCst),
        0,
        "the trail was read"
    );
    assert_eq!(
        reader.rows_read.load(Ordering::SeqCst),
        n as u64 + 1,
        "a step was read more than once"
    );
    slowest
}

/// Two hosts (two pools, two notifiers) on one PostgreSQL database: the follower on B,
/// with no fallback poll to speak of, sees each step appended through A's notifying
/// ledger. A's notifier is not B's: only PostgreSQL's `NOTIFY` can have told B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_follower_on_one_host_sees_steps_appended_through_another() {
    let t = TestDb::pg().await;
    let notifier_a = RunNotifier::start(&t.db()).await.unwrap();
    let host_a = NotifyingLedger::new(Arc::clone(&t.ledger), notifier_a);
    let host_b = counting(t.second_host().await);
    let notifier_b = RunNotifier::start(&host_b.database()).await.unwrap();
    let run = start(&host_a).await;

    let reader: Arc<dyn Ledger> = host_b.clone();
    let mut events = Box::pin(follow(
        reader,
        &notifier_b,
        tenant(),
        run,
        None,
        NO_FALLBACK,
    ));
    // The first read (nothing yet) happens when the stream is first polled; poll it once.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.next())
            .await
            .is_err()
    );
    let slowest = drive(
        &host_a,
        &host_b,
        &mut events,
        run,
        20,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("slowest append-to-follower latency across hosts: {slowest:?}");
    drop(events);
    assert_eq!(notifier_b.followed_runs(), 0);
}

/// A plain ledger on another host (no notifier) announces nothing; B's follower still
/// gets every step, once, from its fallback read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_appends_that_nobody_announces_arrive_by_the_fallback_read() {
    let t = TestDb::pg().await;
    let host_b = counting(t.second_host().await);
    let notifier_b = RunNotifier::start(&host_b.database()).await.unwrap();
    let run = start(t.ledger.as_ref()).await;
    let reader: Arc<dyn Ledger> = host_b.clone();
    let options = FollowOptions {
        fallback_poll: Duration::from_millis(100),
        page: 500,
    };
    let mut events = Box::pin(follow(reader, &notifier_b, tenant(), run, None, options));
    drive(
        t.ledger.as_ref(),
        &host_b,
        &mut events,
        run,
        3,
        Duration::from_secs(5),
    )
    .await;
}

/// In one process, appends through the notifying ledger wake the follower: how SQLite's
/// followers learn of new steps (and a shortcut on PostgreSQL).
async fn a_follower_is_woken_by_appends_through_the_notifying_ledger(t: TestDb) {
    let notifier = RunNotifier::local();
    let writer = NotifyingLedger::new(Arc::clone(&t.ledger), notifier.clone());
    let reader = counting(Arc::clone(&t.ledger));
    let run = start(&writer).await;
    let r: Arc<dyn Ledger> = reader.clone();
    let mut events = Box::pin(follow(r, &notifier, tenant(), run, None, NO_FALLBACK));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.next())
            .await
            .is_err()
    );
    drive(
        &writer,
        &reader,
        &mut events,
        run,
        20,
        Duration::from_secs(5),
    )
    .await;
}

/// Nobody notifies at all: the slow fallback read still delivers every step, once.
async fn a_lost_notification_costs_latency_not_steps(t: TestDb) {
    let notifier = RunNotifier::local();
    let reader = counting(Arc::clone(&t.ledger));
    let run = start(t.ledger.as_ref()).await;
    let options = FollowOptions {
        fallback_poll: Duration::from_millis(50),
        page: 2,
    };
    let r: Arc<dyn Ledger> = reader.clone();
    let mut events = Box::pin(follow(r, &notifier, tenant(), run, None, options));
    for i in 0..5 {
        t.ledger.append(&tenant(), run, message(i)).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            seq_of(&next_within(&mut events, Duration::from_secs(5)).await),
            i
        );
    }
    t.ledger.append(&tenant(), run, answer()).await.unwrap();
    assert_eq!(
        seq_of(&next_within(&mut events, Duration::from_secs(5)).await),
        5
    );
    assert_eq!(
        next_within(&mut events, Duration::from_secs(5)).await,
        FollowEvent::End(RunStatus::Completed)
    );
    assert_eq!(reader.rows_read.load(Ordering::SeqCst), 6);
}

/// `after` skips what the client has (Last-Event-ID); a finished run ends at once; another
/// tenant's run shows nothing of itself.
async fn following_resumes_after_a_seq_and_ends_with_the_run(t: TestDb) {
    let notifier = RunNotifier::local();
    let run = start(t.ledger.as_ref()).await;
    for i in 0..3 {
        t.ledger.append(&tenant(), run, message(i)).await.unwrap();
    }
    t.ledger
        .append(
            &tenant(),
            run,
            NewStep {
                actor: Actor::parse("user:alice").unwrap(),
                step: StepKind::RunCancelled {
                    cancelled_by: Actor::parse("user:alice").unwrap(),
                    reason: None,
                },
            },
        )
        .await
        .unwrap();
    let collect = |after| {
        follow(
            Arc::clone(&t.ledger),
            &notifier,
            tenant(),
            run,
            after,
            NO_FALLBACK,
        )
        .map(|e| e.unwrap())
        .collect::<Vec<_>>()
    };
    let events = tokio::time::timeout(Duration::from_secs(5), collect(Some(1)))
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!((seq_of(&events[0]), seq_of(&events[1])), (2, 3));
    assert_eq!(events[2], FollowEvent::End(RunStatus::Cancelled));
    let events = tokio::time::timeout(Duration::from_secs(5), collect(Some(3)))
        .await
        .unwrap();
    assert_eq!(events, [FollowEvent::End(RunStatus::Cancelled)]);

    let other = follow(
        Arc::clone(&t.ledger),
        &notifier,
        TenantId::parse("globex").unwrap(),
        run,
        None,
        FollowOptions {
            fallback_poll: Duration::from_millis(20),
            page: 500,
        },
    );
    let mut other = Box::pin(other);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.next())
            .await
            .is_err(),
        "another tenant's follower got something"
    );
}

both_stores!(
    a_follower_is_woken_by_appends_through_the_notifying_ledger,
    a_lost_notification_costs_latency_not_steps,
    following_resumes_after_a_seq_and_ends_with_the_run,
);

/// An installation change announced through host A changes B's version of that tenant's
/// catalog (within a second; B learns only by `NOTIFY`), and no other tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_an_installation_change_announced_on_one_host_reaches_another() {
    let t = TestDb::pg().await;
    let notifier_a = RunNotifier::start(&t.db()).await.unwrap();
    let host_b = t.second_host().await;
    let notifier_b = RunNotifier::start(&host_b.database()).await.unwrap();
    let (before, other) = (
        notifier_b.catalog_version("acme"),
        notifier_b.catalog_version("globex"),
    );
    let a_before = notifier_a.catalog_version("acme");
    notifier_a.catalog_changed("acme").await;
    assert_ne!(
        notifier_a.catalog_version("acme"),
        a_before,
        "A itself, at once"
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while notifier_b.catalog_version("acme") == before {
        assert!(Instant::now() < deadline, "B never heard of the change");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(notifier_b.catalog_version("globex"), other);
}

/// On one process (SQLite) the change is seen at once, and only for its tenant.
#[tokio::test]
async fn a_local_installation_change_is_seen_at_once() {
    let notifier = RunNotifier::local();
    let (acme, globex) = (
        notifier.catalog_version("acme"),
        notifier.catalog_version("globex"),
    );
    notifier.catalog_changed("acme").await;
    assert_ne!(notifier.catalog_version("acme"), acme);
    assert_eq!(notifier.catalog_version("globex"), globex);
}
