-- The login limit as a reservation: an attempt is admitted (a row inserted)
-- under a per-email advisory lock BEFORE its password is checked, so at most
-- `max_failed_logins` guesses per window are ever verified, however many
-- arrive at once and on however many instances. The outcome is reported
-- afterwards; a row whose outcome never arrives counts as a failure.
DROP TABLE login_failures;

CREATE TABLE login_attempts (
    -- Admission order: the advisory lock serialises admissions per email.
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL DEFAULT 'pending'
                 CHECK (outcome IN ('pending', 'failed', 'succeeded'))
);
-- Serves the admission count (attempts of one email after its last success)
-- and the purge of this email's attempts that left the window.
CREATE INDEX login_attempts_email ON login_attempts (email, id);
