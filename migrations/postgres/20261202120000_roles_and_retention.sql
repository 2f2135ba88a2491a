-- Roles, and retention that cannot be forged.
--
-- Until now every function was executable by PUBLIC and the purge function trusted what it
-- was told: a role with SELECT only could build a purge record with any actor and a cutoff
-- in the year 9999 and empty a tenant (the attack in issue 11). From here on:
--
-- * Migrations run as an owner role, which owns every table and function. The server
--   connects as a writer role that may only read and insert ledger rows, move the (unhashed)
--   heads and execute the append functions; auditors connect as a read role; purges are
--   run by a retention role. The grants are per deployment (role names are the operator's),
--   see docs/operators.md and `cairn_audit::roles::grant_sql`.
-- * No function is executable by PUBLIC, so a role nobody granted anything can call none.
-- * The purge function refuses every caller but the retention role named in audit_settings
--   (or, while none is named, the owner), a cutoff later than now() minus the configured
--   minimum retention, and a record that does not name the database role actually calling
--   it, the reason given, and the cutoff and time it is called with.
--
-- A superuser, or the owner, can still do anything to these tables; what stops them being
-- able to do so unnoticed is the signed checkpoints (audit_checkpoints below), which leave
-- the database.

REVOKE EXECUTE ON FUNCTION cairn_audit_lock_tenant(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION cairn_audit_chain_batch(text, bigint, bytea, text[], uuid[], text[],
    text[], text[], timestamptz[], bytea[], bigint[], text[], text[], text[], text[], text[],
    bytea[], bytea[], text[], text[], bytea[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION cairn_audit_purge(text, timestamptz, bigint, bytea, bytea, text,
    timestamptz) FROM PUBLIC;

-- Deployment settings the database itself enforces. One row; only the owner can change it
-- (nobody else is granted UPDATE).
CREATE TABLE audit_settings (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- A purge may only remove runs sealed before now() minus this.
    min_retention  interval NOT NULL DEFAULT interval '0' CHECK (min_retention >= interval '0'),
    -- The role (or a role granted to the caller) allowed to purge; NULL: only the owner.
    retention_role name
);
INSERT INTO audit_settings DEFAULT VALUES;

-- Signed checkpoints, as published. They are kept here so the server can serve them, but
-- they are only worth anything because copies leave the database: an auditor who kept one
-- can prove any later state of the ledger consistent with it, or not.
CREATE TABLE audit_checkpoints (
    tenant       text NOT NULL,
    tree_size    bigint NOT NULL CHECK (tree_size >= 0),
    root_hash    bytea NOT NULL CHECK (length(root_hash) = 32),
    published_at timestamptz NOT NULL,
    note         text NOT NULL,
    PRIMARY KEY (tenant, tree_size, published_at)
);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_reject_mutation();

DROP FUNCTION cairn_audit_purge(text, timestamptz, bigint, bytea, bytea, text, timestamptz);

-- As before (see 20250601000000), plus the checks on who calls, with what cutoff, and that
-- the record says so.
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
    cfg   audit_settings%ROWTYPE;
    body  jsonb := p_canonical::jsonb;
    token text := md5(random()::text || clock_timestamp()::text || txid_current()::text);
    n_runs  bigint;
    n_steps bigint;
    ids     uuid[];
BEGIN
    SELECT * INTO cfg FROM audit_settings;
    -- Inside SECURITY DEFINER current_user is the owner; session_user is who connected.
    IF NOT pg_has_role(session_user, coalesce(cfg.retention_role, current_user), 'MEMBER') THEN
        RAISE EXCEPTION 'role % may not purge the audit ledger', session_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'purges are run by the retention role named in audit_settings';
    END IF;
    IF p_cutoff > now() - cfg.min_retention THEN
        RAISE EXCEPTION 'purge cutoff % is later than now() minus the minimum retention (%)',
            p_cutoff, cfg.min_retention
            USING ERRCODE = 'check_violation';
    END IF;
    IF abs(extract(epoch FROM p_sealed_at - clock_timestamp())) > 300 THEN
        RAISE EXCEPTION 'purge time % is not now', p_sealed_at USING ERRCODE = 'check_violation';
    END IF;
    IF body->>'db_role' IS DISTINCT FROM session_user::text THEN
        RAISE EXCEPTION 'purge record names database role %, but % is calling',
            body->>'db_role', session_user USING ERRCODE = 'check_violation';
    END IF;
    IF coalesce(btrim(body->>'reason'), '') = '' THEN
        RAISE EXCEPTION 'purge record gives no reason' USING ERRCODE = 'check_violation';
    END IF;
    IF (body->>'cutoff')::timestamptz IS DISTINCT FROM p_cutoff
       OR (body->>'purged_at')::timestamptz IS DISTINCT FROM p_sealed_at THEN
        RAISE EXCEPTION 'purge record cutoff or time differs from the call'
            USING ERRCODE = 'check_violation';
    END IF;

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
REVOKE EXECUTE ON FUNCTION cairn_audit_purge(text, timestamptz, bigint, bytea, bytea, text,
    timestamptz) FROM PUBLIC;
