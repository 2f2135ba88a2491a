//! The plugin's configuration, set by an administrator at install (manifest `config`).
//!
//! ```no_run
//! use cairn_sdk::prelude::*;
//! # fn f() -> Result<(), ToolError> {
//! let base_url = config::require("base_url")?;
//! # Ok(()) }
//! ```

use crate::ToolError;

/// The value of the setting `key`, if the administrator set it.
pub fn get(key: &str) -> Option<String> {
    imp::get(key)
}

/// The value of the setting `key`, or a `config_missing` [`ToolError`] naming it; empty
/// values count as missing.
pub fn require(key: &str) -> Result<String, ToolError> {
    match get(key) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ToolError::config(format!(
            "the plugin setting `{key}` is not set; ask an administrator to configure it"
        ))),
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::cairn::plugin::config::get(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn get(key: &str) -> Option<String> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }

    pub fn set(key: &str, value: Option<&str>) {
        CONFIG.with(|c| {
            let mut c = c.borrow_mut();
            match value {
                Some(v) => c.insert(key.to_owned(), v.to_owned()),
                None => c.remove(key),
            };
        });
    }

    pub fn clear() {
        CONFIG.with(|c| c.borrow_mut().clear());
    }
}
