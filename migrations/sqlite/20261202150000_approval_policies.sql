-- Each tenant's approval policy; see the PostgreSQL migration of the same name for the
-- why. Times are integer microseconds since the Unix epoch, as in the ledger.

CREATE TABLE approval_policies (
    tenant      TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT NOT NULL
);
