//! The per-email login limit, as a reservation: an attempt is admitted
//! before its password is checked and reports its outcome afterwards.
//!
//! Admission takes a per-email advisory lock, counts the attempts within the
//! window since the last success, and inserts a pending attempt if there is
//! room, all in one short transaction. So of any number of concurrent logins
//! for one email, on any number of instances, at most `max_failed_logins`
//! are ever checked against the password; the rest are refused without
//! hashing. A pending attempt counts like a failure, so a crash between
//! admission and report errs on the side of the limit. A success clears the
//! count: attempts admitted before it stop counting.

use crate::config::SessionPolicy;
use crate::error::SessionError;
use crate::store::login_attempts;
use crate::store::users::UserRow;
use diesel_async::AsyncPgConnection;
use std::time::Duration;

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// The limit's parameters (from [`SessionPolicy`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimit {
    max_attempts: u32,
    window: Duration,
}

/// An attempt that may check its password; it must report how that went.
#[derive(Debug)]
#[must_use = "an admitted attempt reports its outcome"]
pub struct Admitted {
    attempt_id: i64,
    /// The faulty build records outcomes by email, not by attempt.
    #[cfg(feature = "faults")]
    email: String,
}

impl LoginLimit {
    pub fn new(policy: &SessionPolicy) -> LoginLimit {
        LoginLimit {
            max_attempts: policy.max_failed_logins,
            window: policy.failure_window,
        }
    }

    /// Admits one attempt for `email` (normalised), or refuses it with
    /// `TooManyAttempts` and the seconds until a slot frees up; with the
    /// admission, the user holding that email (if any). Three round trips:
    /// `BEGIN` with the email's lock, the admission, `COMMIT`.
    pub async fn admit(
        &self,
        conn: &mut AsyncPgConnection,
        email: &str,
    ) -> Result<(Admitted, Option<UserRow>)> {
        or_fault!(LoginLimitCheckThenRecord => {
            let row = crate::faults::sql::count_only(conn, email, self.max_attempts, self.window).await?;
            let user = crate::store::users::find_by_email(conn, email).await?;
            admitted_or_limited(&row, email).map(|admitted| (admitted, user))
        });
        let (limit, window) = (self.max_attempts, self.window);
        let owned = email.to_owned();
        let lock = login_attempts::lock_email_sql(email);
        let row = crate::db::atomic_after(conn, Some(&lock), async move |conn| {
            Ok::<_, SessionError>(login_attempts::admit(conn, &owned, limit, window).await?)
        })
        .await?;
        let admitted = admitted_or_limited(&row, email)?;
        Ok((admitted, row.user(email)))
    }
}

#[cfg_attr(not(feature = "faults"), allow(unused_variables))]
fn admitted_or_limited(row: &login_attempts::AdmissionRow, email: &str) -> Result<Admitted> {
    match row.attempt_id {
        Some(attempt_id) => Ok(Admitted {
            attempt_id,
            #[cfg(feature = "faults")]
            email: email.to_owned(),
        }),
        None => Err(SessionError::TooManyAttempts {
            retry_after_secs: row.retry_after_secs.unwrap_or(1).max(1) as u64,
        }),
    }
}

impl Admitted {
    /// The password was wrong (or the email unknown).
    pub async fn failed(self, conn: &mut AsyncPgConnection) -> Result<()> {
        self.report(conn, "failed").await
    }

    /// The password was right: the attempt whose outcome the session's own
    /// statement records as `succeeded`, clearing the count, so both happen
    /// or neither ([`crate::store::sessions::open`]). The faulty build
    /// records it by email here instead (`None` left to record).
    pub async fn succeeded(self, conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
        or_fault!(LoginLimitCheckThenRecord => {
            crate::faults::sql::insert_outcome(conn, &self.email, "succeeded").await?;
            Ok(None)
        });
        let _ = conn;
        Ok(Some(self.attempt_id))
    }

    /// The password was never checked (hashing refused the job): the
    /// attempt gives its slot back.
    pub async fn withdraw(self, conn: &mut AsyncPgConnection) -> Result<()> {
        or_fault!(LoginLimitCheckThenRecord => Ok(()));
        Ok(login_attempts::withdraw(conn, self.attempt_id).await?)
    }

    async fn report(self, conn: &mut AsyncPgConnection, outcome: &'static str) -> Result<()> {
        or_fault!(LoginLimitCheckThenRecord => Ok(
            crate::faults::sql::insert_outcome(conn, &self.email, outcome).await?
        ));
        Ok(login_attempts::report(conn, self.attempt_id, outcome).await?)
    }
}
