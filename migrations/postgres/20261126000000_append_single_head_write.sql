-- A non-terminal append writes the run head once instead of twice.
--
-- The first version of cairn_audit_append locked the run head (`SELECT … FOR UPDATE`,
-- which writes a lock marker into the row and the WAL) and then updated the same row: two
-- tuple writes per step on top of the step itself. Now the conditional UPDATE comes first:
-- it moves the head only if it still is the tip the caller hashed from, takes the row lock
-- as it does so (a concurrent appender waits, then re-checks the condition against the
-- new row and finds it false), and the step is inserted under that lock. Only when the
-- UPDATE matched nothing is the head read, to return the current tips to the caller.
-- Terminal steps (about one per run) keep the lock-then-check path, because they also
-- extend the tenant chain and must hold the run head before the tenant head, the order
-- every writer uses.
--
-- The head table is updated in place on every step; leaving room on each page lets those
-- updates stay HOT (no index writes) when the status does not change.
ALTER TABLE audit_run_heads SET (fillfactor = 70);

CREATE OR REPLACE FUNCTION cairn_audit_append(
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
    v_user text;
    v_id bigint;
BEGIN
    IF NOT terminal THEN
        UPDATE audit_run_heads
            SET next_seq = p_seq + 1, last_hash = p_hash, status = p_status
            WHERE run_id = p_run AND tenant = p_tenant AND next_seq = p_seq
              AND last_hash = p_prev_hash AND status IN ('running', 'awaiting_approval')
            RETURNING user_id INTO v_user;
        IF FOUND THEN
            INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                                     tool_name, payload, prev_hash, hash)
                VALUES (p_tenant, p_run, p_seq, p_kind, p_actor, p_at, v_user, p_plugin_id,
                        p_tool_name, p_payload, p_prev_hash, p_hash)
                RETURNING audit_steps.id INTO v_id;
            RETURN QUERY SELECT v_id, p_tenant, v_user, p_seq + 1, p_hash, p_status,
                                NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        SELECT * INTO rh FROM audit_run_heads WHERE run_id = p_run;
        IF NOT FOUND THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::bigint,
                                NULL::bytea, NULL::text, NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        RETURN QUERY SELECT NULL::bigint, rh.tenant, rh.user_id, rh.next_seq, rh.last_hash,
                            rh.status, NULL::bigint, NULL::bytea;
        RETURN;
    END IF;

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
    th := cairn_audit_lock_tenant(p_tenant);
    IF p_seal_seq IS NULL OR th.next_seal_seq <> p_seal_seq
       OR th.last_seal_hash <> p_seal_prev THEN
        RETURN QUERY SELECT NULL::bigint, rh.tenant, rh.user_id, rh.next_seq, rh.last_hash,
                            rh.status, th.next_seal_seq, th.last_seal_hash;
        RETURN;
    END IF;
    INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                             tool_name, payload, prev_hash, hash)
        VALUES (p_tenant, p_run, p_seq, p_kind, p_actor, p_at, rh.user_id, p_plugin_id,
                p_tool_name, p_payload, p_prev_hash, p_hash)
        RETURNING audit_steps.id INTO v_id;
    UPDATE audit_run_heads
        SET next_seq = p_seq + 1, last_hash = p_hash, status = p_status, ended_at = p_at
        WHERE run_id = p_run;
    INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body, prev_hash, hash)
        VALUES (p_tenant, p_seal_seq, 'run', p_run, p_at, p_seal_body, p_seal_prev,
                p_seal_hash);
    UPDATE audit_tenant_heads
        SET next_seal_seq = p_seal_seq + 1, last_seal_hash = p_seal_hash
        WHERE tenant = p_tenant;
    RETURN QUERY SELECT v_id, rh.tenant, rh.user_id, p_seq + 1, p_hash, p_status,
                        p_seal_seq + 1, p_seal_hash;
END
$$;
