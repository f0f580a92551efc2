-- Hot paths whose cost does not grow with the queue's history.
--
-- 1. Task counts without a scan. Every statement that inserts, updates or
--    deletes tasks appends its net change per stored status to
--    task_count_deltas, in the same transaction (a statement trigger over
--    the transition tables), so a snapshot's sum of deltas is exactly that
--    snapshot's count(*) by status. Appending never contends (no counter row
--    to lock); the service folds the rows into one per status every few
--    seconds (`compact_task_counts`), in one statement that deletes what it
--    folds, so concurrent folds and writers keep every sum.
CREATE TABLE task_count_deltas (
    status text NOT NULL,
    n      bigint NOT NULL
);

CREATE FUNCTION task_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, n)
    SELECT status, count(*) FROM new_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION task_counts_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, n)
    SELECT status, sum(d) FROM (
        SELECT status, 1 AS d FROM new_rows
        UNION ALL
        SELECT status, -1 AS d FROM old_rows
    ) AS changes
    GROUP BY status HAVING sum(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION task_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, n)
    SELECT status, -count(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

-- No writer may slip between the triggers' creation and the backfill.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_after_insert();
CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_after_update();
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_after_delete();

INSERT INTO task_count_deltas (status, n) SELECT status, count(*) FROM tasks GROUP BY status;

-- 2. A lease that lapsed shows as unassigned: counting those reads only the
--    assigned tasks (open work), never the completed history.
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE status = 'assigned';

-- 3. Listings in seq order by stored status, and by assignee and status, so
--    `LIMIT n` reads about n rows whatever the table holds.
CREATE INDEX tasks_status_seq ON tasks (status, seq);
DROP INDEX tasks_assignee;
CREATE INDEX tasks_assignee_status ON tasks (assigned_to, status, seq) WHERE assigned_to IS NOT NULL;
