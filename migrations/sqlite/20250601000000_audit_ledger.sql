-- The audit ledger, embedded edition. Same tables, same rules as the PostgreSQL schema
-- (read its comments for the why); the differences are SQLite's: timestamps are integer
-- microseconds since the Unix epoch, UUIDs and hashes are 16- and 32-byte blobs, JSON is
-- text, full text is an FTS5 table, and there are no roles, so the purge gate below is a
-- convention of the library rather than a privilege.

-- Immutable run headers (hashed into the genesis of each run's chain).
CREATE TABLE audit_runs (
    id              BLOB PRIMARY KEY,
    tenant          TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    conversation_id TEXT,
    model           TEXT NOT NULL,
    started_at      INTEGER NOT NULL
);
CREATE INDEX audit_runs_tenant ON audit_runs (tenant, id);

-- The mutable tip of each run: not hashed, derivable from the steps, never trusted by
-- verification. Appends update it; the ledger tables proper are never updated.
CREATE TABLE audit_run_heads (
    run_id    BLOB PRIMARY KEY,
    tenant    TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    next_seq  INTEGER NOT NULL DEFAULT 0,
    last_hash BLOB NOT NULL,
    status    TEXT NOT NULL DEFAULT 'running'
              CHECK (status IN ('running', 'awaiting_approval', 'completed', 'failed', 'cancelled')),
    ended_at  INTEGER
);
CREATE INDEX audit_run_heads_status ON audit_run_heads (tenant, status);

-- AUTOINCREMENT so that ids are never reused after a purge: the id is the cursor.
CREATE TABLE audit_steps (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant    TEXT NOT NULL,
    run_id    BLOB NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 0),
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    at        INTEGER NOT NULL,
    user_id   TEXT NOT NULL,
    plugin_id TEXT,
    tool_name TEXT,
    payload   TEXT NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT audit_steps_run_seq UNIQUE (run_id, seq)
);
CREATE INDEX audit_steps_tenant ON audit_steps (tenant, id);
CREATE INDEX audit_steps_user ON audit_steps (tenant, user_id, id);
CREATE INDEX audit_steps_kind ON audit_steps (tenant, kind, id);
CREATE INDEX audit_steps_tool ON audit_steps (tenant, tool_name, id) WHERE tool_name IS NOT NULL;
CREATE INDEX audit_steps_plugin ON audit_steps (tenant, plugin_id, id) WHERE plugin_id IS NOT NULL;

-- Full text over the string values of each step, keyed by the step id. Contentless: the
-- text lives in audit_steps already. NUL characters (a tool result may contain them; the
-- payload keeps them, escaped) become spaces for indexing, as in PostgreSQL.
CREATE VIRTUAL TABLE audit_steps_fts USING fts5(body, content = '', contentless_delete = 1);
CREATE TRIGGER audit_steps_fts_insert AFTER INSERT ON audit_steps BEGIN
    INSERT INTO audit_steps_fts (rowid, body)
        SELECT new.id, coalesce(group_concat(replace(value, char(0), ' '), ' '), '')
        FROM json_tree(new.payload) WHERE type = 'text';
END;
CREATE TRIGGER audit_steps_fts_delete AFTER DELETE ON audit_steps BEGIN
    DELETE FROM audit_steps_fts WHERE rowid = old.id;
END;

-- The per-tenant chain: a `run_opened` record when each run starts, a `run` seal when it
-- ends, and purge records; body is the hashed JSON. A run is opened once and sealed once.
CREATE TABLE audit_seals (
    tenant    TEXT NOT NULL,
    seal_seq  INTEGER NOT NULL CHECK (seal_seq >= 0),
    kind      TEXT NOT NULL CHECK (kind IN ('run_opened', 'run', 'purge')),
    run_id    BLOB,
    sealed_at INTEGER NOT NULL,
    body      TEXT NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant, seal_seq),
    UNIQUE (run_id, kind)
);

CREATE TABLE audit_tenant_heads (
    tenant         TEXT PRIMARY KEY,
    next_seal_seq  INTEGER NOT NULL,
    last_seal_hash BLOB NOT NULL
);

-- Append-only. UPDATE is refused always. DELETE is refused unless the purge gate holds a
-- row, which the library's purge inserts and removes inside its own write transaction, so
-- no other connection ever sees it open. Seals are never deleted.
CREATE TABLE audit_purge_gate (opened_by TEXT NOT NULL);

CREATE TRIGGER audit_runs_no_update BEFORE UPDATE ON audit_runs BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: UPDATE on audit_runs refused');
END;
CREATE TRIGGER audit_runs_no_delete BEFORE DELETE ON audit_runs
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate) BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: DELETE on audit_runs refused');
END;
CREATE TRIGGER audit_steps_no_update BEFORE UPDATE ON audit_steps BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: UPDATE on audit_steps refused');
END;
CREATE TRIGGER audit_steps_no_delete BEFORE DELETE ON audit_steps
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate) BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: DELETE on audit_steps refused');
END;
CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: UPDATE on audit_seals refused');
END;
CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals BEGIN
    SELECT RAISE(ABORT, 'the audit ledger is append-only: DELETE on audit_seals refused');
END;
