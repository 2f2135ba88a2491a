//! The error a tool returns on purpose.

use serde::{Deserialize, Serialize};

/// An error a tool returns on purpose. The host hands it to the model (or to the caller of
/// a direct invocation) as it is, so keep `message` short and useful: say what was wrong
/// and how to fix the call.
///
/// `code` is a stable snake_case string. The SDK uses:
/// `invalid_input`, `not_found`, `unknown_tool`, `upstream_error`, `upstream_timeout`,
/// `egress_denied`, `invalid_url`, `config_missing`, `quota_exceeded`, `storage_error`,
/// `internal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    /// A stable, machine-readable code in snake_case.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl ToolError {
    /// An error with any code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The arguments were well-formed JSON but make no sense (`invalid_input`).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("invalid_input", message)
    }

    /// The thing the call names does not exist (`not_found`).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }

    /// A remote service failed or answered something unusable (`upstream_error`).
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new("upstream_error", message)
    }

    /// A required configuration setting is missing or invalid (`config_missing`).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new("config_missing", message)
    }

    /// A bug in the plugin rather than in the call (`internal`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }

    /// The plugin has no tool by that name (`unknown_tool`).
    pub fn unknown_tool(name: &str) -> Self {
        Self::new(
            "unknown_tool",
            format!("this plugin has no tool named `{name}`"),
        )
    }
}
