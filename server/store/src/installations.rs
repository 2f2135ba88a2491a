//! Installed plugins and the packages they came from (`plugin_installations`,
//! `plugin_packages`).
//!
//! The store knows rows, not plugins: it neither parses manifests nor loads components
//! (that is the host's registry). Each installation row carries the manifest text it was
//! installed with and a `revision` bumped by every change; a change names the revision
//! it was computed from and is refused when another writer (on this host or another)
//! got there first, so no update is lost between hosts.

use std::collections::BTreeMap;

use cairn_audit::Database;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::{StoreError, StoreResult};

/// One installation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationRow {
    /// The installation's id.
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The manifest's plugin id.
    pub plugin_id: String,
    /// The manifest's version.
    pub version: String,
    /// The package digest (`sha256:<hex>` over manifest and component).
    pub digest: String,
    /// The manifest text this installation uses.
    pub manifest: String,
    /// Whether its tools may be called.
    pub enabled: bool,
    /// The administrator's settings.
    pub config: BTreeMap<String, String>,
    /// When it was installed.
    pub installed_at: DateTime<Utc>,
    /// Who installed it.
    pub installed_by: String,
    /// Bumped by every change.
    pub revision: i64,
}

/// A change to an installation, applied only if its revision is still `expected`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallationChange {
    /// New enabled state.
    pub enabled: Option<bool>,
    /// New settings.
    pub config: Option<BTreeMap<String, String>>,
    /// A new package: (version, digest, manifest text). The package must be stored.
    pub package: Option<(String, String, String)>,
}

/// The installation tables over the ledger's database.
#[derive(Clone, Debug)]
pub struct Installations {
    db: Database,
}

const COLUMNS: &str = "id, tenant, plugin_id, version, digest, manifest, enabled, config, \
     installed_at, installed_by, revision";

fn config_text(config: &BTreeMap<String, String>) -> StoreResult<String> {
    serde_json::to_string(config).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_config(text: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("settings: {e}")))
}

fn pg_row(r: &sqlx::postgres::PgRow) -> StoreResult<InstallationRow> {
    Ok(InstallationRow {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        plugin_id: r.try_get("plugin_id")?,
        version: r.try_get("version")?,
        digest: r.try_get("digest")?,
        manifest: r.try_get("manifest")?,
        enabled: r.try_get("enabled")?,
        config: parse_config(r.try_get("config")?)?,
        installed_at: r.try_get("installed_at")?,
        installed_by: r.try_get("installed_by")?,
        revision: r.try_get("revision")?,
    })
}

fn sqlite_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<InstallationRow> {
    let id: String = r.try_get("id")?;
    let micros: i64 = r.try_get("installed_at")?;
    Ok(InstallationRow {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("id: {e}")))?,
        tenant: r.try_get("tenant")?,
        plugin_id: r.try_get("plugin_id")?,
        version: r.try_get("version")?,
        digest: r.try_get("digest")?,
        manifest: r.try_get("manifest")?,
        enabled: r.try_get("enabled")?,
        config: parse_config(r.try_get("config")?)?,
        installed_at: DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| StoreError::Corrupt(format!("installed_at {micros}")))?,
        installed_by: r.try_get("installed_by")?,
        revision: r.try_get("revision")?,
    })
}

/// `true` when `e` is a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Installations {
    /// The installation tables of `db` (created by the ledger's migrations).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a package under its digest; storing the same digest again does nothing.
    #[tracing::instrument(skip(self, manifest, component), fields(bytes = component.len()))]
    pub async fn put_package(
        &self,
        digest: &str,
        manifest: &str,
        component: &[u8],
    ) -> StoreResult<()> {
        match &self.db {
            Database::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO plugin_packages (digest, manifest, component) VALUES ($1, $2, $3) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .bind(manifest)
                .bind(component)
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO plugin_packages (digest, manifest, component, stored_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .bind(manifest)
                .bind(component)
                .bind(Utc::now().timestamp_micros())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// A stored package's manifest text and component.
    pub async fn package(&self, digest: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
        let sql = "SELECT manifest, component FROM plugin_packages WHERE digest = $1";
        Ok(match &self.db {
            Database::Postgres(pool) => sqlx::query(sql)
                .bind(digest)
                .fetch_optional(pool)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?,
            Database::Sqlite(pool) => sqlx::query(&sqlite(sql))
                .bind(digest)
                .fetch_optional(pool)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?,
        })
    }

    /// Adds an installation; [`StoreError::Conflict`] when the tenant already has one of
    /// the same plugin id. Its package must be stored first.
    #[tracing::instrument(skip(self, row), fields(tenant = %row.tenant, plugin = %row.plugin_id))]
    pub async fn insert(&self, row: &InstallationRow) -> StoreResult<()> {
        let config = config_text(&row.config)?;
        let sql = format!(
            "INSERT INTO plugin_installations ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let result = match &self.db {
            Database::Postgres(pool) => sqlx::query(&sql)
                .bind(row.id)
                .bind(&row.tenant)
                .bind(&row.plugin_id)
                .bind(&row.version)
                .bind(&row.digest)
                .bind(&row.manifest)
                .bind(row.enabled)
                .bind(&config)
                .bind(row.installed_at)
                .bind(&row.installed_by)
                .bind(row.revision)
                .execute(pool)
                .await
                .map(drop),
            Database::Sqlite(pool) => sqlx::query(&sqlite(&sql))
                .bind(row.id.to_string())
                .bind(&row.tenant)
                .bind(&row.plugin_id)
                .bind(&row.version)
                .bind(&row.digest)
                .bind(&row.manifest)
                .bind(row.enabled)
                .bind(&config)
                .bind(row.installed_at.timestamp_micros())
                .bind(&row.installed_by)
                .bind(row.revision)
                .execute(pool)
                .await
                .map(drop),
        };
        match result {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "plugin `{}` is already installed in this tenant",
                row.plugin_id
            ))),
            other => Ok(other?),
        }
    }

    /// A tenant's installations, oldest first.
    pub async fn list(&self, tenant: &str) -> StoreResult<Vec<InstallationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM plugin_installations WHERE tenant = $1 \
             ORDER BY installed_at, id"
        );
        match &self.db {
            Database::Postgres(pool) => sqlx::query(&sql)
                .bind(tenant)
                .fetch_all(pool)
                .await?
                .iter()
                .map(pg_row)
                .collect(),
            Database::Sqlite(pool) => sqlx::query(&sqlite(&sql))
                .bind(tenant)
                .fetch_all(pool)
                .await?
                .iter()
                .map(sqlite_row)
                .collect(),
        }
    }

    /// One installation of `tenant` (another tenant's is `None`, like a missing one).
    pub async fn get(&self, tenant: &str, id: Uuid) -> StoreResult<Option<InstallationRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM plugin_installations WHERE tenant = $1 AND id = $2");
        match &self.db {
            Database::Postgres(pool) => sqlx::query(&sql)
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_row)
                .transpose(),
            Database::Sqlite(pool) => sqlx::query(&sqlite(&sql))
                .bind(tenant)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(sqlite_row)
                .transpose(),
        }
    }

    /// The tenant's installation of plugin `plugin_id`, if any (one indexed row: what a
    /// tool call looks up).
    pub async fn get_by_plugin(
        &self,
        tenant: &str,
        plugin_id: &str,
    ) -> StoreResult<Option<InstallationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM plugin_installations WHERE tenant = $1 AND plugin_id = $2"
        );
        match &self.db {
            Database::Postgres(pool) => sqlx::query(&sql)
                .bind(tenant)
                .bind(plugin_id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_row)
                .transpose(),
            Database::Sqlite(pool) => sqlx::query(&sqlite(&sql))
                .bind(tenant)
                .bind(plugin_id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(sqlite_row)
                .transpose(),
        }
    }

    /// Applies `change` if the installation is still at revision `expected`, and returns
    /// the row as it now is. [`StoreError::NotFound`] when it is gone (or another
    /// tenant's), [`StoreError::Stale`] when another writer changed it first.
    #[tracing::instrument(skip(self, change), fields(tenant, %id, expected))]
    pub async fn update(
        &self,
        tenant: &str,
        id: Uuid,
        expected: i64,
        change: &InstallationChange,
    ) -> StoreResult<InstallationRow> {
        let current = self.get(tenant, id).await?.ok_or(StoreError::NotFound)?;
        let enabled = change.enabled.unwrap_or(current.enabled);
        let config = config_text(change.config.as_ref().unwrap_or(&current.config))?;
        let (version, digest, manifest) = change.package.clone().unwrap_or_else(|| {
            (
                current.version.clone(),
                current.digest.clone(),
                current.manifest.clone(),
            )
        });
        let sql = "UPDATE plugin_installations SET enabled = $1, config = $2, version = $3, \
                   digest = $4, manifest = $5, revision = revision + 1 \
                   WHERE tenant = $6 AND id = $7 AND revision = $8";
        let updated = match &self.db {
            Database::Postgres(pool) => sqlx::query(sql)
                .bind(enabled)
                .bind(&config)
                .bind(&version)
                .bind(&digest)
                .bind(&manifest)
                .bind(tenant)
                .bind(id)
                .bind(expected)
                .execute(pool)
                .await?
                .rows_affected(),
            Database::Sqlite(pool) => sqlx::query(&sqlite(sql))
                .bind(enabled)
                .bind(&config)
                .bind(&version)
                .bind(&digest)
                .bind(&manifest)
                .bind(tenant)
                .bind(id.to_string())
                .bind(expected)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        if updated == 0 {
            return Err(self.why_unchanged(tenant, id).await);
        }
        self.get(tenant, id).await?.ok_or(StoreError::NotFound)
    }

    /// Removes an installation if it is still at revision `expected`. Its package stays
    /// (other installations may share it; packages are small and content-addressed).
    pub async fn delete(&self, tenant: &str, id: Uuid, expected: i64) -> StoreResult<()> {
        let sql =
            "DELETE FROM plugin_installations WHERE tenant = $1 AND id = $2 AND revision = $3";
        let deleted = match &self.db {
            Database::Postgres(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .bind(expected)
                .execute(pool)
                .await?
                .rows_affected(),
            Database::Sqlite(pool) => sqlx::query(&sqlite(sql))
                .bind(tenant)
                .bind(id.to_string())
                .bind(expected)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        if deleted == 0 {
            return Err(self.why_unchanged(tenant, id).await);
        }
        Ok(())
    }
}

impl Installations {
    /// Why a conditional write touched no row: the row is gone, or another writer moved
    /// its revision on.
    async fn why_unchanged(&self, tenant: &str, id: Uuid) -> StoreError {
        match self.get(tenant, id).await {
            Ok(Some(_)) => StoreError::Stale,
            Ok(None) => StoreError::NotFound,
            Err(e) => e,
        }
    }
}

/// PostgreSQL's `$n` placeholders in SQLite's spelling, `?n`, so one statement text
/// serves both stores.
fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}
