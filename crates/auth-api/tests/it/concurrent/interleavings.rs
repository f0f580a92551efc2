//! Forced interleavings, in the spirit of PostgreSQL's isolation tester: the
//! test holds a lock or runs a step itself on its own connection, so the
//! order of events is fixed, not left to timing.

use auth_api::config::ApiConfig;
use auth_core::config::SessionLimit;
use auth_core::config::SessionPolicy;
use auth_core::domain::SessionToken;
use auth_core::store::{sessions, users};
use diesel_async::{
    AnsiTransactionManager, RunQueryDsl, SimpleAsyncConnection as _, TransactionManager,
};
use serde_json::json;
use test_support::TestApp;
use test_support::app::{PASSWORD, json_uuid, test_config};

#[tokio::test]
async fn a_claim_skips_rows_locked_by_others_instead_of_waiting() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let ids = app.create_n_tasks(&ada.token, "locked", 5).await;

    // The test holds row locks on the two oldest tasks in an open transaction.
    let mut holder = app.db.connect().await;
    AnsiTransactionManager::begin_transaction(&mut holder)
        .await
        .unwrap();
    diesel::sql_query(format!(
        "SELECT id FROM tasks WHERE id IN ('{}', '{}') FOR UPDATE",
        ids[0], ids[1]
    ))
    .execute(&mut holder)
    .await
    .unwrap();

    let claim = {
        let app_url = app.url("/v1/tasks/claim");
        let token = ada.token.clone();
        tokio::spawn(async move {
            let res = reqwest::Client::new()
                .post(app_url)
                .bearer_auth(token)
                .json(&json!({"count": 5}))
                .send()
                .await;
            res.unwrap().json::<serde_json::Value>().await.unwrap()
        })
    };
    let waited = app.db.blocked_or_done(&claim).await;
    // Let a waiting claim through before failing, so nothing hangs.
    AnsiTransactionManager::rollback_transaction(&mut holder)
        .await
        .unwrap();
    let body = claim.await.unwrap();
    assert!(
        !waited,
        "the claim queued behind the test's row locks instead of skipping them: {body}"
    );
    let got: Vec<_> = body["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json_uuid(&t["id"]))
        .collect();
    assert_eq!(got, ids[2..], "the three unlocked tasks, and only they");
    assert_eq!(body["claimed"], 3);
}

#[tokio::test]
async fn a_touch_that_waited_on_a_logout_cannot_revive_the_session() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    // The session's touch is due, so the validation's statement writes.
    test_support::TestDb::execute(
        &app.db,
        "UPDATE sessions SET last_seen_at = now() - interval '1 hour'",
    )
    .await;
    // A logout, run by the test, has revoked the session but not committed:
    // it holds the row lock.
    let logout = app
        .db
        .hold(&format!(
            "UPDATE sessions SET revoked_at = now() WHERE id = '{}'",
            ada.session_id
        ))
        .await;
    // The validation's snapshot still sees the session active and due: its
    // touch queues on the row.
    let validation = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/sessions/current"),
            ada.token.clone(),
        );
        tokio::spawn(async move {
            let res = client.get(url).bearer_auth(token).send().await;
            res.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    };
    let waited = app.db.blocked_or_done(&validation).await;
    logout.release_committing().await;
    let status = validation.await.unwrap_or(0);
    let revoked = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await;
    assert_eq!(
        revoked, 1,
        "fresh read: the logout stands (the touch wrote over it)"
    );
    assert_eq!(status, 401, "the validation answered for a revoked session");
    assert!(
        waited,
        "the validation's touch did not queue behind the logout"
    );
}

#[tokio::test]
async fn two_logins_at_the_limit_cannot_both_see_room() {
    let app = TestApp::spawn_with(ApiConfig {
        sessions: SessionPolicy {
            max_sessions_per_user: SessionLimit::try_from(2).unwrap(),
            ..SessionPolicy::default()
        },
        ..test_config()
    })
    .await;
    let ada = app.signup("ada@example.com").await; // one session: room for one more

    // Login A, run step by step by the test: lock the user, count (1: room).
    let mut a = app.db.connect().await;
    // A is the correct login whatever the build: its lock is written out here.
    a.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
        ada.user_id
    ))
    .await
    .unwrap();
    let seen_by_a = count_active(&mut a, ada.user_id).await;
    assert_eq!(seen_by_a, 1);

    // Login B, through the service, while A sits between its count and its insert.
    let login_b = {
        let url = app.url("/v1/sessions");
        tokio::spawn(async move {
            let body = json!({"email": "ada@example.com", "password": PASSWORD});
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let b_waited = app.db.blocked_or_done(&login_b).await;

    // A finishes as the service would: its session statement, then commit.
    let new = SessionToken::generate().unwrap();
    let policy = SessionPolicy::default();
    let verified = stored_hash(&app, "ada@example.com").await;
    let session = sessions::NewSession {
        id: uuid::Uuid::new_v4(),
        user_id: ada.user_id,
        hash: &new.hash(),
        client: &Default::default(),
        verified: &verified,
    };
    let lifetimes = (policy.idle_timeout, policy.absolute_lifetime);
    sessions::open(&mut a, session, 2, lifetimes, None)
        .await
        .unwrap()
        .expect("ada exists");
    a.batch_execute("COMMIT").await.unwrap();

    assert_eq!(login_b.await.unwrap_or(0), 201);
    let active = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL AND idle_expires_at > now()",
            ada.user_id
        ))
        .await;
    assert_eq!(
        active,
        2,
        "limit 2 must hold (login B {} for A's lock)",
        if b_waited { "waited" } else { "did not wait" }
    );
    assert!(
        b_waited,
        "login B did not serialise behind login A's user lock"
    );
}

#[tokio::test]
async fn a_login_holding_the_user_lock_does_not_block_claims_for_that_user() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    app.create_n_tasks(&ada.token, "for ada", 3).await;
    // The test takes the user lock exactly as a login does, in an open transaction.
    let mut login = app.db.connect().await;
    let lock = users::lock_sql(ada.user_id);
    login
        .batch_execute(&format!("BEGIN; {lock}"))
        .await
        .unwrap();
    // A claim assigning tasks to ada checks the foreign key to her row
    // (FOR KEY SHARE): it must not wait for the login to commit.
    let claim = {
        let url = app.url("/v1/tasks/claim");
        let token = ada.token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"count": 3}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let waited = app.db.blocked_or_done(&claim).await;
    login.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(claim.await.unwrap_or(0), 200);
    assert!(
        !waited,
        "the claim waited for the login's user lock (FOR UPDATE blocks KEY SHARE)"
    );
}

#[tokio::test]
async fn oldest_means_first_issued_even_when_the_later_login_began_first() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let policy = SessionPolicy::default();
    let lifetimes = (policy.idle_timeout, policy.absolute_lifetime);
    let verified = stored_hash(&app, "ada@example.com").await;
    let open = async |conn: &mut diesel_async::AsyncPgConnection, limit: i64| {
        let token = SessionToken::generate().unwrap();
        let id = uuid::Uuid::new_v4();
        let session = sessions::NewSession {
            id,
            user_id: ada.user_id,
            hash: &token.hash(),
            client: &Default::default(),
            verified: &verified,
        };
        sessions::open(conn, session, limit, lifetimes, None)
            .await
            .unwrap()
            .expect("ada exists");
        id
    };
    // Login A begins its transaction (its now() is fixed here) ...
    let mut a = app.db.connect().await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // ... login B begins later, issues its session and commits first ...
    let mut b = app.db.connect().await;
    b.batch_execute("BEGIN").await.unwrap();
    let issued_first = open(&mut b, 10).await;
    b.batch_execute("COMMIT").await.unwrap();
    // ... then A issues its session and commits.
    let issued_second = open(&mut a, 10).await;
    a.batch_execute("COMMIT").await.unwrap();
    // With the signup's session gone, a login at limit 2 must evict "the
    // oldest" of these two: B's, issued first.
    test_support::TestDb::execute(
        &app.db,
        &format!(
            "UPDATE sessions SET revoked_at = now() WHERE id = '{}'",
            ada.session_id
        ),
    )
    .await;
    let mut conn = app.db.connect().await;
    open(&mut conn, 2).await;
    let revoked = |id: uuid::Uuid| {
        format!("SELECT count(*) AS n FROM sessions WHERE id = '{id}' AND revoked_at IS NOT NULL")
    };
    assert_eq!(
        app.db.count(&revoked(issued_first)).await,
        1,
        "the session issued first is the oldest"
    );
    assert_eq!(app.db.count(&revoked(issued_second)).await, 0);
}

/// Bulkheads: with every connection of the reads class stuck behind a lock
/// the test holds (and more listings and stats queued for them), validations
/// still answer, on the sessions class's own pool, before the lock is let go.
#[tokio::test]
async fn validations_answer_while_every_listing_connection_is_stuck() {
    use auth_core::config::{Bulkheads, PoolConfig};
    let app = TestApp::spawn_with(ApiConfig {
        pool: PoolConfig {
            max_size: 4,
            // Bounded: a checkout that finds its pool exhausted gives up in 1 s.
            connection_timeout_ms: 1_000,
            ..PoolConfig::default()
        },
        bulkheads: Bulkheads {
            reads_max_size: 2,
            reads_statement_timeout_ms: 30_000,
            ..Bulkheads::default()
        },
        ..test_config()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    let held = app
        .db
        .hold("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await;
    // Six listings and stats: two take the reads pool's connections and wait
    // on the lock, four wait for those connections (more than the whole
    // pool of 4 that every class would share without bulkheads).
    let stuck: Vec<_> = (0..6)
        .map(|i| {
            let (client, token) = (super::own_client(), ada.token.clone());
            let path = if i % 2 == 0 {
                "/v1/tasks"
            } else {
                "/v1/tasks/stats"
            };
            let url = app.url(path);
            tokio::spawn(async move {
                match client.get(url).bearer_auth(token).send().await {
                    Ok(res) => res.status().as_u16(),
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    app.db.wait_for_lock_waiters(2).await;

    let validations = super::run_together(8, |_| {
        let p = super::participant(&app);
        let token = ada.token.clone();
        async move {
            p.send(
                p.client
                    .get(p.url("/v1/sessions/current"))
                    .bearer_auth(&token),
            )
            .await
            .0
        }
    })
    .await;
    // Still held: every validation above answered while the reads were stuck.
    let still_waiting = app
        .db
        .count("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        .await;
    held.release().await;
    let mut reads = Vec::new();
    for handle in stuck {
        reads.push(handle.await.unwrap());
    }
    assert_eq!(
        validations,
        vec![200; 8],
        "validations starved by stuck reads"
    );
    assert!(still_waiting >= 1, "the reads were not stuck meanwhile");
    // The reads class sheds what it cannot serve in time; nothing else.
    assert!(
        reads.iter().all(|s| *s == 200 || *s == 503),
        "reads answered {reads:?}"
    );
    assert!(
        reads.contains(&200),
        "the stuck reads finished once let go: {reads:?}"
    );
}

/// The user's active sessions, as a login counts them, read on `conn`.
async fn count_active(conn: &mut diesel_async::AsyncPgConnection, user_id: uuid::Uuid) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM sessions
         WHERE user_id = $1
           AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .get_result::<Count>(conn)
    .await
    .expect("counting sessions")
    .n
}

/// The stored password hash of `email`: what its logins verify against.
async fn stored_hash(app: &TestApp, email: &str) -> String {
    users::find_by_email(&mut app.db.connect().await, email)
        .await
        .unwrap()
        .expect("a registered email")
        .password_hash
}
