//! What both stores share around a database operation: the availability bound every
//! operation runs under, the error inside it before mapping, and what each writer of a
//! failed batch is told.

use std::time::Duration;

use crate::error::{LedgerError, Result};

/// Runs a store operation under the availability bound, mapping driver errors.
pub(crate) async fn bounded<T, F>(operation: &'static str, limit: Duration, f: F) -> Result<T>
where
    F: std::future::Future<Output = std::result::Result<T, OpError>>,
{
    let start = std::time::Instant::now();
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(OpError::Sqlx(e))) => Err(LedgerError::from_sqlx(operation, start.elapsed(), e)),
        Ok(Err(OpError::Ledger(e))) => Err(e),
        Err(_) => Err(LedgerError::Unavailable {
            operation,
            elapsed: start.elapsed(),
            reason: format!("no answer within {limit:?}"),
        }),
    }
}

/// The error each writer of a failed batch (group commit) gets: a copy of the batch's
/// error (a `LedgerError` is not `Clone`) that still says whether the store was
/// unavailable, so every writer fails closed the same way.
pub(crate) fn batch_failure(e: &LedgerError, elapsed: Duration) -> LedgerError {
    let reason = e.to_string();
    if e.is_unavailable() {
        LedgerError::Unavailable {
            operation: "append",
            elapsed,
            reason,
        }
    } else {
        LedgerError::Database {
            operation: "append",
            source: sqlx::Error::Protocol(reason),
        }
    }
}

/// An error inside a bounded operation, before mapping.
pub(crate) enum OpError {
    Sqlx(sqlx::Error),
    Ledger(LedgerError),
}

impl From<sqlx::Error> for OpError {
    fn from(e: sqlx::Error) -> Self {
        OpError::Sqlx(e)
    }
}

impl From<LedgerError> for OpError {
    fn from(e: LedgerError) -> Self {
        OpError::Ledger(e)
    }
}

impl From<serde_json::Error> for OpError {
    fn from(e: serde_json::Error) -> Self {
        OpError::Ledger(e.into())
    }
}
