//! A lying server (immudb's GHSA-672p-m5jq-mrh8 is the lesson): a database superuser
//! rewrites the ledger and recomputes every hash, drops a run, rolls back, forks the tree;
//! the server serves forged proofs or a truncated export. The hash chains alone cannot see
//! the first two (the tests show `verify` passing); a checkpoint an auditor kept can, and
//! every check below names what failed.

mod common;

use std::time::Instant;

use cairn_audit::checkpoint::{self, CheckpointSigner, VerifiedCheckpoint};
use cairn_audit::merkle::Tree;
use cairn_audit::transparency::{
    Bundle, ProofError, Transparency, check_tree_against, verify_bundle, verify_consistency,
};
use cairn_audit::*;
use common::*;
use serde_json::Value;
use sqlx::{Connection, PgConnection, Row};

const KEY_NAME: &str = "cairn.test/audit";

struct Setup {
    h: Harness,
    t: TenantId,
    keys: Vec<String>,
    secret: String,
    server: Transparency,
    runs: Vec<Run>,
    /// The checkpoint an auditor kept after three runs.
    kept: VerifiedCheckpoint,
}

async fn setup() -> Setup {
    let h = Harness::pg().await;
    let t = tenant("acme");
    let mut runs = vec![];
    for n in [3, 4, 5] {
        runs.push(finished_run(&*h.ledger, "acme", "alice", n).await);
    }
    let (secret, public) = checkpoint::generate_key(KEY_NAME);
    let server = Transparency::new(
        h.ledger.clone(),
        Some(CheckpointSigner::from_key(&secret).unwrap()),
    );
    let cp = server.publish(&t).await.unwrap();
    let keys = vec![public];
    let kept = checkpoint::verify(&cp.note, &keys, Some("cairn.test/audit/acme")).unwrap();
    assert_eq!(kept.size, 6);
    Setup {
        h,
        t,
        keys,
        secret,
        server,
        runs,
        kept,
    }
}

fn db(h: &Harness) -> String {
    match &h.store {
        Store::Pg { db, .. } => db.clone(),
        Store::Sqlite { .. } => unreachable!(),
    }
}

/// A superuser connection with the triggers off: the attacker.
async fn superuser(h: &Harness) -> PgConnection {
    let mut c = PgConnection::connect(&db_url(&db(h))).await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

/// Rewrites the tenant's seal chain as `bodies` (renumbered, every hash recomputed) and
/// moves the tenant head to its new tip, so that the chain verifies.
async fn rechain(c: &mut PgConnection, t: &TenantId, mut bodies: Vec<(Value, Option<uuid::Uuid>)>) {
    sqlx::query("DELETE FROM audit_seals WHERE tenant = $1")
        .bind(t.as_str())
        .execute(&mut *c)
        .await
        .unwrap();
    let mut prev = Hash::ZERO;
    for (i, (body, run)) in bodies.iter_mut().enumerate() {
        body["seal_seq"] = Value::from(i as u64);
        let hash = Hash::chain(&prev, &canonical_json(&*body).unwrap());
        let kind = body["type"].as_str().unwrap().to_owned();
        sqlx::query(
            "INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
             VALUES ($1, $2, $3, $4, now(), $5, $6, $7)",
        )
        .bind(t.as_str())
        .bind(i as i64)
        .bind(kind)
        .bind(*run)
        .bind(&*body)
        .bind(prev.as_bytes().as_slice())
        .bind(hash.as_bytes().as_slice())
        .execute(&mut *c)
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query(
        "UPDATE audit_tenant_heads SET next_seal_seq = $2, last_seal_hash = $3 WHERE tenant = $1",
    )
    .bind(t.as_str())
    .bind(bodies.len() as i64)
    .bind(prev.as_bytes().as_slice())
    .execute(&mut *c)
    .await
    .unwrap();
}

async fn seal_bodies(c: &mut PgConnection, t: &TenantId) -> Vec<(Value, Option<uuid::Uuid>)> {
    sqlx::query("SELECT body, run_id FROM audit_seals WHERE tenant = $1 ORDER BY seal_seq")
        .bind(t.as_str())
        .fetch_all(&mut *c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("body"), r.get("run_id")))
        .collect()
}

/// Rewrites the arguments of tool call `seq` of `run` to `text`, recomputes the run's chain from there, its
/// seal, and every seal after it.
async fn rewrite_step(s: &Setup, run: &Run, seq: i64, text: &str) {
    let mut c = superuser(&s.h).await;
    let rows = sqlx::query(
        "SELECT seq, actor, at, payload::text AS payload, prev_hash FROM audit_steps
         WHERE run_id = $1 ORDER BY seq",
    )
    .bind(run.id.as_uuid())
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut prev = Hash::from_slice(&rows[0].get::<Vec<u8>, _>("prev_hash")).unwrap();
    for r in &rows {
        let n: i64 = r.get("seq");
        let mut payload: Value = serde_json::from_str(&r.get::<String, _>("payload")).unwrap();
        if n == seq {
            payload["arguments"]["title"] = Value::from(text);
        }
        let hash = canonical::step_hash(
            &prev,
            &run.id.to_string(),
            s.t.as_str(),
            n as u64,
            &r.get::<String, _>("actor"),
            &r.get("at"),
            &payload,
        )
        .unwrap();
        sqlx::query(
            "UPDATE audit_steps SET payload = $3::json, prev_hash = $4, hash = $5
             WHERE run_id = $1 AND seq = $2",
        )
        .bind(run.id.as_uuid())
        .bind(n)
        .bind(payload.to_string())
        .bind(prev.as_bytes().as_slice())
        .bind(hash.as_bytes().as_slice())
        .execute(&mut c)
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query("UPDATE audit_run_heads SET last_hash = $2 WHERE run_id = $1")
        .bind(run.id.as_uuid())
        .bind(prev.as_bytes().as_slice())
        .execute(&mut c)
        .await
        .unwrap();
    let mut bodies = seal_bodies(&mut c, &s.t).await;
    for (body, r) in &mut bodies {
        if body["type"] == "run" && *r == Some(run.id.as_uuid()) {
            body["last_step_hash"] = Value::from(prev.to_hex());
        }
    }
    rechain(&mut c, &s.t, bodies).await;
}

async fn tree(s: &Setup) -> Tree {
    s.server.tree(&s.t).await.unwrap()
}

#[tokio::test]
async fn a_bundle_verifies_offline_in_well_under_a_second() {
    let s = setup().await;
    let bundle = s.server.bundle(&s.t, s.runs[1].id).await.unwrap();
    let bytes = serde_json::to_vec(&bundle).unwrap();
    let start = Instant::now();
    let report = verify_bundle(&bytes, &s.keys).expect("bundle verifies");
    let took = start.elapsed();
    assert_eq!((report.run, report.steps), (s.runs[1].id, 4));
    assert!(took.as_millis() < 1000, "took {took:?}");
    // Another deployment's key proves nothing.
    let (_, other) = checkpoint::generate_key(KEY_NAME);
    let err = verify_bundle(&bytes, &[other]).unwrap_err();
    assert!(matches!(err, ProofError::Checkpoint(_)), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    s.h.cleanup().await;
}

#[tokio::test]
async fn superuser_rewrites_a_step_and_recomputes_every_hash() {
    let s = setup().await;
    let kept_bundle = s.server.bundle(&s.t, s.runs[0].id).await.unwrap();
    rewrite_step(&s, &s.runs[0], 1, "I never said that").await;

    // The hash chains cannot see it: every hash was recomputed.
    let report = s.h.ledger.verify(Some(&s.t), None, None).await.unwrap();
    assert!(report.is_ok(), "{report}");

    // The checkpoint the auditor kept can.
    let err = check_tree_against(&tree(&s).await, s.kept.size, &s.kept.root).unwrap_err();
    assert!(
        matches!(err, ProofError::Rewritten { size: 6, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("rewritten"), "{err}");

    // The server refuses to sign the rewritten tree (it checks the stored checkpoint)...
    let err = s.server.publish(&s.t).await.unwrap_err();
    assert!(matches!(err, ProofError::Rewritten { .. }), "{err}");

    // ...and if the attacker also deletes the stored checkpoints and the server restarts,
    // it signs, but the new checkpoint is not consistent with the one the auditor kept.
    superuser(&s.h)
        .await
        .execute_sql("DELETE FROM audit_checkpoints")
        .await;
    let fresh = Transparency::new(
        s.h.ledger.clone(),
        Some(CheckpointSigner::from_key(&s.secret).unwrap()),
    );
    let new = fresh.publish(&s.t).await.unwrap();
    let new = checkpoint::verify(&new.note, &s.keys, None).unwrap();
    let proof = fresh
        .consistency(&s.t, s.kept.size, new.size)
        .await
        .unwrap();
    let err = verify_consistency(&s.kept, &new, &proof).unwrap_err();
    assert!(matches!(err, ProofError::Inconsistent { .. }), "{err}");

    // The rewritten run's new bundle verifies against the new checkpoint, but its seal is
    // not in the tree of the checkpoint the auditor kept.
    let mut forged = fresh.bundle(&s.t, s.runs[0].id).await.unwrap();
    assert!(verify_bundle(&serde_json::to_vec(&forged).unwrap(), &s.keys).is_ok());
    forged.checkpoint = kept_bundle.checkpoint.clone();
    forged.sealed_proof = kept_bundle.sealed_proof.clone();
    forged.opened_proof = kept_bundle.opened_proof.clone();
    let err = verify_bundle(&serde_json::to_vec(&forged).unwrap(), &s.keys).unwrap_err();
    assert!(matches!(err, ProofError::Inclusion { .. }), "{err}");
    s.h.cleanup().await;
}

#[tokio::test]
async fn superuser_drops_a_run_and_recomputes() {
    let s = setup().await;
    let victim = s.runs[1].id.as_uuid();
    let mut c = superuser(&s.h).await;
    for sql in [
        "DELETE FROM audit_steps WHERE run_id = $1",
        "DELETE FROM audit_runs WHERE id = $1",
        "DELETE FROM audit_run_heads WHERE run_id = $1",
    ] {
        sqlx::query(sql).bind(victim).execute(&mut c).await.unwrap();
    }
    let bodies = seal_bodies(&mut c, &s.t)
        .await
        .into_iter()
        .filter(|(_, r)| *r != Some(victim))
        .collect();
    rechain(&mut c, &s.t, bodies).await;
    // Pad the tree back to the kept size with new runs, so the size alone does not tell.
    finished_run(&*s.h.ledger, "acme", "bob", 2).await;
    let report = s.h.ledger.verify(Some(&s.t), None, None).await.unwrap();
    assert!(report.is_ok(), "the chains cannot see it: {report}");
    let err = check_tree_against(&tree(&s).await, s.kept.size, &s.kept.root).unwrap_err();
    assert!(matches!(err, ProofError::Rewritten { .. }), "{err}");
    let err = s.server.publish(&s.t).await.unwrap_err();
    assert!(matches!(err, ProofError::Rewritten { .. }), "{err}");
    s.h.cleanup().await;
}

#[tokio::test]
async fn rolling_the_ledger_back_is_named() {
    let s = setup().await;
    // The ledger moves on; the auditor keeps the newer checkpoint.
    finished_run(&*s.h.ledger, "acme", "alice", 3).await;
    let newer = s.server.publish(&s.t).await.unwrap();
    let newer = checkpoint::verify(&newer.note, &s.keys, None).unwrap();
    assert_eq!(newer.size, 8);
    // A restore of the older backup: the last run is gone.
    let mut c = superuser(&s.h).await;
    let bodies: Vec<_> = seal_bodies(&mut c, &s.t)
        .await
        .into_iter()
        .take(6)
        .collect();
    rechain(&mut c, &s.t, bodies).await;
    let err = check_tree_against(&tree(&s).await, newer.size, &newer.root).unwrap_err();
    assert!(
        matches!(
            err,
            ProofError::RolledBack {
                checkpoint_size: 8,
                found: 6
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("rolled back"), "{err}");
    // A checkpoint signed after the restore is older than the one held.
    let err = verify_consistency(&newer, &s.kept, &[]).unwrap_err();
    assert!(matches!(err, ProofError::RolledBack { .. }), "{err}");
    s.h.cleanup().await;
}

#[tokio::test]
async fn a_forked_tree_is_detected() {
    let s = setup().await;
    // The server shows one auditor the real tree and another a tree of the same size that
    // differs in one leaf, each checkpoint properly signed with the deployment's key.
    let real = tree(&s).await;
    let mut hashes = s.h.ledger.seal_hashes(&s.t).await.unwrap();
    hashes[2] = Hash::chain(&hashes[2], b"fork");
    let fork = Tree::from_seal_hashes(&hashes);
    let signer = CheckpointSigner::from_key(&s.secret).unwrap();
    let note = signer
        .sign(&s.t, 6, &fork.root(6).unwrap(), chrono::Utc::now())
        .unwrap();
    let forked = checkpoint::verify(&note, &s.keys, None).unwrap();
    assert_eq!(real.size(), forked.size);
    // Any two checkpoints must be consistent; these two are not, whatever proof is served.
    for proof in [
        vec![],
        real.consistency(6, 6).unwrap(),
        fork.consistency(3, 6).unwrap(),
    ] {
        let err = verify_consistency(&s.kept, &forked, &proof).unwrap_err();
        assert!(matches!(err, ProofError::Inconsistent { .. }), "{err}");
    }
    s.h.cleanup().await;
}

#[tokio::test]
async fn forged_inclusion_and_consistency_proofs_are_refused() {
    let s = setup().await;
    finished_run(&*s.h.ledger, "acme", "alice", 3).await;
    let newer = s.server.publish(&s.t).await.unwrap();
    let newer = checkpoint::verify(&newer.note, &s.keys, None).unwrap();
    let good = s.server.consistency(&s.t, 6, 8).await.unwrap();
    verify_consistency(&s.kept, &newer, &good).expect("the honest proof verifies");
    let mut forged = good.clone();
    forged[0] = Hash::chain(&forged[0], b"x");
    let err = verify_consistency(&s.kept, &newer, &forged).unwrap_err();
    assert!(
        matches!(
            err,
            ProofError::Inconsistent {
                old_size: 6,
                new_size: 8
            }
        ),
        "{err}"
    );
    // A proof for other sizes does not do either.
    let other = s.server.consistency(&s.t, 5, 8).await.unwrap();
    assert!(verify_consistency(&s.kept, &newer, &other).is_err());

    let mut b = s.server.bundle(&s.t, s.runs[2].id).await.unwrap();
    let sealed = b.sealed.seal_seq;
    b.sealed_proof[0] = Hash::chain(&b.sealed_proof[0], b"x");
    let err = verify_bundle(&serde_json::to_vec(&b).unwrap(), &s.keys).unwrap_err();
    assert!(
        matches!(err, ProofError::Inclusion { seal_seq, .. } if seal_seq == sealed),
        "{err}"
    );
    s.h.cleanup().await;
}

#[tokio::test]
async fn a_truncated_or_edited_export_is_named() {
    let s = setup().await;
    let b: Bundle = s.server.bundle(&s.t, s.runs[2].id).await.unwrap();
    let bytes = serde_json::to_vec_pretty(&b).unwrap();
    // Cut short in transit.
    let err = verify_bundle(&bytes[..bytes.len() / 2], &s.keys).unwrap_err();
    assert!(matches!(err, ProofError::Malformed(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    // The last steps left out of a well-formed file.
    let mut short = b.clone();
    short.steps.truncate(3);
    let err = verify_bundle(&serde_json::to_vec(&short).unwrap(), &s.keys).unwrap_err();
    assert!(matches!(err, ProofError::Seal { .. }), "{err}");
    assert!(err.to_string().contains("seals 5 steps"), "{err}");
    // A step edited without recomputing.
    let mut edited = b.clone();
    edited.steps[2].step = StepKind::UserMessage {
        text: "edited".into(),
    };
    let err = verify_bundle(&serde_json::to_vec(&edited).unwrap(), &s.keys).unwrap_err();
    assert!(matches!(err, ProofError::Step { seq: 2, .. }), "{err}");
    // A step removed from the middle.
    let mut gap = b.clone();
    gap.steps.remove(1);
    let err = verify_bundle(&serde_json::to_vec(&gap).unwrap(), &s.keys).unwrap_err();
    assert!(matches!(err, ProofError::Step { seq: 2, .. }), "{err}");
    s.h.cleanup().await;
}

trait ExecSql {
    async fn execute_sql(&mut self, sql: &str);
}

impl ExecSql for PgConnection {
    async fn execute_sql(&mut self, sql: &str) {
        sqlx::query(sql).execute(&mut *self).await.unwrap();
    }
}
