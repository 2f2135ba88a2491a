//! `cairn audit verify`: prove that no ledger record was changed or removed.

use std::process::ExitCode;

use anyhow::Context;
use cairn_audit::{LedgerOptions, TenantId};
use chrono::{DateTime, Utc};
use clap::Subcommand;

/// `cairn audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash chain; print OK with counts, or the first broken link (and
    /// exit 1).
    Verify {
        /// The ledger: `postgres://...` or `sqlite:PATH` (default: the embedded SQLite
        /// ledger under `CAIRN_DATA_DIR`).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only runs started at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Only runs started before this time (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
    },
}

/// Runs one `cairn audit` command.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            database_url,
            tenant,
            from,
            to,
        } => {
            let tenant = tenant
                .map(|t| TenantId::parse(&t).with_context(|| format!("--tenant `{t}`")))
                .transpose()?;
            let url = database_url.unwrap_or_else(super::default_database_url);
            // Verifying must never change the ledger, so it does not run migrations.
            let options = LedgerOptions {
                migrate: false,
                ..LedgerOptions::default()
            };
            let ledger = cairn_audit::open(&url, options)
                .await
                .with_context(|| format!("cannot open the ledger at {}", redact(&url)))?;
            let report = ledger.verify(tenant.as_ref(), from, to).await?;
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Hides a password in a database URL before it is printed.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
