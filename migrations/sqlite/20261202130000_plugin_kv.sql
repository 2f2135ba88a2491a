-- Plugin key-value data, in the ledger's database (it replaces `plugin-kv.json`). The same
-- tables as in PostgreSQL: one usage row per scope (tenant, plugin, user), one row per
-- key. SQLite has one writer at a time, so a write is a `BEGIN IMMEDIATE` transaction that
-- reads the scope's usage and the old value's size and writes both rows: nothing can
-- interleave with it, and the quota holds under concurrent writers.
CREATE TABLE plugin_kv_scopes (
    id         INTEGER PRIMARY KEY,
    tenant     TEXT NOT NULL,
    plugin     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    used_bytes INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    UNIQUE (tenant, plugin, user_id)
);

-- Keys compare with SQLite's BINARY collation: byte order, as `list-keys` promises.
CREATE TABLE plugin_kv (
    scope_id INTEGER NOT NULL REFERENCES plugin_kv_scopes (id) ON DELETE CASCADE,
    key      TEXT NOT NULL CHECK (length(CAST(key AS BLOB)) BETWEEN 1 AND 256),
    value    BLOB NOT NULL,
    PRIMARY KEY (scope_id, key)
) WITHOUT ROWID;

-- One-time imports of a data dir's JSON state files (see the PostgreSQL migration).
CREATE TABLE store_imports (
    source      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    imported_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    items       INTEGER NOT NULL,
    PRIMARY KEY (source, digest)
);
