-- The shared work queue. A task is claimable when it is schedulable and not
-- completed and either has no lease (unassigned) or its lease has expired.

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    -- Insertion order: "oldest first" and the claim order, stable within a batch.
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    title            text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    schedulable      boolean NOT NULL DEFAULT true,
    status           text NOT NULL DEFAULT 'unassigned'
                     CHECK (status IN ('unassigned', 'assigned', 'completed')),
    assigned_to      uuid REFERENCES users (id) ON DELETE SET NULL,
    assigned_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    assigned_at      timestamptz,
    lease_expires_at timestamptz,
    completed_at     timestamptz,
    -- Fencing counter: bumped by every claim, so a write made under an old
    -- claim can be told apart from one made under the current claim.
    attempt          integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'unassigned' OR (assigned_to IS NULL AND lease_expires_at IS NULL)),
    CHECK (status <> 'assigned' OR (assigned_at IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((status = 'completed') = (completed_at IS NOT NULL))
);

-- Serves the claim query: only open, schedulable tasks, in claim order
-- (unassigned first, NULL leases, then expired leases, oldest first).
CREATE INDEX tasks_claimable ON tasks (lease_expires_at NULLS FIRST, seq)
    WHERE schedulable AND status <> 'completed';

-- Serves "my tasks" listings.
CREATE INDEX tasks_assignee ON tasks (assigned_to, seq) WHERE assigned_to IS NOT NULL;

-- What the API shows: a task whose lease has expired is unassigned again,
-- even before a claim rewrites its row.
CREATE VIEW task_view AS
SELECT id, seq, title, schedulable, attempt, created_at, completed_at,
       CASE WHEN lapsed THEN 'unassigned' ELSE status END AS status,
       CASE WHEN lapsed THEN NULL ELSE assigned_to END AS assigned_to,
       CASE WHEN lapsed THEN NULL ELSE assigned_by END AS assigned_by,
       CASE WHEN lapsed THEN NULL ELSE assigned_at END AS assigned_at,
       CASE WHEN lapsed THEN NULL ELSE lease_expires_at END AS lease_expires_at
FROM (SELECT t.*, (t.status = 'assigned' AND t.lease_expires_at <= now()) AS lapsed FROM tasks t) AS s;
