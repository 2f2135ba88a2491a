//! The host's state, kept in the ledger's database so that a Cairn host is stateless and
//! several hosts behind a load balancer share one PostgreSQL (SQLite for the embedded
//! default, with the same behaviour).
//!
//! Each module owns its tables (created by the shared migrations in `migrations/`) and
//! works over the ledger's own pool ([`cairn_audit::Database`]), so a deployment has one
//! database, one set of migrations and one connection pool per host.
#![warn(missing_docs)]
