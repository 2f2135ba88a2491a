//! A key-value store scoped by the host to (tenant, plugin, user): a plugin cannot name,
//! and so cannot reach, any other scope. Keys are non-empty UTF-8 strings of at most 256
//! bytes; the manifest's `kv_quota_bytes` caps the scope's total size.
//!
//! ```no_run
//! use cairn_sdk::prelude::*;
//! # fn f() -> Result<(), ToolError> {
//! kv::set_json("settings", &vec!["a", "b"])?;
//! let settings: Option<Vec<String>> = kv::get_json("settings")?;
//! for key in kv::list_keys("task/")? {
//!     kv::delete(&key)?;
//! }
//! # Ok(()) }
//! ```
//!
//! On native targets (unit tests) the store is an in-memory map per thread, so each test
//! starts empty; [`crate::testing::clear_kv`] empties it.

use crate::ToolError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest key the host accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The write would take the scope past the manifest's `kv_quota_bytes`.
    #[error("the plugin's storage quota is exhausted")]
    QuotaExceeded,
    /// The key is empty, too long or otherwise refused.
    #[error("invalid storage key: {0}")]
    InvalidKey(String),
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(String),
    /// A stored value is not the JSON the plugin expected.
    #[error("stored value under `{key}` is unreadable: {message}")]
    Decode {
        /// The key whose value failed to decode.
        key: String,
        /// What serde said.
        message: String,
    },
    /// A value could not be encoded as JSON.
    #[error("could not encode the value for `{key}`: {message}")]
    Encode {
        /// The key being written.
        key: String,
        /// What serde said.
        message: String,
    },
}

impl From<KvError> for ToolError {
    fn from(e: KvError) -> Self {
        let code = match e {
            KvError::QuotaExceeded => "quota_exceeded",
            KvError::InvalidKey(_) => "invalid_input",
            KvError::Store(_) | KvError::Decode { .. } => "storage_error",
            KvError::Encode { .. } => "internal",
        };
        ToolError::new(code, e.to_string())
    }
}

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    imp::get(key)
}

/// Stores `value` under `key`, replacing what was there.
pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
    imp::set(key, value)
}

/// Removes `key`; removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    imp::delete(key)
}

/// The keys that start with `prefix`, in byte order.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    imp::list_keys(prefix)
}

/// The JSON value stored under `key`, decoded as `T`, if any.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::Decode {
                key: key.to_owned(),
                message: e.to_string(),
            }),
    }
}

/// Stores `value` under `key` as JSON.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Encode {
        key: key.to_owned(),
        message: e.to_string(),
    })?;
    set(key, &bytes)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::KvError;
    use crate::bindings::cairn::plugin::kv as wit;

    fn map(e: wit::KvError) -> KvError {
        match e {
            wit::KvError::QuotaExceeded => KvError::QuotaExceeded,
            wit::KvError::InvalidKey(m) => KvError::InvalidKey(m),
            wit::KvError::Store(m) => KvError::Store(m),
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        wit::get(key).map_err(map)
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        wit::set(key, value).map_err(map)
    }

    pub fn delete(key: &str) -> Result<(), KvError> {
        wit::delete(key).map_err(map)
    }

    pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
        wit::list_keys(prefix).map_err(map)
    }
}

/// In-memory stand-in with the host's key rules, so plugin logic is testable natively.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use super::{KvError, MAX_KEY_BYTES};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static STORE: RefCell<BTreeMap<String, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
        static QUOTA: RefCell<Option<usize>> = const { RefCell::new(None) };
    }

    fn check(key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("the key is empty".into()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::InvalidKey(format!(
                "the key is {} bytes long, over {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(())
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check(key)?;
        Ok(STORE.with(|s| s.borrow().get(key).cloned()))
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        check(key)?;
        STORE.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(quota) = QUOTA.with(|q| *q.borrow()) {
                let others: usize = s
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                if others + key.len() + value.len() > quota {
                    return Err(KvError::QuotaExceeded);
                }
            }
            s.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub fn delete(key: &str) -> Result<(), KvError> {
        check(key)?;
        STORE.with(|s| s.borrow_mut().remove(key));
        Ok(())
    }

    pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(STORE.with(|s| {
            s.borrow()
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    pub fn clear() {
        STORE.with(|s| s.borrow_mut().clear());
    }

    pub fn set_quota(bytes: Option<usize>) {
        QUOTA.with(|q| *q.borrow_mut() = bytes);
    }
}
