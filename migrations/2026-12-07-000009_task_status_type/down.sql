-- Back to text with a CHECK, as migration 7 left it.
DROP VIEW task_view;
ALTER TABLE tasks
    DROP CONSTRAINT tasks_unassigned_unheld_check,
    DROP CONSTRAINT tasks_assigned_leased_check,
    DROP CONSTRAINT tasks_completed_check,
    DROP CONSTRAINT tasks_finished_check,
    DROP CONSTRAINT tasks_ended_unleased_check,
    DROP CONSTRAINT tasks_delayed_check;
DROP INDEX tasks_leased;
DROP INDEX tasks_claim_order;
DROP INDEX tasks_finished;

ALTER TABLE tasks ALTER COLUMN status DROP DEFAULT;
ALTER TABLE tasks ALTER COLUMN status TYPE text USING status::text;
ALTER TABLE tasks ALTER COLUMN status SET DEFAULT 'unassigned';
ALTER TABLE task_count_deltas ALTER COLUMN status TYPE text USING status::text;
DROP TYPE task_status;

ALTER TABLE tasks
    ADD CONSTRAINT tasks_check
        CHECK (status <> 'unassigned' OR (assigned_to IS NULL AND lease_expires_at IS NULL)),
    ADD CONSTRAINT tasks_check1
        CHECK (status <> 'assigned' OR (assigned_at IS NOT NULL AND lease_expires_at IS NOT NULL)),
    ADD CONSTRAINT tasks_check2
        CHECK ((status = 'completed') = (completed_at IS NOT NULL)),
    ADD CONSTRAINT tasks_status_check
        CHECK (status IN ('unassigned', 'assigned', 'completed', 'failed', 'cancelled')),
    ADD CONSTRAINT tasks_finished_check
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    ADD CONSTRAINT tasks_ended_unleased_check
        CHECK (status NOT IN ('failed', 'cancelled') OR lease_expires_at IS NULL),
    ADD CONSTRAINT tasks_delayed_check
        CHECK (NOT delayed OR (status = 'unassigned' AND not_before IS NOT NULL));

CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE status = 'assigned';
CREATE INDEX tasks_claim_order ON tasks (priority DESC, seq)
    WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
      AND NOT delayed;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');

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
