-- Plugin installations live in the ledger's database, so that every Cairn host over it
-- sees the same plugins (hosts share nothing but this database).
--
-- A package is stored once, content-addressed by a digest over its manifest *and* its
-- component: two packages that share a component but differ in their manifest are two
-- packages. An installation keeps its own copy of the manifest it was installed with, so
-- no other installation, in this tenant or another, can change its tools, annotations,
-- permissions or settings.

CREATE TABLE plugin_packages (
    digest     text PRIMARY KEY CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    manifest   text NOT NULL,
    component  bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plugin_installations (
    id           uuid PRIMARY KEY,
    tenant       text NOT NULL,
    plugin_id    text NOT NULL,
    version      text NOT NULL,
    digest       text NOT NULL REFERENCES plugin_packages (digest),
    -- The manifest this installation uses: its package's, never another's.
    manifest     text NOT NULL,
    enabled      boolean NOT NULL DEFAULT false,
    -- The administrator's settings, a JSON object of strings.
    config       text NOT NULL DEFAULT '{}',
    installed_at timestamptz NOT NULL,
    installed_by text NOT NULL,
    -- Bumped by every change, so hosts can tell a cached plugin is stale, and writers
    -- can refuse a change made from a stale read.
    revision     bigint NOT NULL DEFAULT 1,
    UNIQUE (tenant, plugin_id)
);
CREATE INDEX plugin_installations_digest ON plugin_installations (digest);
