//! Test harness: one fresh ledger per test, on a real PostgreSQL database (a new
//! UUID-named database, dropped afterwards) or a SQLite file in a temporary directory, plus
//! "privileged" connections that bypass the append-only triggers to play the attacker.
#![allow(dead_code)]

use std::sync::Arc;

use cairn_audit::*;
use sqlx::Connection;
use uuid::Uuid;

/// The PostgreSQL admin URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `name` on the admin server.
pub fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Creates a UUID-named database and returns its name.
pub async fn create_db() -> String {
    let name = format!("cairn_audit_{}", Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    name
}

/// Drops a test database (terminating leftover sessions).
pub async fn drop_db(name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

pub enum Store {
    Pg {
        db: String,
        pool: sqlx::PgPool,
    },
    Sqlite {
        _dir: tempfile::TempDir,
        path: String,
        pool: sqlx::SqlitePool,
    },
}

pub struct Harness {
    pub ledger: Arc<dyn Ledger>,
    pub store: Store,
    pub url: String,
}

impl Harness {
    pub async fn pg() -> Self {
        Self::pg_with(LedgerOptions::default()).await
    }

    pub async fn pg_with(options: LedgerOptions) -> Self {
        let db = create_db().await;
        let url = db_url(&db);
        let l = PgLedger::connect(&url, options)
            .await
            .expect("open pg ledger");
        let pool = l.pool().clone();
        Harness {
            ledger: Arc::new(l),
            store: Store::Pg { db, pool },
            url,
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db").display().to_string();
        let url = format!("sqlite:{path}");
        let l = SqliteLedger::connect(&url, LedgerOptions::default())
            .await
            .expect("open sqlite ledger");
        let pool = l.pool().clone();
        Harness {
            ledger: Arc::new(l),
            store: Store::Sqlite {
                _dir: dir,
                path,
                pool,
            },
            url,
        }
    }

    pub fn is_pg(&self) -> bool {
        matches!(self.store, Store::Pg { .. })
    }

    /// A UUID as an SQL literal for this store.
    pub fn uuid(&self, u: Uuid) -> String {
        match self.store {
            Store::Pg { .. } => format!("'{u}'::uuid"),
            Store::Sqlite { .. } => format!("X'{}'", u.simple()),
        }
    }

    /// A hash as an SQL literal for this store.
    pub fn bytes(&self, h: &Hash) -> String {
        match self.store {
            Store::Pg { .. } => format!("'\\x{}'::bytea", h.to_hex()),
            Store::Sqlite { .. } => format!("X'{}'", h.to_hex()),
        }
    }

    /// A JSON value as an SQL literal for this store.
    pub fn json(&self, v: &serde_json::Value) -> String {
        let s = v.to_string().replace('\'', "''");
        match self.store {
            Store::Pg { .. } => format!("'{s}'::jsonb"),
            Store::Sqlite { .. } => format!("'{s}'"),
        }
    }

    /// Runs SQL through the application's own connection pool (triggers in force).
    pub async fn app_exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match &self.store {
            Store::Pg { pool, .. } => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Store::Sqlite { pool, .. } => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
    }

    /// Runs SQL as an attacker with database privileges: triggers bypassed (PostgreSQL:
    /// superuser with `session_replication_role = replica`; SQLite: a raw connection that
    /// drops the triggers, runs the SQL and puts the triggers back, in one transaction).
    pub async fn tamper(&self, sql: &str) {
        match &self.store {
            Store::Pg { db, .. } => {
                let mut c = sqlx::PgConnection::connect(&db_url(db))
                    .await
                    .expect("tamper connect");
                sqlx::raw_sql(&format!("SET session_replication_role = replica; {sql}"))
                    .execute(&mut c)
                    .await
                    .expect("tamper sql");
            }
            Store::Sqlite { path, .. } => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{path}"))
                    .await
                    .expect("tamper connect");
                let triggers: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%_no_%'",
                )
                .fetch_all(&mut c)
                .await
                .expect("list triggers");
                assert!(!triggers.is_empty());
                let mut script = String::from("BEGIN IMMEDIATE;");
                for (name, _) in &triggers {
                    script.push_str(&format!("DROP TRIGGER {name};"));
                }
                script.push_str(sql);
                script.push(';');
                for (_, def) in &triggers {
                    script.push_str(def);
                    script.push(';');
                }
                script.push_str("COMMIT;");
                sqlx::raw_sql(&script)
                    .execute(&mut c)
                    .await
                    .expect("tamper sql");
            }
        }
    }

    pub async fn cleanup(self) {
        let Harness { ledger, store, .. } = self;
        drop(ledger);
        if let Store::Pg { db, pool } = store {
            pool.close().await;
            drop_db(&db).await;
        }
    }
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn new_run(t: &str, user: &str) -> NewRun {
    NewRun {
        tenant: tenant(t),
        user: UserId::parse(user).unwrap(),
        conversation_id: Some(ConversationId::parse("conv-1").unwrap()),
        model: "smollm2-135m".into(),
    }
}

pub fn actor(s: &str) -> Actor {
    Actor::parse(s).unwrap()
}

pub fn user_msg(text: &str) -> NewStep {
    NewStep {
        actor: actor("user:alice"),
        step: StepKind::UserMessage { text: text.into() },
    }
}

pub fn tool_call(plugin: &str, tool: &str, call: &str) -> NewStep {
    NewStep {
        actor: actor("model"),
        step: StepKind::ToolCall {
            plugin_id: Some(PluginId::parse(plugin).unwrap()),
            tool_name: ToolCallName::parse(tool).unwrap(),
            call_id: call.into(),
            arguments: serde_json::json!({"title": "Renew passport", "due": 3}),
        },
    }
}

pub fn final_answer(text: &str) -> NewStep {
    NewStep {
        actor: actor("model"),
        step: StepKind::FinalAnswer { text: text.into() },
    }
}

/// A run of `n` steps (the last one a final answer, so it is sealed) for `user`.
pub async fn finished_run(l: &dyn Ledger, t: &str, user: &str, n: usize) -> Run {
    let run = l.start_run(new_run(t, user)).await.unwrap();
    let tn = tenant(t);
    for i in 0..n - 1 {
        let step = if i % 3 == 1 {
            tool_call("tasks", "add_task", &format!("call-{i}"))
        } else {
            user_msg(&format!("message {i}"))
        };
        l.append(&tn, run.id, step).await.unwrap();
    }
    l.append(&tn, run.id, final_answer("done")).await.unwrap();
    run
}

/// Declares the suite once; instantiates every test for both stores.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = $crate::common::Harness::pg().await;
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = $crate::common::Harness::sqlite().await;
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            )*
        }
    };
}
