//! The contract's rules the post-run checks judge by, stated once. The
//! harness hands the limits to every service it starts (see
//! [`Limits::env`]), so a check never assumes a default the service might
//! not run with. The SQL restates the contract's definitions on purpose,
//! apart from the store's: an oracle that borrowed the implementation's
//! predicate would be wrong the same way the implementation was.

/// A session the contract calls active: not revoked, neither expiry passed.
pub const ACTIVE_SESSION_SQL: &str =
    "revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()";

/// Retention (the contract's default: 7 days for sessions and finished
/// tasks); the login limit's window is 15 minutes.
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;

/// Rows the contract says the cleanup deletes, still present: sessions
/// revoked or expired longer than the retention ago, and tasks completed,
/// failed or cancelled longer ago.
pub fn past_retention_sql() -> String {
    format!(
        "SELECT (SELECT count(*) FROM sessions
                  WHERE revoked_at < now() - interval '{RETENTION_SECS} seconds'
                     OR LEAST(idle_expires_at, absolute_expires_at) < now() - interval '{RETENTION_SECS} seconds')
              + (SELECT count(*) FROM tasks
                  WHERE status IN ('completed', 'failed', 'cancelled')
                    AND finished_at < now() - interval '{RETENTION_SECS} seconds')"
    )
}

/// The limits a service under test runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Active sessions per user (`TESSERA_MAX_SESSIONS_PER_USER`).
    pub sessions_per_user: u32,
    /// Failed logins per email and window before `429` (`TESSERA_LOGIN_MAX_FAILURES`).
    pub login_failures: u32,
}

/// The contract's defaults, which the load and chaos tiers run with.
pub const LIMITS: Limits = Limits {
    sessions_per_user: 10,
    login_failures: 10,
};

impl Limits {
    /// The environment that gives a service these limits (and the
    /// retention [`past_retention_sql`] judges by).
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            // The load and chaos tiers' producers create tasks: users they
            // register may assign as well as work.
            ("TESSERA_DEFAULT_ROLES", "worker,assigner".to_owned()),
            (
                "TESSERA_MAX_SESSIONS_PER_USER",
                self.sessions_per_user.to_string(),
            ),
            (
                "TESSERA_LOGIN_MAX_FAILURES",
                self.login_failures.to_string(),
            ),
            ("TESSERA_SESSION_RETENTION_SECS", RETENTION_SECS.to_string()),
            ("TESSERA_TASK_RETENTION_SECS", RETENTION_SECS.to_string()),
        ]
    }
}
