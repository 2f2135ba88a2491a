-- The audit ledger.
--
-- Every step the copilot takes is a row in audit_steps, chained to the previous step of
-- its run by hash. Every run is anchored in its tenant's chain (audit_seals) twice: when it
-- starts (a `run_opened` record carrying the run id and the genesis hash of its chain) and
-- when it ends (a `run` seal carrying its last hash and step count). So removing a step, a
-- whole run (finished or not), or a run together with its records is visible to
-- verification, at the chain position where the run was opened. The hashes are computed by the application (RFC 8785 canonical JSON is
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
    -- The step JSON exactly as it was hashed. `json`, not `jsonb`: jsonb refuses the
    -- escape \u0000 in strings, and a tool result containing a NUL character must be
    -- recorded like any other (SQLite keeps it too; both stores behave the same). Storing
    -- the text as sent also spares a jsonb conversion on every append.
    payload   json NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    -- Full text over the string values of the step (keys are not indexed, so searching
    -- for "arguments" does not match every tool call). The search copy is the only place
    -- the payload becomes jsonb, so NUL escapes are first turned into spaces there (an
    -- escape is \u0000 preceded by an even number of backslashes; `\\u0000` is a
    -- backslash and the text "u0000", and stays).
    search    tsvector GENERATED ALWAYS AS (jsonb_to_tsvector('simple',
                  regexp_replace(payload::text, '(?<!\\)((?:\\\\)*)\\u0000', '\1 ', 'g')::jsonb,
                  '["string"]')) STORED,
    -- The backstop behind the run-head lock: two steps can never share a position.
    CONSTRAINT audit_steps_run_seq UNIQUE (run_id, seq)
);
CREATE INDEX audit_steps_tenant ON audit_steps (tenant, id);
CREATE INDEX audit_steps_user ON audit_steps (tenant, user_id, id);
CREATE INDEX audit_steps_kind ON audit_steps (tenant, kind, id);
CREATE INDEX audit_steps_tool ON audit_steps (tenant, tool_name, id) WHERE tool_name IS NOT NULL;
CREATE INDEX audit_steps_plugin ON audit_steps (tenant, plugin_id, id) WHERE plugin_id IS NOT NULL;
CREATE INDEX audit_steps_search ON audit_steps USING gin (search);

-- The per-tenant chain: one `run_opened` record when a run starts, one `run` seal when it
-- ends, and purge records. `body` is exactly the JSON that was hashed (strings and
-- integers only, so jsonb gives it back unchanged). Opening records are what make an
-- unfinished run impossible to delete quietly: the chain says it exists from its first
-- moment, not only once it is sealed.
CREATE TABLE audit_seals (
    tenant    text NOT NULL,
    seal_seq  bigint NOT NULL CHECK (seal_seq >= 0),
    kind      text NOT NULL CHECK (kind IN ('run_opened', 'run', 'purge')),
    run_id    uuid,
    sealed_at timestamptz NOT NULL,
    body      jsonb NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    -- The backstop behind the tenant-head lock: the chain cannot fork.
    PRIMARY KEY (tenant, seal_seq)
);
-- A run is opened once and sealed once.
CREATE UNIQUE INDEX audit_seals_run ON audit_seals (run_id, kind) WHERE run_id IS NOT NULL;

-- The tip of each tenant's seal chain; sealing locks this row. Like the run heads it is
-- mutable and unhashed; verification uses it only to notice the newest seals vanishing.
CREATE TABLE audit_tenant_heads (
    tenant         text PRIMARY KEY,
    next_seal_seq  bigint NOT NULL,
    last_seal_hash bytea NOT NULL
);

-- Writing, one round trip per operation.
--
-- The application computes every hash (RFC 8785 canonical JSON is done in Rust) from the
-- run and tenant tips it remembers, and hands the finished rows to one of these two
-- functions. Each locks the tip rows it extends (`FOR UPDATE`), checks that they still are
-- what the hashes were computed from, and only then writes everything in the same
-- statement. When a tip has moved (another writer got there first, or this process had
-- never seen the run), nothing is written and the function returns the current tips, so
-- the caller recomputes and calls again: still one round trip per attempt, never a
-- half-written step, never a forked chain (the primary keys on (run_id, seq) and
-- (tenant, seal_seq) are the backstop).

-- Locks the tenant's chain tip, creating it on the tenant's first record.
CREATE FUNCTION cairn_audit_lock_tenant(p_tenant text)
RETURNS audit_tenant_heads
LANGUAGE plpgsql AS $$
DECLARE
    th audit_tenant_heads%ROWTYPE;
BEGIN
    SELECT * INTO th FROM audit_tenant_heads WHERE tenant = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_tenant_heads (tenant, next_seal_seq, last_seal_hash)
            VALUES (p_tenant, 0, decode(repeat('00', 32), 'hex')) ON CONFLICT (tenant) DO NOTHING;
        SELECT * INTO th FROM audit_tenant_heads WHERE tenant = p_tenant FOR UPDATE;
    END IF;
    RETURN th;
END
$$;

-- Starts a run: its header, its head, and its `run_opened` record at the tenant tip
-- (`p_seal_seq`, `p_seal_prev`). Returns opened = false and the current tip when the tip
-- has moved.
CREATE FUNCTION cairn_audit_open_run(
    p_run        uuid,
    p_tenant     text,
    p_user       text,
    p_conv       text,
    p_model      text,
    p_started_at timestamptz,
    p_genesis    bytea,
    p_seal_seq   bigint,
    p_seal_prev  bytea,
    p_seal_hash  bytea,
    p_seal_body  jsonb
) RETURNS TABLE (opened boolean, next_seal_seq bigint, last_seal_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    th audit_tenant_heads%ROWTYPE := cairn_audit_lock_tenant(p_tenant);
BEGIN
    IF th.next_seal_seq <> p_seal_seq OR th.last_seal_hash <> p_seal_prev THEN
        RETURN QUERY SELECT false, th.next_seal_seq, th.last_seal_hash;
        RETURN;
    END IF;
    INSERT INTO audit_runs (id, tenant, user_id, conversation_id, model, started_at)
        VALUES (p_run, p_tenant, p_user, p_conv, p_model, p_started_at);
    INSERT INTO audit_run_heads (run_id, tenant, user_id, next_seq, last_hash, status)
        VALUES (p_run, p_tenant, p_user, 0, p_genesis, 'running');
    INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
        VALUES (p_tenant, p_seal_seq, 'run_opened', p_run, p_started_at, p_seal_body,
                p_seal_prev, p_seal_hash);
    UPDATE audit_tenant_heads SET next_seal_seq = p_seal_seq + 1, last_seal_hash = p_seal_hash
        WHERE tenant = p_tenant;
    RETURN QUERY SELECT true, p_seal_seq + 1, p_seal_hash;
END
$$;

-- Appends step `p_seq` of run `p_run`, linked to `p_prev_hash`, and moves the run head to
-- `p_status`. A terminal status also seals the run: `p_seal_*` is its record at the
-- tenant tip. Returns the new step id, or a NULL id and the current run (and, for
-- terminal steps, tenant) tips when they are not what the caller computed from; no head
-- at all (an unknown run) comes back as all NULLs.
CREATE FUNCTION cairn_audit_append(
    p_run       uuid,
    p_tenant    text,
    p_seq       bigint,
    p_kind      text,
    p_actor     text,
    p_at        timestamptz,
    p_plugin_id text,
    p_tool_name text,
    p_payload   json,
    p_prev_hash bytea,
    p_hash      bytea,
    p_status    text,
    p_seal_seq  bigint,
    p_seal_prev bytea,
    p_seal_hash bytea,
    p_seal_body jsonb
) RETURNS TABLE (step_id bigint, head_tenant text, head_user text, head_next_seq bigint,
                 head_last_hash bytea, head_status text, next_seal_seq bigint,
                 last_seal_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    rh audit_run_heads%ROWTYPE;
    th audit_tenant_heads%ROWTYPE;
    terminal boolean := p_status IN ('completed', 'failed', 'cancelled');
    v_id bigint;
BEGIN
    SELECT * INTO rh FROM audit_run_heads WHERE run_id = p_run FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bytea,
                            NULL::text, NULL::bigint, NULL::bytea;
        RETURN;
    END IF;
    IF rh.tenant <> p_tenant OR rh.next_seq <> p_seq OR rh.last_hash <> p_prev_hash
       OR rh.status NOT IN ('running', 'awaiting_approval') THEN
        RETURN QUERY SELECT NULL::bigint, rh.tenant, rh.user_id, rh.next_seq, rh.last_hash,
                            rh.status, NULL::bigint, NULL::bytea;
        RETURN;
    END IF;
    IF terminal THEN
        th := cairn_audit_lock_tenant(p_tenant);
        IF p_seal_seq IS NULL OR th.next_seal_seq <> p_seal_seq
           OR th.last_seal_hash <> p_seal_prev THEN
            RETURN QUERY SELECT NULL::bigint, rh.tenant, rh.user_id, rh.next_seq, rh.last_hash,
                                rh.status, th.next_seal_seq, th.last_seal_hash;
            RETURN;
        END IF;
    END IF;
    INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                             tool_name, payload, prev_hash, hash)
        VALUES (p_tenant, p_run, p_seq, p_kind, p_actor, p_at, rh.user_id, p_plugin_id,
                p_tool_name, p_payload, p_prev_hash, p_hash)
        RETURNING audit_steps.id INTO v_id;
    UPDATE audit_run_heads
        SET next_seq = p_seq + 1, last_hash = p_hash, status = p_status,
            ended_at = CASE WHEN terminal THEN p_at END
        WHERE run_id = p_run;
    IF terminal THEN
        INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
            VALUES (p_tenant, p_seal_seq, 'run', p_run, p_at, p_seal_body, p_seal_prev,
                    p_seal_hash);
        UPDATE audit_tenant_heads
            SET next_seal_seq = p_seal_seq + 1, last_seal_hash = p_seal_hash
            WHERE tenant = p_tenant;
    END IF;
    RETURN QUERY SELECT v_id, rh.tenant, rh.user_id, p_seq + 1, p_hash, p_status,
                        CASE WHEN terminal THEN p_seal_seq + 1 END,
                        CASE WHEN terminal THEN p_seal_hash END;
END
$$;

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
