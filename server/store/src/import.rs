//! One-time import of a data dir's `plugin-kv.json` (the file
//! [`cairn_runtime::JsonFileKv`] writes) into [`crate::SqlKv`]'s tables, at start-up.
//!
//! Idempotent in two ways: the import is one transaction that records the file's SHA-256
//! in `store_imports`, so the same file is never imported twice (a second host with a copy
//! of the data dir, or a crash between the commit and the rename); and after the commit the
//! file is renamed to `plugin-kv.json.imported`, so the next start does not even read it.
//! A key that already has a value in the database keeps it: the database is newer than
//! any file. Quotas are not checked (the data was written under them, and a manifest's
//! quota is not known here); each scope's usage is recomputed from its rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_audit::Database;
use sha2::{Digest, Sha256};

/// What [`import_json_kv`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Scopes in the file.
    pub scopes: u64,
    /// Keys in the file.
    pub keys: u64,
    /// Keys written (the others already had a value in the database).
    pub inserted: u64,
    /// The file had been imported before (same digest); nothing was written.
    pub already_imported: bool,
    /// Where the file was moved to, if it was.
    pub renamed_to: Option<PathBuf>,
}

/// Why an import failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not in `JsonFileKv`'s format.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database refused.
    #[error("importing {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: sqlx::Error,
    },
}

/// The file's shape: `[{ "tenant", "plugin", "user", "entries": { key: hex } }]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScope {
    tenant: String,
    plugin: String,
    user: String,
    entries: BTreeMap<String, String>,
}

/// The name the import is recorded under in `store_imports`.
const SOURCE: &str = "plugin-kv.json";

/// Imports the `JsonFileKv` file at `path` into the database once, then renames it to
/// `<path>.imported`. A missing file is not an error (nothing to import).
#[tracing::instrument(skip(db))]
pub async fn import_json_kv(db: &Database, path: &Path) -> Result<ImportReport, ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ImportReport::default()),
        Err(e) => return Err(io(e)),
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    let scopes: Vec<FileScope> =
        serde_json::from_slice(&bytes).map_err(|e| ImportError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut rows = Vec::new();
    for s in &scopes {
        let mut entries = Vec::with_capacity(s.entries.len());
        for (key, hex_value) in &s.entries {
            cairn_runtime::check_key(key).map_err(|e| ImportError::Format {
                path: path.to_path_buf(),
                reason: format!("scope {}/{}/{}: {e}", s.tenant, s.plugin, s.user),
            })?;
            let value = hex::decode(hex_value).map_err(|e| ImportError::Format {
                path: path.to_path_buf(),
                reason: format!("key {key:?}: {e}"),
            })?;
            entries.push((key.as_str(), value));
        }
        rows.push((s, entries));
    }
    let mut report = ImportReport {
        scopes: scopes.len() as u64,
        keys: rows.iter().map(|(_, e)| e.len() as u64).sum(),
        ..Default::default()
    };
    let db_err = |source| ImportError::Database {
        path: path.to_path_buf(),
        source,
    };
    let outcome = match db {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await.map_err(db_err)?;
            let r = write_pg(&mut tx, &digest, &rows, report.keys).await;
            finish(tx, r).await
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
            let r = write_sqlite(&mut tx, &digest, &rows, report.keys).await;
            finish(tx, r).await
        }
    }
    .map_err(db_err)?;
    match outcome {
        Some(inserted) => report.inserted = inserted,
        None => report.already_imported = true,
    }
    let mut imported = path.as_os_str().to_owned();
    imported.push(".imported");
    let imported = PathBuf::from(imported);
    tokio::fs::rename(path, &imported).await.map_err(io)?;
    tracing::info!(
        scopes = report.scopes,
        keys = report.keys,
        inserted = report.inserted,
        already_imported = report.already_imported,
        "imported the plugin key-value file into the database"
    );
    report.renamed_to = Some(imported);
    Ok(report)
}

type Rows<'a> = [(&'a FileScope, Vec<(&'a str, Vec<u8>)>)];

/// Commits on success (`Some`: keys inserted; `None`: imported before), rolls back on error.
async fn finish<DB: sqlx::Database>(
    tx: sqlx::Transaction<'_, DB>,
    r: Result<Option<u64>, sqlx::Error>,
) -> Result<Option<u64>, sqlx::Error> {
    match r {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

const RECORD_SQL: &str = "INSERT INTO store_imports (source, digest, items) VALUES ($1, $2, $3)
     ON CONFLICT (source, digest) DO NOTHING RETURNING 1";
const SCOPE_SQL: &str = "INSERT INTO plugin_kv_scopes (tenant, plugin, user_id) VALUES ($1, $2, $3)
     ON CONFLICT (tenant, plugin, user_id) DO UPDATE SET used_bytes = plugin_kv_scopes.used_bytes
     RETURNING id";
const KEY_SQL: &str = "INSERT INTO plugin_kv (scope_id, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (scope_id, key) DO NOTHING";
const USAGE_SQL: &str = "UPDATE plugin_kv_scopes
     SET used_bytes = (SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0)
                       FROM plugin_kv WHERE scope_id = $1)
     WHERE id = $1";

/// Records the import and writes the rows, in the caller's transaction: keys inserted, or
/// `None` when this file was imported before.
macro_rules! write_rows {
    ($tx:expr, $digest:expr, $rows:expr, $keys:expr) => {{
        let tx = $tx;
        let fresh: Option<i32> = sqlx::query_scalar(RECORD_SQL)
            .bind(SOURCE)
            .bind($digest)
            .bind($keys as i64)
            .fetch_optional(&mut *tx)
            .await?;
        if fresh.is_none() {
            return Ok(None);
        }
        let mut inserted = 0;
        for (scope, entries) in $rows {
            let id: i64 = sqlx::query_scalar(SCOPE_SQL)
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&scope.user)
                .fetch_one(&mut *tx)
                .await?;
            for (key, value) in entries {
                inserted += sqlx::query(KEY_SQL)
                    .bind(id)
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            sqlx::query(USAGE_SQL).bind(id).execute(&mut *tx).await?;
        }
        Ok(Some(inserted))
    }};
}

async fn write_pg(
    tx: &mut sqlx::PgConnection,
    digest: &str,
    rows: &Rows<'_>,
    keys: u64,
) -> Result<Option<u64>, sqlx::Error> {
    write_rows!(tx, digest, rows, keys)
}

async fn write_sqlite(
    tx: &mut sqlx::SqliteConnection,
    digest: &str,
    rows: &Rows<'_>,
    keys: u64,
) -> Result<Option<u64>, sqlx::Error> {
    write_rows!(tx, digest, rows, keys)
}
