-- Plugin key-value data, in the ledger's database so that every host behind a load
-- balancer sees the same values (it replaces each host's `plugin-kv.json`).
--
-- A plugin names keys only; the host adds the scope (tenant, plugin, user). Each scope has
-- one row here carrying its usage (keys plus values, in bytes), and each key one row in
-- plugin_kv. A write locks its scope's row first, then reads the old value's size, writes
-- the key and the new usage, all in one transaction: concurrent writers to a scope queue on
-- that row, so together they can never take it past its quota, and writers to different
-- scopes never wait for each other. The quota is a parameter of the write (it comes from
-- the plugin's manifest and may change on upgrade), not a column.
CREATE TABLE plugin_kv_scopes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant     text NOT NULL,
    plugin     text NOT NULL,
    user_id    text NOT NULL,
    used_bytes bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    CONSTRAINT plugin_kv_scopes_scope UNIQUE (tenant, plugin, user_id)
);
-- Every write updates its scope's row in place; room on each page keeps those updates HOT.
ALTER TABLE plugin_kv_scopes SET (fillfactor = 70);

-- One row per key. Keys compare in byte order (`COLLATE "C"`), which is the order
-- `list-keys` promises and what lets a prefix listing be an index range scan.
CREATE TABLE plugin_kv (
    scope_id bigint NOT NULL REFERENCES plugin_kv_scopes (id) ON DELETE CASCADE,
    key      text COLLATE "C" NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 256),
    value    bytea NOT NULL,
    PRIMARY KEY (scope_id, key)
);

-- Locks a scope's usage row, creating the scope on its first write.
CREATE FUNCTION cairn_kv_lock_scope(p_tenant text, p_plugin text, p_user text)
RETURNS plugin_kv_scopes
LANGUAGE plpgsql AS $$
DECLARE
    s plugin_kv_scopes%ROWTYPE;
BEGIN
    SELECT * INTO s FROM plugin_kv_scopes
        WHERE tenant = p_tenant AND plugin = p_plugin AND user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO plugin_kv_scopes (tenant, plugin, user_id) VALUES (p_tenant, p_plugin, p_user)
            ON CONFLICT (tenant, plugin, user_id) DO NOTHING;
        SELECT * INTO s FROM plugin_kv_scopes
            WHERE tenant = p_tenant AND plugin = p_plugin AND user_id = p_user FOR UPDATE;
    END IF;
    RETURN s;
END
$$;

-- Stores a value if the scope stays within `p_quota` bytes; one round trip. Returns the
-- scope's usage after the write, or NULL (nothing written) when the quota would be
-- exceeded. The old value's size is read only once the scope row is locked: each
-- statement of a function sees what committed before it started, so a concurrent writer
-- of the same key has either committed (and is counted) or is still waiting for the lock.
CREATE FUNCTION cairn_kv_set(p_tenant text, p_plugin text, p_user text, p_key text,
                             p_value bytea, p_quota bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    s plugin_kv_scopes%ROWTYPE;
    v_old bigint;
    v_new bigint;
BEGIN
    s := cairn_kv_lock_scope(p_tenant, p_plugin, p_user);
    SELECT octet_length(key) + octet_length(value) INTO v_old
        FROM plugin_kv WHERE scope_id = s.id AND key = p_key;
    v_new := s.used_bytes - coalesce(v_old, 0) + octet_length(p_key) + octet_length(p_value);
    IF v_new > p_quota THEN
        RETURN NULL;
    END IF;
    INSERT INTO plugin_kv (scope_id, key, value) VALUES (s.id, p_key, p_value)
        ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value;
    UPDATE plugin_kv_scopes SET used_bytes = v_new WHERE id = s.id;
    RETURN v_new;
END
$$;

-- Removes a key and gives its bytes back to the scope. Takes the scope lock first, the
-- order every writer uses, so a delete and a set of the same key cannot deadlock.
CREATE FUNCTION cairn_kv_delete(p_tenant text, p_plugin text, p_user text, p_key text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_scope bigint;
    v_old bigint;
BEGIN
    SELECT id INTO v_scope FROM plugin_kv_scopes
        WHERE tenant = p_tenant AND plugin = p_plugin AND user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM plugin_kv WHERE scope_id = v_scope AND key = p_key
        RETURNING octet_length(key) + octet_length(value) INTO v_old;
    IF FOUND THEN
        UPDATE plugin_kv_scopes SET used_bytes = used_bytes - v_old WHERE id = v_scope;
    END IF;
END
$$;

-- One-time imports of a data dir's JSON state files into the database, so that a file
-- imported once is never imported again (a second start, or a rename that failed after
-- the import committed). `digest` is the SHA-256 of the file as read.
CREATE TABLE store_imports (
    source      text NOT NULL,
    digest      text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    items       bigint NOT NULL,
    PRIMARY KEY (source, digest)
);

-- Like the ledger's functions, none of these is anyone's by default: the writer is granted
-- them (docs/operators.md), readers and PUBLIC are not.
REVOKE EXECUTE ON FUNCTION cairn_kv_lock_scope(text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION cairn_kv_set(text, text, text, text, bytea, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION cairn_kv_delete(text, text, text, text) FROM PUBLIC;
