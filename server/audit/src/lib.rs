//! The tamper-evident audit ledger: steps, hash chain, PostgreSQL and SQLite stores,
//! query, export, verify.
//!
//! Every step the copilot takes is appended to its run's hash chain before the next
//! action happens; every run is anchored in a per-tenant chain when it starts
//! (`run_opened`) and sealed into it when it ends; the database refuses updates and
//! deletes; retention goes through one audited purge; [`Ledger::verify`] names the first
//! broken link. What verification cannot see (the tail of an unfinished run removed
//! together with a consistent rewind of its head) is spelled out in the `verify` module.
//!
//! ```no_run
//! # async fn demo() -> cairn_audit::Result<()> {
//! use cairn_audit::*;
//! let ledger = <dyn Ledger>::open("sqlite::memory:").await?;
//! let tenant = TenantId::parse("acme")?;
//! let run = ledger
//!     .start_run(NewRun {
//!         tenant: tenant.clone(),
//!         user: UserId::parse("alice")?,
//!         conversation_id: None,
//!         model: "smollm2-135m".into(),
//!     })
//!     .await?;
//! ledger
//!     .append(&tenant, run.id, NewStep {
//!         actor: Actor::parse("user:alice")?,
//!         step: StepKind::UserMessage { text: "hello".into() },
//!     })
//!     .await?;
//! println!("{}", ledger.verify(Some(&tenant), None, None).await?);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod canonical;
pub mod checkpoint;
mod error;
mod ids;
mod ledger;
pub mod merkle;
mod model;
mod op;
mod open;
mod pg;
mod query;
pub mod roles;
mod seal_store;
mod sqlite;
mod step;
pub mod transparency;
mod verify;

pub use canonical::{Hash, arguments_sha256, canonical_json};
pub use error::{LedgerError, Result};
pub use ids::{Actor, ConversationId, PluginId, RunId, TenantId, ToolCallName, UserId};
pub use ledger::{Backend, Database, Ledger, LedgerOptions};
pub use model::{NewRun, NewStep, PurgeReport, PurgeRequest, Run, SealBody, StepRecord};
pub use open::open;
pub use pg::PgLedger;
pub use query::{CSV_HEADER, Cursor, MAX_PAGE, StepPage, StepQuery, write_csv, write_jsonl};
pub use seal_store::{SealEntry, StoredCheckpoint};
pub use sqlite::SqliteLedger;
pub use step::{
    ApprovalOutcome, ClientTool, ForcedTool, PolicyOutcome, RunMode, RunStatus, StepKind,
    step_schema,
};
pub use verify::{Break, Problem, VerifyCounts, VerifyReport};
