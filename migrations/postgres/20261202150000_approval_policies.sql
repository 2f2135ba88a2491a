-- Each tenant's approval policy (which tool calls run at once, wait for a person, or are
-- refused), in the ledger's database so every host decides a call by the same rules.
--
-- A row is written only by `PUT /v1/policy`, an admin action recorded in the ledger
-- (who, when, before and after) before the row changes; a tenant without a row follows
-- the deployment's policy file, if any. `policy` is the tenant's JSON policy
-- (`{"default": …, "tools": {"<plugin>.<tool>": …}}`), checked by the host before it is
-- stored. `revision` is bumped by every change, so a host can tell its copy is stale.

CREATE TABLE approval_policies (
    tenant      text PRIMARY KEY,
    policy      text NOT NULL,
    revision    bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  text NOT NULL
);
