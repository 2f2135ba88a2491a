-- Signed checkpoints, as published (see the PostgreSQL migration of the same version).
-- SQLite has no roles: the embedded ledger trusts the process that owns the file, so
-- checkpoints that leave it are what an auditor can hold it to.
CREATE TABLE audit_checkpoints (
    tenant       TEXT NOT NULL,
    tree_size    INTEGER NOT NULL CHECK (tree_size >= 0),
    root_hash    BLOB NOT NULL CHECK (length(root_hash) = 32),
    published_at TEXT NOT NULL,
    note         TEXT NOT NULL,
    PRIMARY KEY (tenant, tree_size, published_at)
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: UPDATE on audit_checkpoints refused');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: DELETE on audit_checkpoints refused');
END;
