//! Plugin key-value data in the ledger's database: [`SqlKv`], the server's
//! [`cairn_runtime::KvStore`].
//!
//! One row per key and one usage row per scope (tenant, plugin, user), created by the
//! migration `20261202130000_plugin_kv`. A write changes only its own rows; the quota is
//! checked and the usage moved in the same transaction as the write, with the scope's
//! usage row locked (PostgreSQL: one call of `cairn_kv_set`, which takes the row lock;
//! SQLite: a `BEGIN IMMEDIATE` transaction, SQLite's one writer at a time), so concurrent
//! writers to one scope, on one host or several, cannot overshoot its quota together.
//! Writers to different scopes do not wait for each other on PostgreSQL.
//!
//! Errors handed to the plugin say only what failed; the database's own message is logged.

use cairn_audit::Database;
use cairn_runtime::{KvError, KvScope, KvStore, MAX_VALUE_BYTES, check_key};
use sqlx::Row;

/// The server's key-value store, over the ledger's database.
#[derive(Clone, Debug)]
pub struct SqlKv {
    db: Database,
    max_value_bytes: usize,
}

impl SqlKv {
    /// A store over `db` (whose migrations have run: open it through the ledger), with
    /// the default cap per value, [`MAX_VALUE_BYTES`].
    pub fn new(db: Database) -> Self {
        Self {
            db,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }

    /// The same store with another cap per value, in bytes.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Bytes (keys plus values) the scope uses, as the quota counts them.
    pub async fn usage(&self, scope: &KvScope) -> Result<u64, KvError> {
        const SQL: &str = "SELECT used_bytes FROM plugin_kv_scopes
                           WHERE tenant = $1 AND plugin = $2 AND user_id = $3";
        let used: Option<i64> = with_pool!(&self.db, pool => {
            sqlx::query_scalar(SQL)
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&scope.user)
                .fetch_optional(pool)
                .await
        })
        .map_err(|e| store_error("read the usage", e))?;
        Ok(used.unwrap_or(0) as u64)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                bytes: value.len() as u64,
                max: self.max_value_bytes as u64,
            });
        }
        Ok(())
    }
}

/// A driver error as the plugin sees it: what failed, not the database's message.
fn store_error(what: &'static str, e: sqlx::Error) -> KvError {
    tracing::warn!(error = %e, "plugin key-value store: could not {what}");
    KvError::Store(format!("the key-value store could not {what}"))
}

/// The smallest string greater than every string that starts with `prefix`, in byte
/// (code point) order, or `None` when there is none (an empty prefix, or one made only of
/// U+10FFFF; then every valid UTF-8 string at or after `prefix` starts with it). Keys
/// starting with `prefix` are exactly those in `[prefix, upper)`, so a listing is an index
/// range scan and needs no `LIKE` (whose wildcards a prefix could contain).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

const GET_SQL: &str = "SELECT v.value FROM plugin_kv v JOIN plugin_kv_scopes s ON s.id = v.scope_id
     WHERE s.tenant = $1 AND s.plugin = $2 AND s.user_id = $3 AND v.key = $4";
const LIST_SQL: &str = "SELECT v.key FROM plugin_kv v JOIN plugin_kv_scopes s ON s.id = v.scope_id
     WHERE s.tenant = $1 AND s.plugin = $2 AND s.user_id = $3 AND v.key >= $4
     ORDER BY v.key";
const LIST_BOUNDED_SQL: &str =
    "SELECT v.key FROM plugin_kv v JOIN plugin_kv_scopes s ON s.id = v.scope_id
     WHERE s.tenant = $1 AND s.plugin = $2 AND s.user_id = $3 AND v.key >= $4 AND v.key < $5
     ORDER BY v.key";

#[async_trait::async_trait]
impl KvStore for SqlKv {
    #[tracing::instrument(skip_all, fields(plugin = %scope.plugin))]
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        with_pool!(&self.db, pool => {
            sqlx::query_scalar(GET_SQL)
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&scope.user)
                .bind(key)
                .fetch_optional(pool)
                .await
        })
        .map_err(|e| store_error("read the key", e))
    }

    #[tracing::instrument(skip_all, fields(plugin = %scope.plugin, bytes = value.len()))]
    async fn set(
        &self,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<(), KvError> {
        check_key(key)?;
        self.check_value(&value)?;
        let quota = i64::try_from(quota_bytes).unwrap_or(i64::MAX);
        let used: Option<i64> = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT cairn_kv_set($1, $2, $3, $4, $5, $6)")
                    .bind(&scope.tenant)
                    .bind(&scope.plugin)
                    .bind(&scope.user)
                    .bind(key)
                    .bind(&value)
                    .bind(quota)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| store_error("write the key", e))?
            }
            Database::Sqlite(pool) => sqlite_set(pool, scope, key, &value, quota)
                .await
                .map_err(|e| store_error("write the key", e))?,
        };
        match used {
            Some(_) => Ok(()),
            None => Err(KvError::QuotaExceeded { quota: quota_bytes }),
        }
    }

    #[tracing::instrument(skip_all, fields(plugin = %scope.plugin))]
    async fn delete(&self, scope: &KvScope, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        match &self.db {
            Database::Postgres(pool) => sqlx::query("SELECT cairn_kv_delete($1, $2, $3, $4)")
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&scope.user)
                .bind(key)
                .execute(pool)
                .await
                .map(drop),
            Database::Sqlite(pool) => sqlite_delete(pool, scope, key).await,
        }
        .map_err(|e| store_error("delete the key", e))
    }

    #[tracing::instrument(skip_all, fields(plugin = %scope.plugin))]
    async fn list_keys(&self, scope: &KvScope, prefix: &str) -> Result<Vec<String>, KvError> {
        let upper = prefix_upper_bound(prefix);
        let sql = if upper.is_some() {
            LIST_BOUNDED_SQL
        } else {
            LIST_SQL
        };
        with_pool!(&self.db, pool => {
            let mut q = sqlx::query_scalar(sql)
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&scope.user)
                .bind(prefix);
            if let Some(upper) = &upper {
                q = q.bind(upper);
            }
            q.fetch_all(pool).await
        })
        .map_err(|e| store_error("list the keys", e))
    }
}

/// The scope's id and usage, creating the scope on its first write. Must run first in a
/// `BEGIN IMMEDIATE` transaction.
async fn sqlite_scope(
    tx: &mut sqlx::SqliteConnection,
    scope: &KvScope,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO plugin_kv_scopes (tenant, plugin, user_id) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, plugin, user_id) DO UPDATE SET used_bytes = used_bytes
         RETURNING id, used_bytes",
    )
    .bind(&scope.tenant)
    .bind(&scope.plugin)
    .bind(&scope.user)
    .fetch_one(&mut *tx)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Usage after the write, or `None` (nothing written) over the quota.
async fn sqlite_set(
    pool: &sqlx::SqlitePool,
    scope: &KvScope,
    key: &str,
    value: &[u8],
    quota: i64,
) -> Result<Option<i64>, sqlx::Error> {
    // IMMEDIATE: the write lock is taken before anything is read, so no other writer can
    // move the usage between the check and the write.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (id, used) = sqlite_scope(&mut tx, scope).await?;
    let old: Option<i64> =
        sqlx::query_scalar("SELECT length(value) FROM plugin_kv WHERE scope_id = $1 AND key = $2")
            .bind(id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
    let entry = (key.len() + value.len()) as i64;
    let new = used - old.map_or(0, |v| v + key.len() as i64) + entry;
    if new > quota {
        tx.rollback().await?;
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO plugin_kv (scope_id, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(id)
    .bind(key)
    .bind(value)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE plugin_kv_scopes SET used_bytes = $1 WHERE id = $2")
        .bind(new)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(new))
}

async fn sqlite_delete(
    pool: &sqlx::SqlitePool,
    scope: &KvScope,
    key: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let freed: Option<(i64, i64)> = sqlx::query_as(
        "DELETE FROM plugin_kv
         WHERE scope_id = (SELECT id FROM plugin_kv_scopes
                           WHERE tenant = $1 AND plugin = $2 AND user_id = $3)
           AND key = $4
         RETURNING scope_id, length(CAST(key AS BLOB)) + length(value)",
    )
    .bind(&scope.tenant)
    .bind(&scope.plugin)
    .bind(&scope.user)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id, freed)) = freed {
        sqlx::query("UPDATE plugin_kv_scopes SET used_bytes = used_bytes - $1 WHERE id = $2")
            .bind(freed)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn the_upper_bound_of_a_prefix_is_its_successor_in_code_point_order() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        for p in ["ab", "a\u{10FFFF}", "é", "x\u{7F}"] {
            let upper = prefix_upper_bound(p).unwrap();
            assert!(p.as_bytes() < upper.as_bytes());
            let mut longest = p.to_string();
            longest.push('\u{10FFFF}');
            assert!(longest.as_bytes() < upper.as_bytes());
        }
    }
}
