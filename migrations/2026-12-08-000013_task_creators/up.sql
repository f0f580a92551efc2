-- Idempotency keys scoped to their creator (interface v2, "Queues,
-- payloads, results"): a task records who created it, and a key names one
-- task per creator, so another user's identical key never returns, reveals
-- or blocks it. A keyed task also keeps the digest of what it was created
-- with (title, priority, not_before, max_attempts): the same key sent
-- again with other content is a conflict, whatever the task became since.
-- Tasks created before this migration have no creator; their keys stay
-- unique among themselves.
ALTER TABLE tasks
    ADD COLUMN created_by uuid,
    ADD COLUMN key_digest bytea CHECK (octet_length(key_digest) = 32);
ALTER TABLE tasks DROP CONSTRAINT tasks_key_key;
CREATE UNIQUE INDEX tasks_creator_key ON tasks (created_by, key) NULLS NOT DISTINCT
    WHERE key IS NOT NULL;

-- As in migration 9, with the creator.
CREATE OR REPLACE VIEW task_view AS
SELECT id, seq, title, schedulable, attempt, created_at, completed_at,
       priority, not_before, max_attempts, key,
       CASE WHEN spent THEN 'failed' WHEN lapsed THEN 'unassigned' ELSE status END AS status,
       CASE WHEN lapsed THEN NULL ELSE assigned_to END AS assigned_to,
       CASE WHEN lapsed THEN NULL ELSE assigned_by END AS assigned_by,
       CASE WHEN lapsed THEN NULL ELSE assigned_at END AS assigned_at,
       CASE WHEN lapsed THEN NULL ELSE lease_expires_at END AS lease_expires_at,
       CASE WHEN spent THEN 'lease expired' ELSE last_error END AS last_error,
       created_by
FROM (SELECT t.*, lapsed AND t.attempt - t.released >= t.max_attempts AS spent
      FROM (SELECT t.*, (t.status = 'assigned' AND t.lease_expires_at <= now()) AS lapsed FROM tasks t) AS t) AS s;
