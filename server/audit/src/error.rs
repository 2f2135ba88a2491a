//! The one error type of the ledger.

use std::time::Duration;

/// Everything that can go wrong in the ledger.
///
/// Callers on the write path care mostly about [`LedgerError::Unavailable`]: the reasoning
/// loop must stop (fail closed) when a step cannot be recorded, because an action that is
/// not in the ledger must not happen.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be reached or did not answer within the configured bound.
    /// The operation may or may not have been committed if the failure happened while the
    /// commit was in flight; it was never half-applied.
    #[error("audit ledger unavailable during {operation} (after {elapsed:?}): {reason}")]
    Unavailable {
        /// The store operation that failed, e.g. `append`.
        operation: &'static str,
        /// How long the operation ran before it was abandoned.
        elapsed: Duration,
        /// What the driver reported.
        reason: String,
    },
    /// A value did not parse at the boundary (an identifier, a cursor, a URL).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which kind of value, e.g. `tenant id`.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The run does not exist (or belongs to another tenant).
    #[error("run {0} not found")]
    RunNotFound(String),
    /// The run already ended; nothing can be appended to a sealed run.
    #[error("run {0} has ended and is sealed; no further steps can be appended")]
    RunEnded(String),
    /// Another writer kept winning the race for the same run head; the append gave up.
    #[error("run {run}: gave up appending after {attempts} conflicting attempts")]
    Contention {
        /// The run being appended to.
        run: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The database refused the operation (constraint, trigger, SQL error).
    #[error("audit ledger database error during {operation}: {source}")]
    Database {
        /// The store operation that failed.
        operation: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Running the schema migrations failed.
    #[error("audit ledger migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded into ledger types (possible tampering or a bug).
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing an export failed.
    #[error("export write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The ledger's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

impl LedgerError {
    /// Maps a driver error: connectivity problems become [`LedgerError::Unavailable`] so
    /// callers can fail closed, everything else stays a [`LedgerError::Database`].
    pub(crate) fn from_sqlx(operation: &'static str, elapsed: Duration, e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => LedgerError::Unavailable {
                operation,
                elapsed,
                reason: e.to_string(),
            },
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                LedgerError::Unavailable {
                    operation,
                    elapsed,
                    reason: e.to_string(),
                }
            }
            sqlx::Error::Database(db) if is_sqlite_unavailable(db.as_ref()) => {
                LedgerError::Unavailable {
                    operation,
                    elapsed,
                    reason: e.to_string(),
                }
            }
            _ => LedgerError::Database {
                operation,
                source: e,
            },
        }
    }

    /// True when the error means "the store could not be reached in time".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LedgerError::Unavailable { .. })
    }
}

/// PostgreSQL SQLSTATEs that mean the server is going away or refused the session, and
/// `57014` (statement timeout) which we configure as part of the availability bound.
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006" | "08001" | "08004" | "57014"
        )
    )
}

/// SQLite result codes that mean the database cannot be written now: busy or locked past
/// the busy timeout (another process holds the write lock), read-only, I/O error, disk
/// full, cannot open. The extended code's low byte is the primary code.
fn is_sqlite_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
}
