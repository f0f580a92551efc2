DROP TABLE rotated_tokens;
ALTER TABLE sessions DROP COLUMN ip, DROP COLUMN user_agent;
