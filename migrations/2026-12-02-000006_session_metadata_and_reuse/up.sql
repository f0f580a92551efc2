-- Session metadata: what the login came from, shown in the session list.
ALTER TABLE sessions
    ADD COLUMN user_agent text CHECK (char_length(user_agent) <= 256),
    ADD COLUMN ip inet;

-- Refresh-token reuse: every token rotated away, by hash, with when, so a
-- token presented again is recognised (by the database's clock, the same
-- for every instance) and, past the grace window, revokes its session.
-- The rows go with their session (retention deletes ended sessions).
CREATE TABLE rotated_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    rotated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rotated_tokens_session ON rotated_tokens (session_id);
