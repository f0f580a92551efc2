-- API keys (interface v2, "API keys"): credentials for machines, stored
-- only as SHA-256 like session tokens. A key carries roles; what it may do
-- is those of them its owner still holds, read afresh by every validation.
-- No idle expiry: a key ends when revoked, at its expires_at, or with its
-- owner's disable.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    key_hash     bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    roles        user_role[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- A user's live keys: counted against the per-user cap, listed, revoked
-- by a disable.
CREATE INDEX api_keys_user_live ON api_keys (user_id, created_at) WHERE revoked_at IS NULL;

-- The retention cleanup's search and order: keys revoked or expired (a
-- key that is neither has NULL here, and is never found).
CREATE INDEX api_keys_ended ON api_keys (LEAST(revoked_at, expires_at));
