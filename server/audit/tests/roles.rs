//! The owner / writer / reader / retention roles on a real PostgreSQL, set up with exactly
//! the SQL `cairn_audit::roles` gives operators, and the forged-purge attack of issue 11.
//!
//! Roles are cluster-wide, so the test roles have fixed names (`cairn_test_*`) and are
//! created idempotently; each test has its own database, where the grants live, so tests
//! run in parallel.

mod common;

use std::sync::Arc;

use cairn_audit::roles::RoleNames;
use cairn_audit::*;
use chrono::{Duration, Utc};
use common::*;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn names() -> RoleNames {
    RoleNames {
        owner: "cairn_test_owner".into(),
        writer: "cairn_test_writer".into(),
        reader: "cairn_test_reader".into(),
        retention: "cairn_test_retention".into(),
    }
}

/// Creates the test roles unless they exist. Concurrent tests may race on CREATE ROLE;
/// whoever loses finds the role there.
async fn ensure_roles(n: &RoleNames) {
    let mut c = PgConnection::connect(&admin_url()).await.expect("admin");
    for role in [&n.owner, &n.writer, &n.reader, &n.retention] {
        for _ in 0..5 {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                    .bind(role)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            if exists {
                break;
            }
            let _ = sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
                .execute(&mut c)
                .await;
        }
    }
}

fn url_as(role: &str, db: &str) -> String {
    db_url(db).replacen("postgres@", &format!("{role}@"), 1)
}

struct Deployment {
    db: String,
    names: RoleNames,
    /// The server's ledger, connected as the writer.
    writer: Arc<dyn Ledger>,
}

impl Deployment {
    /// A database owned by the owner role, migrated by it, granted with `grant_sql`.
    async fn new(min_retention_days: u32) -> Self {
        let names = names();
        ensure_roles(&names).await;
        let db = format!("cairn_roles_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db} OWNER {}", names.owner))
            .execute(&mut admin)
            .await
            .unwrap();
        let owner = PgLedger::connect(&url_as(&names.owner, &db), LedgerOptions::default())
            .await
            .expect("owner migrates");
        sqlx::raw_sql(&names.grant_sql(min_retention_days))
            .execute(owner.pool())
            .await
            .expect("grants");
        owner.pool().close().await;
        let no_migrate = LedgerOptions {
            migrate: false,
            ..LedgerOptions::default()
        };
        let writer = cairn_audit::open(&url_as(&names.writer, &db), no_migrate)
            .await
            .unwrap();
        Deployment { db, names, writer }
    }

    async fn conn(&self, role: &str) -> PgConnection {
        PgConnection::connect(&url_as(role, &self.db))
            .await
            .unwrap()
    }

    /// Three sealed runs of four steps, written by the writer role.
    async fn three_runs(&self, t: &TenantId) {
        for _ in 0..3 {
            let run = self
                .writer
                .start_run(NewRun {
                    tenant: t.clone(),
                    user: UserId::parse("alice").unwrap(),
                    conversation_id: None,
                    model: "m".into(),
                })
                .await
                .expect("writer starts a run");
            for step in [
                StepKind::UserMessage { text: "hi".into() },
                StepKind::UserMessage { text: "a".into() },
                StepKind::UserMessage { text: "b".into() },
                StepKind::FinalAnswer {
                    text: "done".into(),
                },
            ] {
                self.writer
                    .append(
                        t,
                        run.id,
                        NewStep {
                            actor: Actor::parse("user:alice").unwrap(),
                            step,
                        },
                    )
                    .await
                    .expect("writer appends");
            }
        }
    }

    async fn counts(&self) -> (i64, i64, i64) {
        let mut c = self.conn("postgres").await;
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM audit_runs), (SELECT count(*) FROM audit_steps),
                    (SELECT count(*) FROM audit_seals)",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    }

    async fn cleanup(self) {
        drop(self.writer);
        drop_db(&self.db).await;
    }
}

/// SQLSTATE of a refused statement (panics when it was not refused).
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, sqlx::Error>) -> String {
    match r {
        Ok(v) => panic!("{what} was allowed: {v:?}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
            .unwrap_or_else(|| panic!("{what}: not a database error: {e}")),
    }
}

const DENIED: &str = "42501";

#[tokio::test]
async fn writer_cannot_update_delete_truncate_disable_triggers_or_purge() {
    let d = Deployment::new(30).await;
    let t = tenant("acme");
    d.three_runs(&t).await;
    let before = d.counts().await;
    let mut w = d.conn(&d.names.writer).await;
    for sql in [
        "UPDATE audit_steps SET actor = 'user:mallory'",
        "DELETE FROM audit_steps",
        "TRUNCATE audit_steps",
        "UPDATE audit_seals SET body = body",
        "DELETE FROM audit_seals",
        "TRUNCATE audit_runs CASCADE",
        "DELETE FROM audit_runs",
        "DELETE FROM audit_checkpoints",
        "ALTER TABLE audit_steps DISABLE TRIGGER ALL",
        "ALTER TABLE audit_steps DISABLE TRIGGER audit_steps_append_only",
        "DROP TRIGGER audit_steps_append_only ON audit_steps",
        "SET session_replication_role = replica",
        "UPDATE audit_settings SET min_retention = interval '0'",
        "INSERT INTO audit_purge_tokens VALUES (txid_current(), 'x')",
        "SELECT * FROM cairn_audit_purge('acme', now(), 0, '\\x00', '\\x00', '{}', now())",
    ] {
        let code = refused(sql, sqlx::query(sql).execute(&mut w).await);
        assert_eq!(code, DENIED, "{sql}");
    }
    // Nor through the library: the writer's ledger cannot purge.
    let err = d
        .writer
        .purge(&PurgeRequest {
            tenant: t.clone(),
            cutoff: Utc::now() - Duration::days(365),
            actor: Actor::parse("user:root").unwrap(),
            reason: "test".into(),
            min_retention: Duration::zero(),
        })
        .await
        .expect_err("writer purge");
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(d.counts().await, before);
    assert!(d.writer.verify(Some(&t), None, None).await.unwrap().is_ok());
    d.cleanup().await;
}

#[tokio::test]
async fn reader_cannot_call_any_function_that_writes() {
    let d = Deployment::new(30).await;
    let t = tenant("acme");
    d.three_runs(&t).await;
    let before = d.counts().await;
    let mut r = d.conn(&d.names.reader).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_steps")
        .fetch_one(&mut r)
        .await
        .expect("the reader reads");
    assert_eq!(n, 12);
    // Every function in the schema that is not a trigger function.
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prorettype <> 'trigger'::regtype ORDER BY 1",
    )
    .fetch_all(&mut r)
    .await
    .unwrap();
    assert!(functions.len() >= 3, "{functions:?}");
    for f in &functions {
        let has: bool = sqlx::query_scalar("SELECT has_function_privilege($1, $2, 'EXECUTE')")
            .bind(&d.names.reader)
            .bind(f)
            .fetch_one(&mut r)
            .await
            .unwrap();
        assert!(!has, "the reader may execute {f}");
    }
    for sql in [
        "SELECT cairn_audit_lock_tenant('acme')",
        "SELECT * FROM cairn_audit_chain_batch('acme', 0, '\\x00', '{}', '{}', '{}', '{}', '{}',
             '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        "SELECT * FROM cairn_audit_purge('acme', now(), 0, '\\x00', '\\x00', '{}', now())",
        "INSERT INTO audit_checkpoints VALUES ('acme', 0, '\\x00', now(), '')",
        "UPDATE audit_tenant_heads SET next_seal_seq = 0",
    ] {
        let code = refused(sql, sqlx::query(sql).execute(&mut r).await);
        assert_eq!(code, DENIED, "{sql}");
    }
    assert_eq!(d.counts().await, before);
    d.cleanup().await;
}

/// The purge record the attacker of issue 11 built: a forged actor, a cutoff in 9999,
/// linked to the tip it read from `audit_tenant_heads`, its hash computed correctly.
async fn forged_purge(c: &mut PgConnection, db_role: Option<&str>) -> Result<(), sqlx::Error> {
    let (seq, prev): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT next_seal_seq, last_seal_hash FROM audit_tenant_heads WHERE tenant = 'acme'",
    )
    .fetch_one(&mut *c)
    .await?;
    let now =
        cairn_audit::canonical::hash_time(&cairn_audit::canonical::truncate_micros(Utc::now()));
    let mut body = json!({
        "type": "purge", "tenant": "acme", "seal_seq": seq,
        "cutoff": "9999-01-01T00:00:00.000000Z", "actor": "user:retention-job",
        "reason": "retention", "purged_at": now, "runs_purged": 3, "steps_purged": 12,
        "first_seal_seq": 1, "last_seal_seq": 5, "purged_digest": "00".repeat(32),
    });
    if let Some(r) = db_role {
        body["db_role"] = json!(r);
    }
    let canonical = String::from_utf8(canonical_json(&body).unwrap()).unwrap();
    let prev_hash = Hash::from_slice(&prev).unwrap();
    let hash = Hash::chain(&prev_hash, canonical.as_bytes());
    sqlx::query("SELECT * FROM cairn_audit_purge('acme', '9999-01-01T00:00:00Z', $1, $2, $3, $4, $5::timestamptz)")
        .bind(seq)
        .bind(prev)
        .bind(hash.as_bytes().as_slice())
        .bind(&canonical)
        .bind(&now)
        .fetch_all(&mut *c)
        .await
        .map(|_| ())
}

/// Issue 11's attack, by every role that is not the retention role, and by the retention
/// role itself with the far-future cutoff: all refused, nothing deleted, and verify still
/// reports no purge.
#[tokio::test]
async fn forged_purge_attack_fails_and_deletes_nothing() {
    let d = Deployment::new(30).await;
    let t = tenant("acme");
    d.three_runs(&t).await;
    let before = d.counts().await;
    assert_eq!(before, (3, 12, 6));
    for role in [d.names.reader.clone(), d.names.writer.clone()] {
        let mut c = d.conn(&role).await;
        let code = refused(&role, forged_purge(&mut c, Some(&role)).await);
        assert_eq!(code, DENIED, "{role}");
    }
    // The retention role may call the function, but not with a cutoff inside the minimum
    // retention, nor with a record naming another role.
    let mut c = d.conn(&d.names.retention).await;
    let code = refused(
        "future cutoff",
        forged_purge(&mut c, Some(&d.names.retention)).await,
    );
    assert_eq!(code, "23514", "check_violation expected");
    assert_eq!(d.counts().await, before);
    let report = d.writer.verify(Some(&t), None, None).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.counts.purges, 0);
    d.cleanup().await;
}

/// The retention role purges through the library: the record carries the caller, the
/// reason and the database role, and a cutoff inside the minimum retention is refused by
/// the database even when the caller's own check is bypassed (min_retention 0 here).
#[tokio::test]
async fn retention_role_purges_and_the_record_names_it() {
    let d = Deployment::new(30).await;
    let t = tenant("acme");
    d.three_runs(&t).await;
    let no_migrate = LedgerOptions {
        migrate: false,
        ..LedgerOptions::default()
    };
    let retention = cairn_audit::open(&url_as(&d.names.retention, &d.db), no_migrate)
        .await
        .unwrap();
    let mut request = PurgeRequest {
        tenant: t.clone(),
        cutoff: Utc::now(),
        actor: Actor::parse("user:olga").unwrap(),
        reason: "   ".into(),
        min_retention: Duration::zero(),
    };
    let blank = retention.purge(&request).await.expect_err("blank reason");
    assert!(blank.to_string().contains("reason"), "{blank}");
    request.reason = "GDPR request 42".into();
    let inside = retention.purge(&request).await.expect_err("30 days");
    assert!(inside.to_string().contains("minimum retention"), "{inside}");
    assert_eq!(d.counts().await.0, 3);

    let mut owner = d.conn(&d.names.owner).await;
    sqlx::query("UPDATE audit_settings SET min_retention = interval '0'")
        .execute(&mut owner)
        .await
        .unwrap();
    let report = retention.purge(&request).await.expect("purge");
    assert_eq!((report.runs_purged, report.steps_purged), (3, 12));
    let body: serde_json::Value =
        sqlx::query_scalar("SELECT body FROM audit_seals WHERE kind = 'purge'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(body["actor"], "user:olga");
    assert_eq!(body["reason"], "GDPR request 42");
    assert_eq!(body["db_role"], "cairn_test_retention");
    assert!(d.writer.verify(Some(&t), None, None).await.unwrap().is_ok());
    drop(retention);
    d.cleanup().await;
}
