-- The audit ledger.
--
-- Every step the copilot takes is a row in audit_steps, chained to the previous step of
-- its run by hash; when a run ends, its last hash is chained into its tenant's seal chain
-- (audit_seals), so removing a step, a run, or a run together with its seal is visible to
-- verification. The hashes are computed by the application (RFC 8785 canonical JSON is
-- not something SQL does well); the database's job is to keep rows from changing.

-- Run headers. Immutable: the header is hashed into the genesis of the run's chain, so an
-- edited user or model shows up as a broken link into step 0.
CREATE TABLE audit_runs (
    id              uuid PRIMARY KEY,             -- UUID v7: sorts by start time
    tenant          text NOT NULL,
    user_id         text NOT NULL,
    conversation_id text,
    model           text NOT NULL,
    started_at      timestamptz NOT NULL
);
CREATE INDEX audit_runs_tenant ON audit_runs (tenant, id);

-- Where each run stands. This is the one mutable table, on purpose: a run's status, its
-- next seq and its last hash change with every append, and the row is what concurrent
-- appenders to the same run serialise on (the conditional UPDATE below takes its row
-- lock). It is not part of any hash: everything in it can be derived from the steps, and
-- verification recomputes it rather than trusting it. Keeping it apart means the ledger
-- tables proper never need an UPDATE.
CREATE TABLE audit_run_heads (
    run_id    uuid PRIMARY KEY,
    tenant    text NOT NULL,
    user_id   text NOT NULL,
    next_seq  bigint NOT NULL DEFAULT 0,
    last_hash bytea NOT NULL,
    status    text NOT NULL DEFAULT 'running'
              CHECK (status IN ('running', 'awaiting_approval', 'completed', 'failed', 'cancelled')),
    ended_at  timestamptz
);
CREATE INDEX audit_run_heads_status ON audit_run_heads (tenant, status);

-- The steps. `id` is a global, ever-growing number: the pagination key, so a cursor
-- stays valid while new steps arrive. kind, user_id, plugin_id and tool_name are copies
-- of hashed data kept in columns for the auditors' filters; verification checks that
-- they agree with the payload.
CREATE TABLE audit_steps (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant    text NOT NULL,
    run_id    uuid NOT NULL,
    seq       bigint NOT NULL CHECK (seq >= 0),
    kind      text NOT NULL,
    actor     text NOT NULL,
    at        timestamptz NOT NULL,
    user_id   text NOT NULL,
    plugin_id text,
    tool_name text,
    payload   jsonb NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    -- Full text over the string values of the step (keys are not indexed, so searching
    -- for "arguments" does not match every tool call).
    search    tsvector GENERATED ALWAYS AS (jsonb_to_tsvector('simple', payload, '["string"]')) STORED,
    -- The backstop behind the run-head lock: two steps can never share a position.
    CONSTRAINT audit_steps_run_seq UNIQUE (run_id, seq)
);
CREATE INDEX audit_steps_tenant ON audit_steps (tenant, id);
CREATE INDEX audit_steps_user ON audit_steps (tenant, user_id, id);
CREATE INDEX audit_steps_kind ON audit_steps (tenant, kind, id);
CREATE INDEX audit_steps_tool ON audit_steps (tenant, tool_name, id) WHERE tool_name IS NOT NULL;
CREATE INDEX audit_steps_plugin ON audit_steps (tenant, plugin_id, id) WHERE plugin_id IS NOT NULL;
CREATE INDEX audit_steps_search ON audit_steps USING gin (search);

-- The per-tenant chain of run seals and purge records. `body` is exactly the JSON that
-- was hashed (strings and integers only, so jsonb gives it back unchanged).
CREATE TABLE audit_seals (
    tenant    text NOT NULL,
    seal_seq  bigint NOT NULL CHECK (seal_seq >= 0),
    kind      text NOT NULL CHECK (kind IN ('run', 'purge')),
    run_id    uuid,
    sealed_at timestamptz NOT NULL,
    body      jsonb NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    -- The backstop behind the tenant-head lock: the chain cannot fork.
    PRIMARY KEY (tenant, seal_seq)
);
CREATE UNIQUE INDEX audit_seals_run ON audit_seals (run_id) WHERE run_id IS NOT NULL;

-- The tip of each tenant's seal chain; sealing locks this row. Like the run heads it is
-- mutable and unhashed; verification uses it only to notice the newest seals vanishing.
CREATE TABLE audit_tenant_heads (
    tenant         text PRIMARY KEY,
    next_seal_seq  bigint NOT NULL,
    last_seal_hash bytea NOT NULL
);

-- Append-only. One statement-level trigger per ledger table refuses UPDATE, DELETE and
-- TRUNCATE, whoever asks, with one exception: DELETE inside cairn_audit_purge below.
--
-- How the exception is controlled: the purge function writes a random token, keyed by
-- its transaction id, into audit_purge_tokens, and puts the same token in the
-- transaction-local setting cairn.purge. The trigger lets a DELETE through only when the
-- setting matches the token recorded for the current transaction. Anyone can SET
-- cairn.purge, but only the function (SECURITY DEFINER, owned by the schema owner) can
-- record a token: the application role is meant to get SELECT/INSERT on the ledger,
-- UPDATE on the heads and EXECUTE on the purge function, nothing else. Whoever owns the
-- tables (or is superuser) can always drop a trigger; that is what verification and the
-- hash chains are for.
CREATE TABLE audit_purge_tokens (
    txid  bigint PRIMARY KEY,
    token text NOT NULL
);
REVOKE ALL ON audit_purge_tokens FROM PUBLIC;

CREATE FUNCTION cairn_audit_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND TG_TABLE_NAME IN ('audit_steps', 'audit_runs')
       AND current_setting('cairn.purge', true) IS NOT NULL
       AND current_setting('cairn.purge', true) <> ''
       AND EXISTS (SELECT 1 FROM audit_purge_tokens
                   WHERE txid = txid_current()
                     AND token = current_setting('cairn.purge', true)) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'retention goes through cairn_audit_purge()';
END
$$;

CREATE TRIGGER audit_runs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_runs
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_reject_mutation();
CREATE TRIGGER audit_steps_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_steps
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_reject_mutation();
-- Seals are never deleted, not even by a purge: they are what keeps a purged range
-- verifiable.
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_reject_mutation();

-- Retention: the one way rows leave the ledger.
--
-- The application computes the purge record (what will be removed, its canonical JSON
-- and hash) while holding the tenant head lock, then calls this function in the same
-- transaction. The function re-checks everything it is told: that the record extends the
-- chain tip, that the hash is the SHA-256 of the previous hash and the canonical text,
-- that the text is the body, and that the rows it deletes are exactly as many as the
-- record says. Only runs sealed before the cutoff, and before this record, are removed;
-- their seals stay.
CREATE FUNCTION cairn_audit_purge(
    p_tenant    text,
    p_cutoff    timestamptz,
    p_seal_seq  bigint,
    p_prev_hash bytea,
    p_hash      bytea,
    p_canonical text,
    p_sealed_at timestamptz
) RETURNS TABLE (runs_purged bigint, steps_purged bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    head  audit_tenant_heads%ROWTYPE;
    body  jsonb := p_canonical::jsonb;
    token text := md5(random()::text || clock_timestamp()::text || txid_current()::text);
    n_runs  bigint;
    n_steps bigint;
    ids     uuid[];
BEGIN
    SELECT * INTO head FROM audit_tenant_heads WHERE tenant = p_tenant FOR UPDATE;
    IF NOT FOUND OR head.next_seal_seq <> p_seal_seq OR head.last_seal_hash <> p_prev_hash THEN
        RAISE EXCEPTION 'purge record does not extend the seal chain of %', p_tenant;
    END IF;
    IF sha256(p_prev_hash || convert_to(p_canonical, 'UTF8')) <> p_hash THEN
        RAISE EXCEPTION 'purge record hash does not match its content';
    END IF;
    IF body->>'type' <> 'purge' OR body->>'tenant' <> p_tenant
       OR (body->>'seal_seq')::bigint <> p_seal_seq THEN
        RAISE EXCEPTION 'purge record body does not describe this purge';
    END IF;

    INSERT INTO audit_purge_tokens (txid, token) VALUES (txid_current(), token);
    PERFORM set_config('cairn.purge', token, true);

    SELECT coalesce(array_agg(s.run_id), '{}') INTO ids FROM audit_seals s
        JOIN audit_runs r ON r.id = s.run_id
        WHERE s.tenant = p_tenant AND s.kind = 'run'
          AND s.sealed_at < p_cutoff AND s.seal_seq < p_seal_seq;

    DELETE FROM audit_steps WHERE run_id = ANY (ids);
    GET DIAGNOSTICS n_steps = ROW_COUNT;
    DELETE FROM audit_runs WHERE id = ANY (ids);
    GET DIAGNOSTICS n_runs = ROW_COUNT;
    DELETE FROM audit_run_heads WHERE run_id = ANY (ids);

    PERFORM set_config('cairn.purge', '', true);
    DELETE FROM audit_purge_tokens WHERE txid = txid_current();

    IF n_runs <> (body->>'runs_purged')::bigint OR n_steps <> (body->>'steps_purged')::bigint THEN
        RAISE EXCEPTION 'purge removed % runs and % steps, but its record says % and %',
            n_runs, n_steps, body->>'runs_purged', body->>'steps_purged';
    END IF;

    INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
        VALUES (p_tenant, p_seal_seq, 'purge', NULL, p_sealed_at, body, p_prev_hash, p_hash);
    UPDATE audit_tenant_heads SET next_seal_seq = p_seal_seq + 1, last_seal_hash = p_hash
        WHERE tenant = p_tenant;

    runs_purged := n_runs;
    steps_purged := n_steps;
    RETURN NEXT;
END
$$;
