use super::participant;
use auth_core::config::{PoolConfig, SessionPolicy};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use test_support::TestApp;
use test_support::app::{PASSWORD, TestAppConfig, token_bytes};
use test_support::concurrency::{
    History, check_independent_bits, check_no_success_after_revoke, check_unique, run_together,
};

#[tokio::test]
async fn concurrent_registrations_of_one_email_yield_one_user() {
    let app = TestApp::spawn().await;
    let statuses = run_together(8, |_| {
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
        .map(|(i, (_, b))| (i, b["token"].as_str().unwrap_or_default().to_string()))
        .collect();
    check_unique(&tokens).unwrap_or_else(|e| panic!("{e}"));
    let bytes: Vec<Vec<u8>> = tokens.iter().map(|(_, t)| token_bytes(t)).collect();
    assert!(bytes.iter().all(|b| b.len() == 32));
    check_independent_bits(&bytes).unwrap_or_else(|e| panic!("{e}"));
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
    let app = TestApp::spawn_with(TestAppConfig {
        sessions: SessionPolicy {
            max_sessions_per_user: limit,
            ..SessionPolicy::default()
        },
        ..TestAppConfig::default()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
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
    let statuses = run_together(10, |_| {
        let p = participant(&app);
        async move {
            let body = json!({"email": "ada@example.com", "password": PASSWORD});
            p.send(p.client.post(p.url("/v1/sessions")).json(&body))
                .await
                .0
        }
    })
    .await;
    storm_over.store(true, Ordering::SeqCst);
    let (max_seen, samples) = observer.await.unwrap_or((i64::MAX, 0));
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert!(samples > 0, "the observer took no sample");
    assert!(
        max_seen <= i64::from(limit),
        "observer saw {max_seen} active sessions (limit {limit})"
    );
    assert_eq!(
        app.db.count(&active_sql).await,
        i64::from(limit),
        "fresh read after the storm"
    );
}

#[tokio::test]
async fn no_validation_succeeds_after_logout_returned() {
    // Touch on every validation, so touches race the logout too.
    let app = TestApp::spawn_with(TestAppConfig {
        sessions: SessionPolicy {
            touch_interval: std::time::Duration::ZERO,
            ..SessionPolicy::default()
        },
        ..TestAppConfig::default()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
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
    check_no_success_after_revoke(&ops, |status| *status == 200).unwrap_or_else(|e| panic!("{e}"));
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
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let results = run_together(8, |_| {
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
    let new_token = winners[0].1["token"].as_str().unwrap_or_default();
    assert_eq!(app.current(new_token).await.status().as_u16(), 200);
    assert_eq!(app.current(&ada.token).await.status().as_u16(), 401);
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM sessions").await,
        1,
        "still one session"
    );
}

#[tokio::test]
async fn concurrent_revoke_all_counts_each_session_once() {
    let app = TestApp::spawn().await;
    let mut sessions = vec![app.signup("ada@example.com").await];
    for _ in 0..5 {
        sessions.push(app.login_ok("ada@example.com").await);
    }
    let results = run_together(6, |i| {
        let p = participant(&app);
        let token = sessions[i].token.clone();
        async move {
            p.send(p.client.delete(p.url("/v1/sessions")).bearer_auth(&token))
                .await
        }
    })
    .await;
    let revoked: i64 = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["revoked"].as_i64().unwrap_or(0))
        .sum();
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 401),
        "{results:?}"
    );
    assert_eq!(
        revoked, 6,
        "the revoked counts add up to the six sessions: {results:?}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn more_participants_than_connections_all_succeed_by_waiting() {
    let app = TestApp::spawn_with(TestAppConfig {
        pool: PoolConfig {
            max_size: 2,
            connection_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        ..TestAppConfig::default()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    let statuses = run_together(10, |_| {
        let p = participant(&app);
        let token = ada.token.clone();
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
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|s| *s == 200), "{all:?}");
    let state = app.state.pool.state();
    assert!(state.connections <= 2, "pool grew to {}", state.connections);
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
