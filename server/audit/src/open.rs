//! Opening a ledger by URL: the one place that knows every store, so that the
//! store-independent interface (`ledger`) and the stores (`pg`, `sqlite`) do not depend
//! on each other in both directions.

use std::sync::Arc;

use crate::error::{LedgerError, Result};
use crate::ledger::{Ledger, LedgerOptions};

impl dyn Ledger {
    /// Opens the ledger at `url` with default options: `postgres://…`/`postgresql://…` for
    /// PostgreSQL, `sqlite:…` (a file path or `sqlite::memory:`) for SQLite. Migrations run.
    pub async fn open(url: &str) -> Result<Arc<dyn Ledger>> {
        open(url, LedgerOptions::default()).await
    }
}

/// Opens the ledger at `url`, choosing the store from the URL scheme, and runs the
/// migrations unless `options.migrate` is false.
pub async fn open(url: &str, options: LedgerOptions) -> Result<Arc<dyn Ledger>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(crate::pg::PgLedger::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(
            crate::sqlite::SqliteLedger::connect(url, options).await?,
        ))
    } else {
        Err(LedgerError::Invalid {
            what: "ledger url",
            reason: "expected a postgres://, postgresql:// or sqlite: URL".into(),
        })
    }
}
