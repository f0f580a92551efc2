DROP TRIGGER tasks_notify_update ON tasks;
DROP TRIGGER tasks_notify_insert ON tasks;
DROP FUNCTION tasks_notify_claimable();
DROP VIEW task_view;
DELETE FROM tasks WHERE status IN ('failed', 'cancelled');
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (completed_at) WHERE status = 'completed';
DROP INDEX tasks_delayed;
DROP INDEX tasks_claim_order;
CREATE INDEX tasks_claimable ON tasks (lease_expires_at NULLS FIRST, seq)
    WHERE schedulable AND status <> 'completed';
ALTER TABLE tasks DROP CONSTRAINT tasks_delayed_check, DROP CONSTRAINT tasks_ended_unleased_check, DROP CONSTRAINT tasks_finished_check,
    DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN ('unassigned', 'assigned', 'completed'));
ALTER TABLE tasks DROP COLUMN delayed, DROP COLUMN finished_at, DROP COLUMN last_error, DROP COLUMN key,
    DROP COLUMN released, DROP COLUMN max_attempts, DROP COLUMN not_before, DROP COLUMN priority;
CREATE VIEW task_view AS
SELECT id, seq, title, schedulable, attempt, created_at, completed_at,
       CASE WHEN lapsed THEN 'unassigned' ELSE status END AS status,
       CASE WHEN lapsed THEN NULL ELSE assigned_to END AS assigned_to,
       CASE WHEN lapsed THEN NULL ELSE assigned_by END AS assigned_by,
       CASE WHEN lapsed THEN NULL ELSE assigned_at END AS assigned_at,
       CASE WHEN lapsed THEN NULL ELSE lease_expires_at END AS lease_expires_at
FROM (SELECT t.*, (t.status = 'assigned' AND t.lease_expires_at <= now()) AS lapsed FROM tasks t) AS s;
