//! Reading seals and storing checkpoints, for the transparency log (both stores).
//!
//! Kept apart from the append path in `pg.rs`/`sqlite.rs`: nothing here writes a ledger row
//! except the insert of a published checkpoint.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row, SqlitePool};

use crate::canonical::Hash;
use crate::error::{LedgerError, Result};
use crate::ids::{RunId, TenantId};

/// One record of a tenant's seal chain, as stored: what a leaf of the tenant's Merkle tree
/// commits to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealEntry {
    /// Position in the tenant chain, and leaf index in the tree.
    pub seal_seq: u64,
    /// The hashed body (a [`crate::SealBody`] as JSON).
    pub body: serde_json::Value,
    /// The previous seal's hash.
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash ‖ JCS(body))`: the leaf data.
    pub hash: Hash,
}

/// A published checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// Tenant.
    pub tenant: TenantId,
    /// Seals covered.
    pub tree_size: u64,
    /// Root of the tree of those seals.
    pub root_hash: Hash,
    /// When it was signed.
    pub published_at: DateTime<Utc>,
    /// The signed note.
    pub note: String,
}

fn map(operation: &'static str) -> impl Fn(sqlx::Error) -> LedgerError {
    move |e| LedgerError::from_sqlx(operation, std::time::Duration::ZERO, e)
}

fn entry(seq: i64, body: serde_json::Value, prev: &[u8], hash: &[u8]) -> Result<SealEntry> {
    Ok(SealEntry {
        seal_seq: seq as u64,
        body,
        prev_hash: Hash::from_slice(prev)?,
        hash: Hash::from_slice(hash)?,
    })
}

pub(crate) async fn pg_seal_hashes(pool: &PgPool, tenant: &TenantId) -> Result<Vec<Hash>> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM audit_seals WHERE tenant = $1 ORDER BY seal_seq")
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(map("seal hashes"))?;
    rows.iter().map(|h| Hash::from_slice(h)).collect()
}

/// `(seal_seq, hash)` rows as positions and hashes.
fn positioned(rows: Vec<(i64, Vec<u8>)>) -> Result<Vec<(u64, Hash)>> {
    rows.iter()
        .map(|(seq, h)| Ok((*seq as u64, Hash::from_slice(h)?)))
        .collect()
}

pub(crate) async fn pg_seal_hashes_from(
    pool: &PgPool,
    tenant: &TenantId,
    from: u64,
) -> Result<Vec<(u64, Hash)>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seal_seq, hash FROM audit_seals WHERE tenant = $1 AND seal_seq >= $2 ORDER BY seal_seq",
    )
    .bind(tenant.as_str())
    .bind(from as i64)
    .fetch_all(pool)
    .await
    .map_err(map("seal hashes"))?;
    positioned(rows)
}

pub(crate) async fn pg_run_seals(
    pool: &PgPool,
    tenant: &TenantId,
    run: RunId,
) -> Result<Vec<SealEntry>> {
    let rows = sqlx::query(
        "SELECT seal_seq, body, prev_hash, hash FROM audit_seals
         WHERE tenant = $1 AND run_id = $2 ORDER BY seal_seq",
    )
    .bind(tenant.as_str())
    .bind(run.as_uuid())
    .fetch_all(pool)
    .await
    .map_err(map("run seals"))?;
    let m = map("run seals");
    rows.iter()
        .map(|r| {
            entry(
                r.try_get("seal_seq").map_err(&m)?,
                r.try_get("body").map_err(&m)?,
                &r.try_get::<Vec<u8>, _>("prev_hash").map_err(&m)?,
                &r.try_get::<Vec<u8>, _>("hash").map_err(&m)?,
            )
        })
        .collect()
}

pub(crate) async fn pg_store_checkpoint(pool: &PgPool, cp: &StoredCheckpoint) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant, tree_size, root_hash, published_at, note)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(cp.tenant.as_str())
    .bind(cp.tree_size as i64)
    .bind(cp.root_hash.as_bytes().as_slice())
    .bind(cp.published_at)
    .bind(&cp.note)
    .execute(pool)
    .await
    .map_err(map("store checkpoint"))?;
    Ok(())
}

pub(crate) async fn pg_latest_checkpoint(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Option<StoredCheckpoint>> {
    let row = sqlx::query(
        "SELECT tree_size, root_hash, published_at, note FROM audit_checkpoints
         WHERE tenant = $1 ORDER BY tree_size DESC, published_at DESC LIMIT 1",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(map("latest checkpoint"))?;
    let m = map("latest checkpoint");
    row.map(|r| {
        Ok(StoredCheckpoint {
            tenant: tenant.clone(),
            tree_size: r.try_get::<i64, _>("tree_size").map_err(&m)? as u64,
            root_hash: Hash::from_slice(&r.try_get::<Vec<u8>, _>("root_hash").map_err(&m)?)?,
            published_at: r.try_get("published_at").map_err(&m)?,
            note: r.try_get("note").map_err(&m)?,
        })
    })
    .transpose()
}

pub(crate) async fn pg_tenants(pool: &PgPool) -> Result<Vec<TenantId>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT tenant FROM audit_tenant_heads ORDER BY 1")
        .fetch_all(pool)
        .await
        .map_err(map("tenants"))?;
    rows.into_iter().map(|t| Ok(TenantId::parse(t)?)).collect()
}

pub(crate) async fn sqlite_seal_hashes(pool: &SqlitePool, tenant: &TenantId) -> Result<Vec<Hash>> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM audit_seals WHERE tenant = ? ORDER BY seal_seq")
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(map("seal hashes"))?;
    rows.iter().map(|h| Hash::from_slice(h)).collect()
}

pub(crate) async fn sqlite_seal_hashes_from(
    pool: &SqlitePool,
    tenant: &TenantId,
    from: u64,
) -> Result<Vec<(u64, Hash)>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seal_seq, hash FROM audit_seals WHERE tenant = ? AND seal_seq >= ? ORDER BY seal_seq",
    )
    .bind(tenant.as_str())
    .bind(from as i64)
    .fetch_all(pool)
    .await
    .map_err(map("seal hashes"))?;
    positioned(rows)
}

pub(crate) async fn sqlite_run_seals(
    pool: &SqlitePool,
    tenant: &TenantId,
    run: RunId,
) -> Result<Vec<SealEntry>> {
    let rows = sqlx::query(
        "SELECT seal_seq, body, prev_hash, hash FROM audit_seals
         WHERE tenant = ? AND run_id = ? ORDER BY seal_seq",
    )
    .bind(tenant.as_str())
    .bind(run.as_uuid())
    .fetch_all(pool)
    .await
    .map_err(map("run seals"))?;
    let m = map("run seals");
    rows.iter()
        .map(|r| {
            let body: String = r.try_get("body").map_err(&m)?;
            entry(
                r.try_get("seal_seq").map_err(&m)?,
                serde_json::from_str(&body)?,
                &r.try_get::<Vec<u8>, _>("prev_hash").map_err(&m)?,
                &r.try_get::<Vec<u8>, _>("hash").map_err(&m)?,
            )
        })
        .collect()
}

pub(crate) async fn sqlite_store_checkpoint(
    pool: &SqlitePool,
    cp: &StoredCheckpoint,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant, tree_size, root_hash, published_at, note)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(cp.tenant.as_str())
    .bind(cp.tree_size as i64)
    .bind(cp.root_hash.as_bytes().as_slice())
    .bind(crate::canonical::hash_time(&cp.published_at))
    .bind(&cp.note)
    .execute(pool)
    .await
    .map_err(map("store checkpoint"))?;
    Ok(())
}

pub(crate) async fn sqlite_latest_checkpoint(
    pool: &SqlitePool,
    tenant: &TenantId,
) -> Result<Option<StoredCheckpoint>> {
    let row = sqlx::query(
        "SELECT tree_size, root_hash, published_at, note FROM audit_checkpoints
         WHERE tenant = ? ORDER BY tree_size DESC, published_at DESC LIMIT 1",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(map("latest checkpoint"))?;
    let m = map("latest checkpoint");
    row.map(|r| {
        let at: String = r.try_get("published_at").map_err(&m)?;
        Ok(StoredCheckpoint {
            tenant: tenant.clone(),
            tree_size: r.try_get::<i64, _>("tree_size").map_err(&m)? as u64,
            root_hash: Hash::from_slice(&r.try_get::<Vec<u8>, _>("root_hash").map_err(&m)?)?,
            published_at: DateTime::parse_from_rfc3339(&at)
                .map_err(|e| LedgerError::Corrupt(format!("checkpoint time {at:?}: {e}")))?
                .with_timezone(&Utc),
            note: r.try_get("note").map_err(&m)?,
        })
    })
    .transpose()
}

pub(crate) async fn sqlite_tenants(pool: &SqlitePool) -> Result<Vec<TenantId>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT tenant FROM audit_tenant_heads ORDER BY 1")
        .fetch_all(pool)
        .await
        .map_err(map("tenants"))?;
    rows.into_iter().map(|t| Ok(TenantId::parse(t)?)).collect()
}
