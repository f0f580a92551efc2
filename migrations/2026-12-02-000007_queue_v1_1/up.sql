-- The queue of contract v1.1: priorities, delays, attempts with a limit,
-- idempotency keys, failures with their last error, cancellation, and
-- LISTEN/NOTIFY wake-ups for long-poll claims.

ALTER TABLE tasks
    ADD COLUMN priority     integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    ADD COLUMN not_before   timestamptz,
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    -- Claims handed back by release: a release is not a failed attempt, so
    -- `attempt - released` is what counts toward max_attempts (River's
    -- snooze does the same). `attempt` itself stays the fencing counter.
    ADD COLUMN released     integer NOT NULL DEFAULT 0 CHECK (released >= 0),
    ADD COLUMN key          text UNIQUE CHECK (char_length(key) BETWEEN 1 AND 200),
    ADD COLUMN last_error   text CHECK (char_length(last_error) <= 2000),
    -- When the task reached completed, failed or cancelled (retention's clock).
    ADD COLUMN finished_at  timestamptz,
    -- Unassigned and waiting for a not_before that had not passed when it
    -- was set. Keeps such tasks out of the claim's index, whose order
    -- (priority first) could otherwise make a claim walk past every
    -- delayed task of a higher priority; a claim first clears it on the
    -- tasks that came due (`promote_due`), so they are claimable the moment
    -- their not_before passes.
    ADD COLUMN delayed      boolean NOT NULL DEFAULT false;

UPDATE tasks SET finished_at = completed_at WHERE status = 'completed';

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks
    ADD CONSTRAINT tasks_status_check
        CHECK (status IN ('unassigned', 'assigned', 'completed', 'failed', 'cancelled')),
    ADD CONSTRAINT tasks_finished_check
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    ADD CONSTRAINT tasks_ended_unleased_check
        CHECK (status NOT IN ('failed', 'cancelled') OR lease_expires_at IS NULL),
    ADD CONSTRAINT tasks_delayed_check
        CHECK (NOT delayed OR (status = 'unassigned' AND not_before IS NOT NULL));

-- The claim's index: in claim order (priority, then oldest), holding only
-- tasks a claim could ever take. A claim on the last allowed attempt takes
-- its task out; so do completion, failure and cancellation.
DROP INDEX tasks_claimable;
CREATE INDEX tasks_claim_order ON tasks (priority DESC, seq)
    WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
      AND NOT delayed;

-- Delayed tasks by due time: what a claim promotes, and stats' `delayed`.
CREATE INDEX tasks_delayed ON tasks (not_before) WHERE delayed;

-- Retention: finished tasks of every kind by age.
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');

-- What the API shows. A lapsed lease reads as unassigned, or, on the last
-- allowed attempt, as failed with "lease expired" (the service's upkeep
-- then stores that; until it does, every reader sees the same).
DROP VIEW task_view;
CREATE VIEW task_view AS
SELECT id, seq, title, schedulable, attempt, created_at, completed_at,
       priority, not_before, max_attempts, key,
       CASE WHEN spent THEN 'failed' WHEN lapsed THEN 'unassigned' ELSE status END AS status,
       CASE WHEN lapsed THEN NULL ELSE assigned_to END AS assigned_to,
       CASE WHEN lapsed THEN NULL ELSE assigned_by END AS assigned_by,
       CASE WHEN lapsed THEN NULL ELSE assigned_at END AS assigned_at,
       CASE WHEN lapsed THEN NULL ELSE lease_expires_at END AS lease_expires_at,
       CASE WHEN spent THEN 'lease expired' ELSE last_error END AS last_error
FROM (SELECT t.*, lapsed AND t.attempt - t.released >= t.max_attempts AS spent
      FROM (SELECT t.*, (t.status = 'assigned' AND t.lease_expires_at <= now()) AS lapsed FROM tasks t) AS t) AS s;

-- Wake-ups: a statement that leaves a task claimable now (created,
-- released, retried without delay) notifies, at commit, every instance's
-- listener, which wakes its long-poll claims. Delayed tasks and lapsed
-- leases have no event: the waiters' periodic re-check finds them.
CREATE FUNCTION tasks_notify_claimable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows
               WHERE status = 'unassigned' AND schedulable
                 AND (not_before IS NULL OR not_before <= now())) THEN
        PERFORM pg_notify('tessera_tasks', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_claimable();
CREATE TRIGGER tasks_notify_update AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_claimable();
