-- Nothing calls these any more: run starts and terminal steps go through
-- cairn_audit_chain_batch (20261126180000), and a non-terminal step is one statement the
-- application sends (a conditional run-head UPDATE and the step INSERT in a CTE; see
-- PgLedger in server/audit/src/pg.rs). Kept functions that nothing calls would be a second,
-- untested way to write the ledger.
DROP FUNCTION cairn_audit_open_run(uuid, text, text, text, text, timestamptz, bytea, bigint,
                                   bytea, bytea, jsonb);
DROP FUNCTION cairn_audit_append(uuid, text, bigint, text, text, timestamptz, text, text, json,
                                 bytea, bytea, text, bigint, bytea, bytea, jsonb);
