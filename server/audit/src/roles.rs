//! The PostgreSQL roles a deployment separates: who owns the ledger, who writes it, who
//! reads it, who may purge it.
//!
//! The grants depend on the deployment's role names, so migrations cannot make them; this
//! module writes the SQL an operator runs once, as the owner, after the first migration
//! (and after any migration that adds a table or function; running it again is harmless).
//! `docs/operators.md` shows it for the default names, and the role tests run exactly this
//! SQL against a real PostgreSQL.
//!
//! What each role can do:
//! - **owner** (runs migrations): owns every table and function. It can disable triggers
//!   and rewrite rows: it must not be what the server connects as.
//! - **writer** (the server): reads every ledger table, inserts runs, steps, seals and
//!   checkpoints, moves the unhashed run and tenant heads, and executes the append
//!   functions. No UPDATE, DELETE or TRUNCATE of ledger rows, no purge, and (not being the
//!   owner) no `ALTER TABLE … DISABLE TRIGGER`.
//! - **reader** (auditors, `cairn audit verify`): SELECT only; no function.
//! - **retention** (the purge job or the admin API's purge connection): SELECT, the lock
//!   on the tenant tip a purge extends, and the purge function, which also checks it is
//!   this role calling and records it.

/// The four role names of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleNames {
    /// Owns the schema and runs migrations.
    pub owner: String,
    /// The server's role.
    pub writer: String,
    /// Auditors' role.
    pub reader: String,
    /// The only role allowed to purge.
    pub retention: String,
}

impl Default for RoleNames {
    fn default() -> Self {
        Self {
            owner: "cairn_owner".into(),
            writer: "cairn_writer".into(),
            reader: "cairn_reader".into(),
            retention: "cairn_retention".into(),
        }
    }
}

/// Ledger tables that are only ever appended to.
const APPEND_ONLY: &[&str] = &[
    "audit_runs",
    "audit_steps",
    "audit_seals",
    "audit_checkpoints",
];
/// Unhashed tips the append path moves in place.
const HEADS: &[&str] = &["audit_run_heads", "audit_tenant_heads"];
/// Everything an auditor may read.
const READABLE: &[&str] = &[
    "audit_runs",
    "audit_steps",
    "audit_seals",
    "audit_checkpoints",
    "audit_run_heads",
    "audit_tenant_heads",
    "audit_settings",
];
/// The append functions (the writer's only functions).
const APPEND_FUNCTIONS: &[&str] = &[
    "cairn_audit_lock_tenant(text)",
    "cairn_audit_chain_batch(text, bigint, bytea, text[], uuid[], text[], text[], text[], \
     timestamptz[], bytea[], bigint[], text[], text[], text[], text[], text[], bytea[], \
     bytea[], text[], text[], bytea[])",
];
/// The host's own state kept beside the ledger (installations, packages, plugin
/// key-value data, imports): not hashed, changed in place by the host, never read as
/// evidence. The writer needs full access to it, the auditors none.
const HOST_STATE: &[&str] = &[
    "plugin_packages",
    "plugin_installations",
    "approval_policies",
    "plugin_kv_scopes",
    "plugin_kv",
    "store_imports",
];
/// The plugin key-value store's functions.
const HOST_FUNCTIONS: &[&str] = &[
    "cairn_kv_lock_scope(text, text, text)",
    "cairn_kv_set(text, text, text, text, bytea, bigint)",
    "cairn_kv_delete(text, text, text, text)",
];
/// The purge function (the retention role's only function).
const PURGE_FUNCTION: &str =
    "cairn_audit_purge(text, timestamptz, bigint, bytea, bytea, text, timestamptz)";

impl RoleNames {
    /// The grants, run as the owner in the ledger's database. `min_retention_days` is the
    /// minimum retention the database enforces on every purge.
    pub fn grant_sql(&self, min_retention_days: u32) -> String {
        let RoleNames {
            owner,
            writer,
            reader,
            retention,
        } = self;
        let mut sql = format!("-- Run as {owner}, in the ledger's database.\n");
        let mut line = |s: String| {
            sql.push_str(&s);
            sql.push_str(";\n");
        };
        line(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {writer}, {reader}, {retention}"
        ));
        line(format!(
            "GRANT USAGE ON SCHEMA public TO {writer}, {reader}, {retention}"
        ));
        line(format!(
            "GRANT SELECT ON {} TO {writer}, {reader}, {retention}",
            READABLE.join(", ")
        ));
        line(format!(
            "GRANT INSERT ON {} TO {writer}",
            APPEND_ONLY.join(", ")
        ));
        line(format!(
            "GRANT INSERT, UPDATE ON {} TO {writer}",
            HEADS.join(", ")
        ));
        for f in APPEND_FUNCTIONS {
            line(format!("GRANT EXECUTE ON FUNCTION {f} TO {writer}"));
        }
        line(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {writer}",
            HOST_STATE.join(", ")
        ));
        for f in HOST_FUNCTIONS {
            line(format!("GRANT EXECUTE ON FUNCTION {f} TO {writer}"));
        }
        // The purge locks the tenant tip (SELECT … FOR UPDATE needs UPDATE) to compute its
        // record; the tip is unhashed, like every head.
        line(format!(
            "GRANT INSERT, UPDATE ON audit_tenant_heads TO {retention}"
        ));
        line(format!(
            "GRANT EXECUTE ON FUNCTION {PURGE_FUNCTION} TO {retention}"
        ));
        line(format!(
            "UPDATE audit_settings SET retention_role = '{retention}', \
             min_retention = interval '{min_retention_days} days'"
        ));
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_gets_no_update_delete_or_truncate_on_ledger_rows() {
        let sql = RoleNames::default().grant_sql(30);
        for l in sql.lines().filter(|l| l.contains("TO cairn_writer")) {
            if l.contains("audit_steps") || l.contains("audit_seals") {
                assert!(!l.contains("UPDATE") && !l.contains("DELETE"), "{l}");
            }
            assert!(
                !l.contains("TRUNCATE") && !l.contains("cairn_audit_purge"),
                "{l}"
            );
        }
    }

    /// docs/operators.md shows the grants for the default names; they must be these.
    #[test]
    fn operators_guide_shows_exactly_these_grants() {
        let doc = include_str!("../../../docs/operators.md");
        let sql = RoleNames::default().grant_sql(30);
        assert!(
            doc.contains(&sql),
            "docs/operators.md does not show RoleNames::default().grant_sql(30):\n{sql}"
        );
    }
}
