-- API keys (interface v2, "API keys"): credentials for machines, stored
-- only as SHA-256 like session tokens. A key carries roles its owner's
-- cover; a role taken from the owner is taken from its keys in the same
-- transaction. No idle expiry: a key ends when revoked (its row deleted),
-- at its expires_at, or with its owner's disable, password change or
-- reset (its rows deleted). A
-- user holds at most the configured number of rows here, expired ones
-- included, so a crowd of creations and revocations cannot grow the table.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    key_hash     bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    roles        user_role[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);

-- A user's keys: counted against the per-user cap, listed, deleted by a
-- disable.
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);

-- The retention cleanup's search and order: keys that expired.
CREATE INDEX api_keys_expired ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
