//! The `users` table.

use super::Prepared as _;
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{Text, Uuid as SqlUuid};
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

/// Inserts a user; a taken email fails with a unique violation.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    email: &str,
    password_hash: &str,
) -> Result<(), DbError> {
    diesel::sql_query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(email)
        .bind::<Text, _>(password_hash)
        .prepared()
        .execute(conn)
        .await
        .map(|_| ())
}

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

pub async fn exists(conn: &mut AsyncPgConnection, id: Uuid) -> Result<bool, DbError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS found")
        .bind::<SqlUuid, _>(id)
        .prepared()
        .get_result::<Found>(conn)
        .await
        .map(|f| f.found)
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
