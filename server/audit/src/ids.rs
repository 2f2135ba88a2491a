//! The ledger's identifiers are `cairn-ids`' (one grammar for the manifest, the ledger, the
//! runtime and the API), re-exported here so that `crate::ids::...` keeps working.
//!
//! In the ledger a tool name is `gen_ai.tool.name`, the name a tool was offered or called
//! under: [`cairn_ids::ToolCallName`], wider than a manifest's [`cairn_ids::ToolName`]
//! (client tools, `plugin__tool` names, a model's unknown call). The ledger has no
//! `ToolName` of its own, so the manifest's cannot be mistaken for it.

pub use cairn_ids::{
    Actor, ConversationId, IdError, PluginId, RunId, TenantId, ToolCallName, UserId,
};

use crate::error::LedgerError;
use crate::op::OpError;

/// An identifier that does not parse is an invalid value at the ledger's boundary.
impl From<IdError> for LedgerError {
    fn from(error: IdError) -> Self {
        LedgerError::Invalid {
            what: error.what(),
            reason: format!("\"{}\": {}", error.value(), error.rule()),
        }
    }
}

/// The same inside a bounded store operation (a row whose id no longer parses).
impl From<IdError> for OpError {
    fn from(error: IdError) -> Self {
        OpError::Ledger(error.into())
    }
}
