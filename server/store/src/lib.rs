//! The host's state, kept in the ledger's database so that a Cairn host is stateless and
//! several hosts behind a load balancer share one PostgreSQL (SQLite for the embedded
//! default, with the same behaviour).
//!
//! Each module owns its tables (created by the shared migrations in `migrations/`) and
//! works over the ledger's own pool ([`cairn_audit::Database`]), so a deployment has one
//! database, one set of migrations and one connection pool per host.
#![warn(missing_docs)]

/// Runs `$body` with `$pool` bound to the database's pool, whichever the backend. The
/// body is compiled once per driver; SQL written with `$n` placeholders and functions both
/// databases have (`octet_length`, `coalesce`, upserts with `RETURNING`) serves both.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            cairn_audit::Database::Postgres($pool) => $body,
            cairn_audit::Database::Sqlite($pool) => $body,
        }
    };
}

mod import;
mod kv;
mod notify;

pub use import::{ImportError, ImportReport, import_json_kv};
pub use kv::SqlKv;
pub use notify::{
    CATALOG_CHANNEL, CatalogVersion, FollowEvent, FollowOptions, NotifyError, NotifyingLedger,
    RunNotifier, RunSubscription, STEP_CHANNEL, follow,
};

mod installations;
mod secrets;

pub use installations::{InstallationChange, InstallationRow, Installations};
pub use secrets::{SecretBox, SecretError, generate_key, parse_key};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row (or it belongs to another tenant: the same answer, on purpose).
    #[error("not found")]
    NotFound,
    /// The row already exists.
    #[error("{0}")]
    Conflict(String),
    /// Another writer changed the row since it was read; read it again and retry.
    #[error("changed by another request meanwhile; try again")]
    Stale,
    /// A stored value does not parse: the database was edited outside Cairn.
    #[error("stored data does not parse: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The store's result type.
pub type StoreResult<T> = std::result::Result<T, StoreError>;
