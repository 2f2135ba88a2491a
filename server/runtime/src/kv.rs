//! The key-value capability: a store scoped by the host to (tenant, plugin, user).
//!
//! The plugin names keys only; the host adds the scope, so a plugin cannot name, and so
//! cannot reach, another tenant's or user's data. The quota is enforced by the store in
//! the same step as the write, so concurrent calls cannot overshoot it together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Whose data a key-value operation touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct KvScope {
    /// The tenant.
    pub tenant: String,
    /// The plugin's id.
    pub plugin: String,
    /// The user.
    pub user: String,
}

/// Why a key-value operation failed; mirrors `cairn:plugin/kv.kv-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The write would take the scope past its quota.
    #[error("kv quota of {quota} bytes exceeded")]
    QuotaExceeded {
        /// The quota in bytes (keys plus values).
        quota: u64,
    },
    /// The key is empty or longer than 256 bytes.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value is over the store's cap for one value, whatever the quota left.
    #[error("the value is {bytes} bytes, over the {max}-byte cap per value")]
    ValueTooLarge {
        /// The value's size in bytes.
        bytes: u64,
        /// The cap in bytes.
        max: u64,
    },
    /// The store failed; the message is safe to show to the plugin.
    #[error("kv store: {0}")]
    Store(String),
}

/// The longest key the host accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The largest value a database-backed store accepts by default, in bytes: one row stays
/// small enough to read and replicate quickly, whatever a manifest's quota.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Refuses an empty key or one over [`MAX_KEY_BYTES`].
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey(format!(
            "the key is {} bytes, over {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// A key-value store the host plugs in: in memory for tests and the CLI, a database for
/// the server.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// The value under `key`, if any.
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value` under `key`. Must refuse with [`KvError::QuotaExceeded`] if the
    /// scope's keys plus values would then exceed `quota_bytes`, atomically with the write.
    async fn set(
        &self,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<(), KvError>;
    /// Removes `key`; a missing key is not an error.
    async fn delete(&self, scope: &KvScope, key: &str) -> Result<(), KvError>;
    /// Keys starting with `prefix`, in byte order.
    async fn list_keys(&self, scope: &KvScope, prefix: &str) -> Result<Vec<String>, KvError>;
}

/// An in-memory [`KvStore`].
#[derive(Debug, Default)]
pub struct MemoryKv {
    scopes: Mutex<HashMap<KvScope, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes (keys plus values) used by `scope`.
    pub fn usage(&self, scope: &KvScope) -> u64 {
        let scopes = self.scopes.lock().expect("kv lock");
        scopes.get(scope).map_or(0, usage)
    }
}

fn usage(entries: &BTreeMap<String, Vec<u8>>) -> u64 {
    entries
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let scopes = self.scopes.lock().expect("kv lock");
        Ok(scopes.get(scope).and_then(|m| m.get(key).cloned()))
    }

    async fn set(
        &self,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<(), KvError> {
        let mut scopes = self.scopes.lock().expect("kv lock");
        let entries = scopes.entry(scope.clone()).or_default();
        let old = entries.get(key).map_or(0, |v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        if usage(entries) - old + new > quota_bytes {
            return Err(KvError::QuotaExceeded { quota: quota_bytes });
        }
        entries.insert(key.to_string(), value);
        Ok(())
    }

    async fn delete(&self, scope: &KvScope, key: &str) -> Result<(), KvError> {
        let mut scopes = self.scopes.lock().expect("kv lock");
        if let Some(entries) = scopes.get_mut(scope) {
            entries.remove(key);
        }
        Ok(())
    }

    async fn list_keys(&self, scope: &KvScope, prefix: &str) -> Result<Vec<String>, KvError> {
        let scopes = self.scopes.lock().expect("kv lock");
        Ok(scopes.get(scope).map_or_else(Vec::new, |m| {
            m.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }
}

/// A [`KvStore`] kept in one JSON file, for the CLI and local development: every write
/// rewrites the file (temporary file, then rename), so it survives restarts but is not
/// meant for load. Values are stored hex-encoded.
#[derive(Debug)]
pub struct JsonFileKv {
    path: std::path::PathBuf,
    memory: MemoryKv,
    /// Serialises rewrites of the file, which share one temporary path.
    saving: Mutex<()>,
}

/// The file's shape: `[{ "scope": {..}, "entries": { key: hex } }]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileScope {
    tenant: String,
    plugin: String,
    user: String,
    entries: BTreeMap<String, String>,
}

impl JsonFileKv {
    /// Opens (or starts) the store at `path`.
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Self, KvError> {
        let path = path.into();
        let memory = MemoryKv::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let scopes: Vec<FileScope> = serde_json::from_slice(&bytes)
                    .map_err(|e| KvError::Store(format!("{}: {e}", path.display())))?;
                let mut map = memory.scopes.lock().expect("kv lock");
                for s in scopes {
                    let mut entries = BTreeMap::new();
                    for (k, v) in s.entries {
                        let value = hex::decode(&v).map_err(|e| {
                            KvError::Store(format!("{}: key {k}: {e}", path.display()))
                        })?;
                        entries.insert(k, value);
                    }
                    let scope = KvScope {
                        tenant: s.tenant,
                        plugin: s.plugin,
                        user: s.user,
                    };
                    map.insert(scope, entries);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KvError::Store(format!("{}: {e}", path.display()))),
        }
        Ok(Self {
            path,
            memory,
            saving: Mutex::new(()),
        })
    }

    fn save(&self) -> Result<(), KvError> {
        let _saving = self.saving.lock().expect("kv save lock");
        let scopes: Vec<FileScope> = {
            let map = self.memory.scopes.lock().expect("kv lock");
            map.iter()
                .map(|(scope, entries)| FileScope {
                    tenant: scope.tenant.clone(),
                    plugin: scope.plugin.clone(),
                    user: scope.user.clone(),
                    entries: entries
                        .iter()
                        .map(|(k, v)| (k.clone(), hex::encode(v)))
                        .collect(),
                })
                .collect()
        };
        let json = serde_json::to_vec_pretty(&scopes).map_err(|e| KvError::Store(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| KvError::Store(format!("{}: {e}", self.path.display())))
    }
}

#[async_trait::async_trait]
impl KvStore for JsonFileKv {
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.memory.get(scope, key).await
    }

    async fn set(
        &self,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<(), KvError> {
        self.memory.set(scope, key, value, quota_bytes).await?;
        self.save()
    }

    async fn delete(&self, scope: &KvScope, key: &str) -> Result<(), KvError> {
        self.memory.delete(scope, key).await?;
        self.save()
    }

    async fn list_keys(&self, scope: &KvScope, prefix: &str) -> Result<Vec<String>, KvError> {
        self.memory.list_keys(scope, prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_json_file_store_survives_a_reopen_and_keeps_scopes_apart() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("kv.json");
        let a = KvScope {
            tenant: "a".into(),
            plugin: "p".into(),
            user: "u".into(),
        };
        let b = KvScope {
            tenant: "b".into(),
            ..a.clone()
        };
        let kv = JsonFileKv::open(&path).unwrap();
        kv.set(&a, "k", b"\x00\xffvalue".to_vec(), 100)
            .await
            .unwrap();
        assert_eq!(
            kv.set(&a, "big", vec![0; 200], 100).await,
            Err(KvError::QuotaExceeded { quota: 100 })
        );
        drop(kv);

        let kv = JsonFileKv::open(&path).unwrap();
        assert_eq!(
            kv.get(&a, "k").await.unwrap(),
            Some(b"\x00\xffvalue".to_vec())
        );
        assert_eq!(kv.get(&b, "k").await.unwrap(), None);
        assert_eq!(kv.list_keys(&a, "").await.unwrap(), vec!["k".to_string()]);
        kv.delete(&a, "k").await.unwrap();
        let kv = JsonFileKv::open(&path).unwrap();
        assert_eq!(kv.get(&a, "k").await.unwrap(), None);
    }
}
