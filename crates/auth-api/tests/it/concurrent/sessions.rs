use super::{behind_lock, capped, participant, spawn_login, spawn_request, wide_pool};
use auth_api::config::ApiConfig;
use auth_core::config::SessionLimit;
use auth_core::config::{PoolConfig, Pooler, SessionPolicy};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use test_support::TestApp;
use test_support::app::{PASSWORD, test_config, token_bytes};
use test_support::concurrency::{
    History, check_independent_bits, check_no_success_after_revoke, check_unique, run_together,
};

#[tokio::test]
async fn concurrent_registrations_of_one_email_yield_one_user() {
    let app = TestApp::spawn_with(wide_pool()).await;
    // The test's own uncommitted row holds the email: every registration
    // passes any check made before its insert and then waits on the unique
    // index, so all eight are in flight together when the test lets go.
    let held = app
        .db
        .hold(
            "INSERT INTO users (id, email, password_hash)
             VALUES (gen_random_uuid(), 'race@example.com', 'held by the test')",
        )
        .await;
    let statuses = behind_lock(&app, held, 8, |_| {
        let p = participant(&app);
        async move {
            let body = json!({"email": "race@example.com", "password": PASSWORD});
            p.send(p.client.post(p.url("/v1/users")).json(&body))
                .await
                .0
        }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM users WHERE email = 'race@example.com'")
            .await,
        1
    );
}

#[tokio::test]
async fn concurrent_logins_get_distinct_independent_tokens() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    let results = run_together(10, |_| {
        let p = participant(&app);
        async move {
            let body = json!({"email": "ada@example.com", "password": PASSWORD});
            p.send(p.client.post(p.url("/v1/sessions")).json(&body))
                .await
        }
    })
    .await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let tokens: Vec<(usize, String)> = results
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (i, b["token"].as_str().unwrap().to_string()))
        .collect();
    check_unique(&tokens).unwrap();
    let bytes: Vec<Vec<u8>> = tokens.iter().map(|(_, t)| token_bytes(t)).collect();
    assert!(bytes.iter().all(|b| b.len() == 32));
    check_independent_bits(&bytes).unwrap();
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT token_hash) AS n FROM sessions")
            .await,
        10
    );
}

#[tokio::test]
async fn the_session_limit_holds_at_every_instant_of_a_login_storm() {
    let limit = 3;
    let app = TestApp::spawn_with(ApiConfig {
        sessions: SessionPolicy {
            max_sessions_per_user: SessionLimit::try_from(limit).unwrap(),
            ..SessionPolicy::default()
        },
        ..test_config()
    })
    .await;
    // Below, at, just above and well above the cap; the last also past the
    // login limit (10): right passwords arriving together all get in.
    for n in [2, 3, 4, 10, 30] {
        login_storm(&app, &format!("ada{n}@example.com"), n, limit).await;
    }
}

/// `n` logins of a new user released together while an observer samples
/// the committed number of its active sessions.
async fn login_storm(app: &TestApp, email: &str, n: usize, limit: u32) {
    let ada = app.signup(email).await;
    app.logout(&ada.token).await;
    let active_sql = format!(
        "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL
           AND idle_expires_at > now() AND absolute_expires_at > now()",
        ada.user_id
    );
    // An observer samples the committed count, on its own connection, for
    // as long as the storm lasts.
    let storm_over = Arc::new(AtomicBool::new(false));
    let observer = {
        let done = storm_over.clone();
        let db_sql = active_sql.clone();
        let mut conn = app.db.connect().await;
        tokio::spawn(async move {
            use diesel_async::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let (mut max, mut samples) = (0, 0);
            while !AtomicBool::load(&done, Ordering::SeqCst) {
                if let Ok(row) = diesel::sql_query(&db_sql).get_result::<N>(&mut conn).await {
                    max = max.max(row.n);
                    samples += 1;
                }
            }
            (max, samples)
        })
    };
    let statuses = run_together(n, |_| {
        let p = participant(app);
        let body = json!({"email": email, "password": PASSWORD});
        async move {
            p.send(p.client.post(p.url("/v1/sessions")).json(&body))
                .await
                .0
        }
    })
    .await;
    storm_over.store(true, Ordering::SeqCst);
    let (max_seen, samples) = observer.await.unwrap_or((i64::MAX, 0));
    assert!(
        statuses.iter().all(|s| *s == 201),
        "{n} logins: {statuses:?}"
    );
    assert!(samples > 0, "the observer took no sample");
    assert!(
        max_seen <= i64::from(limit),
        "{n} logins: observer saw {max_seen} active sessions (limit {limit})"
    );
    assert_eq!(
        app.db.count(&active_sql).await,
        (n as i64).min(i64::from(limit)),
        "{n} logins: fresh read after the storm"
    );
}

#[tokio::test]
async fn no_validation_succeeds_after_logout_returned() {
    // Touch on every validation, so touches race the logout too.
    let app = TestApp::spawn_with(ApiConfig {
        sessions: SessionPolicy {
            touch_interval: std::time::Duration::ZERO,
            ..SessionPolicy::default()
        },
        ..test_config()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    // On an app whose validations do not touch, so only the logout waits.
    logout_returns_only_after_its_revocation_committed(&TestApp::spawn().await).await;
    let history: History<u16> = History::default();
    run_together(8, |i| {
        let p = participant(&app);
        let token = ada.token.clone();
        let history = history.clone();
        async move {
            if i == 0 {
                let req = p
                    .client
                    .delete(p.url("/v1/sessions/current"))
                    .bearer_auth(&token);
                history
                    .record(i, "revoke", "ada", async { p.send(req).await.0 })
                    .await;
            } else {
                for _ in 0..15 {
                    let req = p
                        .client
                        .get(p.url("/v1/sessions/current"))
                        .bearer_auth(&token);
                    history
                        .record(i, "validate", "ada", async { p.send(req).await.0 })
                        .await;
                }
            }
        }
    })
    .await;
    let ops = history.ops();
    assert!(
        ops.iter().any(|o| o.kind == "revoke" && o.result == 204),
        "logout succeeded: {:?}",
        ops.iter().find(|o| o.kind == "revoke")
    );
    check_no_success_after_revoke(&ops, |status| *status == 200).unwrap();
    assert_eq!(app.current(&ada.token).await.status().as_u16(), 401);
    let revoked = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await;
    assert_eq!(revoked, 1, "fresh read: the session stays revoked");
}

#[tokio::test]
async fn of_concurrent_refreshes_with_one_token_exactly_one_wins() {
    let app = TestApp::spawn_with(wide_pool()).await;
    let ada = app.signup("ada@example.com").await;
    // The test locks the session row: every refresh reads what it reads and
    // then waits, so all eight race for the row when the test lets go.
    let held = app.db.hold_row("sessions", ada.session_id).await;
    let results = behind_lock(&app, held, 8, |_| {
        let p = participant(&app);
        let token = ada.token.clone();
        async move {
            p.send(
                p.client
                    .post(p.url("/v1/sessions/current/refresh"))
                    .bearer_auth(&token),
            )
            .await
        }
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|(s, b)| *s == 401 && b["code"] == "invalid_token")
            .count(),
        7,
        "{results:?}"
    );
    let new_token = winners[0].1["token"].as_str().unwrap();
    assert_eq!(app.current(new_token).await.status().as_u16(), 200);
    assert_eq!(app.current(&ada.token).await.status().as_u16(), 401);
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM sessions").await,
        1,
        "still one session"
    );
    // The seven losers presented a token rotated away moments before: within
    // the reuse grace, which is no theft (several tabs refreshing at once).
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL")
            .await,
        1,
        "the losers' reuses within the grace revoked nothing"
    );
}

/// A token rotated away on instance A, presented on instance B after the
/// grace (a thief), while its owner keeps refreshing and validating the
/// current token on A. Whichever request takes the session row first, once
/// the reuse has answered 401 no token of that session works on either
/// instance: the rotation history is in the database, judged by its clock.
#[tokio::test]
async fn a_reuse_after_the_grace_on_another_instance_revokes_the_session_whatever_races_it() {
    let a = TestApp::spawn_with(wide_pool()).await;
    let b = a.spawn_beside(wide_pool()).await;
    let ada = a.signup("ada@example.com").await;
    let rotated: serde_json::Value = a.refresh(&ada.token).await.json().await.unwrap();
    let current = rotated["token"].as_str().unwrap().to_owned();
    a.db.execute("UPDATE rotated_tokens SET rotated_at = now() - interval '1 minute'")
        .await;
    let results = run_together(6, |i| {
        let (on_a, on_b) = (participant(&a), participant(&b));
        let (stolen, current) = (ada.token.clone(), current.clone());
        async move {
            match i {
                0 => {
                    let req = on_b.client.get(on_b.url("/v1/sessions/current"));
                    ("reuse", on_b.send(req.bearer_auth(&stolen)).await)
                }
                1 | 2 => {
                    let req = on_a.client.post(on_a.url("/v1/sessions/current/refresh"));
                    ("refresh", on_a.send(req.bearer_auth(&current)).await)
                }
                _ => {
                    let req = on_a.client.get(on_a.url("/v1/sessions/current"));
                    ("validate", on_a.send(req.bearer_auth(&current)).await)
                }
            }
        }
    })
    .await;
    let (_, (reuse_status, reuse_body)) = &results[0];
    assert_eq!(*reuse_status, 401, "{results:?}");
    assert_eq!(reuse_body["code"], "invalid_token");
    assert_eq!(
        a.db.count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await,
        1,
        "the reuse revoked the session: {results:?}"
    );
    // Every token the session ever had, including any a racing refresh
    // issued, is dead on both instances.
    let issued = results
        .iter()
        .filter(|(op, (status, _))| *op == "refresh" && *status == 201)
        .filter_map(|(_, (_, body))| body["token"].as_str().map(str::to_owned));
    for token in issued.chain([current.clone(), ada.token.clone()]) {
        for app in [&a, &b] {
            assert_eq!(
                app.current(&token).await.status().as_u16(),
                401,
                "{results:?}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_revoke_all_counts_each_session_once() {
    let app = TestApp::spawn_with(wide_pool()).await;
    let mut sessions = vec![app.signup("ada@example.com").await];
    for _ in 0..5 {
        sessions.push(app.login_ok("ada@example.com").await);
    }
    // The test locks one of the six rows: every call has authenticated and
    // is inside its revocation when the test lets go.
    let held = app.db.hold_row("sessions", sessions[5].session_id).await;
    let results = behind_lock(&app, held, 6, |i| {
        let p = participant(&app);
        let token = sessions[i].token.clone();
        async move {
            p.send(p.client.delete(p.url("/v1/sessions")).bearer_auth(&token))
                .await
        }
    })
    .await;
    // The first to lock the rows revokes all six; every other call comes
    // after it, its own token revoked by then: 401, and it counts nothing.
    let mut statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401], "{results:?}");
    let revoked: Vec<i64> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["revoked"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(revoked, [6], "one call revoked the six: {results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 401)
            .all(|(_, b)| b["code"] == "invalid_token"),
        "{results:?}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL")
            .await,
        0
    );
}

/// A logout or a log-out-everywhere whose token a refresh rotated between
/// the call's validation and its revocation comes after the refresh: 401,
/// and the session lives on with the refreshed token. The test holds the
/// session's row; the refresh queues for it first, the revocation second
/// (it validated the old token before the refresh committed).
#[tokio::test]
async fn a_revocation_that_lost_its_token_to_a_refresh_is_refused() {
    for path in ["/v1/sessions/current", "/v1/sessions"] {
        let app = TestApp::spawn_with(wide_pool()).await;
        let ada = app.signup("ada@example.com").await;
        let held = app.db.hold_row("sessions", ada.session_id).await;
        let refresh = spawn_request(
            &app,
            reqwest::Method::POST,
            "/v1/sessions/current/refresh",
            &ada.token,
        );
        app.db.wait_for_lock_waiters(1).await;
        let revocation = spawn_request(&app, reqwest::Method::DELETE, path, &ada.token);
        app.db.wait_for_lock_waiters(2).await;
        held.release().await;
        let (refreshed, body) = refresh.await.unwrap();
        let (revoked, problem) = revocation.await.unwrap();
        assert_eq!(refreshed, 201, "{path}: the refresh: {body}");
        assert_eq!(
            (revoked, problem["code"].as_str()),
            (401, Some("invalid_token")),
            "{path}: a revocation that came after the refresh, with the token it rotated away"
        );
        let new = body["token"].as_str().unwrap();
        assert_eq!(
            app.current(new).await.status(),
            200,
            "{path}: the session lives on"
        );
        assert_eq!(
            app.db
                .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL")
                .await,
            1,
            "{path}"
        );
    }
}

/// A wide pool and a cap of `cap` sessions per user.
/// A login and a log out everywhere lock the same user's sessions, the
/// login under the user's lock and the log out (its first try) without it:
/// both take them in id order, so neither can hold one the other needs
/// while it waits. Forced: the test holds the middle session (by id); the
/// log out locks the first and waits on it, then the login queues. Taken
/// in opposite orders the two deadlock and PostgreSQL aborts one. With the
/// user's three sessions below its cap (5) and at it (3: the login would
/// evict).
#[tokio::test]
async fn a_login_and_a_log_out_everywhere_lock_in_one_order_and_both_succeed() {
    for cap in [5, 3] {
        let app = TestApp::spawn_with(capped(cap)).await;
        let hold = |middle| format!("SELECT id FROM sessions WHERE id = '{middle}' FOR UPDATE");
        log_out_everywhere_and_login_around_the_middle_session(&app, hold, Ending::RolledBack, 3)
            .await;
    }
}

/// Behind a transaction pooler every call is one transaction, so a log out
/// everywhere takes the user's lock before any session row, as a login
/// does: a first try without it would hold session rows while it waits for
/// the user's lock, which a login holds while it waits for those rows.
/// Forced: the test revokes the middle session (by id) uncommitted; the log
/// out waits on it, the login behind; the test then commits, so the log
/// out finds a session gone since it looked (a raced first try, retried
/// under the user's lock). Below the cap (5) and at it (3).
#[tokio::test]
async fn behind_a_pooler_a_log_out_everywhere_takes_the_user_lock_before_its_sessions() {
    for cap in [5, 3] {
        let mut config = capped(cap);
        config.pooler = Pooler::Transaction;
        let app = TestApp::spawn_with(config).await;
        let revoke =
            |middle| format!("UPDATE sessions SET revoked_at = now() WHERE id = '{middle}'");
        log_out_everywhere_and_login_around_the_middle_session(&app, revoke, Ending::Committed, 2)
            .await;
    }
}

/// How the test's transaction on the middle session ends.
enum Ending {
    RolledBack,
    Committed,
}

/// Three sessions of one user; the test runs `hold` on the middle one (by
/// id) in a transaction it keeps open; a log out everywhere through the
/// first waits on it, a login queues behind; the test's transaction then
/// ends as `ending` says. Both calls must succeed: the log out revoking
/// `revoked` sessions, the login's new session living.
async fn log_out_everywhere_and_login_around_the_middle_session(
    app: &TestApp,
    hold: impl Fn(uuid::Uuid) -> String,
    ending: Ending,
    revoked: u64,
) {
    let mut sessions = vec![app.signup("ada@example.com").await];
    for _ in 0..2 {
        sessions.push(app.login_ok("ada@example.com").await);
    }
    sessions.sort_by_key(|s| s.session_id);
    let held = app.db.hold(&hold(sessions[1].session_id)).await;
    let everywhere = spawn_request(
        app,
        reqwest::Method::DELETE,
        "/v1/sessions",
        &sessions[0].token,
    );
    app.db.wait_for_lock_waiters(1).await;
    let login = spawn_login(app, "ada@example.com");
    app.db.wait_for_lock_waiters(2).await;
    match ending {
        Ending::RolledBack => held.release().await,
        Ending::Committed => held.release_committing().await,
    }
    let (status, answer) = everywhere.await.unwrap();
    let (logged_in, session) = login.await.unwrap();
    assert_eq!(
        (status, answer["revoked"].as_u64()),
        (200, Some(revoked)),
        "the log out everywhere: {answer}"
    );
    assert_eq!(logged_in, 201, "the login, after it: {session}");
    let token = session["token"].as_str().unwrap();
    assert_eq!(
        app.current(token).await.status(),
        200,
        "the login's session lives"
    );
}

/// Log out everywhere racing a login that evicts (found by the randomized
/// run): the login ends the oldest session after the revocation saw it
/// active, and commits its new session after the revocation's snapshot.
/// Revoking the rest without the new one is explained by no order of the
/// two calls; the revocation must come after the login, new session and
/// all. Forced: the oldest session's row is held, the login waits on it to
/// evict it, the revocation waits behind the login. At the cap of 2 and 3.
#[tokio::test]
async fn a_log_out_everywhere_racing_an_evicting_login_revokes_its_new_session_too() {
    for cap in [2u32, 3] {
        let app = TestApp::spawn_with(capped(cap)).await;
        let oldest = app.signup("ada@example.com").await;
        let mut newest = oldest.clone();
        for _ in 1..cap {
            newest = app.login_ok("ada@example.com").await;
        }
        let held = app.db.hold_row("sessions", oldest.session_id).await;
        let login = spawn_login(&app, "ada@example.com");
        app.db.wait_for_lock_waiters(1).await;
        let everywhere =
            spawn_request(&app, reqwest::Method::DELETE, "/v1/sessions", &newest.token);
        app.db.wait_for_lock_waiters(2).await;
        held.release().await;
        let (logged_in, session) = login.await.unwrap();
        let (revoked, answer) = everywhere.await.unwrap();
        assert_eq!(logged_in, 201, "cap {cap}: the login: {session}");
        assert_eq!(
            (revoked, answer["revoked"].as_u64()),
            (200, Some(u64::from(cap))),
            "cap {cap}: the others of the cap and the login's new session: {answer}"
        );
        let active = app
            .db
            .count(&format!(
                "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL
                   AND idle_expires_at > now() AND absolute_expires_at > now()",
                oldest.user_id
            ))
            .await;
        assert_eq!(active, 0, "cap {cap}: nothing of ada's is left active");
    }
}

/// A login at the cap racing a revocation of one of its user's sessions
/// (found by the randomized run): the login's snapshot still counts the
/// session being revoked, so it would evict one more, here the revoking
/// call's own session, which no order of the two calls explains (before
/// the login, the revocation leaves room; after it, its caller is gone).
/// Forced: the oldest session's row is held, the revocation (through the
/// oldest) waits on it, the login behind it. Cap 3, the user holding 2
/// sessions (nothing to evict either way), 3, and 3 after an eviction.
#[tokio::test]
async fn a_login_racing_a_revocation_counts_what_is_active_when_it_acts() {
    for others in [1usize, 2, 3] {
        let cap = 3u32;
        let app = TestApp::spawn_with(capped(cap)).await;
        let oldest = app.signup("ada@example.com").await;
        let mut rest = Vec::new();
        for _ in 0..others {
            rest.push(app.login_ok("ada@example.com").await);
        }
        // With three others, the oldest was evicted by the last of them.
        let caller = if others + 1 > cap as usize {
            rest[0].clone()
        } else {
            oldest.clone()
        };
        let target = rest.last().unwrap().clone();
        let held = app.db.hold_row("sessions", caller.session_id).await;
        let path = format!("/v1/sessions/{}", target.session_id);
        let revocation = spawn_request(&app, reqwest::Method::DELETE, &path, &caller.token);
        app.db.wait_for_lock_waiters(1).await;
        let login = spawn_login(&app, "ada@example.com");
        // Below the cap a login that locks nothing has nothing to wait on.
        app.db
            .wait_until_parked(2, || i64::from(login.is_finished()))
            .await;
        held.release().await;
        let (revoked, problem) = revocation.await.unwrap();
        let (logged_in, session) = login.await.unwrap();
        assert_eq!(revoked, 204, "{others} others: the revocation: {problem}");
        assert_eq!(logged_in, 201, "{others} others: the login: {session}");
        assert_eq!(
            app.current(&caller.token).await.status(),
            200,
            "{others} others: the revocation left room; the login evicts nothing"
        );
    }
}

#[tokio::test]
async fn more_participants_than_connections_all_succeed_by_waiting() {
    const POOL: u32 = 2;
    let app = TestApp::spawn_with(ApiConfig {
        pool: PoolConfig {
            max_size: POOL,
            connection_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        ..test_config()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    // Below, at, just above and well above the pool's size.
    for n in [1, 2, 3, 10] {
        validators_share_the_pool(&app, &ada.token, n, POOL).await;
    }
}

/// `n` participants validate five times each through a pool of `pool`.
async fn validators_share_the_pool(app: &TestApp, token: &str, n: usize, pool: u32) {
    let statuses = run_together(n, |_| {
        let p = participant(app);
        let token = token.to_owned();
        async move {
            let mut out = Vec::new();
            for _ in 0..5 {
                out.push(
                    p.send(
                        p.client
                            .get(p.url("/v1/sessions/current"))
                            .bearer_auth(&token),
                    )
                    .await
                    .0,
                );
            }
            out
        }
    })
    .await;
    let all: Vec<u16> = statuses.into_iter().flatten().collect();
    assert_eq!(all.len(), 5 * n);
    assert!(all.iter().all(|s| *s == 200), "{n} participants: {all:?}");
    let state = app.state.pools.sessions.pool().state();
    assert!(
        state.connections <= pool,
        "{n} participants: pool grew to {}",
        state.connections
    );
}

#[tokio::test]
async fn after_a_revocation_returned_no_racing_refresh_or_validation_succeeds() {
    let app = TestApp::spawn().await;
    let keeper = app.signup("ada@example.com").await;
    let victim = app.login_ok("ada@example.com").await;
    let res = app
        .revoke_session(&keeper.token, &victim.session_id.to_string())
        .await;
    assert_eq!(res.status().as_u16(), 204);
    // The revocation has returned; now six participants race to use the token.
    let results = run_together(6, |i| {
        let p = participant(&app);
        let token = victim.token.clone();
        async move {
            let req = if i % 2 == 0 {
                p.client
                    .post(p.url("/v1/sessions/current/refresh"))
                    .bearer_auth(&token)
            } else {
                p.client
                    .get(p.url("/v1/sessions/current"))
                    .bearer_auth(&token)
            };
            p.send(req).await
        }
    })
    .await;
    assert!(
        results
            .iter()
            .all(|(s, b)| *s == 401 && b["code"] == "invalid_token"),
        "{results:?}"
    );
    let untouched = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL AND last_seen_at = created_at",
            victim.session_id
        ))
        .await;
    assert_eq!(
        untouched, 1,
        "fresh read: still revoked, never rotated or touched"
    );
}

/// The forced half of the logout race: the test locks the session row, so a
/// correct logout cannot answer until the test lets go. One that answers
/// before its revocation commits has answered by the time its revocation is
/// seen waiting and a validation has made its round trip.
async fn logout_returns_only_after_its_revocation_committed(app: &TestApp) {
    let bob = app.signup("bob@example.com").await;
    let held = app.db.hold_row("sessions", bob.session_id).await;
    let logout = spawn_request(
        app,
        reqwest::Method::DELETE,
        "/v1/sessions/current",
        &bob.token,
    );
    app.db.wait_for_lock_waiters(1).await;
    // Read-only (the touch is not due): the revocation has not committed.
    let meanwhile = app.current(&bob.token).await.status().as_u16();
    let answered_early = logout.is_finished();
    held.release().await;
    assert_eq!(logout.await.map_or(0, |(status, _)| status), 204);
    assert!(
        !answered_early,
        "logout answered while its revocation was still waiting; a validation meanwhile got {meanwhile}"
    );
    assert_eq!(app.current(&bob.token).await.status().as_u16(), 401);
}

/// A logout among five refreshes of one token, in both orders: the test
/// holds the session row and queues the logout (or one refresh) on it
/// first, then the other five, so the first in line acts first.
#[tokio::test]
async fn logout_racing_refresh_leaves_no_usable_token_once_logout_returned() {
    for logout_first in [true, false] {
        let app = TestApp::spawn_with(wide_pool()).await;
        let ada = app.signup("ada@example.com").await;
        let held = app.db.hold_row("sessions", ada.session_id).await;
        let send = |logout: bool| {
            let (method, path) = match logout {
                true => (reqwest::Method::DELETE, "/v1/sessions/current"),
                false => (reqwest::Method::POST, "/v1/sessions/current/refresh"),
            };
            spawn_request(&app, method, path, &ada.token)
        };
        let first = send(logout_first);
        app.db.wait_for_lock_waiters(1).await;
        let mut rest: Vec<_> = (0..5).map(|i| send(!logout_first && i == 0)).collect();
        app.db.wait_for_lock_waiters(6).await;
        held.release().await;
        let mut results = vec![first.await.unwrap()];
        for request in rest.drain(..) {
            results.push(request.await.unwrap());
        }
        // The logout's answer, and the refreshes' in the order they queued.
        let logout_at = if logout_first { 0 } else { 1 };
        let logout = results.remove(logout_at);
        judge_logout_among_refreshes(&app, &ada, logout.0, &results, logout_first).await;
    }
}

/// What one logout among refreshes of one token may have left: at most one
/// refresh won, every loser was told `invalid_token`, and once the logout
/// returned no token of the session works; if a refresh came first, the
/// logout came too late (401) and the session lives on its new token, its
/// losers' reuse within the grace revoking nothing.
async fn judge_logout_among_refreshes(
    app: &TestApp,
    ada: &test_support::app::LoggedIn,
    logout: u16,
    refreshes: &[(u16, serde_json::Value)],
    logout_first: bool,
) {
    let order = if logout_first {
        "logout first"
    } else {
        "refresh first"
    };
    let refreshed: Vec<String> = refreshes
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b["token"].as_str().unwrap().to_string())
        .collect();
    assert!(
        refreshed.len() <= 1,
        "{order}: at most one refresh wins: {refreshes:?}"
    );
    assert!(
        refreshes
            .iter()
            .all(|(s, b)| *s == 201 || (*s == 401 && b["code"] == "invalid_token")),
        "{order}: {refreshes:?}"
    );
    let revoked = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await;
    let expected = if logout_first { 204 } else { 401 };
    assert_eq!(
        logout, expected,
        "{order}: the logout; refreshes {refreshes:?}"
    );
    if logout_first {
        assert_eq!(revoked, 1, "{order}: fresh read: logged out");
        assert!(
            refreshed.is_empty(),
            "{order}: a refresh after the logout won: {refreshes:?}"
        );
        assert_eq!(app.current(&ada.token).await.status().as_u16(), 401);
    } else {
        assert_eq!(refreshed.len(), 1, "{order}: {refreshes:?}");
        assert_eq!(
            revoked, 0,
            "{order}: the losers' reuse within the grace revoked the session"
        );
        assert_eq!(app.current(&refreshed[0]).await.status().as_u16(), 200);
    }
}

#[tokio::test]
async fn revoke_all_racing_logins_revokes_every_earlier_session_and_counts_it_once() {
    let app = TestApp::spawn_with(wide_pool()).await;
    let mut before = vec![app.signup("ada@example.com").await];
    for _ in 0..2 {
        before.push(app.login_ok("ada@example.com").await);
    }
    // One revocation already made, which the call must not count.
    assert_eq!(app.logout(&before[2].token).await.status().as_u16(), 204);
    // The test locks one earlier session: the call stays inside its
    // revocation while the logins race it, and cannot answer before it ends.
    let held = app.db.hold_row("sessions", before[1].session_id).await;
    let answered = Arc::new(AtomicBool::new(false));
    let race = {
        let participants: Vec<_> = (0..6).map(|_| participant(&app)).collect();
        let token = before[0].token.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let participants = Arc::new(participants);
            run_together(6, |i| {
                let participants = participants.clone();
                let token = token.clone();
                let answered = answered.clone();
                async move {
                    let p = &participants[i];
                    if i == 0 {
                        let out = p
                            .send(p.client.delete(p.url("/v1/sessions")).bearer_auth(&token))
                            .await;
                        answered.store(true, Ordering::SeqCst);
                        out
                    } else {
                        let body = json!({"email": "ada@example.com", "password": PASSWORD});
                        p.send(p.client.post(p.url("/v1/sessions")).json(&body))
                            .await
                    }
                }
            })
            .await
        })
    };
    app.db.wait_for_lock_waiters(1).await;
    let meanwhile = app.current(&before[1].token).await.status().as_u16();
    let answered_early = answered.load(Ordering::SeqCst);
    held.release().await;
    let results = race.await.unwrap();
    assert!(
        !answered_early,
        "revoke-all answered while its revocation was still waiting; a validation meanwhile got {meanwhile}"
    );
    let (status, body) = &results[0];
    assert_eq!(*status, 200, "{body}");
    let counted = body["revoked"].as_i64().unwrap_or(-1);
    assert!(results[1..].iter().all(|(s, _)| *s == 201), "{results:?}");
    // Fresh read, per id: the two earlier active sessions are revoked, the
    // earlier logout is not counted again, and each new login is either
    // revoked by the call (it committed first) or active.
    for s in &before[..2] {
        assert_eq!(app.current(&s.token).await.status().as_u16(), 401);
    }
    let mut revoked_new = 0;
    for (_, b) in &results[1..] {
        let id = b["session_id"].as_str().unwrap();
        let gone = app
            .db
            .count(&format!(
                "SELECT count(*) AS n FROM sessions WHERE id = '{id}' AND revoked_at IS NOT NULL"
            ))
            .await;
        let token = b["token"].as_str().unwrap();
        let valid = app.current(token).await.status().as_u16() == 200;
        assert!(
            gone + i64::from(valid) == 1,
            "session {id}: revoked {gone}, valid {valid}"
        );
        revoked_new += gone;
    }
    assert_eq!(
        counted,
        2 + revoked_new,
        "the call counts exactly the sessions it revoked"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        3 + revoked_new,
        "nothing else revoked"
    );
}
