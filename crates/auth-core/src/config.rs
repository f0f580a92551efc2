//! The domain's configuration: each policy with its defaults (the
//! contract's), built by auth-api's settings from flags and variables, or
//! in code by tests. Nothing here reads the environment.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A bad configuration value, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {detail}")]
    Invalid { var: String, detail: String },
    #[error("pool profiles file {path}: {detail}")]
    Profiles { path: String, detail: String },
}

/// How many active sessions one user may hold: at least one. A login at the
/// limit revokes the user's oldest sessions to make room (the contract's
/// eviction rule), in the same transaction as the insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimit(std::num::NonZeroU32);

impl SessionLimit {
    /// The contract's default.
    pub const DEFAULT: SessionLimit = SessionLimit(std::num::NonZeroU32::new(10).unwrap());

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// How many of `active` sessions a new one must evict.
    pub fn to_evict_for_one_more(self, active: i64) -> i64 {
        (active - i64::from(self.get()) + 1).max(0)
    }
}

impl TryFrom<u32> for SessionLimit {
    type Error = std::num::TryFromIntError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        std::num::NonZeroU32::try_from(n).map(SessionLimit)
    }
}

impl std::str::FromStr for SessionLimit {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SessionLimit)
    }
}

/// Session lifetime and limits (contract defaults).
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Sliding inactivity timeout, extended by use.
    pub idle_timeout: Duration,
    /// Hard lifetime from login; rotation never extends it.
    pub absolute_lifetime: Duration,
    pub max_sessions_per_user: SessionLimit,
    /// At most one `last_seen_at` write per session per this interval.
    pub touch_interval: Duration,
    /// Failed logins per email within `failure_window` before logins are refused.
    pub max_failed_logins: u32,
    pub failure_window: Duration,
    /// A token rotated away longer ago than this, presented again, is
    /// taken for stolen and revokes its session; within it (parallel
    /// refreshes from several tabs) it is a plain 401.
    pub reuse_grace: Duration,
    /// How long an admin-issued password reset token works.
    pub reset_lifetime: Duration,
    /// Live (unrevoked, unexpired) API keys a user may hold at once: what
    /// bounds a key listing, and what a stranger with a session can make.
    pub api_keys_per_user: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(24 * 3600),
            max_sessions_per_user: SessionLimit::DEFAULT,
            touch_interval: Duration::from_secs(60),
            max_failed_logins: 10,
            failure_window: Duration::from_secs(15 * 60),
            reuse_grace: Duration::from_secs(10),
            reset_lifetime: Duration::from_secs(3600),
            api_keys_per_user: 100,
        }
    }
}

/// Work-queue settings.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    /// How long a claim holds a task before it is claimable again.
    pub lease: Duration,
    /// How often the service folds the task-count deltas (stats read their
    /// sum, so the rows between folds are what a stats call adds up).
    pub counts_fold_interval: Duration,
    /// The longest a long-poll claim waits, whatever its `wait_ms` asks
    /// (at most the contract's 30 s; lower it below a proxy's read timeout).
    pub max_wait: Duration,
    /// How many long-poll claims may wait, per credential and per instance.
    pub waiters: crate::wakeups::WaiterLimits,
    /// How often each instance wakes one waiting claim to look again, the
    /// net under a lost notification. Fixed in service (one second); a test
    /// lengthens it so that only a notification can wake a waiter.
    pub recheck: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lease: Duration::from_secs(300),
            counts_fold_interval: Duration::from_secs(2),
            max_wait: Duration::from_millis(30_000),
            waiters: crate::wakeups::WaiterLimits::default(),
            recheck: crate::wakeups::RECHECK,
        }
    }
}

/// The cleanup (contract defaults: 7 days for sessions and finished tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How often each instance tries a run (only one runs at a time).
    pub interval: Duration,
    /// Sessions revoked or expired longer ago than this are deleted.
    pub sessions: Duration,
    /// Tasks completed longer ago than this are deleted.
    pub tasks: Duration,
    /// Rows per batch: each batch is one short transaction.
    pub batch: i64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            interval: Duration::from_secs(600),
            sessions: Duration::from_secs(7 * 24 * 3600),
            tasks: Duration::from_secs(7 * 24 * 3600),
            batch: 1000,
        }
    }
}

/// argon2id cost. Production follows OWASP's minimum (m=19 MiB, t=2, p=1);
/// tests use the cheapest legal parameters so hashing does not dominate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    pub const PRODUCTION: HashParams = HashParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
    pub const FAST_INSECURE_FOR_TESTS: HashParams = HashParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

/// The hashing pool's size and bounds: beyond them a login or registration
/// answers 503 at once instead of waiting without end (contract defaults:
/// a queue of 64 per worker, 5 s to reach a worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Hashes that may run at once; `None`: all cores but one.
    pub workers: Option<usize>,
    /// Jobs that may wait for a worker; `None`: 64 per worker.
    pub queue_capacity: Option<usize>,
    /// Longest a job may wait for a worker before it is refused.
    pub wait_deadline: Duration,
}

impl Default for HashPoolConfig {
    fn default() -> Self {
        HashPoolConfig {
            workers: None,
            queue_capacity: None,
            wait_deadline: Duration::from_secs(5),
        }
    }
}

impl HashPoolConfig {
    /// Queued jobs allowed per worker when no capacity is set.
    pub const QUEUE_PER_WORKER: usize = 64;
}

/// The bulkheads: each class of request has a pool of its own, so a class
/// that is slow or stuck can exhaust only its own connections. `sessions`
/// (login, validate, refresh, logout, lists of sessions) and `queue` (task
/// writes) take the profile's settings; `reads` (task listings and stats,
/// whose cost a caller chooses) gets a small pool. Each class has its own
/// `statement_timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bulkheads {
    /// Connections of the sessions class; `None`: the profile's `max_size`.
    pub sessions_max_size: Option<u32>,
    pub sessions_statement_timeout_ms: u64,
    pub reads_max_size: u32,
    pub reads_statement_timeout_ms: u64,
}

impl Default for Bulkheads {
    fn default() -> Self {
        Bulkheads {
            sessions_max_size: None,
            sessions_statement_timeout_ms: 2_000,
            reads_max_size: 2,
            reads_statement_timeout_ms: 2_000,
        }
    }
}

impl Bulkheads {
    /// Each class's pool settings, from the profile's.
    pub fn classes(&self, profile: &PoolConfig) -> PoolClasses {
        PoolClasses {
            sessions: PoolConfig {
                max_size: self.sessions_max_size.unwrap_or(profile.max_size),
                statement_timeout_ms: self.sessions_statement_timeout_ms,
                ..profile.clone()
            },
            queue: profile.clone(),
            reads: PoolConfig {
                max_size: self.reads_max_size,
                min_idle: profile.min_idle.map(|n| n.min(self.reads_max_size)),
                statement_timeout_ms: self.reads_statement_timeout_ms,
                ..profile.clone()
            },
        }
    }
}

/// The pool settings of each class (see [`Bulkheads`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolClasses {
    pub sessions: PoolConfig,
    pub queue: PoolConfig,
    pub reads: PoolConfig,
}

/// What sits between the service and PostgreSQL (`TESSERA_DB_POOLER`):
/// `none` (connections are server sessions) or `transaction` (a pooler
/// such as PgBouncer in `pool_mode = transaction`, which hands each
/// transaction whichever server session is free: see [`crate::db::Db`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    #[default]
    None,
    Transaction,
}

impl std::str::FromStr for Pooler {
    type Err = String;
    fn from_str(s: &str) -> Result<Pooler, String> {
        match s {
            "none" => Ok(Pooler::None),
            "transaction" => Ok(Pooler::Transaction),
            other => Err(format!("{other:?} is neither `none` nor `transaction`")),
        }
    }
}

impl std::fmt::Display for Pooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooler::None => "none",
            Pooler::Transaction => "transaction",
        })
    }
}

/// Connection-pool settings (bb8). `None` means "bb8's default".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub max_size: u32,
    #[serde(default)]
    pub min_idle: Option<u32>,
    /// How long a request waits for a connection before it gets a 503.
    #[serde(default = "default_connection_timeout_ms")]
    pub connection_timeout_ms: u64,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_lifetime_ms: Option<u64>,
    /// Run a `SELECT 1` on every checkout (bb8's test_on_check_out). Off by
    /// default: it doubles a validation's round trips, and a connection that
    /// died while idle is found anyway by the error of the one request that
    /// used it, after which the pool drops it (the chaos tier's
    /// `kill-connections` case shows the service recover without it).
    #[serde(default)]
    pub test_on_checkout: bool,
    /// `statement_timeout` set on every connection, so a stuck query cannot
    /// hold a pooled connection forever.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

fn default_connection_timeout_ms() -> u64 {
    5_000
}
fn default_statement_timeout_ms() -> u64 {
    5_000
}

impl Default for PoolConfig {
    /// bb8's own defaults (10 connections) except the checkout timeout, 5 s
    /// (bb8: 30 s) so a saturated service answers 503 fast, and no test on
    /// checkout (bb8: on; see `test_on_checkout`).
    fn default() -> Self {
        PoolConfig {
            max_size: 10,
            min_idle: None,
            connection_timeout_ms: default_connection_timeout_ms(),
            idle_timeout_ms: Some(600_000),
            max_lifetime_ms: Some(1_800_000),
            test_on_checkout: false,
            statement_timeout_ms: default_statement_timeout_ms(),
        }
    }
}

/// Named pool profiles: data in a checked-in TOML file, so a user adds one
/// without recompiling. `max_size = "cores"` style values are not supported:
/// a profile states numbers, and `cores` is computed by whoever writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolProfiles {
    #[serde(flatten)]
    pub profiles: BTreeMap<String, PoolProfile>,
}

/// One profile: a description for reports plus the pool settings.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolProfile {
    pub description: String,
    #[serde(flatten)]
    pub pool: PoolConfig,
}

impl PoolProfiles {
    pub fn load(path: &Path) -> Result<PoolProfiles, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Profiles {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        PoolProfiles::parse(&text).map_err(|detail| ConfigError::Profiles {
            path: path.display().to_string(),
            detail,
        })
    }

    pub fn parse(text: &str) -> Result<PoolProfiles, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn get(&self, name: &str) -> Result<PoolConfig, ConfigError> {
        self.profiles
            .get(name)
            .map(|p| p.pool.clone())
            .ok_or_else(|| ConfigError::Invalid {
                var: "TESSERA_POOL_PROFILE".into(),
                detail: format!(
                    "no profile {name:?}; known: {}",
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{PoolProfiles, SessionLimit};

    #[test]
    fn a_login_at_the_limit_evicts_just_enough_and_zero_is_no_limit() {
        let limit = SessionLimit::try_from(10).expect("10 is a limit");
        assert_eq!(limit, SessionLimit::DEFAULT);
        assert_eq!(limit.to_evict_for_one_more(0), 0);
        assert_eq!(limit.to_evict_for_one_more(9), 0);
        assert_eq!(limit.to_evict_for_one_more(10), 1);
        assert_eq!(limit.to_evict_for_one_more(15), 6);
        assert!("0".parse::<SessionLimit>().is_err());
        assert!(SessionLimit::try_from(0).is_err());
        assert_eq!("3".parse::<SessionLimit>().map(SessionLimit::get), Ok(3));
    }

    #[test]
    fn the_checked_in_profiles_parse() -> Result<(), String> {
        let text = include_str!("../../../config/pool-profiles.toml");
        let profiles = PoolProfiles::parse(text)?;
        for name in ["tiny", "default", "cores", "wide"] {
            assert!(
                profiles.profiles.contains_key(name),
                "profile {name} missing"
            );
        }
        assert!(
            profiles.profiles.values().any(|p| p.pool.test_on_checkout),
            "a profile with test-on-checkout, to compare against"
        );
        Ok(())
    }
}
