-- Plugin installations in the embedded database; see the PostgreSQL migration of the same
-- name for the why. Times are integer microseconds since the Unix epoch, as in the ledger.

CREATE TABLE plugin_packages (
    digest     TEXT PRIMARY KEY,
    manifest   TEXT NOT NULL,
    component  BLOB NOT NULL,
    stored_at  INTEGER NOT NULL
);

CREATE TABLE plugin_installations (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    plugin_id    TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL REFERENCES plugin_packages (digest),
    manifest     TEXT NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 0,
    config       TEXT NOT NULL DEFAULT '{}',
    installed_at INTEGER NOT NULL,
    installed_by TEXT NOT NULL,
    revision     INTEGER NOT NULL DEFAULT 1,
    UNIQUE (tenant, plugin_id)
);
CREATE INDEX plugin_installations_digest ON plugin_installations (digest);
