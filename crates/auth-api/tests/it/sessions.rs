use auth_api::config::ApiConfig;
use auth_core::config::SessionLimit;
use auth_core::config::SessionPolicy;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use test_support::app::{PASSWORD, expect_problem, expect_status, json_uuid, test_config};
use test_support::{LoggedIn, TestApp};

async fn assert_invalid_token(res: reqwest::Response) {
    let www = res.headers().get("www-authenticate").is_some();
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(www, "401 carries WWW-Authenticate");
}

#[tokio::test]
async fn login_issues_an_opaque_token_stored_only_as_its_hash() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    let res = app.login("ADA@example.com", PASSWORD).await;
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body = expect_status(res, StatusCode::CREATED).await;
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "32 bytes, URL-safe base64");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    for key in ["session_id", "user_id", "expires_at"] {
        assert!(body[key].is_string(), "{key} in {body}");
    }
    let hash: String = Sha256::digest(base64_decode(token))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let by_hash = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE token_hash = '\\x{hash}'::bytea"
        ))
        .await;
    assert_eq!(by_hash, 1, "the stored value is SHA-256 of the token");
    let plaintext = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE position('{token}'::bytea in token_hash) > 0"
        ))
        .await;
    assert_eq!(plaintext, 0);
}

fn base64_decode(token: &str) -> Vec<u8> {
    // Minimal URL-safe base64 decoder for the test (no padding).
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in token.bytes() {
        let v = alphabet.iter().position(|&a| a == c).unwrap_or(0) as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_indistinguishable() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    let wrong = expect_problem(
        app.login("ada@example.com", "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let unknown = expect_problem(
        app.login("bob@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let impossible_email = expect_problem(
        app.login("not an email", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let impossible_password = expect_problem(
        app.login("ada@example.com", "short").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // Each answer has its own request id; nothing else may differ.
    let [wrong, unknown, impossible_email, impossible_password] =
        [wrong, unknown, impossible_email, impossible_password].map(|mut problem| {
            let id = problem.as_object_mut().and_then(|p| p.remove("request_id"));
            assert!(id.is_some_and(|id| id.is_string()), "{problem}");
            problem
        });
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, impossible_email);
    assert_eq!(wrong, impossible_password);
}

#[tokio::test]
async fn validate_returns_the_session_and_its_earliest_expiry() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert_eq!(json_uuid(&body["session_id"]), ada.session_id);
    assert_eq!(json_uuid(&body["user_id"]), ada.user_id);
    // Idle (30 min) comes before absolute (24 h): expires_at is the idle expiry.
    let idle_first = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}'
               AND idle_expires_at = '{}'::timestamptz AND idle_expires_at < absolute_expires_at",
            ada.session_id,
            body["expires_at"].as_str().unwrap()
        ))
        .await;
    assert_eq!(idle_first, 1);
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_401() {
    let app = TestApp::spawn().await;
    assert_invalid_token(app.get("/v1/sessions/current", None).await).await;
    assert_invalid_token(app.current("not-a-token").await).await;
    assert_invalid_token(app.current(&"A".repeat(43)).await).await;
    assert_invalid_token(app.current(&"A".repeat(10_000)).await).await;
    let res = app
        .client
        .get(app.url("/v1/sessions/current"))
        .header("Authorization", "Basic abc")
        .send()
        .await;
    assert_invalid_token(res.unwrap()).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry_end_a_session() {
    let app = TestApp::spawn().await;
    let idle = app.signup("idle@example.com").await;
    let absolute = app.login_ok("idle@example.com").await;
    app.db
        .execute(&format!(
            "UPDATE sessions SET last_seen_at = now() - interval '31 minutes', idle_expires_at = now() - interval '1 minute'
             WHERE id = '{}'",
            idle.session_id
        ))
        .await;
    app.db
        .execute(&format!(
            "UPDATE sessions SET created_at = now() - interval '25 hours', absolute_expires_at = now() - interval '1 second',
                 idle_expires_at = now() - interval '1 second' WHERE id = '{}'",
            absolute.session_id
        ))
        .await;
    assert_invalid_token(app.current(&idle.token).await).await;
    assert_invalid_token(app.current(&absolute.token).await).await;
    assert_invalid_token(app.refresh(&absolute.token).await).await;
}

#[tokio::test]
async fn use_slides_the_idle_expiry_at_most_once_per_interval() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let seen_sql = format!(
        "SELECT (extract(epoch FROM last_seen_at) * 1000000)::bigint AS n FROM sessions WHERE id = '{}'",
        ada.session_id
    );
    let seen = async |app: &TestApp| app.db.count(&seen_sql).await;
    let at_login = seen(&app).await;
    expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        seen(&app).await,
        at_login,
        "no write within the touch interval"
    );

    app.db
        .execute(&format!(
            "UPDATE sessions SET last_seen_at = now() - interval '5 minutes',
                 idle_expires_at = now() + interval '25 minutes' WHERE id = '{}'",
            ada.session_id
        ))
        .await;
    let moved_back = seen(&app).await;
    expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert!(
        seen(&app).await > moved_back,
        "a due touch writes last_seen_at"
    );
    let slid = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND idle_expires_at > now() + interval '29 minutes'",
            ada.session_id
        ))
        .await;
    assert_eq!(slid, 1, "the idle expiry slid to 30 minutes from now");
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    expect_status(app.logout(&ada.token).await, StatusCode::NO_CONTENT).await;
    assert_invalid_token(app.current(&ada.token).await).await;
    assert_invalid_token(app.logout(&ada.token).await).await;
    let revoked = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await;
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn refresh_rotates_the_token_but_keeps_the_session_and_its_lifetime() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let absolute_before = app
        .db
        .count(&format!("SELECT extract(epoch FROM absolute_expires_at)::bigint AS n FROM sessions WHERE id = '{}'", ada.session_id))
        .await;
    let body = expect_status(app.refresh(&ada.token).await, StatusCode::CREATED).await;
    let new_token = body["token"].as_str().unwrap();
    assert_ne!(new_token, ada.token);
    assert_eq!(json_uuid(&body["session_id"]), ada.session_id);
    assert_invalid_token(app.current(&ada.token).await).await;
    assert_invalid_token(app.refresh(&ada.token).await).await;
    expect_status(app.current(new_token).await, StatusCode::OK).await;
    let absolute_after = app
        .db
        .count(&format!("SELECT extract(epoch FROM absolute_expires_at)::bigint AS n FROM sessions WHERE id = '{}'", ada.session_id))
        .await;
    assert_eq!(
        absolute_before, absolute_after,
        "rotation never extends the total lifetime"
    );
}

#[tokio::test]
async fn a_revoked_session_cannot_be_refreshed() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let other = app.login_ok("ada@example.com").await;
    expect_status(
        app.revoke_session(&other.token, &ada.session_id.to_string())
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_invalid_token(app.refresh(&ada.token).await).await;
    let still_revoked = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
            ada.session_id
        ))
        .await;
    assert_eq!(still_revoked, 1);
}

#[tokio::test]
async fn list_shows_active_sessions_and_marks_the_current_one() {
    let app = TestApp::spawn().await;
    let first = app.signup("ada@example.com").await;
    let second = app.login_ok("ada@example.com").await;
    let gone = app.login_ok("ada@example.com").await;
    expect_status(app.logout(&gone.token).await, StatusCode::NO_CONTENT).await;
    app.signup("bob@example.com").await;

    let body = expect_status(app.list_sessions(&second.token).await, StatusCode::OK).await;
    let sessions = body["sessions"].as_array().cloned().unwrap();
    let ids: Vec<_> = sessions
        .iter()
        .map(|s| json_uuid(&s["session_id"]))
        .collect();
    assert_eq!(
        ids,
        [first.session_id, second.session_id],
        "oldest first, only this user's active ones"
    );
    let current: Vec<bool> = sessions
        .iter()
        .map(|s| s["current"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(current, [false, true]);
    for s in &sessions {
        for key in ["created_at", "last_seen_at", "expires_at"] {
            assert!(s[key].is_string(), "{key} in {s}");
        }
    }
}

#[tokio::test]
async fn revoke_one_only_touches_the_callers_own_active_sessions() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let ada2 = app.login_ok("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;

    expect_problem(
        app.revoke_session(&ada.token, &bob.session_id.to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_status(app.current(&bob.token).await, StatusCode::OK).await;
    expect_problem(
        app.revoke_session(&ada.token, "not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    expect_status(
        app.revoke_session(&ada.token, &ada2.session_id.to_string())
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_invalid_token(app.current(&ada2.token).await).await;
    expect_problem(
        app.revoke_session(&ada.token, &ada2.session_id.to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_status(app.current(&ada.token).await, StatusCode::OK).await;
}

#[tokio::test]
async fn revoke_all_counts_exactly_what_it_revoked() {
    let app = TestApp::spawn().await;
    let sessions: Vec<LoggedIn> = {
        let mut v = vec![app.signup("ada@example.com").await];
        for _ in 0..3 {
            v.push(app.login_ok("ada@example.com").await);
        }
        v
    };
    expect_status(app.logout(&sessions[3].token).await, StatusCode::NO_CONTENT).await;
    let bob = app.signup("bob@example.com").await;

    let body = expect_status(app.revoke_all(&sessions[0].token).await, StatusCode::OK).await;
    assert_eq!(
        body["revoked"], 3,
        "three were active, the logged-out one is not counted"
    );
    for s in &sessions {
        assert_invalid_token(app.current(&s.token).await).await;
    }
    expect_status(app.current(&bob.token).await, StatusCode::OK).await;
    let active = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
            sessions[0].user_id
        ))
        .await;
    assert_eq!(active, 0);
}

#[tokio::test]
async fn the_session_limit_evicts_the_oldest_session() {
    let app = TestApp::spawn_with(ApiConfig {
        sessions: SessionPolicy {
            max_sessions_per_user: SessionLimit::try_from(3).unwrap(),
            ..SessionPolicy::default()
        },
        ..test_config()
    })
    .await;
    let mut logins = vec![app.signup("ada@example.com").await];
    for _ in 0..4 {
        logins.push(app.login_ok("ada@example.com").await);
    }
    // Five logins, limit three: the two oldest were evicted, in order.
    for (i, s) in logins.iter().enumerate() {
        let res = app.current(&s.token).await;
        if i < 2 {
            assert_invalid_token(res).await;
        } else {
            expect_status(res, StatusCode::OK).await;
        }
    }
    let active = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
            logins[0].user_id
        ))
        .await;
    assert_eq!(active, 3);
}

#[tokio::test]
async fn ten_failed_logins_lock_the_email_even_for_the_right_password() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    for _ in 0..10 {
        expect_problem(
            app.login("ada@example.com", "wrong password").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
    let res = app.login("ada@example.com", PASSWORD).await;
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After missing"));
    assert!(
        (1..=900).contains(&retry_after),
        "retry after {retry_after}"
    );
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    // Unknown emails are limited the same way (no enumeration through 429s).
    for _ in 0..10 {
        app.login("ghost@example.com", PASSWORD).await;
    }
    expect_problem(
        app.login("ghost@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    // The window slides: once the failures are older than 15 minutes, login works.
    app.db
        .execute("UPDATE login_attempts SET attempted_at = now() - interval '16 minutes'")
        .await;
    expect_status(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn a_successful_login_clears_the_failure_count() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    for _ in 0..9 {
        app.login("ada@example.com", "wrong password").await;
    }
    expect_status(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) AS n FROM login_attempts
                 WHERE id > (SELECT max(id) FROM login_attempts WHERE outcome = 'succeeded')"
            )
            .await,
        0,
        "no attempt counts after the success"
    );
    for _ in 0..9 {
        app.login("ada@example.com", "wrong password").await;
    }
    expect_status(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
}

/// A login drops the user's expired sessions, so the per-user count and the
/// eviction read only live rows however long the history; live sessions,
/// revoked ones and other users' rows stay.
#[tokio::test]
async fn a_login_drops_only_the_users_own_expired_sessions() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let live = app.login_ok("ada@example.com").await;
    let revoked = app.login_ok("ada@example.com").await;
    expect_status(app.logout(&revoked.token).await, StatusCode::NO_CONTENT).await;
    // 30 expired sessions for each user, as a long history leaves them.
    for who in [&ada, &bob] {
        app.db
            .execute(&format!(
                "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at,
                                       idle_expires_at, absolute_expires_at)
                 SELECT gen_random_uuid(), '{}', sha256(random()::text::bytea),
                        now() - interval '40 days', now() - interval '40 days',
                        now() - interval '39 days', now() - interval '10 days'
                 FROM generate_series(1, 30)",
                who.user_id
            ))
            .await;
    }
    let of = |who: &LoggedIn| {
        format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = '{}'",
            who.user_id
        )
    };
    assert_eq!(app.db.count(&of(&ada)).await, 33);
    app.login_ok("ada@example.com").await;
    // ada: signup's, live, revoked, the new one; bob keeps his history.
    assert_eq!(app.db.count(&of(&ada)).await, 4);
    assert_eq!(app.db.count(&of(&bob)).await, 31);
    expect_status(app.current(&live.token).await, StatusCode::OK).await;
}
