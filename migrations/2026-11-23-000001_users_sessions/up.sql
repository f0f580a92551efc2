-- Users, sessions and failed-login records. Every session rule is enforced
-- by these constraints plus the transactions in auth-core::store.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Emails are stored normalised (trimmed, lower-cased); the unique
    -- constraint is what makes N concurrent registrations yield one winner.
    email         text NOT NULL UNIQUE
                  CHECK (email = lower(btrim(email)) AND char_length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the bearer token; the token itself is never stored.
    token_hash          bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    idle_expires_at     timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    CHECK (idle_expires_at <= absolute_expires_at)
);

-- Serves the per-user active-session count, the oldest-first eviction and
-- the session list.
CREATE INDEX sessions_user_active ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

-- One row per failed login; the rate limit is a count over a sliding window,
-- kept in the database so it holds across service instances.
CREATE TABLE login_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email     text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, failed_at);
