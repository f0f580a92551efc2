//! `TESSERA_DB_POOLER=transaction`: what the service must not keep on a
//! server session, checked directly on PostgreSQL (the chaos tier's
//! `pgbouncer` case runs the same service through a real PgBouncer).

use auth_api::config::ApiConfig;
use auth_core::config::{Bulkheads, PoolConfig, Pooler};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl as _;
use reqwest::StatusCode;
use test_support::TestApp;
use test_support::app::test_config;

fn one_connection(pooler: Pooler) -> ApiConfig {
    ApiConfig {
        pool: PoolConfig {
            max_size: 1,
            ..test_config().pool
        },
        pooler,
        ..test_config()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Statements left prepared on the sessions pool's one connection after a
/// few requests, not counting the statement that counts them.
async fn statements_left(pooler: Pooler) -> i64 {
    let app = TestApp::spawn_with(one_connection(pooler)).await;
    let ada = app.signup("ada@example.com").await;
    for _ in 0..3 {
        let res = app.get("/v1/sessions/current", Some(&ada.token)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let mut conn = app.state.pools.sessions.pool().get().await.unwrap();
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_prepared_statements
         WHERE statement NOT LIKE '%pg_prepared_statements%'",
    )
    .get_result::<Count>(&mut *conn)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn behind_a_transaction_pooler_no_prepared_statement_outlives_its_request() {
    // Directly, statements are cached on the connection: what this test
    // counts is really there to be counted.
    assert!(statements_left(Pooler::None).await > 0);
    assert_eq!(statements_left(Pooler::Transaction).await, 0);
}

#[tokio::test]
async fn behind_a_transaction_pooler_each_transaction_sets_its_own_statement_timeout() {
    let app = TestApp::spawn_with(ApiConfig {
        bulkheads: Bulkheads {
            sessions_statement_timeout_ms: 300,
            ..Bulkheads::default()
        },
        ..one_connection(Pooler::Transaction)
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    // The logout's UPDATE waits on this row lock until its statement times
    // out; a session-level `SET statement_timeout` would not reach it
    // behind a pooler, and it would wait as long as the lock is held.
    let held = app.db.hold_row("sessions", ada.session_id).await;
    let logout = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.delete("/v1/sessions/current", Some(&ada.token)),
    )
    .await;
    held.release().await;
    let res = logout.expect("the logout waited past its statement timeout");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
}
