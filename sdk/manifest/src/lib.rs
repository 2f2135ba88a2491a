//! Cairn plugin manifests: the types of `cairn-plugin.json`, their validation, and the
//! JSON Schema generated from them.
//!
//! A plugin is a WebAssembly component plus this manifest. The manifest says what the
//! plugin is, which tools it offers (with the JSON Schemas of their arguments and
//! results) and what it may do; the host grants nothing else. Everything is checked when
//! the manifest is parsed, so a [`Manifest`] value is always a valid one, and every error
//! names the JSON path of the problem.
//!
//! ```
//! use cairn_manifest::Manifest;
//!
//! let manifest = Manifest::from_json_str(r#"{
//!     "id": "tasks",
//!     "version": "0.1.0",
//!     "publisher": "Cairn examples",
//!     "description": "A personal task list.",
//!     "tools": [{
//!         "name": "list_tasks",
//!         "description": "Lists the user's tasks.",
//!         "input_schema": { "type": "object" },
//!         "output_schema": { "type": "array" },
//!         "annotations": { "read_only": true }
//!     }],
//!     "permissions": { "outbound_hosts": ["https://api.example.com"] }
//! }"#)?;
//! assert!(manifest.tool("list_tasks").unwrap().annotations.read_only);
//! assert!(manifest.permissions.outbound_hosts[0].matches("https", "api.example.com", 443));
//!
//! let err = Manifest::from_json_str(r#"{ "id": "Tasks" }"#).unwrap_err();
//! assert!(err.to_string().starts_with("id: invalid plugin id \"Tasks\""));
//! # Ok::<(), cairn_manifest::ManifestError>(())
//! ```
#![warn(missing_docs)]

mod descriptors;
mod error;
mod host;
mod ids;
mod manifest;

pub use cairn_ids::{IdError, PluginId, ToolName};
pub use descriptors::ToolDescriptor;
pub use error::{ManifestError, Result, SchemaKind};
pub use host::{HostMatch, HostPattern, HostPatternError, HostPatternErrorKind, Scheme};
pub use ids::Version;
pub use manifest::{
    Annotations, ConfigSetting, JSON_SCHEMA_2020_12, MAX_CONFIG_KEY_LEN, MAX_DESCRIPTION_CHARS,
    MAX_EXAMPLE_CHARS, MAX_EXAMPLES, MAX_PUBLISHER_CHARS, Manifest, OAuthPermission, Permissions,
    ToolSpec,
};

/// The file name of a plugin's manifest, beside its `Cargo.toml`.
pub const MANIFEST_FILE_NAME: &str = "cairn-plugin.json";

/// The JSON Schema (draft 2020-12) of a manifest, generated from the types. The
/// committed copy is `schemas/plugin-manifest.schema.json`.
///
/// It describes the shape; a few rules (unique names, valid tool schemas, a required
/// setting without a default) are only checked by [`Manifest::from_json_str`].
pub fn manifest_json_schema() -> serde_json::Value {
    schemars::schema_for!(Manifest).to_value()
}
