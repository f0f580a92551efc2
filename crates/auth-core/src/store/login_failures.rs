//! Failed-login records behind the per-email rate limit.

use super::secs;
use diesel::sql_types::{BigInt, Double, Text};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

/// Seconds until `email` may try again, when it has `limit` or more failures
/// within `window`; `None` when it may try now. The wait is until the
/// `limit`-th most recent failure leaves the window.
pub async fn lockout(
    conn: &mut AsyncPgConnection,
    email: &str,
    limit: u32,
    window: Duration,
) -> QueryResult<Option<u64>> {
    #[derive(QueryableByName)]
    struct Wait {
        #[diesel(sql_type = BigInt)]
        retry_after: i64,
    }
    let rows: Vec<Wait> = diesel::sql_query(
        "SELECT CEIL(EXTRACT(EPOCH FROM failed_at + make_interval(secs => $3) - now()))::bigint AS retry_after
         FROM login_failures
         WHERE email = $1 AND failed_at > now() - make_interval(secs => $3)
         ORDER BY failed_at DESC
         OFFSET $2 LIMIT 1",
    )
    .bind::<Text, _>(email)
    .bind::<BigInt, _>(i64::from(limit.max(1)) - 1)
    .bind::<Double, _>(secs(window))
    .get_results(conn)
    .await?;
    Ok(rows.into_iter().next().map(|w| w.retry_after.max(1) as u64))
}

/// Records one failure and drops this email's records older than the window.
pub async fn record(
    conn: &mut AsyncPgConnection,
    email: &str,
    window: Duration,
) -> QueryResult<()> {
    diesel::sql_query(
        "WITH expired AS (
             DELETE FROM login_failures WHERE email = $1 AND failed_at <= now() - make_interval(secs => $2)
         )
         INSERT INTO login_failures (email) VALUES ($1)",
    )
    .bind::<Text, _>(email)
    .bind::<Double, _>(secs(window))
    .execute(conn)
    .await
    .map(|_| ())
}

/// A successful login clears the count.
pub async fn clear(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM login_failures WHERE email = $1")
        .bind::<Text, _>(email)
        .execute(conn)
        .await
        .map(|_| ())
}
