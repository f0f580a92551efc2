//! The per-email login limit: at most `max_failed_logins` wrong passwords
//! are checked per window since the email's last success, however the
//! logins arrive, and a correct password is refused only once the failures
//! alone reach the limit.
//!
//! In the database ([`login_attempts::admit`]) an attempt is admitted before
//! its password is checked and reports its outcome afterwards, under a
//! per-email advisory lock: admitted while failures and checks in flight
//! stay under the limit, `busy` when they reach it (the login waits for a
//! check to end), `limited` when the failures alone do (429).
//!
//! In each instance the logins of one email form a line ([`Line`]): one
//! admission at a time goes to the database, the rest wait in memory for
//! their turn, holding no pooled connection and no hash worker, bounded by
//! the login deadline (then 503). When an admission finds the email
//! limited, every login waiting in its line is refused with it at once: a
//! crowd for a limited email costs one admission per instance, not one
//! each, and waits on nothing but the admission already under way. Nothing
//! is remembered past that moment: whether an email is limited is the
//! database's to say, by its clock.

use crate::config::SessionPolicy;
use crate::db::Db;
use crate::error::SessionError;
use crate::hashing::{HashError, HashSlot, PasswordHasher};
use crate::store::login_attempts::{self, AdmissionRow};
use crate::store::users::UserRow;
use diesel_async::AsyncPgConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// How often a login that found its email busy asks again when no check of
/// this instance ended meanwhile (the checks in flight are another
/// instance's): one admission per email and instance per interval.
const BUSY_RECHECK: Duration = Duration::from_millis(50);

/// Logins that may wait in this instance's lines at once; one more is
/// refused at once (503). Each holds its request (a few KiB) and nothing
/// else; a client that hangs up gives its place back at once.
const WAITING_LOGINS: usize = 4096;

/// How long after its admission an attempt still pending is taken for
/// abandoned (its process died before reporting): the login deadline plus
/// this, since a live login reports within its deadline and one check.
const ABANDONED_AFTER_DEADLINE: Duration = Duration::from_secs(30);

/// The limit's parameters and this instance's lines.
#[derive(Debug, Clone)]
pub struct LoginLimit {
    max_failures: u32,
    window: Duration,
    /// Pending for longer than this: abandoned, counted as a failure.
    stale: Duration,
    lines: Arc<Lines>,
}

/// An admitted attempt, its user (if the email is registered) and its
/// place in the hash queue.
pub struct Admission {
    pub attempt: Admitted,
    pub user: Option<UserRow>,
    pub slot: HashSlot,
}

/// An attempt that may check its password; it must report how that went.
/// Dropping it (once its outcome is committed) tells the logins waiting in
/// this email's line that a check ended.
#[derive(Debug)]
#[must_use = "an admitted attempt reports its outcome"]
pub struct Admitted {
    attempt_id: i64,
    line: LineRef,
}

impl std::fmt::Debug for Admission {
    // The user's row holds its password hash: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("attempt", &self.attempt)
            .field("registered", &self.user.is_some())
            .finish_non_exhaustive()
    }
}

/// What the database said of one attempt.
enum Verdict {
    Admitted(i64, Option<UserRow>),
    Busy,
    Limited(Duration),
}

impl LoginLimit {
    /// The limit of `policy`; `deadline` is the longest a login may wait
    /// to be checked (the hash queue's deadline).
    pub fn new(policy: &SessionPolicy, deadline: Duration) -> LoginLimit {
        LoginLimit {
            max_failures: policy.max_failed_logins,
            window: policy.failure_window,
            stale: deadline + ABANDONED_AFTER_DEADLINE,
            lines: Arc::default(),
        }
    }

    /// Admits one attempt for `email` (normalised) once it is this login's
    /// turn and the email is not busy, with a place in the hash queue; or
    /// refuses it: `TooManyAttempts` when the email is limited, `Overloaded`
    /// when too many logins wait already, the hash queue is full or
    /// `deadline` passes first. Waiting happens in the caller's task: a
    /// caller that stops waiting (its client hung up) gives its place back.
    pub async fn admit(
        &self,
        db: &Db,
        hasher: &PasswordHasher,
        email: &str,
        deadline: Instant,
    ) -> Result<Admission> {
        if self.waiting() >= WAITING_LOGINS {
            return Err(SessionError::Overloaded(HashError::QueueFull));
        }
        let line = self.lines.line(email);
        // Refusals published from here on apply to this login too.
        let mut refused = line.refused.subscribe();
        let _turn = {
            let _waiting = self.lines.waiting();
            tokio::select! {
                turn = tokio::time::timeout_at(deadline, line.turn.lock()) => {
                    turn.map_err(|_| past_deadline())?
                }
                Ok(()) = refused.changed() => return Err(too_many(*refused.borrow())),
            }
        };
        // The admission ahead of it may have found the email limited as it
        // took the turn.
        if refused.has_changed().unwrap_or(false) {
            return Err(too_many(*refused.borrow()));
        }
        loop {
            if Instant::now() >= deadline {
                return Err(past_deadline());
            }
            let slot = hasher.reserve_until(deadline)?;
            // Registered before the database decides: a check that ends
            // while it decides still ends the wait that follows.
            let settled = line.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.decide_to_end(db, email, &line).await? {
                Verdict::Admitted(attempt_id, user) => {
                    return Ok(Admission {
                        attempt: Admitted {
                            attempt_id,
                            line: line.clone(),
                        },
                        user,
                        slot,
                    });
                }
                Verdict::Limited(left) => {
                    line.refuse_everyone_waiting(left);
                    return Err(too_many(left));
                }
                Verdict::Busy => {
                    // The place in the hash queue goes back while waiting.
                    drop(slot);
                    let _waiting = self.lines.waiting();
                    tokio::select! {
                        _ = settled => {}
                        _ = tokio::time::sleep(BUSY_RECHECK) => {}
                        _ = tokio::time::sleep_until(deadline) => return Err(past_deadline()),
                    }
                }
            }
        }
    }

    /// Logins of this instance waiting in a line right now: for their turn,
    /// or for a check in flight to end (`/metrics`, and tests that act once
    /// every login they sent is either answered or waiting).
    pub fn waiting(&self) -> usize {
        self.lines.waiting.load(Ordering::SeqCst)
    }

    /// [`LoginLimit::decide`] run to its end in a task of its own: an
    /// attempt admitted for a caller that stopped waiting is withdrawn
    /// there (it was never checked), and the line told.
    async fn decide_to_end(&self, db: &Db, email: &str, line: &LineRef) -> Result<Verdict> {
        let (this, db, owned) = (self.clone(), db.clone(), email.to_owned());
        let (undo_db, undo_line) = (db.clone(), line.clone());
        let decided = crate::detached::to_end(
            async move { this.decide(&db, &owned).await },
            move |unanswered: Result<Verdict>| async move {
                if let Ok(Verdict::Admitted(attempt_id, _)) = unanswered {
                    let _ = undo_db
                        .run(async |conn| {
                            Ok::<_, crate::error::StoreError>(
                                login_attempts::withdraw(conn, attempt_id).await?,
                            )
                        })
                        .await;
                    undo_line.settled.notify_waiters();
                }
            },
        )
        .await;
        decided.unwrap_or(Err(past_deadline()))
    }

    /// One admission in the database: `BEGIN` with the email's lock, the
    /// statement, `COMMIT` (three round trips).
    async fn decide(&self, db: &Db, email: &str) -> Result<Verdict> {
        let (limit, window, stale) = (self.max_failures, self.window, self.stale);
        let owned = email.to_owned();
        let row = db
            .run(async |conn| {
                let lock = login_attempts::lock_email_sql(&owned);
                crate::db::atomic_after(conn, Some(&lock), async |conn| {
                    Ok::<_, SessionError>(
                        login_attempts::admit(conn, &owned, limit, window, stale).await?,
                    )
                })
                .await
            })
            .await?;
        Ok(verdict(&row, email))
    }
}

fn verdict(row: &AdmissionRow, email: &str) -> Verdict {
    match (row.verdict.as_str(), row.attempt_id) {
        ("admitted", Some(id)) => Verdict::Admitted(id, row.user(email)),
        ("limited", _) => Verdict::Limited(Duration::from_secs_f64(
            row.retry_after_secs.unwrap_or(1.0).clamp(0.0, 1e9),
        )),
        _ => Verdict::Busy,
    }
}

/// `429` with the whole seconds until the limit lifts (at least 1).
fn too_many(left: Duration) -> SessionError {
    SessionError::TooManyAttempts {
        retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
    }
}

fn past_deadline() -> SessionError {
    SessionError::Overloaded(HashError::DeadlineExceeded)
}

impl Admitted {
    /// The password was right: the attempt whose outcome the session's own
    /// statement records as `succeeded`, clearing the count, so both happen
    /// or neither ([`crate::store::sessions::open`]). The attempt is
    /// dropped once that statement committed.
    pub fn succeeded(&self) -> i64 {
        self.attempt_id
    }

    /// How this attempt ends, as a value a unit of work can own: written
    /// with [`Settle::write`] (the attempt itself stays with the caller and
    /// is dropped, telling its line, once the write committed).
    pub fn settle(&self, how: Ending) -> Settle {
        Settle {
            attempt_id: self.attempt_id,
            how,
        }
    }
}

/// How an admitted attempt ended without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Checked, and the password was wrong (or the email unknown).
    Failed,
    /// Never checked, or its session never opened: no guess, no count.
    Withdrawn,
}

/// An attempt's ending, to be written.
#[derive(Debug, Clone)]
pub struct Settle {
    attempt_id: i64,
    how: Ending,
}

impl Settle {
    pub async fn write(&self, conn: &mut AsyncPgConnection) -> Result<()> {
        match self.how {
            Ending::Failed => Ok(login_attempts::report(conn, self.attempt_id, "failed").await?),
            Ending::Withdrawn => Ok(login_attempts::withdraw(conn, self.attempt_id).await?),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Whatever happened to it, this check is over: the login waiting
        // at the head of the line asks the database again.
        self.line.settled.notify_waiters();
    }
}

/// This instance's lines, one per email with logins under way.
#[derive(Default)]
struct Lines {
    by_email: Mutex<HashMap<String, Arc<Line>>>,
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Lines {
    // Counts only: the emails in line are nobody's business in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("emails", &lock(&self.by_email).len())
            .field("waiting", &self.waiting.load(Ordering::SeqCst))
            .finish()
    }
}

/// Counts a login as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The logins of one email in this instance.
#[derive(Debug)]
struct Line {
    /// Held by the login whose admission is under way (or waiting while
    /// the email is busy); the others queue for it, first come first served.
    turn: tokio::sync::Mutex<()>,
    /// Woken when one of this email's checks in this instance ended.
    settled: Notify,
    /// Each time an admission finds the email limited: how long until the
    /// limit lifts. Logins that were waiting then are refused with it.
    refused: watch::Sender<Duration>,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            turn: tokio::sync::Mutex::default(),
            settled: Notify::new(),
            refused: watch::Sender::new(Duration::ZERO),
        }
    }
}

impl Line {
    /// The email is limited for `left`: every login waiting in this line
    /// (for its turn, or subscribed before it) is refused with it at once,
    /// instead of each taking its turn to find the same.
    fn refuse_everyone_waiting(&self, left: Duration) {
        or_fault!(LoginLimitRefusalNotShared);
        self.refused.send_replace(left);
    }
}

/// A hold on an email's line; the line goes once nobody holds it.
struct LineRef {
    lines: Arc<Lines>,
    email: String,
    line: Option<Arc<Line>>,
}

impl std::fmt::Debug for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineRef")
    }
}

impl std::ops::Deref for LineRef {
    type Target = Line;
    fn deref(&self) -> &Line {
        // Taken only by `drop`.
        self.line.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Clone for LineRef {
    fn clone(&self) -> LineRef {
        LineRef {
            lines: self.lines.clone(),
            email: self.email.clone(),
            line: self.line.clone(),
        }
    }
}

impl Drop for LineRef {
    fn drop(&mut self) {
        let mut by_email = lock(&self.lines.by_email);
        // Counted and let go under the map's lock, so two holders leaving
        // at once cannot both see the other still there.
        if let Some(line) = self.line.take()
            && Arc::strong_count(&line) == 2
        {
            by_email.remove(&self.email);
        }
    }
}

impl Lines {
    fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.waiting)
    }

    fn line(self: &Arc<Self>, email: &str) -> LineRef {
        let line = lock(&self.by_email)
            .entry(email.to_owned())
            .or_default()
            .clone();
        LineRef {
            lines: self.clone(),
            email: email.to_owned(),
            line: Some(line),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::Lines;
    use std::sync::Arc;

    #[test]
    fn a_line_lives_while_someone_holds_it() {
        let lines = Arc::new(Lines::default());
        let a = lines.line("ada@example.com");
        let b = a.clone();
        let c = lines.line("ada@example.com");
        assert!(Arc::ptr_eq(
            a.line.as_ref().unwrap(),
            c.line.as_ref().unwrap()
        ));
        drop(a);
        drop(c);
        assert_eq!(super::lock(&lines.by_email).len(), 1, "b still holds it");
        drop(b);
        assert!(super::lock(&lines.by_email).is_empty());
    }

    #[tokio::test]
    async fn an_admission_prints_neither_its_users_hash_nor_its_email() {
        let hasher = crate::hashing::PasswordHasher::new(
            crate::config::HashParams::FAST_INSECURE_FOR_TESTS,
            crate::config::HashPoolConfig::default(),
        )
        .unwrap();
        let lines = Arc::new(Lines::default());
        let admission = super::Admission {
            attempt: super::Admitted {
                attempt_id: 7,
                line: lines.line("ada@example.com"),
            },
            user: Some(crate::store::users::UserRow {
                id: uuid::Uuid::nil(),
                email: "ada@example.com".into(),
                password_hash: "$argon2id$v=19$m=8,t=1,p=1$secret".into(),
            }),
            slot: hasher.reserve().unwrap(),
        };
        let printed = format!("{admission:?}");
        assert!(
            printed.contains("registered: true")
                && printed.contains("attempt_id: 7")
                && printed.contains("line: LineRef"),
            "{printed}"
        );
        // The faulty build's attempt carries its email; the real one does not.
        #[cfg(not(feature = "faults"))]
        assert!(!printed.contains("ada@example.com"), "{printed}");
        assert!(!printed.contains("argon2id"), "{printed}");
        assert_eq!(format!("{lines:?}"), "Lines { emails: 1, waiting: 0 }");
    }
}
