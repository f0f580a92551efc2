//! Passwords under concurrency (interface v2): a change racing a refresh
//! of another of the user's sessions, and many uses of one reset token.

use super::{behind_lock, capped, participant};
use auth_core::domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use test_support::TestApp;
use test_support::app::{PASSWORD, expect_status};

/// Which of a refresh of another session and a password change takes that
/// session's row first.
#[derive(Debug, Clone, Copy)]
enum First {
    Refresh,
    Change,
}

/// The caller and `others` more sessions of one user (cap 3); the test
/// holds the first other session's row; a refresh of it and a password
/// change through the caller queue on it in the order `first` says; then
/// let go. Once the change returned, only the caller's token may validate,
/// whoever won the row: the refresh's new token too is revoked.
async fn a_change_and_a_refresh_queued_on_a_session(others: usize, first: First) {
    let app = TestApp::spawn_with(capped(3)).await;
    let caller = app.signup("ada@example.com").await;
    let mut sessions = Vec::new();
    for _ in 0..others {
        sessions.push(app.login_ok("ada@example.com").await);
    }
    let raced = sessions[0].clone();
    let held = app.db.hold_row("sessions", raced.session_id).await;
    let change = || {
        let p = participant(&app);
        let (url, token) = (p.url("/v1/users/me/password"), caller.token.clone());
        let body = json!({"current_password": PASSWORD, "new_password": "a new password 123"});
        tokio::spawn(async move {
            p.send(p.client.put(url).bearer_auth(token).json(&body))
                .await
        })
    };
    let refresh = || {
        super::spawn_request(
            &app,
            reqwest::Method::POST,
            "/v1/sessions/current/refresh",
            &raced.token,
        )
    };
    let (changed, refreshed) = match first {
        First::Refresh => {
            let refreshed = refresh();
            app.db.wait_for_lock_waiters(1).await;
            (change(), refreshed)
        }
        First::Change => {
            let changed = change();
            app.db.wait_for_lock_waiters(1).await;
            (changed, refresh())
        }
    };
    app.db.wait_for_lock_waiters(2).await;
    held.release().await;
    let (status, body) = changed.await.unwrap();
    assert_eq!(status, 204, "the change: {body}");
    let (refresh_status, rotated) = refreshed.await.unwrap();
    let case =
        format!("{others} other sessions, {first:?} first: the refresh answered {refresh_status}");
    let mut tokens: Vec<String> = sessions.iter().map(|s| s.token.clone()).collect();
    tokens.extend(rotated["token"].as_str().map(str::to_owned));
    for token in &tokens {
        assert_eq!(
            app.current(token).await.status(),
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    assert_eq!(
        app.current(&caller.token).await.status(),
        StatusCode::OK,
        "{case}"
    );
    let active = format!(
        "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
        caller.user_id
    );
    assert_eq!(app.db.count(&active).await, 1, "{case}");
}

/// A password change racing a refresh of another of the user's sessions:
/// forced both ways round, with the user below its cap of 3 (two sessions)
/// and at it (three).
#[tokio::test]
async fn a_password_change_revokes_a_session_a_racing_refresh_rotated() {
    for others in [1, 2] {
        for first in [First::Refresh, First::Change] {
            a_change_and_a_refresh_queued_on_a_session(others, first).await;
        }
    }
}

/// Uses of one reset token, `n` at once, each with a password of its own,
/// held on the token's row until all wait: exactly one sets its password
/// (`204`), the others get `401 invalid_token`; the user's sessions are all
/// revoked; only the winner's password logs in. With 2, 4 and 10 uses
/// (the pool holds 12).
#[tokio::test]
async fn of_concurrent_uses_of_one_reset_token_exactly_one_wins() {
    for n in [2, 4, 10] {
        let app = TestApp::spawn_with(capped(3)).await;
        let root = app.signup_as("root@example.com", &[Role::Admin]).await;
        let ada = app.signup("ada@example.com").await;
        let issued = expect_status(
            app.post_json(
                &format!("/v1/users/{}/password-reset", ada.user_id),
                Some(&root.token),
                &json!({}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let token = issued["reset_token"].as_str().unwrap().to_owned();
        let held = app
            .db
            .hold(&format!(
                "SELECT 1 FROM password_resets WHERE user_id = '{}' FOR UPDATE",
                ada.user_id
            ))
            .await;
        let statuses = behind_lock(&app, held, n, |i| {
            let p = participant(&app);
            let body =
                json!({"reset_token": token, "new_password": format!("new password {i:03}")});
            async move {
                let (status, _) = p
                    .send(p.client.post(p.url("/v1/password-resets")).json(&body))
                    .await;
                (i, status)
            }
        })
        .await;
        let winners: Vec<usize> = statuses
            .iter()
            .filter(|(_, s)| *s == 204)
            .map(|(i, _)| *i)
            .collect();
        let others: Vec<u16> = statuses
            .iter()
            .filter(|(_, s)| *s != 204)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(winners.len(), 1, "{n} uses: {statuses:?}");
        assert!(others.iter().all(|s| *s == 401), "{n} uses: {statuses:?}");
        assert_eq!(
            app.current(&ada.token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        for (i, _) in &statuses {
            let status = app
                .login("ada@example.com", &format!("new password {i:03}"))
                .await
                .status();
            let expected = if winners.contains(i) {
                StatusCode::CREATED
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(status, expected, "{n} uses: the password of use {i}");
        }
    }
}

/// `PUT /v1/users/me/password` through `token`, from a participant and a
/// task of its own.
fn spawn_change(
    app: &TestApp,
    token: &str,
    new: &str,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let p = participant(app);
    let (url, token) = (p.url("/v1/users/me/password"), token.to_owned());
    let body = json!({"current_password": PASSWORD, "new_password": new});
    tokio::spawn(async move {
        p.send(p.client.put(url).bearer_auth(token).json(&body))
            .await
    })
}

/// Two changes through one session, both checked against the same current
/// password, queued on the user's lock (the test holds it): the first sets
/// its password, the second finds the password it checked gone and sets
/// nothing (`401 invalid_credentials`); only the first's password logs in.
#[tokio::test]
async fn of_two_changes_checked_against_one_password_only_the_first_sets_its_own() {
    let app = TestApp::spawn_with(capped(3)).await;
    let ada = app.signup("ada@example.com").await;
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
            ada.user_id
        ))
        .await;
    let first = spawn_change(&app, &ada.token, "first new password");
    app.db.wait_for_lock_waiters(1).await;
    let second = spawn_change(&app, &ada.token, "second new password");
    app.db.wait_for_lock_waiters(2).await;
    held.release().await;
    let answers = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(
        (answers.0.0, answers.1.0, answers.1.1["code"].as_str()),
        (204, 401, Some("invalid_credentials")),
        "{answers:?}"
    );
    assert_eq!(
        app.login("ada@example.com", "first new password")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.login("ada@example.com", "second new password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.current(&ada.token).await.status(), StatusCode::OK);
}

/// A change whose session is revoked while the change waits for the
/// user's lock (the test holds it) sets nothing (`401 invalid_token`): the
/// revocation came first, and a stolen session's change cannot outlive it.
/// The test revokes the session itself, as a log out does: behind a
/// transaction pooler a log out takes the user's lock first, and would
/// queue behind the change instead.
#[tokio::test]
async fn a_change_whose_session_was_logged_out_while_it_waited_sets_nothing() {
    let app = TestApp::spawn_with(capped(3)).await;
    let stolen = app.signup("ada@example.com").await;
    let other = app.login_ok("ada@example.com").await;
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
            stolen.user_id
        ))
        .await;
    let change = spawn_change(&app, &stolen.token, "the thief's password");
    app.db.wait_for_lock_waiters(1).await;
    app.db
        .execute(&format!(
            "UPDATE sessions SET revoked_at = now() WHERE id = '{}'",
            stolen.session_id
        ))
        .await;
    held.release().await;
    let (status, body) = change.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.current(&other.token).await.status(),
        StatusCode::OK,
        "nothing revoked"
    );
}
