//! The tamper-evident audit ledger: steps, hash chain, PostgreSQL and SQLite stores, query, export, verify.
