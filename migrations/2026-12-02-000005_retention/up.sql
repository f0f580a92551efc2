-- Retention: the cleanup deletes, in bounded batches, what no rule reads any
-- more. Each index below lets a batch find its rows without a scan, so a
-- batch costs the same whatever the size of the backlog.

-- When a session stopped being active: revoked, or idle-expired (the CHECK
-- on sessions keeps idle_expires_at <= absolute_expires_at). LEAST ignores
-- the NULL revoked_at of a live session.
CREATE INDEX sessions_ended ON sessions (LEAST(revoked_at, idle_expires_at));

-- Attempts that left the login limit's window.
CREATE INDEX login_attempts_attempted ON login_attempts (attempted_at);

-- Finished tasks by age.
CREATE INDEX tasks_finished ON tasks (completed_at) WHERE status = 'completed';
