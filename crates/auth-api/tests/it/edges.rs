//! Every rule of the interface at the boundary where its answer changes:
//! values just inside and just outside each expiry, period and limit, and
//! the accounting after each kind of earlier event (a release, a success,
//! a logout, an expiry). Time moves only by ageing rows (the service's
//! clock is the database's `now()`).
//!
//! Every setting a test relies on has a value of its own (no two alike),
//! so a bug that reads one setting for another changes an answer here.

use auth_api::config::ApiConfig;
use auth_core::config::{QueuePolicy, RetentionPolicy, SessionLimit, SessionPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use test_support::app::{
    PASSWORD, expect_problem, expect_status, json_uuid, task_ids as ids, test_config,
};
use test_support::{LoggedIn, TestApp};
use uuid::Uuid;

use crate::queue_rules::{act, create};
use crate::retention::{session, task};

/// Sliding idle timeout of a session.
const IDLE_SECS: i64 = 600;
/// Absolute lifetime of a session.
const ABSOLUTE_SECS: i64 = 3000;
/// At most one `last_seen_at` write per this interval.
const TOUCH_SECS: i64 = 45;
/// Active sessions per user.
const CAP: u32 = 3;
/// Failed logins per email within the window.
const LOGIN_LIMIT: u32 = 4;
/// The login limit's window.
const WINDOW_SECS: i64 = 420;
/// Refresh-token reuse grace.
const GRACE_SECS: i64 = 5;
/// A claim's lease.
const LEASE_SECS: i64 = 120;
/// A password reset token's lifetime.
const RESET_SECS: i64 = 900;
/// Retention of ended sessions, and of finished tasks.
const SESSION_RETENTION_DAYS: i64 = 2;
const TASK_RETENTION_DAYS: i64 = 5;

const MICROS: i64 = 1_000_000;

fn secs(n: i64) -> Duration {
    Duration::from_secs(n as u64)
}

/// The settings above over the contract's defaults.
fn config() -> ApiConfig {
    let defaults = test_config();
    ApiConfig {
        sessions: SessionPolicy {
            idle_timeout: secs(IDLE_SECS),
            absolute_lifetime: secs(ABSOLUTE_SECS),
            max_sessions_per_user: SessionLimit::try_from(CAP).unwrap(),
            touch_interval: secs(TOUCH_SECS),
            max_failed_logins: LOGIN_LIMIT,
            failure_window: secs(WINDOW_SECS),
            reuse_grace: secs(GRACE_SECS),
            reset_lifetime: secs(RESET_SECS),
            ..defaults.sessions.clone()
        },
        queue: QueuePolicy {
            lease: secs(LEASE_SECS),
            ..QueuePolicy::default()
        },
        retention: RetentionPolicy {
            sessions: secs(SESSION_RETENTION_DAYS * 24 * 3600),
            tasks: secs(TASK_RETENTION_DAYS * 24 * 3600),
            ..defaults.retention.clone()
        },
        ..defaults
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(config()).await
}

// --- helpers ----------------------------------------------------------------

/// `expr` over the row `id` of `table`, as microseconds (a time: since the
/// epoch; an interval: its length), read afresh at full precision.
async fn micros(app: &TestApp, table: &str, id: Uuid, expr: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT (extract(epoch FROM {expr}) * 1000000)::bigint AS n FROM {table} WHERE id = '{id}'"
        ))
        .await
}

/// A time of an answer, as microseconds since the epoch.
fn json_micros(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_micros()
}

/// Seconds from the database's now to `column` of task `id`.
async fn secs_ahead(app: &TestApp, id: Uuid, column: &str) -> f64 {
    let ahead = app
        .db
        .count(&format!(
            "SELECT (extract(epoch FROM {column} - now()) * 1000000)::bigint AS n FROM tasks WHERE id = '{id}'"
        ))
        .await;
    ahead as f64 / MICROS as f64
}

/// Sets columns of session `id` (SQL assignments against the database's now).
async fn age_session(app: &TestApp, id: Uuid, set: &str) {
    app.db
        .execute(&format!("UPDATE sessions SET {set} WHERE id = '{id}'"))
        .await;
}

/// How many rows of `table` with this id match `condition`.
async fn stored(app: &TestApp, table: &str, id: Uuid, condition: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT count(*) AS n FROM {table} WHERE id = '{id}' AND {condition}"
        ))
        .await
}

/// The user's active sessions, oldest first, read afresh.
async fn active_sessions(app: &TestApp, user: Uuid) -> Vec<Uuid> {
    app.db
        .uuids(&format!(
            "SELECT id FROM sessions WHERE user_id = '{user}' AND revoked_at IS NULL
               AND idle_expires_at > now() AND absolute_expires_at > now()
             ORDER BY created_at"
        ))
        .await
}

async fn assert_invalid_token(res: reqwest::Response) {
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

/// The session ids `GET /v1/sessions` lists for `token`, in order.
async fn listed_sessions(app: &TestApp, token: &str) -> Vec<Uuid> {
    let body = expect_status(app.list_sessions(token).await, StatusCode::OK).await;
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json_uuid(&s["session_id"]))
        .collect()
}

/// A wrong password for `email`, which must be a plain 401 (admitted).
async fn wrong_login(app: &TestApp, email: &str) {
    expect_problem(
        app.login(email, "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

/// The right password for `email`, which must be refused with 429; its
/// `Retry-After` in seconds.
async fn limited_login(app: &TestApp, email: &str) -> u64 {
    let res = app.login(email, PASSWORD).await;
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    retry_after.unwrap_or_else(|| panic!("a 429 carries Retry-After"))
}

/// Fails task `id` (held by `who`) with a retry; the task as answered.
async fn fail_retry(app: &TestApp, who: &LoggedIn, id: Uuid, error: &str) -> Value {
    expect_status(
        act(app, who, id, "fail", json!({"error": error})).await,
        StatusCode::OK,
    )
    .await
}

/// Asserts `not_before` of task `id` is `full` seconds ahead, less at most
/// 20% jitter (and the few milliseconds since it was set).
async fn assert_backoff(app: &TestApp, id: Uuid, full: f64, why: &str) {
    let ahead = secs_ahead(app, id, "not_before").await;
    assert!(
        ahead <= full && ahead >= 0.8 * full - 0.05,
        "{why}: backoff {ahead} s, want {}..={full}",
        0.8 * full
    );
}

/// Moves every pending backoff 1 ms into the past.
async fn backoff_passes(app: &TestApp) {
    app.db
        .execute("UPDATE tasks SET not_before = now() - interval '1 millisecond' WHERE not_before > now()")
        .await;
}

async fn stats(app: &TestApp, who: &LoggedIn) -> Value {
    let stats = expect_status(app.stats(&who.token).await, StatusCode::OK).await;
    assert_eq!(
        stats,
        app.db.shown_task_stats().await,
        "stats match the view"
    );
    stats
}

fn counts(unassigned: i64, assigned: i64, failed: i64, delayed: i64) -> Value {
    json!({"unassigned": unassigned, "assigned": assigned, "completed": 0,
           "failed": failed, "cancelled": 0, "delayed": delayed})
}

async fn listed_tasks(app: &TestApp, who: &LoggedIn, query: &str) -> Value {
    expect_status(app.list_tasks(&who.token, query).await, StatusCode::OK).await
}

// --- sessions -----------------------------------------------------------------

/// At login the idle expiry is the idle timeout from the session's
/// creation and the absolute one the lifetime, each exactly.
#[tokio::test]
async fn login_sets_the_idle_and_the_absolute_expiry_each_from_its_own_setting() {
    let app = spawn().await;
    expect_status(
        app.register("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    let body = expect_status(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    let id = json_uuid(&body["session_id"]);
    assert_eq!(
        micros(&app, "sessions", id, "idle_expires_at - created_at").await,
        IDLE_SECS * MICROS
    );
    assert_eq!(
        micros(&app, "sessions", id, "absolute_expires_at - created_at").await,
        ABSOLUTE_SECS * MICROS
    );
    let idle = micros(&app, "sessions", id, "idle_expires_at").await;
    assert_eq!(json_micros(&body["expires_at"]), idle, "the earlier expiry");
    let token = body["token"].as_str().unwrap();
    let current = expect_status(app.current(token).await, StatusCode::OK).await;
    assert_eq!(json_micros(&current["expires_at"]), idle, "not touched yet");
}

/// A session validates while its idle expiry is ahead (5 s) and not once
/// it passed (10 ms ago); the last use before it slid it by the idle timeout.
#[tokio::test]
async fn a_session_lives_until_its_idle_expiry_and_not_a_moment_after() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    age_session(
        &app,
        ada.session_id,
        "last_seen_at = now() - interval '595 seconds', idle_expires_at = now() + interval '5 seconds'",
    )
    .await;
    let body = expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        micros(
            &app,
            "sessions",
            ada.session_id,
            "idle_expires_at - last_seen_at"
        )
        .await,
        IDLE_SECS * MICROS,
        "the use slid the idle expiry"
    );
    assert_eq!(
        json_micros(&body["expires_at"]),
        micros(&app, "sessions", ada.session_id, "idle_expires_at").await
    );
    age_session(
        &app,
        ada.session_id,
        "last_seen_at = now() - interval '600.01 seconds', idle_expires_at = now() - interval '10 milliseconds'",
    )
    .await;
    assert_invalid_token(app.current(&ada.token).await).await;
    assert_invalid_token(app.refresh(&ada.token).await).await;
    assert_eq!(
        stored(&app, "sessions", ada.session_id, "idle_expires_at < now()").await,
        1,
        "a validation of an expired session does not revive it"
    );
}

/// Within the touch interval (40 s since the last write) a use writes
/// nothing; past it (47 s) it writes `last_seen_at` and slides the idle
/// expiry to exactly the idle timeout from then.
#[tokio::test]
async fn a_use_slides_the_idle_expiry_only_once_the_touch_interval_passed() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ada.session_id;
    age_session(
        &app,
        id,
        "last_seen_at = now() - interval '40 seconds', idle_expires_at = now() + interval '560 seconds'",
    )
    .await;
    let (seen, idle) = (
        micros(&app, "sessions", id, "last_seen_at").await,
        micros(&app, "sessions", id, "idle_expires_at").await,
    );
    let body = expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        (
            micros(&app, "sessions", id, "last_seen_at").await,
            micros(&app, "sessions", id, "idle_expires_at").await
        ),
        (seen, idle),
        "no write within the touch interval"
    );
    assert_eq!(json_micros(&body["expires_at"]), idle);

    age_session(
        &app,
        id,
        "last_seen_at = now() - interval '47 seconds', idle_expires_at = now() + interval '553 seconds'",
    )
    .await;
    let seen = micros(&app, "sessions", id, "last_seen_at").await;
    let body = expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert!(
        micros(&app, "sessions", id, "last_seen_at").await > seen + 46 * MICROS,
        "a due touch writes last_seen_at"
    );
    assert_eq!(
        micros(&app, "sessions", id, "idle_expires_at - last_seen_at").await,
        IDLE_SECS * MICROS,
        "slid by the idle timeout, not by another setting"
    );
    assert_eq!(
        json_micros(&body["expires_at"]),
        micros(&app, "sessions", id, "idle_expires_at").await
    );
}

/// Rule 4: refreshes (and the uses between them) never move the absolute
/// expiry, not even by a microsecond.
#[tokio::test]
async fn refreshes_keep_the_absolute_expiry_to_the_microsecond() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ada.session_id;
    let absolute = micros(&app, "sessions", id, "absolute_expires_at").await;
    assert_eq!(
        absolute - micros(&app, "sessions", id, "created_at").await,
        ABSOLUTE_SECS * MICROS
    );
    let mut token = ada.token.clone();
    for round in 0..4 {
        // Some use in between, with a touch due.
        age_session(
            &app,
            id,
            "last_seen_at = last_seen_at - interval '100 seconds', idle_expires_at = idle_expires_at - interval '100 seconds'",
        )
        .await;
        expect_status(app.current(&token).await, StatusCode::OK).await;
        let body = expect_status(app.refresh(&token).await, StatusCode::CREATED).await;
        assert_eq!(json_uuid(&body["session_id"]), id);
        token = body["token"].as_str().unwrap().to_owned();
        assert_eq!(
            micros(&app, "sessions", id, "absolute_expires_at").await,
            absolute,
            "refresh {round} moved the absolute expiry"
        );
        assert_eq!(
            micros(&app, "sessions", id, "idle_expires_at - last_seen_at").await,
            IDLE_SECS * MICROS,
            "refresh {round} slid the idle expiry by the idle timeout"
        );
        assert_eq!(
            json_micros(&body["expires_at"]),
            micros(&app, "sessions", id, "idle_expires_at").await
        );
    }
    let current = expect_status(app.current(&token).await, StatusCode::OK).await;
    assert_eq!(json_uuid(&current["session_id"]), id);
    assert_eq!(
        micros(&app, "sessions", id, "absolute_expires_at").await,
        absolute
    );
}

/// Rule 5: a session whose absolute expiry (100 s ahead) is nearer than the
/// idle timeout validates, is touched and refreshes; the idle expiry stops
/// at the absolute one and every answer's `expires_at` is the absolute
/// expiry. Once that passes (10 ms ago), the session is over.
#[tokio::test]
async fn near_its_absolute_expiry_a_session_is_touched_and_refreshed_up_to_it() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ada.session_id;
    age_session(
        &app,
        id,
        "created_at = now() - interval '2900 seconds', last_seen_at = now() - interval '50 seconds',
         absolute_expires_at = now() + interval '100 seconds', idle_expires_at = now() + interval '90 seconds'",
    )
    .await;
    let absolute = micros(&app, "sessions", id, "absolute_expires_at").await;
    let seen = micros(&app, "sessions", id, "last_seen_at").await;

    let body = expect_status(app.current(&ada.token).await, StatusCode::OK).await;
    assert!(
        micros(&app, "sessions", id, "last_seen_at").await > seen,
        "touched"
    );
    assert_eq!(
        micros(&app, "sessions", id, "idle_expires_at").await,
        absolute,
        "the idle expiry stops at the absolute one"
    );
    assert_eq!(json_micros(&body["expires_at"]), absolute);

    let body = expect_status(app.refresh(&ada.token).await, StatusCode::CREATED).await;
    assert_eq!(json_micros(&body["expires_at"]), absolute);
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        micros(&app, "sessions", id, "absolute_expires_at").await,
        absolute
    );
    assert_eq!(
        micros(&app, "sessions", id, "idle_expires_at").await,
        absolute
    );
    // Touched again (due), still capped.
    age_session(&app, id, "last_seen_at = now() - interval '50 seconds'").await;
    let body = expect_status(app.current(&token).await, StatusCode::OK).await;
    assert_eq!(json_micros(&body["expires_at"]), absolute);
    let listed = expect_status(app.list_sessions(&token).await, StatusCode::OK).await;
    assert_eq!(json_micros(&listed["sessions"][0]["expires_at"]), absolute);

    age_session(
        &app,
        id,
        "absolute_expires_at = now() - interval '10 milliseconds', idle_expires_at = now() - interval '10 milliseconds'",
    )
    .await;
    assert_invalid_token(app.current(&token).await).await;
    assert_invalid_token(app.refresh(&token).await).await;
}

/// Rule 5 at login: with a lifetime (500 s) shorter than the idle timeout
/// (1300 s), a login's idle expiry is its absolute one.
#[tokio::test]
async fn a_lifetime_shorter_than_the_idle_timeout_caps_the_first_expiry() {
    let mut config = config();
    config.sessions.idle_timeout = secs(1300);
    config.sessions.absolute_lifetime = secs(500);
    let app = TestApp::spawn_with(config).await;
    expect_status(
        app.register("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    let body = expect_status(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    let id = json_uuid(&body["session_id"]);
    let absolute = micros(&app, "sessions", id, "absolute_expires_at").await;
    assert_eq!(
        absolute - micros(&app, "sessions", id, "created_at").await,
        500 * MICROS
    );
    assert_eq!(
        micros(&app, "sessions", id, "idle_expires_at").await,
        absolute
    );
    assert_eq!(json_micros(&body["expires_at"]), absolute);
    let token = body["token"].as_str().unwrap();
    age_session(&app, id, "last_seen_at = now() - interval '46 seconds'").await;
    let body = expect_status(app.current(token).await, StatusCode::OK).await;
    assert_eq!(json_micros(&body["expires_at"]), absolute);
}

/// Rule 6: sessions whose idle expiry (10 ms ago) or absolute expiry
/// (10 ms ago) passed are not listed, cannot be revoked (404) and are not
/// counted by log-out-everywhere; a session 3 s from its idle expiry is.
#[tokio::test]
async fn expired_sessions_are_not_listed_revocable_or_counted() {
    let app = spawn().await;
    let current = app.signup("ada@example.com").await;
    let idle_gone = app.login_ok("ada@example.com").await;
    let absolute_gone = app.login_ok("ada@example.com").await;
    age_session(
        &app,
        current.session_id,
        "idle_expires_at = now() + interval '3 seconds'",
    )
    .await;
    age_session(
        &app,
        idle_gone.session_id,
        "last_seen_at = now() - interval '600.01 seconds', idle_expires_at = now() - interval '10 milliseconds'",
    )
    .await;
    age_session(
        &app,
        absolute_gone.session_id,
        "created_at = now() - interval '3000.01 seconds',
         absolute_expires_at = now() - interval '10 milliseconds', idle_expires_at = now() - interval '10 milliseconds'",
    )
    .await;
    // Listing a session just before its expiry does not touch it: only the
    // validation of the list call's own token does, and it is not due.
    assert_eq!(
        listed_sessions(&app, &current.token).await,
        vec![current.session_id]
    );
    for gone in [&idle_gone, &absolute_gone] {
        expect_problem(
            app.revoke_session(&current.token, &gone.session_id.to_string())
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let body = expect_status(app.revoke_all(&current.token).await, StatusCode::OK).await;
    assert_eq!(body["revoked"], 1, "only the active session");
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
}

/// The session cap (3) at cap-1, cap and cap+1 logins, and its accounting
/// after a logout and after an expiry: only active sessions count, and the
/// one evicted is the oldest active one.
#[tokio::test]
async fn the_session_cap_counts_only_active_sessions_and_evicts_the_oldest() {
    let app = spawn().await;
    let email = "ada@example.com";
    let first = app.signup(email).await;
    let user = first.user_id;
    let second = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![first.session_id, second.session_id],
        "cap - 1"
    );
    let third = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![first.session_id, second.session_id, third.session_id],
        "at the cap, nothing is evicted"
    );
    let fourth = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![second.session_id, third.session_id, fourth.session_id],
        "cap + 1: the oldest goes"
    );
    assert_invalid_token(app.current(&first.token).await).await;
    assert_eq!(
        stored(&app, "sessions", first.session_id, "revoked_at IS NOT NULL").await,
        1
    );

    // After a logout: two active, so the next login evicts nobody.
    expect_status(app.logout(&second.token).await, StatusCode::NO_CONTENT).await;
    let fifth = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![third.session_id, fourth.session_id, fifth.session_id],
        "a logged-out session does not count"
    );
    // After an expiry: the expired one does not count either.
    age_session(
        &app,
        third.session_id,
        "idle_expires_at = now() - interval '10 milliseconds'",
    )
    .await;
    let sixth = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![fourth.session_id, fifth.session_id, sixth.session_id],
        "an expired session does not count"
    );
    let seventh = app.login_ok(email).await;
    assert_eq!(
        active_sessions(&app, user).await,
        vec![fifth.session_id, sixth.session_id, seventh.session_id]
    );
    for live in [&fifth, &sixth, &seventh] {
        expect_status(app.current(&live.token).await, StatusCode::OK).await;
    }
    assert_invalid_token(app.current(&fourth.token).await).await;
}

/// An attempt still pending is a check in flight for as long as its login
/// could still report (its deadline + 30 s): the email is busy, and a login
/// waits for it, then gets 503 when its own deadline passes. Pending longer,
/// its login died before reporting: it counts as a failure.
#[tokio::test]
async fn a_pending_attempt_is_in_flight_until_its_login_could_no_longer_report() {
    // A 3 s login deadline: an attempt pending 33 s is abandoned. A login
    // waiting on one pending 28.5 s sees it in flight until its own deadline
    // with 1.5 s to spare; a rule of 30 s without the deadline would see it
    // abandoned half-way through the wait.
    let app = TestApp::spawn_with(ApiConfig {
        hash_pool: auth_core::config::HashPoolConfig {
            wait_deadline: Duration::from_secs(3),
            ..config().hash_pool
        },
        ..config()
    })
    .await;
    let email = "pending@example.com";
    expect_status(app.register(email, PASSWORD).await, StatusCode::CREATED).await;
    let attempt = |outcome: &str, ago: &str| {
        format!(
            "INSERT INTO login_attempts (email, attempted_at, outcome)
             VALUES ('{email}', now() - interval '{ago}', '{outcome}')"
        )
    };
    for _ in 0..LOGIN_LIMIT - 1 {
        app.db.execute(&attempt("failed", "1 minute")).await;
    }
    // Pending 28.5 s: still in flight. The right password waits, then 503.
    app.db.execute(&attempt("pending", "28.5 seconds")).await;
    expect_problem(
        app.login(email, PASSWORD).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    // Pending 33.5 s: abandoned, a failure; with it the limit is reached.
    app.db
        .execute("UPDATE login_attempts SET attempted_at = now() - interval '33.5 seconds' WHERE outcome = 'pending'")
        .await;
    expect_problem(
        app.login(email, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    // One failure fewer: the abandoned attempt makes limit-1, and the right
    // password is checked and clears the count.
    app.db
        .execute(&format!(
            "DELETE FROM login_attempts WHERE id = (SELECT min(id) FROM login_attempts WHERE email = '{email}')"
        ))
        .await;
    expect_status(app.login(email, PASSWORD).await, StatusCode::CREATED).await;
}

/// A success clears the failures reported before it, not those admitted
/// before it and reported after it (a guess checked while its owner logged
/// in still counts): the order is the reports', not the admissions'.
#[tokio::test]
async fn a_success_clears_the_failures_reported_before_it_not_those_reported_after() {
    let app = spawn().await;
    let email = "order@example.com";
    expect_status(app.register(email, PASSWORD).await, StatusCode::CREATED).await;
    // Admitted first, reported after the success; one reported before it.
    let row = |outcome: &str, settled: &str| {
        format!(
            "INSERT INTO login_attempts (email, attempted_at, outcome, settled_at)
             VALUES ('{email}', now() - interval '1 minute', '{outcome}', now() - interval '{settled}')"
        )
    };
    app.db.execute(&row("failed", "50 seconds")).await;
    for _ in 0..LOGIN_LIMIT - 1 {
        app.db.execute(&row("failed", "10 seconds")).await;
    }
    app.db.execute(&row("succeeded", "30 seconds")).await;
    // limit-1 failures since the success: one more guess is checked...
    expect_problem(
        app.login(email, "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // ...and then the email is limited, the right password too.
    expect_problem(
        app.login(email, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
}

/// The login limit (4 in 420 s): limit-1 failures, then the right password
/// works; limit failures, then even the right one gets 429 with the
/// seconds until the oldest counted failure leaves the window.
#[tokio::test]
async fn the_login_limit_admits_until_the_limit_and_says_when_it_lifts() {
    let app = spawn().await;
    let below = "below@example.com";
    app.register(below, PASSWORD).await;
    for _ in 1..LOGIN_LIMIT {
        wrong_login(&app, below).await;
    }
    app.login_ok(below).await;

    let at = "at@example.com";
    app.register(at, PASSWORD).await;
    for _ in 0..LOGIN_LIMIT {
        wrong_login(&app, at).await;
    }
    let retry = limited_login(&app, at).await;
    assert!(
        (WINDOW_SECS as u64 - 2..=WINDOW_SECS as u64).contains(&retry),
        "Retry-After {retry}, want about the window"
    );
    let recorded = format!("SELECT count(*) AS n FROM login_attempts WHERE email = '{at}'");
    assert_eq!(
        app.db.count(&recorded).await,
        i64::from(LOGIN_LIMIT),
        "a refused login records nothing"
    );
    // The failures are 400 s old: the limit lifts in 20 s.
    app.db
        .execute(&format!(
            "UPDATE login_attempts SET attempted_at = now() - interval '400 seconds' WHERE email = '{at}'"
        ))
        .await;
    let retry = limited_login(&app, at).await;
    assert!((18..=20).contains(&retry), "Retry-After {retry}, want 20");
    // Unknown emails alike.
    let ghost = "ghost@example.com";
    for _ in 0..LOGIN_LIMIT {
        wrong_login(&app, ghost).await;
    }
    limited_login(&app, ghost).await;
}

/// The window's edge: the oldest of four failures 415 s ago still counts
/// (the limit lifts in 5 s); 421 s ago it does not, and the right
/// password works.
#[tokio::test]
async fn a_failure_counts_inside_the_window_and_not_just_outside_it() {
    let app = spawn().await;
    let email = "ada@example.com";
    app.register(email, PASSWORD).await;
    for _ in 0..LOGIN_LIMIT {
        wrong_login(&app, email).await;
    }
    let oldest = format!("(SELECT min(id) FROM login_attempts WHERE email = '{email}')");
    app.db
        .execute(&format!(
            "UPDATE login_attempts SET attempted_at = now() - interval '415 seconds' WHERE id = {oldest}"
        ))
        .await;
    let retry = limited_login(&app, email).await;
    assert!((3..=5).contains(&retry), "Retry-After {retry}, want 5");
    app.db
        .execute(&format!(
            "UPDATE login_attempts SET attempted_at = now() - interval '421 seconds' WHERE id = {oldest}"
        ))
        .await;
    app.login_ok(email).await;
}

/// Rule 8: failures count from the email's LATEST success. Fail, fail,
/// succeed, limit-1 failures, succeed: then limit-1 failures are still
/// checked (401), the limit-th too, and only then is the email limited.
#[tokio::test]
async fn failures_count_from_the_latest_success() {
    let app = spawn().await;
    let email = "ada@example.com";
    app.register(email, PASSWORD).await;
    wrong_login(&app, email).await;
    wrong_login(&app, email).await;
    app.login_ok(email).await;
    for _ in 1..LOGIN_LIMIT {
        wrong_login(&app, email).await;
    }
    app.login_ok(email).await;
    for _ in 1..LOGIN_LIMIT {
        wrong_login(&app, email).await;
    }
    // The limit-th failure since the last success is still checked...
    wrong_login(&app, email).await;
    // ...and then the email is limited.
    limited_login(&app, email).await;
}

/// Refresh-token reuse: a rotated-away token presented 2 s after its
/// rotation (inside the 5 s grace, with 3 s to spare for a slow machine) is
/// a plain 401 and the session lives; presented 6 s after it, the session
/// is revoked (the default grace, 10 s, would keep it).
#[tokio::test]
async fn a_rotated_token_inside_the_grace_is_refused_and_just_past_it_revokes() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = expect_status(app.refresh(&ada.token).await, StatusCode::CREATED).await;
    let new = body["token"].as_str().unwrap().to_owned();
    app.db
        .execute("UPDATE rotated_tokens SET rotated_at = now() - interval '2 seconds'")
        .await;
    assert_invalid_token(app.current(&ada.token).await).await;
    expect_status(app.current(&new).await, StatusCode::OK).await;
    assert_eq!(
        stored(&app, "sessions", ada.session_id, "revoked_at IS NULL").await,
        1,
        "inside the grace the session is untouched"
    );
    app.db
        .execute("UPDATE rotated_tokens SET rotated_at = now() - interval '6 seconds'")
        .await;
    assert_invalid_token(app.current(&ada.token).await).await;
    assert_eq!(
        stored(&app, "sessions", ada.session_id, "revoked_at IS NOT NULL").await,
        1,
        "past the grace the session is revoked"
    );
    assert_invalid_token(app.current(&new).await).await;
}

// --- tasks --------------------------------------------------------------------

/// Rule 1: a release hands its attempt back, also to the backoff and to
/// the attempts left: claim, release, claim, fail counts ONE attempt.
#[tokio::test]
async fn a_retry_after_a_release_counts_only_the_claims_not_handed_back() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "flaky", "max_attempts": 3}])).await)[0];
    assert_eq!(ids(&app.claim_ok(&ada.token, 1).await), vec![id]);
    app.finish_ok(&ada.token, "release", id).await;
    assert_eq!(app.claim_ok(&ada.token, 1).await["tasks"][0]["attempt"], 2);
    let task = fail_retry(&app, &ada, id, "boom 1").await;
    assert_eq!(
        (task["status"].as_str(), task["attempt"].as_i64()),
        (Some("unassigned"), Some(2))
    );
    assert_backoff(&app, id, 1.0, "one counted attempt").await;
    assert_eq!(stored(&app, "tasks", id, "released = 1").await, 1);

    backoff_passes(&app).await;
    assert_eq!(app.claim_ok(&ada.token, 1).await["tasks"][0]["attempt"], 3);
    let task = fail_retry(&app, &ada, id, "boom 2").await;
    assert_eq!(
        task["status"], "unassigned",
        "two counted attempts of three: retried"
    );
    assert_backoff(&app, id, 2.0, "two counted attempts").await;

    backoff_passes(&app).await;
    assert_eq!(app.claim_ok(&ada.token, 1).await["tasks"][0]["attempt"], 4);
    let task = fail_retry(&app, &ada, id, "boom 3").await;
    assert_eq!(task["status"], "failed", "three counted attempts of three");
    assert_eq!(app.claim_ok(&ada.token, 1).await["claimed"], 0);
}

/// Rule 2: a claim that takes only some of the claimable tasks takes the
/// first in claim order (priority descending, then oldest), across batches,
/// and the next claims the next ones.
#[tokio::test]
async fn a_partial_claim_takes_exactly_the_first_tasks_in_claim_order() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let first = ids(&create(
        &app,
        &ada,
        json!([{"title": "a", "priority": 0}, {"title": "b", "priority": 5},
               {"title": "c", "priority": -3}]),
    )
    .await);
    let second = ids(&create(
        &app,
        &ada,
        json!([{"title": "d", "priority": 5}, {"title": "e", "priority": 10},
               {"title": "f", "priority": 0},
               {"title": "held back", "priority": 1000, "schedulable": false},
               {"title": "later", "priority": 999, "not_before": "2999-01-01T00:00:00Z"}]),
    )
    .await);
    let [a, b, c] = [first[0], first[1], first[2]];
    let [d, e, f] = [second[0], second[1], second[2]];
    // Each claim splits a tie: the older of two equal priorities first.
    assert_eq!(ids(&app.claim_ok(&ada.token, 2).await), vec![e, b]);
    assert_eq!(ids(&app.claim_ok(&ada.token, 2).await), vec![d, a]);
    let last = app.claim_ok(&ada.token, 3).await;
    assert_eq!(
        (ids(&last), last["claimed"].as_i64()),
        (vec![f, c], Some(2))
    );
}

/// Rule 3: a retried task backing off is unassigned AND delayed (also 3 s
/// before its `not_before`); once the backoff passed (1 ms ago) it is no
/// longer delayed, though no claim has promoted it yet.
#[tokio::test]
async fn stats_count_a_retried_task_as_delayed_only_while_it_backs_off() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "flaky"}])).await)[0];
    app.claim_ok(&ada.token, 1).await;
    assert_eq!(stats(&app, &ada).await, counts(0, 1, 0, 0));
    fail_retry(&app, &ada, id, "boom").await;
    assert_eq!(stats(&app, &ada).await, counts(1, 0, 0, 1));
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() + interval '3 seconds' WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(stats(&app, &ada).await, counts(1, 0, 0, 1), "3 s ahead");
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() - interval '1 millisecond' WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(
        stored(&app, "tasks", id, "delayed").await,
        1,
        "fixture: not promoted yet"
    );
    assert_eq!(
        stats(&app, &ada).await,
        counts(1, 0, 0, 0),
        "the backoff passed"
    );
    assert_eq!(ids(&app.claim_ok(&ada.token, 1).await), vec![id]);
    assert_eq!(stats(&app, &ada).await, counts(0, 1, 0, 0));
}

/// `not_before` 3 s ahead: not claimable (and delayed); 1 ms ago:
/// claimable. A `not_before` already past at creation never delays.
#[tokio::test]
async fn a_task_is_claimable_once_its_not_before_passed_and_not_before() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let made = ids(&create(
        &app,
        &ada,
        json!([{"title": "later", "priority": 7, "not_before": "2999-01-01T00:00:00Z"},
               {"title": "past", "not_before": "2000-01-01T00:00:00Z"}]),
    )
    .await);
    let (later, past) = (made[0], made[1]);
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() + interval '3 seconds' WHERE id = '{later}'"
        ))
        .await;
    assert_eq!(stats(&app, &ada).await["delayed"], 1);
    assert_eq!(ids(&app.claim_ok(&ada.token, 2).await), vec![past]);
    assert_eq!(app.claim_ok(&ada.token, 2).await["claimed"], 0, "3 s ahead");
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() - interval '1 millisecond' WHERE id = '{later}'"
        ))
        .await;
    assert_eq!(ids(&app.claim_ok(&ada.token, 2).await), vec![later]);
}

/// A claim's lease is the configured lease; 5 s before it ends the task is
/// held (not claimable, listed and counted assigned), 1 ms after it the
/// task shows unassigned and another worker claims it.
#[tokio::test]
async fn a_lease_holds_until_it_ends_and_frees_the_task_just_after() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "job"}])).await)[0];
    let claimed = app.claim_ok(&ada.token, 1).await;
    assert_eq!(
        micros(&app, "tasks", id, "lease_expires_at - assigned_at").await,
        LEASE_SECS * MICROS
    );
    assert_eq!(
        json_micros(&claimed["tasks"][0]["lease_expires_at"]),
        micros(&app, "tasks", id, "lease_expires_at").await
    );
    let lease_ends =
        |when: &str| format!("UPDATE tasks SET lease_expires_at = now() {when} WHERE id = '{id}'");
    app.db.execute(&lease_ends("+ interval '5 seconds'")).await;
    assert_eq!(
        app.claim_ok(&bob.token, 1).await["claimed"],
        0,
        "still held"
    );
    let held = listed_tasks(&app, &bob, "?status=assigned").await;
    assert_eq!(ids(&held), vec![id]);
    assert_eq!(json_uuid(&held["tasks"][0]["assigned_to"]), ada.user_id);
    assert_eq!(stats(&app, &ada).await, counts(0, 1, 0, 0));

    app.db
        .execute(&lease_ends("- interval '1 millisecond'"))
        .await;
    let free = listed_tasks(&app, &bob, "?status=unassigned").await;
    assert_eq!(ids(&free), vec![id]);
    assert!(free["tasks"][0]["assigned_to"].is_null());
    assert_eq!(stats(&app, &ada).await, counts(1, 0, 0, 0));
    expect_problem(
        app.complete(&ada.token, &id.to_string()).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    let taken = app.claim_ok(&bob.token, 1).await;
    assert_eq!(ids(&taken), vec![id]);
    assert_eq!(taken["tasks"][0]["attempt"], 2);
}

/// max_attempts 3: a task is claimable at counted attempt 2 (max-1) and a
/// lapse there puts it back; at 3 (max) a lapse shows it failed and it is
/// never claimed again. Released claims do not count (attempt 3 with one
/// release is claimable; its claim is then the last).
#[tokio::test]
async fn a_task_is_claimable_while_its_counted_attempts_are_below_max_attempts() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let made = ids(&create(
        &app,
        &ada,
        json!([{"title": "lapsing", "max_attempts": 3}, {"title": "released once", "max_attempts": 3}]),
    )
    .await);
    let (lapsing, released) = (made[0], made[1]);
    app.db
        .execute(&format!(
            "UPDATE tasks SET attempt = 1 WHERE id = '{lapsing}';
             UPDATE tasks SET attempt = 3, released = 1 WHERE id = '{released}'"
        ))
        .await;
    let lapse = format!(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 millisecond' WHERE id = '{lapsing}'"
    );
    let claimed = app.claim_ok(&ada.token, 1).await;
    assert_eq!(ids(&claimed), vec![lapsing]);
    assert_eq!(claimed["tasks"][0]["attempt"], 2);
    app.db.execute(&lapse).await;
    assert_eq!(
        ids(&listed_tasks(&app, &ada, "?status=unassigned").await),
        made,
        "attempt 2 of 3 lapsed: back in the queue"
    );
    let claimed = app.claim_ok(&ada.token, 1).await;
    assert_eq!(ids(&claimed), vec![lapsing]);
    assert_eq!(claimed["tasks"][0]["attempt"], 3);
    app.db.execute(&lapse).await;
    let failed = listed_tasks(&app, &ada, "?status=failed").await;
    assert_eq!(ids(&failed), vec![lapsing], "attempt 3 of 3 lapsed");
    assert_eq!(failed["tasks"][0]["last_error"], "lease expired");

    let claimed = app.claim_ok(&ada.token, 5).await;
    assert_eq!(
        ids(&claimed),
        vec![released],
        "the spent task is never claimed again; the released one is"
    );
    assert_eq!(claimed["tasks"][0]["attempt"], 4);
    let task = fail_retry(&app, &ada, released, "last").await;
    assert_eq!(
        task["status"], "failed",
        "its claim was the last counted attempt"
    );
    assert_eq!(app.claim_ok(&ada.token, 5).await["claimed"], 0);
    assert_eq!(stats(&app, &ada).await, counts(0, 0, 2, 0));
}

/// The backoff of counted attempt n is 2^(n-1) s less at most 20%: attempt
/// 12 backs off 2048 s, attempt 13 (4096 s) is capped at one hour; ten
/// tasks of each, so the jitter's range is exercised.
#[tokio::test]
async fn the_backoff_stays_within_its_jitter_and_stops_at_an_hour() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let tasks: Vec<Value> = (0..20)
        .map(|i| json!({"title": format!("t{i}"), "max_attempts": 100}))
        .collect();
    let made = ids(&create(&app, &ada, json!(tasks)).await);
    app.db
        .execute(
            "UPDATE tasks SET attempt = CASE WHEN seq <= (SELECT min(seq) + 9 FROM tasks) THEN 11 ELSE 12 END",
        )
        .await;
    assert_eq!(app.claim_ok(&ada.token, 30).await["claimed"], 20);
    for (i, id) in made.into_iter().enumerate() {
        fail_retry(&app, &ada, id, "x").await;
        let full = if i < 10 { 2048.0 } else { 3600.0 };
        assert_backoff(&app, id, full, &format!("task {i}")).await;
    }
}

/// A long poll waits at most the service's cap whatever its `wait_ms`
/// (30000, the most allowed); a wait under the cap (300 ms) is its own;
/// `wait_ms` 0 does not wait (answers within a second). The cap here (3 s) leaves seconds between the
/// answers, so a slow machine cannot blur them.
#[tokio::test]
async fn a_long_poll_waits_its_own_wait_at_most_the_services_cap() {
    const CAP_MS: u64 = 3_000;
    let mut config = config();
    config.queue.max_wait = Duration::from_millis(CAP_MS);
    let app = TestApp::spawn_with(config).await;
    let ada = app.signup("ada@example.com").await;
    for (wait_ms, at_least, less_than) in
        [(30_000, CAP_MS, 20_000), (300, 300, CAP_MS), (0, 0, 1_000)]
    {
        let started = Instant::now();
        let body = expect_status(
            app.claim(&ada.token, &json!({"count": 1, "wait_ms": wait_ms}))
                .await,
            StatusCode::OK,
        )
        .await;
        let took = started.elapsed();
        assert_eq!(body["claimed"], 0);
        assert!(
            took >= Duration::from_millis(at_least) && took < Duration::from_millis(less_than),
            "wait_ms {wait_ms}: answered after {took:?}, want {at_least}..{less_than} ms"
        );
    }
    expect_problem(
        app.claim(&ada.token, &json!({"count": 1, "wait_ms": 30_001}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

/// Rule 9: a long poll parked on an empty queue gets a task another worker
/// releases, woken by the release itself: the instance's re-check is an
/// hour away, so nothing else can wake the waiter before its wait ends.
#[tokio::test]
async fn a_long_poll_is_woken_by_a_release_without_any_re_check() {
    let mut config = config();
    config.queue.max_wait = Duration::from_secs(30);
    config.queue.recheck = Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let id = ids(&create(&app, &bob, json!([{"title": "held"}])).await)[0];
    assert_eq!(ids(&app.claim_ok(&bob.token, 1).await), vec![id]);
    let wakeups = app.state.queue.wakeups();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !wakeups.listening() {
        assert!(Instant::now() < deadline, "the listener never connected");
        tokio::task::yield_now().await;
    }
    let waiter = app.spawn_claim(&ada.token, json!({"count": 1, "wait_ms": 20_000}));
    app.wait_for_claim_waiters(1).await;
    app.finish_ok(&bob.token, "release", id).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("a long poll answers by its wait")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), vec![id], "the release did not wake the waiter");
}

/// Task listings: 100 by default, `limit` 1 and 1000 (the most) are
/// exactly that many, oldest first; 0 and 1001 are refused.
#[tokio::test]
async fn the_task_list_shows_a_hundred_by_default_and_at_most_a_thousand() {
    let app = spawn().await;
    let ada = app.signup("ada@example.com").await;
    let mut made = app.create_n_tasks(&ada.token, "bulk", 1000).await;
    made.extend(app.create_n_tasks(&ada.token, "more", 1).await);
    for (query, n) in [("", 100), ("?limit=1", 1), ("?limit=1000", 1000)] {
        let listed = listed_tasks(&app, &ada, query).await;
        assert_eq!(ids(&listed), made[..n], "{query:?}");
    }
    for bad in ["?limit=0", "?limit=1001"] {
        expect_problem(
            app.list_tasks(&ada.token, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
}

// --- retention ----------------------------------------------------------------

/// Rule 7: sessions (2 days) and finished tasks (5 days) are each kept or
/// deleted by their own period, a minute on either side of it; a row 3
/// days old is past one period and inside the other. Unfinished tasks are
/// never deleted; login attempts go once they leave the window (420 s).
#[tokio::test]
async fn each_table_is_purged_by_its_own_retention_period() {
    let app = spawn().await;
    let user = app.signup("keeper@example.com").await;
    let uid = user.user_id;
    let mut kept = vec![user.session_id];
    let mut gone = Vec::new();
    // Sessions: 2 days.
    let (just_inside, just_past) = (
        "interval '2 days' - interval '1 minute'",
        "interval '2 days' + interval '1 minute'",
    );
    let between = "interval '3 days'";
    kept.push(session(&app, uid, Some(just_inside), None).await);
    kept.push(session(&app, uid, None, Some(just_inside)).await);
    gone.push(session(&app, uid, Some(just_past), None).await);
    gone.push(session(&app, uid, None, Some(just_past)).await);
    gone.push(session(&app, uid, Some(between), None).await);
    gone.push(session(&app, uid, None, Some(between)).await);
    // Tasks: 5 days.
    let (just_inside, just_past) = (
        "interval '5 days' - interval '1 minute'",
        "interval '5 days' + interval '1 minute'",
    );
    for status in ["completed", "failed", "cancelled"] {
        kept.push(task(&app, status, Some(between)).await);
        kept.push(task(&app, status, Some(just_inside)).await);
        gone.push(task(&app, status, Some(just_past)).await);
    }
    kept.push(task(&app, "unassigned", None).await);
    kept.push(task(&app, "assigned", None).await);
    app.db
        .execute(
            "INSERT INTO login_attempts (email, attempted_at, outcome) VALUES
               ('a@example.com', now() - interval '421 seconds', 'failed'),
               ('a@example.com', now() - interval '415 seconds', 'failed')",
        )
        .await;

    app.state.cleanup.run().await.unwrap();
    let present = |list: &[Uuid]| {
        let ids = list
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "SELECT count(*) AS n FROM (SELECT id FROM sessions UNION ALL SELECT id FROM tasks) AS r
              WHERE id IN ({ids})"
        )
    };
    assert_eq!(
        app.db.count(&present(&gone)).await,
        0,
        "a row past its period stayed"
    );
    assert_eq!(
        app.db.count(&present(&kept)).await,
        kept.len() as i64,
        "a row inside its period went"
    );
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) AS n FROM login_attempts
                  WHERE email = 'a@example.com' AND attempted_at > now() - interval '416 seconds'"
            )
            .await,
        1,
        "the attempt inside the window stays"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM login_attempts WHERE email = 'a@example.com'")
            .await,
        1,
        "the attempt outside the window goes"
    );
    expect_status(app.current(&user.token).await, StatusCode::OK).await;
}

// --- password resets ------------------------------------------------------------

/// A reset token is issued for exactly its lifetime; it works while its
/// expiry is ahead (5 s) and not once it passed (10 ms ago).
#[tokio::test]
async fn a_reset_token_works_until_its_expiry_and_not_a_moment_after() {
    let app = spawn().await;
    let root = app
        .signup_as("root@example.com", &[auth_core::domain::Role::Admin])
        .await;
    let ada = app.signup("ada@example.com").await;
    let issue = async || {
        let path = format!("/v1/users/{}/password-reset", ada.user_id);
        let issued = app.post_json(&path, Some(&root.token), &json!({})).await;
        let body = expect_status(issued, StatusCode::CREATED).await;
        body["reset_token"].as_str().unwrap().to_owned()
    };
    let reset = async |token: &str| {
        let body = json!({"reset_token": token, "new_password": "a new password 123"});
        app.post_json("/v1/password-resets", None, &body).await
    };
    let age = async |expiry: &str| {
        let set = format!(
            "UPDATE password_resets SET expires_at = {expiry} WHERE user_id = '{}'",
            ada.user_id
        );
        app.db.execute(&set).await;
    };
    let first = issue().await;
    let lifetime = app
        .db
        .count(&format!(
            "SELECT (extract(epoch FROM expires_at - created_at) * 1000000)::bigint AS n
             FROM password_resets WHERE user_id = '{}'",
            ada.user_id
        ))
        .await;
    assert_eq!(lifetime, RESET_SECS * MICROS);
    age("now() - interval '10 milliseconds'").await;
    expect_problem(
        reset(&first).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let second = issue().await;
    age("now() + interval '5 seconds'").await;
    assert_eq!(reset(&second).await.status(), StatusCode::NO_CONTENT);
}
