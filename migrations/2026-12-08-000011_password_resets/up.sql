-- Admin-issued, single-use password reset tokens (interface v2,
-- "Passwords"), stored only as SHA-256 like session tokens. A user has at
-- most one row here: issuing another replaces it (an upsert on user_id).
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id    uuid NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
