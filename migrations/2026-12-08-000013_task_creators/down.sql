-- Back to one key per task, whoever created it (fails if two creators
-- used one key meanwhile).
DROP VIEW task_view;
DROP INDEX tasks_creator_key;
ALTER TABLE tasks ADD CONSTRAINT tasks_key_key UNIQUE (key);
ALTER TABLE tasks DROP COLUMN key_digest, DROP COLUMN created_by;
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
