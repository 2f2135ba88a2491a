//! Checkpoints, proofs and offline bundles: what lets an auditor hold the ledger to what
//! it said before, without trusting its database.
//!
//! The server ([`Transparency`]) keeps each tenant's Merkle tree over its seal hashes,
//! grown as seals are added, signs checkpoints with a key the database never sees, and serves inclusion and
//! consistency proofs and per-run bundles. The verifiers ([`verify_bundle`],
//! [`verify_consistency`], [`check_tree_against`]) need no database and no server: only
//! the verifier key(s) and what the auditor kept.
//!
//! What is proven, and what is not, is in `docs/auditors.md`. In short: once a checkpoint
//! of size N is held by someone, no change to the first N seals (so to any run sealed in
//! them, or to its steps) can be made without every later checkpoint or proof failing
//! against it. Changes after the last checkpoint someone kept are caught only by the hash
//! chains, which whoever can recompute hashes can rewrite.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::canonical::{Hash, canonical_json, run_genesis};
use crate::checkpoint::{self, CheckpointError, CheckpointSigner, VerifiedCheckpoint};
use crate::error::LedgerError;
use crate::ids::{RunId, TenantId};
use crate::ledger::Ledger;
use crate::merkle::{self, MerkleError, Tree};
use crate::model::{Run, SealBody, StepRecord};
use crate::seal_store::{SealEntry, StoredCheckpoint};

/// The format tag of a bundle file.
pub const BUNDLE_FORMAT: &str = "cairn.audit.bundle/v1";

/// Why a checkpoint, proof or bundle could not be produced or did not verify. Each variant
/// names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The checkpoint is malformed, unsigned by a known key, or for another log.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A proof could not be made (sizes out of range).
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// No signing key is configured, so nothing can be published.
    #[error("no checkpoint signing key is configured")]
    NoSigningKey,
    /// The run has not ended, so no seal covers its steps yet.
    #[error("run {0} is not sealed yet")]
    NotSealed(RunId),
    /// The bundle is not a bundle (truncated, edited into invalid JSON, another format).
    #[error("the bundle is malformed (truncated?): {0}")]
    Malformed(String),
    /// The run header does not hash to the genesis its `run_opened` record pins.
    #[error("the run header does not match its run_opened record: {0}")]
    RunHeader(String),
    /// A step does not hash, link or count as it should.
    #[error("step {seq}: {reason}")]
    Step {
        /// The step's seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A seal record's body or hash is not what the run requires.
    #[error("seal {seal_seq}: {reason}")]
    Seal {
        /// The seal's position.
        seal_seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An inclusion proof does not put the seal in the checkpoint's tree.
    #[error(
        "seal {seal_seq} is not in the checkpoint's tree of {tree_size}: the inclusion proof does not verify"
    )]
    Inclusion {
        /// The seal's position.
        seal_seq: u64,
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// The newer tree does not extend the older one: the ledger was rewritten or forked.
    #[error(
        "the tree of {new_size} seals is not an extension of the checkpoint of {old_size}: the consistency proof does not verify (rewritten or forked)"
    )]
    Inconsistent {
        /// The checkpoint held.
        old_size: u64,
        /// The newer tree.
        new_size: u64,
    },
    /// The ledger (or a newer checkpoint) has fewer seals than a checkpoint already showed.
    #[error("rolled back: a checkpoint covers {checkpoint_size} seals, but only {found} are there")]
    RolledBack {
        /// The checkpoint held.
        checkpoint_size: u64,
        /// What was found.
        found: u64,
    },
    /// The ledger's first seals no longer hash to a checkpoint's root.
    #[error(
        "rewritten: the ledger's first {size} seals do not hash to the checkpoint's root {expected}, but to {found}"
    )]
    Rewritten {
        /// The checkpoint's size.
        size: u64,
        /// The checkpoint's root.
        expected: Hash,
        /// The ledger's root at that size.
        found: Hash,
    },
}

/// One run, its seals, their inclusion proofs and a signed checkpoint: verifiable offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The run's header.
    pub run: Run,
    /// Every step, in order.
    pub steps: Vec<StepRecord>,
    /// The run's `run_opened` seal.
    pub opened: SealEntry,
    /// The run's `run` seal.
    pub sealed: SealEntry,
    /// Inclusion proof of `opened` in the checkpoint's tree.
    pub opened_proof: Vec<Hash>,
    /// Inclusion proof of `sealed` in the checkpoint's tree.
    pub sealed_proof: Vec<Hash>,
    /// The signed checkpoint (C2SP signed note) the proofs are against.
    pub checkpoint: String,
}

/// What a bundle proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    /// The run.
    pub run: RunId,
    /// Its steps.
    pub steps: u64,
    /// The checkpoint it is proven against.
    pub checkpoint: VerifiedCheckpoint,
}

impl std::fmt::Display for BundleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OK: run {} ({} steps) is in {} at tree size {} (root {})",
            self.run,
            self.steps,
            self.checkpoint.origin,
            self.checkpoint.size,
            self.checkpoint.root.to_hex()
        )
    }
}

/// How many tenants' trees a [`Transparency`] keeps between requests (about 64 bytes per
/// seal each); the least recently used is dropped beyond it and rebuilt when next asked.
pub const CACHED_TREES: usize = 32;

/// The server side: publishes checkpoints and serves proofs and bundles.
pub struct Transparency {
    ledger: Arc<dyn Ledger>,
    signer: Option<CheckpointSigner>,
    /// The last checkpoint this process signed per tenant, so that a database rewritten
    /// below it (and its checkpoint rows deleted) is refused a signature while it runs.
    signed: Mutex<std::collections::HashMap<String, (u64, Hash)>>,
    /// Each tenant's tree as last read, grown by the seals added since on each use.
    trees: TreeCache,
}

/// Per-tenant trees kept between requests, so a proof in a tenant of a million seals reads
/// the few seals added since the last request instead of all of them.
///
/// Seals are append-only (a purge appends a purge record; it removes no seal), so a tree
/// only grows. Each use reads the seals from the tree's last leaf on: the first one must
/// hash to that leaf, the rest extend the tree. Anything else (the last leaf changed, or
/// is gone) means the database no longer holds what the tree was built from, and the
/// tree is rebuilt from the database, so a rewrite that recomputed the seal chain or a
/// rollback is seen exactly as without the cache (and refused by
/// [`Transparency::publish`]). A rewrite of an older seal that leaves the later chain
/// hashes alone breaks the seal chain, which `verify` names. Refreshes of one tenant are
/// serialised; proofs are computed under a shared lock, concurrently.
#[derive(Default)]
struct TreeCache {
    /// By tenant: the tree, and when it was last used (a tick of `tick`).
    slots: Mutex<std::collections::HashMap<String, (Slot, u64)>>,
    tick: std::sync::atomic::AtomicU64,
}

/// One tenant's kept tree.
type Slot = Arc<tokio::sync::RwLock<Tree>>;

impl TreeCache {
    /// The tenant's slot, created empty if needed; marks it used and drops the least
    /// recently used beyond [`CACHED_TREES`].
    fn slot(&self, tenant: &TenantId) -> Slot {
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match slots.get_mut(tenant.as_str()) {
            Some((slot, used)) => {
                *used = now;
                Arc::clone(slot)
            }
            None => {
                let slot = Arc::new(tokio::sync::RwLock::new(Tree::default()));
                slots.insert(tenant.to_string(), (Arc::clone(&slot), now));
                slot
            }
        };
        while slots.len() > CACHED_TREES {
            let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            slots.remove(&oldest);
        }
        slot
    }

    /// `tenant`'s tree, brought up to date with the database.
    async fn current(
        &self,
        ledger: &dyn Ledger,
        tenant: &TenantId,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<Tree>, ProofError> {
        let slot = self.slot(tenant);
        let mut tree = slot.write_owned().await;
        let from = tree.size().saturating_sub(1);
        let seals = ledger.seal_hashes_from(tenant, from).await?;
        if !extend(&mut tree, from, &seals) {
            tracing::warn!(tenant = %tenant, cached = tree.size(), "the seals no longer match the cached tree; rebuilding it from the database");
            *tree = Tree::from_seal_hashes(&ledger.seal_hashes(tenant).await?);
        }
        Ok(tree.downgrade())
    }
}

/// Grows `tree` by `seals` (position, chain hash), read from position `from`. `false` when
/// they do not continue it: an already-held leaf hashes differently, or the tree's last
/// leaf is missing. Stops at a gap (a seal not visible yet), keeping what precedes it.
fn extend(tree: &mut Tree, from: u64, seals: &[(u64, Hash)]) -> bool {
    if tree.size() > 0 && seals.first().map(|(seq, _)| *seq) != Some(from) {
        return false;
    }
    for (seq, hash) in seals {
        match seq.cmp(&tree.size()) {
            std::cmp::Ordering::Less => {
                if tree.leaf(*seq) != Some(merkle::leaf_hash(hash)) {
                    return false;
                }
            }
            std::cmp::Ordering::Equal => tree.push(hash),
            std::cmp::Ordering::Greater => break,
        }
    }
    true
}

impl Transparency {
    /// Over `ledger`, signing with `signer` when given (without one, proofs are served
    /// against checkpoints already published, and nothing new is signed).
    pub fn new(ledger: Arc<dyn Ledger>, signer: Option<CheckpointSigner>) -> Self {
        Self {
            ledger,
            signer,
            signed: Mutex::new(Default::default()),
            trees: TreeCache::default(),
        }
    }

    /// The verifier key name, when a signer is configured.
    pub fn key_name(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.name())
    }

    /// `tenant`'s tree as the database has it now, read whole (what an auditor checks a
    /// kept checkpoint against; proofs use the kept tree instead).
    pub async fn tree(&self, tenant: &TenantId) -> Result<Tree, ProofError> {
        let hashes = self.ledger.seal_hashes(tenant).await?;
        Ok(Tree::from_seal_hashes(&hashes))
    }

    /// `tenant`'s tree as kept by this server, grown by the seals added since its last use
    /// (see [`TreeCache`]).
    async fn current(
        &self,
        tenant: &TenantId,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<Tree>, ProofError> {
        self.trees.current(&*self.ledger, tenant).await
    }

    /// Signs and stores a checkpoint of `tenant`'s current tree. Refuses when the tree no
    /// longer extends the latest checkpoint (stored, or signed by this process): signing
    /// a rewritten ledger would only hide the rewrite from those who hold no checkpoint.
    #[tracing::instrument(skip(self), fields(tenant = %tenant), err)]
    pub async fn publish(&self, tenant: &TenantId) -> Result<StoredCheckpoint, ProofError> {
        let signer = self.signer.as_ref().ok_or(ProofError::NoSigningKey)?;
        let tree = self.current(tenant).await?;
        let mut earlier = vec![];
        if let Some(cp) = self.ledger.latest_checkpoint(tenant).await? {
            earlier.push((cp.tree_size, cp.root_hash));
        }
        if let Some(s) = self
            .signed
            .lock()
            .ok()
            .and_then(|m| m.get(tenant.as_str()).copied())
        {
            earlier.push(s);
        }
        for (size, root) in earlier {
            check_tree_against(&tree, size, &root)?;
        }
        let size = tree.size();
        let root = tree.root(size)?;
        drop(tree);
        let now = Utc::now();
        let note = signer.sign(tenant, size, &root, now)?;
        let cp = StoredCheckpoint {
            tenant: tenant.clone(),
            tree_size: size,
            root_hash: root,
            published_at: now,
            note,
        };
        self.ledger.store_checkpoint(&cp).await?;
        if let Ok(mut m) = self.signed.lock() {
            m.insert(tenant.to_string(), (size, root));
        }
        Ok(cp)
    }

    /// Publishes a checkpoint for every tenant whose tree grew since its latest one (the
    /// schedule calls this). Returns how many were published.
    pub async fn publish_grown(&self) -> Result<usize, ProofError> {
        let mut n = 0;
        for tenant in self.ledger.tenants().await? {
            let latest = self.ledger.latest_checkpoint(&tenant).await?;
            let size = self.current(&tenant).await?.size();
            if latest.is_none_or(|c| c.tree_size < size) {
                self.publish(&tenant).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The latest checkpoint of `tenant`, if one was ever published.
    pub async fn latest(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>, ProofError> {
        Ok(self.ledger.latest_checkpoint(tenant).await?)
    }

    /// The size of `tenant`'s tree as kept by this server, brought up to date: what a
    /// proof is made against when the caller names no size.
    pub async fn size(&self, tenant: &TenantId) -> Result<u64, ProofError> {
        Ok(self.current(tenant).await?.size())
    }

    /// Consistency proof between trees of `old` and `new` seals.
    pub async fn consistency(
        &self,
        tenant: &TenantId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, ProofError> {
        Ok(self.current(tenant).await?.consistency(old, new)?)
    }

    /// Inclusion proof of seal `seal_seq` in the tree of `size` seals.
    pub async fn inclusion(
        &self,
        tenant: &TenantId,
        seal_seq: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ProofError> {
        Ok(self.current(tenant).await?.inclusion(seal_seq, size)?)
    }

    /// A run's bundle, proven against the latest checkpoint, publishing a new one first
    /// when the latest does not cover the run's seal yet.
    #[tracing::instrument(skip(self), fields(tenant = %tenant, run = %run), err)]
    pub async fn bundle(&self, tenant: &TenantId, run: RunId) -> Result<Bundle, ProofError> {
        let header = self.ledger.run(tenant, run).await?;
        let steps = self.ledger.trail(tenant, run).await?;
        let seals = self.ledger.run_seals(tenant, run).await?;
        let (Some(opened), Some(sealed)) = (
            seals
                .iter()
                .find(|s| s.body["type"] == "run_opened")
                .cloned(),
            seals.iter().find(|s| s.body["type"] == "run").cloned(),
        ) else {
            return Err(ProofError::NotSealed(run));
        };
        let cp = match self.ledger.latest_checkpoint(tenant).await? {
            Some(cp) if cp.tree_size > sealed.seal_seq => cp,
            _ => self.publish(tenant).await?,
        };
        let tree = self.current(tenant).await?;
        Ok(Bundle {
            format: BUNDLE_FORMAT.into(),
            run: header,
            steps,
            opened_proof: tree.inclusion(opened.seal_seq, cp.tree_size)?,
            sealed_proof: tree.inclusion(sealed.seal_seq, cp.tree_size)?,
            opened,
            sealed,
            checkpoint: cp.note,
        })
    }
}

/// Checks that `tree` still has the first `size` seals a checkpoint with root `root` showed.
pub fn check_tree_against(tree: &Tree, size: u64, root: &Hash) -> Result<(), ProofError> {
    if tree.size() < size {
        return Err(ProofError::RolledBack {
            checkpoint_size: size,
            found: tree.size(),
        });
    }
    let found = tree.root(size)?;
    if found != *root {
        return Err(ProofError::Rewritten {
            size,
            expected: *root,
            found,
        });
    }
    Ok(())
}

/// Verifies that signed checkpoint `new` extends signed checkpoint `old` by `proof`.
pub fn verify_consistency(
    old: &VerifiedCheckpoint,
    new: &VerifiedCheckpoint,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if new.size < old.size {
        return Err(ProofError::RolledBack {
            checkpoint_size: old.size,
            found: new.size,
        });
    }
    merkle::check_consistency(proof, old.size, &old.root, new.size, &new.root).map_err(|_| {
        ProofError::Inconsistent {
            old_size: old.size,
            new_size: new.size,
        }
    })
}

fn seal_body(entry: &SealEntry) -> Result<SealBody, ProofError> {
    let body: SealBody =
        serde_json::from_value(entry.body.clone()).map_err(|e| ProofError::Seal {
            seal_seq: entry.seal_seq,
            reason: format!("body is not a seal record: {e}"),
        })?;
    let canonical = canonical_json(&entry.body).map_err(|e| ProofError::Seal {
        seal_seq: entry.seal_seq,
        reason: e.to_string(),
    })?;
    let hash = Hash::chain(&entry.prev_hash, &canonical);
    if hash != entry.hash {
        return Err(ProofError::Seal {
            seal_seq: entry.seal_seq,
            reason: format!(
                "hash {} is not SHA-256(prev ‖ body) = {}",
                entry.hash.to_hex(),
                hash.to_hex()
            ),
        });
    }
    if body.seal_seq() != entry.seal_seq {
        return Err(ProofError::Seal {
            seal_seq: entry.seal_seq,
            reason: format!("body says seal {}", body.seal_seq()),
        });
    }
    Ok(body)
}

/// Verifies a bundle file with the verifier key(s), with no database: the checkpoint's
/// signature, the run header against its `run_opened` record, every step's hash and link,
/// the `run` seal against the last step and the step count, both seals' hashes, and both
/// inclusion proofs against the checkpoint.
pub fn verify_bundle(bytes: &[u8], verifier_keys: &[String]) -> Result<BundleReport, ProofError> {
    let b: Bundle =
        serde_json::from_slice(bytes).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if b.format != BUNDLE_FORMAT {
        return Err(ProofError::Malformed(format!("format {:?}", b.format)));
    }
    let cp = checkpoint::verify(&b.checkpoint, verifier_keys, None)?;
    let tenant = &b.run.tenant;
    if cp.origin.rsplit_once('/').map(|(_, t)| t) != Some(tenant.as_str()) {
        return Err(CheckpointError::Origin {
            expected: format!(".../{tenant}"),
            found: cp.origin.clone(),
        }
        .into());
    }
    // The header, pinned by the run_opened record.
    let genesis = run_genesis(
        &b.run.id.to_string(),
        tenant.as_str(),
        b.run.user.as_str(),
        b.run.conversation_id.as_ref().map(|c| c.as_str()),
        &b.run.model,
        &b.run.started_at,
    )
    .map_err(|e| ProofError::RunHeader(e.to_string()))?;
    match seal_body(&b.opened)? {
        SealBody::RunOpened {
            tenant: t,
            run_id,
            genesis: g,
            ..
        } if t == *tenant && run_id == b.run.id && g == genesis => {}
        other => {
            return Err(ProofError::RunHeader(format!(
                "header hashes to {}, record is {}",
                genesis.to_hex(),
                serde_json::to_string(&other).unwrap_or_default()
            )));
        }
    }
    // The steps, each linked to the one before and hashing to what it says.
    let mut prev = genesis;
    for (i, s) in b.steps.iter().enumerate() {
        let step = |reason: String| ProofError::Step { seq: s.seq, reason };
        if s.seq != i as u64 {
            return Err(step(format!("expected seq {i} (a step is missing)")));
        }
        if s.run_id != b.run.id || s.tenant != *tenant {
            return Err(step("belongs to another run".into()));
        }
        if s.prev_hash != prev {
            return Err(step(format!(
                "links to {}, the previous step is {}",
                s.prev_hash.to_hex(),
                prev.to_hex()
            )));
        }
        let value = serde_json::to_value(&s.step).map_err(|e| step(e.to_string()))?;
        let h = crate::canonical::step_hash(
            &prev,
            &s.run_id.to_string(),
            tenant.as_str(),
            s.seq,
            s.actor.as_str(),
            &s.at,
            &value,
        )
        .map_err(|e| step(e.to_string()))?;
        if h != s.hash {
            return Err(step(format!(
                "content hashes to {}, recorded {}",
                h.to_hex(),
                s.hash.to_hex()
            )));
        }
        prev = h;
    }
    // The seal pins the last step and the count.
    match seal_body(&b.sealed)? {
        SealBody::Run {
            tenant: t,
            run_id,
            last_step_hash,
            step_count,
            ..
        } if t == *tenant && run_id == b.run.id => {
            if step_count != b.steps.len() as u64 || last_step_hash != prev {
                return Err(ProofError::Seal {
                    seal_seq: b.sealed.seal_seq,
                    reason: format!(
                        "seals {step_count} steps ending in {}, the bundle has {} ending in {}",
                        last_step_hash.to_hex(),
                        b.steps.len(),
                        prev.to_hex()
                    ),
                });
            }
        }
        _ => {
            return Err(ProofError::Seal {
                seal_seq: b.sealed.seal_seq,
                reason: "is not this run's seal".into(),
            });
        }
    }
    for (entry, proof) in [(&b.opened, &b.opened_proof), (&b.sealed, &b.sealed_proof)] {
        merkle::check_inclusion(proof, cp.size, &cp.root, entry.seal_seq, &entry.hash).map_err(
            |_| ProofError::Inclusion {
                seal_seq: entry.seal_seq,
                tree_size: cp.size,
            },
        )?;
    }
    Ok(BundleReport {
        run: b.run.id,
        steps: b.steps.len() as u64,
        checkpoint: cp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(i: u64) -> Hash {
        Hash::chain(&Hash::ZERO, &i.to_be_bytes())
    }

    fn seals(range: std::ops::Range<u64>) -> Vec<(u64, Hash)> {
        range.map(|i| (i, seal(i))).collect()
    }

    #[test]
    fn a_kept_tree_grows_only_by_seals_that_continue_it() {
        let mut tree = Tree::default();
        assert!(extend(&mut tree, 0, &seals(0..5)));
        assert_eq!(tree.size(), 5);
        // From its last leaf on: the anchor matches, the rest is appended.
        assert!(extend(&mut tree, 4, &seals(4..9)));
        assert_eq!(tree.size(), 9);
        let whole: Vec<Hash> = (0..9).map(seal).collect();
        assert_eq!(
            tree.root(9).unwrap(),
            Tree::from_seal_hashes(&whole).root(9).unwrap()
        );
        // A seal not visible yet: what precedes the gap is kept.
        let mut gap = seals(8..10);
        gap.push((11, seal(11)));
        assert!(extend(&mut tree, 8, &gap));
        assert_eq!(tree.size(), 10);
        // The last leaf changed (the chain was recomputed) or is gone (rolled back).
        let mut changed = seals(9..12);
        changed[0].1 = seal(99);
        assert!(!extend(&mut tree.clone(), 9, &changed));
        assert!(!extend(&mut tree.clone(), 9, &[]));
        assert!(!extend(&mut tree.clone(), 9, &seals(10..12)));
    }
}
