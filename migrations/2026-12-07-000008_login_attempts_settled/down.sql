ALTER TABLE login_attempts DROP COLUMN settled_at;
