ALTER TABLE users DROP COLUMN roles, DROP COLUMN disabled_at;
DROP TYPE user_role;
