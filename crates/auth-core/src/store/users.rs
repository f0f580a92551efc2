//! The `users` table: credentials, roles, and whether a user is disabled.

use super::Prepared as _;
use crate::domain::Roles;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, QueryableByName)]
pub struct UserRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub password_hash: String,
}

/// A user as the interface shows it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Account {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    pub disabled: bool,
}

/// Inserts a user; a taken email fails with a unique violation.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    email: &str,
    password_hash: &str,
    roles: Roles,
) -> Result<Account, DbError> {
    diesel::sql_query(
        "INSERT INTO users (id, email, password_hash, roles) VALUES ($1, $2, $3, $4::user_role[])
         RETURNING id, email, roles::text[] AS roles, created_at, disabled_at IS NOT NULL AS disabled",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(email)
    .bind::<Text, _>(password_hash)
    .bind::<Array<Text>, _>(roles.words())
    .prepared()
    .get_result(conn)
    .await
}

/// The user with `email`, disabled or not (the operator's command line).
pub async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<UserRow>, DbError> {
    diesel::sql_query("SELECT id, email, password_hash FROM users WHERE email = $1")
        .bind::<Text, _>(email)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<UserRow>| rows.pop())
}

/// Whether user `id` may be given tasks by another: enabled, and holding
/// the role `worker` itself (the interface's rule for an assignee; an
/// assigner or admin may work for itself, not be assigned to).
pub async fn may_work(conn: &mut AsyncPgConnection, id: Uuid) -> Result<bool, DbError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM users
                        WHERE id = $1 AND disabled_at IS NULL AND 'worker' = ANY (roles)) AS found",
    )
    .bind::<SqlUuid, _>(id)
    .prepared()
    .get_result::<Found>(conn)
    .await
    .map(|f| f.found)
}

/// User `id`, if any.
pub async fn account(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Account>, DbError> {
    diesel::sql_query(
        "SELECT id, email, roles::text[] AS roles, created_at, disabled_at IS NOT NULL AS disabled
         FROM users WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .prepared()
    .get_results(conn)
    .await
    .map(|mut rows: Vec<Account>| rows.pop())
}

/// At most `limit` users by email, from the first email after `after`.
pub async fn accounts(
    conn: &mut AsyncPgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Account>, DbError> {
    diesel::sql_query(
        "SELECT id, email, roles::text[] AS roles, created_at, disabled_at IS NOT NULL AS disabled
         FROM users WHERE $1::text IS NULL OR email > $1
         ORDER BY email LIMIT $2",
    )
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .prepared()
    .get_results(conn)
    .await
}

/// Sets user `id`'s roles and whether it is disabled, each only when
/// given; `None` for no such user. The update takes the user's row lock, as
/// a login's does ([`LOCK`]): logins of this user that hold it commit
/// first, and none opens a session until this transaction ends.
pub async fn change(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    roles: Option<Roles>,
    disabled: Option<bool>,
) -> Result<Option<Account>, DbError> {
    diesel::sql_query(
        "UPDATE users
         SET roles = COALESCE($2::user_role[], roles),
             disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now())
                                WHEN NOT $3 THEN NULL
                                ELSE disabled_at END
         WHERE id = $1
         RETURNING id, email, roles::text[] AS roles, created_at, disabled_at IS NOT NULL AS disabled",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<Array<Text>>, _>(roles.map(Roles::words))
    .bind::<Nullable<Bool>, _>(disabled)
    .prepared()
    .get_results(conn)
    .await
    .map(|mut rows: Vec<Account>| rows.pop())
}

/// A password change, as sent: user `$1`'s hash set to `$2` while it is
/// enabled and, when `$3` is given, while its hash is still `$3` (the one
/// the caller's current password was verified against: a reset or another
/// change that committed since wins, and this one sets nothing). The update
/// takes the user's row lock ([`LOCK`]), as a login does, and re-reads the
/// row once a writer it waited for committed.
pub const SET_PASSWORD: &str = "\
UPDATE users SET password_hash = $2
WHERE id = $1 AND disabled_at IS NULL AND ($3::text IS NULL OR password_hash = $3)";

/// [`SET_PASSWORD`] as this build sends it.
pub fn set_password_sql() -> &'static str {
    statement!(SET_PASSWORD, PasswordChangeIgnoresNewerPassword => SET_PASSWORD_OVER_ANY)
}

/// Sets user `id`'s password hash by [`SET_PASSWORD`], `replacing` that
/// hash only (`None`: whatever it is, for a reset); `false` when nothing
/// was set.
pub async fn set_password(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    password_hash: &str,
    replacing: Option<&str>,
) -> Result<bool, DbError> {
    diesel::sql_query(set_password_sql())
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(password_hash)
        .bind::<Nullable<Text>, _>(replacing)
        .prepared()
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// The statement that takes the user's row lock until the transaction
/// ends: logins of one user serialise on it, which is what keeps the session
/// limit exact. `NO KEY UPDATE` because nothing changes the key: it still
/// serialises logins but does not block the `KEY SHARE` locks that
/// foreign-key checks take (a claim assigning tasks to this user, a session
/// insert).
const LOCK: &str = "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE";

/// [`LOCK`] for user `id`, as simple-protocol text: it carries only the id
/// the service itself holds, so it rides on the transaction's `BEGIN`
/// ([`crate::db::atomic_after`]).
pub fn lock_sql(id: Uuid) -> String {
    let sql = statement!(LOCK,
        SessionLimitWithoutLock => LOCK_NOTHING,
        UserLockForUpdate => LOCK_FOR_UPDATE);
    sql.replace("$1", &format!("'{id}'"))
}
