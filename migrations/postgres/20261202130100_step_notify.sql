-- Tells every host that a run has a new step, so an event stream (`GET /v1/runs/{id}/events`)
-- reads the new steps when they are recorded instead of re-reading the trail on a timer,
-- whichever host appended them.
--
-- The payload is short on purpose: the run id and the seq (`<uuid> <seq>`, under 60
-- bytes). It says only that there is something new; a follower reads the step through the
-- ledger, where the tenant is checked. The notification is sent when the appending
-- transaction commits, and never for one that rolls back. Its cost per append is one
-- trigger call and one queue entry at commit (measured in BENCHMARKS.md, "Audit ledger").
CREATE FUNCTION cairn_notify_step() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cairn_steps', NEW.run_id::text || ' ' || NEW.seq::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_steps_notify AFTER INSERT ON audit_steps
    FOR EACH ROW EXECUTE FUNCTION cairn_notify_step();
