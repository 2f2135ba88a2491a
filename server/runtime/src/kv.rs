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
    /// The store failed; the message is safe to show to the plugin.
    #[error("kv store: {0}")]
    Store(String),
}

/// The longest key the host accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

pub(crate) fn check_key(key: &str) -> Result<(), KvError> {
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
