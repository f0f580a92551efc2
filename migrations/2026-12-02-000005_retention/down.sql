DROP INDEX tasks_finished;
DROP INDEX login_attempts_attempted;
DROP INDEX sessions_ended;
