//! Proofs served from the tree the server keeps between requests (issue #11, point 7):
//! they must be the proofs a tree read whole from the database gives, after appends,
//! purges, and while other writers append. (That the kept tree does not hide a rewrite or
//! a rollback is what `lying_server.rs` shows: its server publishes before the attack.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_audit::checkpoint::{self, CheckpointSigner, VerifiedCheckpoint};
use cairn_audit::merkle::check_inclusion;
use cairn_audit::transparency::{Transparency, check_tree_against, verify_consistency};
use cairn_audit::*;
use chrono::{DateTime, Utc};
use common::*;

const KEY_NAME: &str = "cairn.test/audit";

struct Server {
    t: TenantId,
    keys: Vec<String>,
    server: Arc<Transparency>,
}

impl Server {
    fn new(h: &Harness) -> Self {
        let (secret, public) = checkpoint::generate_key(KEY_NAME);
        Server {
            t: tenant("acme"),
            keys: vec![public],
            server: Arc::new(Transparency::new(
                h.ledger.clone(),
                Some(CheckpointSigner::from_key(&secret).unwrap()),
            )),
        }
    }

    async fn publish(&self) -> VerifiedCheckpoint {
        let cp = self.server.publish(&self.t).await.unwrap();
        checkpoint::verify(&cp.note, &self.keys, None).unwrap()
    }

    /// Every seal of the checkpoint is proven in it, and each proof is the one a tree
    /// read whole from the database gives.
    async fn check_all(&self, h: &Harness, cp: &VerifiedCheckpoint) {
        let seals = h.ledger.seal_hashes(&self.t).await.unwrap();
        let whole = self.server.tree(&self.t).await.unwrap();
        for i in 0..cp.size {
            let proof = self.server.inclusion(&self.t, i, cp.size).await.unwrap();
            assert_eq!(proof, whole.inclusion(i, cp.size).unwrap(), "seal {i}");
            check_inclusion(&proof, cp.size, &cp.root, i, &seals[i as usize])
                .unwrap_or_else(|e| panic!("seal {i} of {}: {e}", cp.size));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_from_the_kept_tree_verify_after_appends_and_a_purge() {
    let h = Harness::pg().await;
    let s = Server::new(&h);
    for n in [3, 4] {
        finished_run(&*h.ledger, "acme", "alice", n).await;
    }
    let first = s.publish().await;
    assert_eq!(first.size, 4);
    s.check_all(&h, &first).await;

    // More runs, then a purge (which appends a purge record: the tree only grows).
    finished_run(&*h.ledger, "acme", "bob", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    finished_run(&*h.ledger, "acme", "carol", 5).await;
    let purged = h
        .ledger
        .purge_before(&s.t, cutoff, &actor("auditor:olga"))
        .await
        .unwrap();
    assert_eq!(purged.runs_purged, 3);
    let second = s.publish().await;
    assert_eq!(second.size, 9);
    s.check_all(&h, &second).await;
    // Proofs into the older checkpoint still verify too, and the two are consistent.
    s.check_all(&h, &first).await;
    let proof = s
        .server
        .consistency(&s.t, first.size, second.size)
        .await
        .unwrap();
    verify_consistency(&first, &second, &proof).unwrap();
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_served_while_others_append_verify() {
    let h = Harness::pg().await;
    let s = Server::new(&h);
    finished_run(&*h.ledger, "acme", "alice", 3).await;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let ledger = h.ledger.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    finished_run(&*ledger, "acme", &format!("w{w}u{i}"), 2 + i % 3).await;
                }
            })
        })
        .collect();
    let mut published: Vec<VerifiedCheckpoint> = vec![s.publish().await];
    let seal_of = |i: u64| {
        let ledger = h.ledger.clone();
        let t = s.t.clone();
        async move { ledger.seal_hashes(&t).await.unwrap()[i as usize] }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        let cp = s.publish().await;
        let older = published.last().unwrap();
        let proof = s
            .server
            .consistency(&s.t, older.size, cp.size)
            .await
            .unwrap();
        verify_consistency(older, &cp, &proof).unwrap();
        for i in [0, cp.size / 2, cp.size - 1] {
            let proof = s.server.inclusion(&s.t, i, cp.size).await.unwrap();
            check_inclusion(&proof, cp.size, &cp.root, i, &seal_of(i).await).unwrap();
        }
        published.push(cp);
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(published.len() > 2, "proofs were served during the appends");
    // Every checkpoint signed along the way is a prefix of the ledger read whole.
    let whole = s.server.tree(&s.t).await.unwrap();
    assert_eq!(whole.size(), 2 + 2 * 2 * 15);
    for cp in &published {
        check_tree_against(&whole, cp.size, &cp.root).unwrap();
    }
    let last = s.publish().await;
    s.check_all(&h, &last).await;
    h.cleanup().await;
}

/// Forwards to a ledger and counts the seal hashes read through it.
struct Counting {
    inner: Arc<dyn Ledger>,
    seals_read: AtomicU64,
}

impl Counting {
    fn take(&self) -> u64 {
        self.seals_read.swap(0, Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
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
        self.inner.trail(tenant, run).await
    }
    async fn query(&self, query: &StepQuery) -> Result<StepPage> {
        self.inner.query(query).await
    }
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<VerifyReport> {
        self.inner.verify(tenant, from, to).await
    }
    async fn seal_hashes(&self, tenant: &TenantId) -> Result<Vec<Hash>> {
        let hashes = self.inner.seal_hashes(tenant).await?;
        self.seals_read
            .fetch_add(hashes.len() as u64, Ordering::SeqCst);
        Ok(hashes)
    }
    async fn seal_hashes_from(&self, tenant: &TenantId, from: u64) -> Result<Vec<(u64, Hash)>> {
        let hashes = self.inner.seal_hashes_from(tenant, from).await?;
        self.seals_read
            .fetch_add(hashes.len() as u64, Ordering::SeqCst);
        Ok(hashes)
    }
    async fn run_seals(&self, tenant: &TenantId, run: RunId) -> Result<Vec<SealEntry>> {
        self.inner.run_seals(tenant, run).await
    }
    async fn store_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<()> {
        self.inner.store_checkpoint(checkpoint).await
    }
    async fn latest_checkpoint(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>> {
        self.inner.latest_checkpoint(tenant).await
    }
    async fn tenants(&self) -> Result<Vec<TenantId>> {
        self.inner.tenants().await
    }
}

/// The point of keeping the tree: after the first request, a proof or checkpoint reads
/// the tree's last seal (to check it is unchanged) and the seals added since, not every
/// seal of the tenant. (Before, each read them all: 6, then 6, then 8 here.)
#[tokio::test]
async fn a_proof_reads_only_the_seals_added_since_the_last_one() {
    let h = Harness::sqlite().await;
    let counting = Arc::new(Counting {
        inner: h.ledger.clone(),
        seals_read: AtomicU64::new(0),
    });
    let (secret, _) = checkpoint::generate_key(KEY_NAME);
    let server = Transparency::new(
        counting.clone(),
        Some(CheckpointSigner::from_key(&secret).unwrap()),
    );
    let t = tenant("acme");
    for n in [2, 3, 4] {
        finished_run(&*h.ledger, "acme", "alice", n).await;
    }
    server.inclusion(&t, 0, 6).await.unwrap();
    assert_eq!(counting.take(), 6, "the first request reads the tree");
    server.inclusion(&t, 3, 6).await.unwrap();
    assert_eq!(counting.take(), 1, "then only the last seal, unchanged");
    finished_run(&*h.ledger, "acme", "bob", 2).await;
    server.inclusion(&t, 7, 8).await.unwrap();
    assert_eq!(counting.take(), 3, "the last seal and the two new ones");
    server.publish(&t).await.unwrap();
    assert_eq!(counting.take(), 1);
    h.cleanup().await;
}
