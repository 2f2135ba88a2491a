//! Test harness: a fresh database per test, migrated by opening a ledger on it: a new
//! UUID-named PostgreSQL database (dropped afterwards) or a SQLite file in a temporary
//! directory. PostgreSQL comes from `CAIRN_TEST_DATABASE_URL` (default the local server).
#![allow(dead_code)]

use std::sync::Arc;

use cairn_audit::{Database, Ledger, LedgerOptions};
use sqlx::Connection;
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

pub enum Kind {
    Pg { name: String },
    Sqlite { _dir: tempfile::TempDir },
}

/// One test's database, with a ledger open on it.
pub struct TestDb {
    pub ledger: Arc<dyn Ledger>,
    pub url: String,
    kind: Kind,
}

impl TestDb {
    pub async fn pg() -> Self {
        let name = format!("cairn_store_{}", Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("admin connection (set CAIRN_TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .expect("create database");
        let url = db_url(&name);
        let ledger = cairn_audit::open(&url, LedgerOptions::default())
            .await
            .expect("open pg ledger");
        TestDb {
            ledger,
            url,
            kind: Kind::Pg { name },
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("cairn.db").display());
        let ledger = cairn_audit::open(&url, LedgerOptions::default())
            .await
            .expect("open sqlite ledger");
        TestDb {
            ledger,
            url,
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    pub fn db(&self) -> Database {
        self.ledger.database()
    }

    /// Another ledger (another pool: another "host") on the same database.
    pub async fn second_host(&self) -> Arc<dyn Ledger> {
        cairn_audit::open(&self.url, LedgerOptions::default())
            .await
            .expect("open a second ledger")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Kind::Pg { name } = &self.kind {
            let name = name.clone();
            // Dropped from a fresh thread: the test's runtime may be shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs each listed `async fn(TestDb)` against PostgreSQL and SQLite, as two tests named
/// `pg_<name>` and `sqlite_<name>`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::TestDb::pg().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::TestDb::sqlite().await).await;
                }
            )*
        }
    };
}
