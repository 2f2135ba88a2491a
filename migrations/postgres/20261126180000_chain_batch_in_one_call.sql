-- A batch of tenant-chain records is written by one call: one round trip, one commit.
--
-- Run starts (`run_opened`) and terminal steps (with their `run` seal) extend the tenant
-- chain, which is one sequence per tenant, so they serialise on its tip. The ledger
-- already queues them per tenant and writes whatever is queued as one batch, but it did so
-- as a transaction of one statement per record (BEGIN, lock, a call per record, COMMIT),
-- and every writer queued behind that transaction waited for all of its round trips.
-- Measured with 16 writers on one tenant: a run start took 7.7 ms and a terminal append
-- 9.7 ms against 1.8 ms for any other step, a third of each run's time. This function
-- takes the whole batch, computed by the application from the tips it remembers (as
-- `cairn_audit_append` does for one step), and writes it in one statement.
--
-- Arrays are parallel, one element per record, in chain order. `p_op[i]` is 'open' (a run
-- start: p_user, p_conv, p_model, p_at = started_at, p_genesis) or 'seal' (a terminal
-- step: p_seq, p_kind, p_actor, p_at, p_plugin, p_tool, p_payload, p_prev, p_hash,
-- p_status); p_body and p_chain_hash are each record's chain entry, the first linked to
-- (p_seal_seq, p_seal_prev), each next one to the one before.
--
-- Returns refused = 0, the new tip and each terminal step's id (NULL for run starts) when
-- everything was written. Nothing is written when refused <> 0: -1 means the tenant tip
-- was not (p_seal_seq, p_seal_prev) and returns the current one; i > 0 means record i's
-- run head was not what its step was computed from (or the run is unknown, of another
-- tenant, or ended) and returns that head (all NULL when there is none).
CREATE FUNCTION cairn_audit_chain_batch(
    p_tenant     text,
    p_seal_seq   bigint,
    p_seal_prev  bytea,
    p_op         text[],
    p_run        uuid[],
    p_user       text[],
    p_conv       text[],
    p_model      text[],
    p_at         timestamptz[],
    p_genesis    bytea[],
    p_seq        bigint[],
    p_kind       text[],
    p_actor      text[],
    p_plugin     text[],
    p_tool       text[],
    p_payload    text[],
    p_prev       bytea[],
    p_hash       bytea[],
    p_status     text[],
    p_body       text[],
    p_chain_hash bytea[]
) RETURNS TABLE (refused int, next_seal_seq bigint, last_seal_hash bytea, step_ids bigint[],
                 head_tenant text, head_user text, head_next_seq bigint, head_last_hash bytea,
                 head_status text)
LANGUAGE plpgsql AS $$
DECLARE
    th    audit_tenant_heads%ROWTYPE := cairn_audit_lock_tenant(p_tenant);
    rh    audit_run_heads%ROWTYPE;
    n     int := coalesce(array_length(p_op, 1), 0);
    users text[] := p_user;
    ids   bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    v_id  bigint;
    seq   bigint := p_seal_seq;
    prev  bytea := p_seal_prev;
BEGIN
    IF th.next_seal_seq <> p_seal_seq OR th.last_seal_hash <> p_seal_prev THEN
        RETURN QUERY SELECT -1, th.next_seal_seq, th.last_seal_hash, NULL::bigint[],
                            NULL::text, NULL::text, NULL::bigint, NULL::bytea, NULL::text;
        RETURN;
    END IF;
    -- Every terminal step's run head is locked and checked before anything is written, so
    -- a refusal leaves nothing behind. Run heads are locked after the tenant tip, the
    -- order every writer of a terminal step uses.
    FOR i IN 1..n LOOP
        CONTINUE WHEN p_op[i] <> 'seal';
        rh := NULL;
        SELECT * INTO rh FROM audit_run_heads WHERE run_id = p_run[i] FOR UPDATE;
        IF rh.run_id IS NULL OR rh.tenant <> p_tenant OR rh.next_seq <> p_seq[i]
           OR rh.last_hash <> p_prev[i] OR rh.status NOT IN ('running', 'awaiting_approval') THEN
            RETURN QUERY SELECT i, th.next_seal_seq, th.last_seal_hash, NULL::bigint[],
                                rh.tenant, rh.user_id, rh.next_seq, rh.last_hash, rh.status;
            RETURN;
        END IF;
        users[i] := rh.user_id;
    END LOOP;
    FOR i IN 1..n LOOP
        IF p_op[i] = 'open' THEN
            INSERT INTO audit_runs (id, tenant, user_id, conversation_id, model, started_at)
                VALUES (p_run[i], p_tenant, p_user[i], p_conv[i], p_model[i], p_at[i]);
            INSERT INTO audit_run_heads (run_id, tenant, user_id, next_seq, last_hash, status)
                VALUES (p_run[i], p_tenant, p_user[i], 0, p_genesis[i], 'running');
            INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body,
                                     prev_hash, hash)
                VALUES (p_tenant, seq, 'run_opened', p_run[i], p_at[i], p_body[i]::jsonb, prev,
                        p_chain_hash[i]);
        ELSE
            INSERT INTO audit_steps (tenant, run_id, seq, kind, actor, at, user_id, plugin_id,
                                     tool_name, payload, prev_hash, hash)
                VALUES (p_tenant, p_run[i], p_seq[i], p_kind[i], p_actor[i], p_at[i], users[i],
                        p_plugin[i], p_tool[i], p_payload[i]::json, p_prev[i], p_hash[i])
                RETURNING audit_steps.id INTO v_id;
            ids[i] := v_id;
            UPDATE audit_run_heads
                SET next_seq = p_seq[i] + 1, last_hash = p_hash[i], status = p_status[i],
                    ended_at = p_at[i]
                WHERE run_id = p_run[i];
            INSERT INTO audit_seals (tenant, seal_seq, kind, run_id, sealed_at, body,
                                     prev_hash, hash)
                VALUES (p_tenant, seq, 'run', p_run[i], p_at[i], p_body[i]::jsonb, prev,
                        p_chain_hash[i]);
        END IF;
        prev := p_chain_hash[i];
        seq := seq + 1;
    END LOOP;
    UPDATE audit_tenant_heads SET next_seal_seq = seq, last_seal_hash = prev
        WHERE tenant = p_tenant;
    RETURN QUERY SELECT 0, seq, prev, ids, NULL::text, NULL::text, NULL::bigint, NULL::bytea,
                        NULL::text;
END
$$;
