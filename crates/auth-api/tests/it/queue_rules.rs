//! The queue's v1.1 rules, one request at a time: priorities, delays,
//! attempts, idempotency keys, heartbeats, failures with backoff, cancel,
//! long-poll claims. Every state is also read afresh from the database.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::app::{expect_problem, expect_status, json_uuid, task_ids as ids};
use test_support::{LoggedIn, TestApp};
use uuid::Uuid;

pub(crate) async fn create(app: &TestApp, who: &LoggedIn, tasks: Value) -> Value {
    let res = app
        .create_tasks(&who.token, &json!({ "tasks": tasks }))
        .await;
    expect_status(res, StatusCode::CREATED).await
}

pub(crate) async fn act(
    app: &TestApp,
    who: &LoggedIn,
    id: Uuid,
    action: &str,
    body: Value,
) -> reqwest::Response {
    app.post_json(&format!("/v1/tasks/{id}/{action}"), Some(&who.token), &body)
        .await
}

/// Seconds from the database's now to `column` of task `id`.
async fn secs_ahead(app: &TestApp, id: Uuid, column: &str) -> f64 {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Ahead {
        #[diesel(sql_type = diesel::sql_types::Double)]
        secs: f64,
    }
    let mut conn = app.db.connect().await;
    diesel::sql_query(format!(
        "SELECT EXTRACT(EPOCH FROM {column} - now())::float8 AS secs FROM tasks WHERE id = '{id}'"
    ))
    .get_result::<Ahead>(&mut conn)
    .await
    .unwrap()
    .secs
}

async fn stored(app: &TestApp, id: Uuid, column: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT count(*) AS n FROM tasks WHERE id = '{id}' AND {column}"
        ))
        .await
}

#[tokio::test]
async fn a_task_shows_its_new_fields_with_their_defaults() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = create(
        &app,
        &ada,
        json!([
            {"title": "plain"},
            {"title": "full", "priority": -7, "not_before": "2030-01-02T03:04:05Z",
             "max_attempts": 9, "key": "order-42"}
        ]),
    )
    .await;
    assert_eq!(body["created"], 2);
    let plain = &body["tasks"][0];
    for (field, value) in [
        ("priority", json!(0)),
        ("not_before", Value::Null),
        ("attempt", json!(0)),
        ("max_attempts", json!(5)),
        ("key", Value::Null),
        ("last_error", Value::Null),
        ("status", json!("unassigned")),
    ] {
        assert_eq!(plain[field], value, "{field} of {plain}");
    }
    let full = &body["tasks"][1];
    assert_eq!(full["priority"], -7);
    assert_eq!(full["max_attempts"], 9);
    assert_eq!(full["key"], "order-42");
    let not_before = full["not_before"].as_str().unwrap();
    assert!(
        not_before.starts_with("2030-01-02T03:04:05"),
        "{not_before}"
    );
    let id = json_uuid(&full["id"]);
    assert_eq!(
        stored(&app, id, "priority = -7 AND max_attempts = 9 AND key = 'order-42' AND not_before = '2030-01-02T03:04:05Z'").await,
        1
    );
}

#[tokio::test]
async fn every_bad_new_field_is_listed() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    // Values of the wrong kind, found by the reader...
    let kinds = json!({"tasks": [
        {"title": "c", "priority": "high", "not_before": "tomorrow", "key": 7, "max_attempts": 2.5}
    ]});
    // ...and values out of range, found by the queue.
    let ranges = json!({"tasks": [
        {"title": "a", "priority": 1001, "max_attempts": 0, "key": ""},
        {"title": "b", "priority": -1001, "max_attempts": 101, "key": "k".repeat(201)},
        {"title": "d", "key": "nul\u{0}"}
    ]});
    for (body, expected) in [
        (
            kinds,
            &[
                "tasks[0].priority",
                "tasks[0].not_before",
                "tasks[0].max_attempts",
                "tasks[0].key",
            ][..],
        ),
        (
            ranges,
            &[
                "tasks[0].priority",
                "tasks[0].max_attempts",
                "tasks[0].key",
                "tasks[1].priority",
                "tasks[1].max_attempts",
                "tasks[1].key",
                "tasks[2].key",
            ][..],
        ),
    ] {
        let res = app.create_tasks(&ada.token, &body).await;
        let problem =
            expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, expected, "{problem}");
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 0);
    // The edges are allowed.
    let body = create(
        &app,
        &ada,
        json!([{"title": "e", "priority": 1000, "max_attempts": 100, "key": "k".repeat(200)},
               {"title": "f", "priority": -1000, "max_attempts": 1}]),
    )
    .await;
    assert_eq!(body["created"], 2);
}

#[tokio::test]
async fn a_known_key_returns_the_existing_task_and_is_not_inserted_again() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let first = create(&app, &ada, json!([{"title": "once", "key": "k1"}])).await;
    let id = ids(&first)[0];
    let again = create(
        &app,
        &ada,
        // The same content under each key (other content is a conflict:
        // `tasks::an_idempotency_key_is_its_creators_and_other_content_is_a_conflict`).
        json!([{"title": "once", "key": "k1", "schedulable": false},
               {"title": "new"},
               {"title": "dup in batch", "key": "k2"},
               {"title": "dup in batch", "key": "k2"}]),
    )
    .await;
    assert_eq!(again["created"], 2, "{again}");
    let got = ids(&again);
    assert_eq!(got.len(), 4, "one answer per item");
    assert_eq!(got[0], id, "the existing task stands in its place");
    assert_eq!(again["tasks"][0]["title"], "once");
    assert_eq!(again["tasks"][0]["schedulable"], true, "as it was stored");
    assert_eq!(got[2], got[3], "a key repeated in a batch is one task");
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM tasks").await,
        3,
        "k1, the keyless task and k2"
    );
}

#[tokio::test]
async fn claims_take_the_highest_priority_first_then_the_oldest_and_skip_delayed_tasks() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = create(
        &app,
        &ada,
        json!([
            {"title": "low", "priority": -5},
            {"title": "mid a"},
            {"title": "high", "priority": 10},
            {"title": "mid b"},
            {"title": "delayed top", "priority": 1000, "not_before": "2999-01-01T00:00:00Z"},
            {"title": "due", "priority": 10, "not_before": "2000-01-01T00:00:00Z"}
        ]),
    )
    .await;
    let made = ids(&body);
    let stats = expect_status(app.stats(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        (stats["unassigned"].as_i64(), stats["delayed"].as_i64()),
        (Some(6), Some(1))
    );
    assert_eq!(stats, app.db.shown_task_stats().await);
    let claimed = app.claim_ok(&ada.token, 30).await;
    assert_eq!(claimed["claimed"], 5);
    assert_eq!(
        ids(&claimed),
        vec![made[2], made[5], made[1], made[3], made[0]],
        "priority descending, then oldest"
    );
    assert_eq!(stored(&app, made[4], "status = 'unassigned'").await, 1);
    // Due: claimable.
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() - interval '1 second' WHERE id = '{}'",
            made[4]
        ))
        .await;
    assert_eq!(ids(&app.claim_ok(&ada.token, 30).await), vec![made[4]]);
}

#[tokio::test]
async fn a_heartbeat_extends_the_lease_of_the_holder_only() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "long job"}])).await)[0];
    app.claim_ok(&ada.token, 1).await;
    let task = expect_status(
        act(&app, &ada, id, "heartbeat", json!({"lease_secs": 3600})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task["status"], "assigned");
    let ahead = secs_ahead(&app, id, "lease_expires_at").await;
    assert!((3590.0..=3600.0).contains(&ahead), "lease {ahead} s ahead");
    // No body: the service's lease (300 s in tests).
    let res = app
        .client
        .post(app.url(&format!("/v1/tasks/{id}/heartbeat")))
        .bearer_auth(&ada.token)
        .send()
        .await
        .unwrap();
    expect_status(res, StatusCode::OK).await;
    let ahead = secs_ahead(&app, id, "lease_expires_at").await;
    assert!((290.0..=300.0).contains(&ahead), "lease {ahead} s ahead");
    for bad in [
        json!({"lease_secs": 0}),
        json!({"lease_secs": 3601}),
        json!({"lease_secs": -1}),
        json!({"lease_secs": "1"}),
    ] {
        let res = act(&app, &ada, id, "heartbeat", bad.clone()).await;
        expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    expect_problem(
        act(&app, &bob, id, "heartbeat", json!({})).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    expect_problem(
        act(&app, &ada, Uuid::new_v4(), "heartbeat", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // A lapsed lease cannot be revived.
    app.db
        .execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
        .await;
    expect_problem(
        act(&app, &ada, id, "heartbeat", json!({})).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
}

#[tokio::test]
async fn a_failure_with_retry_backs_off_exponentially_with_jitter_then_fails_for_good() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "flaky", "max_attempts": 3}])).await)[0];
    // Attempt n backs off 2^(n-1) s, less up to 20%.
    for (attempt, full) in [(1, 1.0), (2, 2.0)] {
        app.claim_ok(&ada.token, 1).await;
        let task = expect_status(
            act(
                &app,
                &ada,
                id,
                "fail",
                json!({"error": format!("boom {attempt}")}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(task["status"], "unassigned");
        assert_eq!(task["last_error"], format!("boom {attempt}"));
        assert_eq!(task["attempt"], attempt);
        let ahead = secs_ahead(&app, id, "not_before").await;
        assert!(
            ahead <= full && ahead >= 0.8 * full - 0.05,
            "attempt {attempt}: {ahead} s, want {}..{full}",
            0.8 * full
        );
        assert_eq!(
            app.claim_ok(&ada.token, 1).await["claimed"],
            0,
            "not claimable during its backoff"
        );
        app.db
            .execute("UPDATE tasks SET not_before = now() - interval '1 millisecond'")
            .await;
    }
    app.claim_ok(&ada.token, 1).await;
    let task = expect_status(
        act(&app, &ada, id, "fail", json!({"error": "boom 3"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        task["status"], "failed",
        "no attempts left: failed, retry or not"
    );
    assert_eq!(
        stored(
            &app,
            id,
            "status = 'failed' AND last_error = 'boom 3' AND finished_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(app.claim_ok(&ada.token, 1).await["claimed"], 0);
    expect_problem(
        act(&app, &ada, id, "fail", json!({"error": "again"})).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
}

#[tokio::test]
async fn the_backoff_doubles_per_attempt_and_stops_at_an_hour() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let made = ids(&create(&app, &ada, json!([{"title": "fifth", "max_attempts": 100}, {"title": "twentieth", "max_attempts": 100}])).await);
    // As if claimed 4 and 19 times before this claim.
    app.db.execute(&format!("UPDATE tasks SET attempt = 4 WHERE id = '{}'; UPDATE tasks SET attempt = 19 WHERE id = '{}'", made[0], made[1])).await;
    app.claim_ok(&ada.token, 2).await;
    for (id, full) in [(made[0], 16.0), (made[1], 3600.0)] {
        expect_status(
            act(&app, &ada, id, "fail", json!({"error": "x"})).await,
            StatusCode::OK,
        )
        .await;
        let ahead = secs_ahead(&app, id, "not_before").await;
        assert!(
            ahead <= full && ahead >= 0.8 * full - 0.05,
            "{ahead} s, want {}..{full}",
            0.8 * full
        );
    }
}

#[tokio::test]
async fn a_failure_without_retry_fails_at_once_and_bad_errors_are_refused() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "doomed"}])).await)[0];
    app.claim_ok(&ada.token, 1).await;
    for bad in [
        json!({}),
        json!({"error": ""}),
        json!({"error": "e".repeat(2001)}),
        json!({"error": "x", "retry": "no"}),
    ] {
        expect_problem(
            act(&app, &ada, id, "fail", bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    expect_problem(
        act(&app, &bob, id, "fail", json!({"error": "not mine"})).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    let task = expect_status(
        act(
            &app,
            &ada,
            id,
            "fail",
            json!({"error": "e".repeat(2000), "retry": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task["status"], "failed");
    assert_eq!(
        task["assigned_to"],
        ada.user_id.to_string(),
        "who failed it stays on record"
    );
    let listed = expect_status(
        app.list_tasks(&ada.token, "?status=failed").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed), vec![id]);
    let mine = expect_status(
        app.list_tasks(&ada.token, "?status=failed&assignee=me")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&mine), vec![id]);
    let stats = expect_status(app.stats(&ada.token).await, StatusCode::OK).await;
    assert_eq!(stats["failed"], 1);
    assert_eq!(stats, app.db.shown_task_stats().await);
}

#[tokio::test]
async fn cancel_ends_open_tasks_fences_their_holder_and_refuses_finished_ones() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let made = ids(&create(
        &app,
        &ada,
        json!([{"title": "to be completed"}, {"title": "held"}]),
    )
    .await);
    app.claim_ok(&bob.token, 2).await; // open + held
    expect_status(
        act(&app, &bob, made[0], "release", json!({})).await,
        StatusCode::OK,
    )
    .await;
    app.claim_ok(&ada.token, 1).await; // open again, by ada
    expect_status(
        act(&app, &ada, made[0], "complete", json!({})).await,
        StatusCode::OK,
    )
    .await;
    let open = ids(&create(&app, &ada, json!([{"title": "still open"}])).await)[0];

    // Anyone may cancel an unassigned or an assigned task.
    let task = expect_status(
        act(&app, &ada, open, "cancel", json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task["status"], "cancelled");
    let task = expect_status(
        act(&app, &ada, made[1], "cancel", json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (task["status"].as_str(), &task["assigned_to"]),
        (Some("cancelled"), &Value::Null)
    );
    for action in ["complete", "heartbeat", "fail", "release"] {
        let body = if action == "fail" {
            json!({"error": "late"})
        } else {
            json!({})
        };
        expect_problem(
            act(&app, &bob, made[1], action, body).await,
            StatusCode::CONFLICT,
            "not_assignee",
        )
        .await;
    }
    for finished in [made[0], made[1], open] {
        expect_problem(
            act(&app, &bob, finished, "cancel", json!({})).await,
            StatusCode::CONFLICT,
            "not_cancellable",
        )
        .await;
    }
    expect_problem(
        act(&app, &bob, Uuid::new_v4(), "cancel", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks WHERE status = 'cancelled' AND finished_at IS NOT NULL").await, 2);
    assert_eq!(
        app.claim_ok(&bob.token, 30).await["claimed"],
        0,
        "cancelled tasks are never claimed"
    );
    let listed = expect_status(
        app.list_tasks(&ada.token, "?status=cancelled").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed), vec![made[1], open]);
    let stats = expect_status(app.stats(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        (stats["cancelled"].as_i64(), stats["completed"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(stats, app.db.shown_task_stats().await);
}

#[tokio::test]
async fn a_lease_that_lapses_on_the_last_attempt_fails_the_task() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "stuck", "max_attempts": 2}])).await)[0];
    let lapse =
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE status = 'assigned'";
    app.claim_ok(&ada.token, 1).await;
    app.db.execute(lapse).await;
    let shown = expect_status(
        app.list_tasks(&ada.token, "?status=unassigned").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&shown),
        vec![id],
        "attempt 1 of 2 lapsed: back in the queue"
    );
    assert_eq!(app.claim_ok(&ada.token, 1).await["claimed"], 1);
    app.db.execute(lapse).await;
    // Shown failed at once, before any upkeep stores it.
    let listed = expect_status(
        app.list_tasks(&ada.token, "?status=failed").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed), vec![id]);
    assert_eq!(listed["tasks"][0]["last_error"], "lease expired");
    assert_eq!(listed["tasks"][0]["assigned_to"], Value::Null);
    let stats = expect_status(app.stats(&ada.token).await, StatusCode::OK).await;
    assert_eq!(
        (stats["failed"].as_i64(), stats["assigned"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(stats, app.db.shown_task_stats().await);
    assert_eq!(
        app.claim_ok(&ada.token, 1).await["claimed"],
        0,
        "never claimed again"
    );
    expect_problem(
        act(&app, &ada, id, "cancel", json!({})).await,
        StatusCode::CONFLICT,
        "not_cancellable",
    )
    .await;
    // The upkeep stores what was shown.
    assert!(matches!(app.state.queue.fail_spent_leases().await, Ok(1)));
    assert_eq!(
        stored(
            &app,
            id,
            "status = 'failed' AND last_error = 'lease expired' AND lease_expires_at IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        expect_status(app.stats(&ada.token).await, StatusCode::OK).await,
        stats
    );
    assert!(matches!(app.state.queue.fail_spent_leases().await, Ok(0)));
}

#[tokio::test]
async fn a_release_hands_its_attempt_back() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(&app, &ada, json!([{"title": "once", "max_attempts": 1}])).await)[0];
    for _ in 0..3 {
        assert_eq!(app.claim_ok(&ada.token, 1).await["claimed"], 1);
        expect_status(
            act(&app, &ada, id, "release", json!({})).await,
            StatusCode::OK,
        )
        .await;
    }
    let task = app.claim_ok(&ada.token, 1).await;
    assert_eq!(task["tasks"][0]["attempt"], 4, "four claims so far");
    app.db
        .execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
        .await;
    let listed = expect_status(
        app.list_tasks(&ada.token, "?status=failed").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed), vec![id], "its one counted attempt lapsed");
}

#[tokio::test]
async fn a_long_poll_claim_takes_a_task_created_while_it_waits() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    for bad in [
        json!({"count": 1, "wait_ms": 30001}),
        json!({"count": 1, "wait_ms": -1}),
        json!({"count": 1, "wait_ms": "5"}),
    ] {
        expect_problem(
            app.claim(&ada.token, &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let waiter = app.spawn_claim(&ada.token, json!({"count": 5, "wait_ms": 20000}));
    app.wait_for_claim_waiters(1).await;
    let made = ids(&create(&app, &ada, json!([{"title": "arrives"}])).await);
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("woken before its wait ends")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["requested"].as_i64(), body["claimed"].as_i64()),
        (Some(5), Some(1))
    );
    assert_eq!(ids(&body), made);
    assert_eq!(
        stored(
            &app,
            made[0],
            &format!("status = 'assigned' AND assigned_to = '{}'", ada.user_id)
        )
        .await,
        1
    );
    // Nothing arrives: the wait ends with claimed 0.
    let body = expect_status(
        app.claim(&ada.token, &json!({"count": 1, "wait_ms": 200}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["claimed"], 0);
}

#[tokio::test]
async fn a_long_poll_claim_finds_a_task_that_comes_due_without_any_notification() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let id = ids(&create(
        &app,
        &ada,
        json!([{"title": "later", "not_before": "2999-01-01T00:00:00Z"}]),
    )
    .await)[0];
    let waiter = app.spawn_claim(&ada.token, json!({"count": 1, "wait_ms": 20000}));
    app.wait_for_claim_waiters(1).await;
    // Behind the triggers' back: no notification, only the re-check finds it.
    app.db
        .execute("ALTER TABLE tasks DISABLE TRIGGER tasks_notify_update")
        .await;
    app.db
        .execute(&format!(
            "UPDATE tasks SET not_before = now() WHERE id = '{id}'"
        ))
        .await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("found by the re-check")
        .unwrap();
    assert_eq!(ids(&body), vec![id]);
}

#[tokio::test]
async fn shutdown_ends_long_poll_claims_at_once_with_nothing_claimed() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let waiters: Vec<_> = (0..3)
        .map(|_| app.spawn_claim(&ada.token, json!({"count": 1, "wait_ms": 30000})))
        .collect();
    app.wait_for_claim_waiters(3).await;
    app.state.queue.wakeups().stop();
    for waiter in waiters {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("ended by the shutdown, not by its 30 s")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["requested"].as_i64(), body["claimed"].as_i64()),
            (Some(1), Some(0))
        );
    }
}

/// A task's status is the database's own type (`task_status`): a word that
/// is not a status fails where a statement names it, instead of quietly
/// matching no row.
#[tokio::test]
async fn a_word_that_is_not_a_status_fails_where_a_statement_names_it() {
    use diesel_async::RunQueryDsl as _;
    let db = test_support::TestDb::new().await;
    let mut conn = db.connect().await;
    let typo = diesel::sql_query("SELECT id FROM tasks WHERE status = 'asigned'")
        .execute(&mut conn)
        .await;
    let error = typo.expect_err("a word that is not a status");
    assert!(error.to_string().contains("enum task_status"), "{error}");
    for status in auth_core::domain::TaskStatus::ALL {
        diesel::sql_query(format!(
            "SELECT id FROM task_view WHERE status = '{}'",
            status.as_str()
        ))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", status.as_str()));
    }
}

/// A long poll's `wait_ms` counts from the request's arrival: time spent
/// before the claim starts (here, checking the caller's session while the
/// test holds the sessions table) is part of the wait, not added to it.
#[tokio::test]
async fn a_long_poll_counts_its_wait_from_the_requests_arrival() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let worker = app.signup("worker@example.com").await;
    let held = app
        .db
        .hold("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await;
    let poll = {
        let (app, token) = (app.clone(), worker.token.clone());
        tokio::spawn(async move {
            let res = app
                .claim(&token, &json!({"count": 1, "wait_ms": 1000}))
                .await;
            (res.status(), std::time::Instant::now())
        })
    };
    // The session check waits on the table until, by the database's clock,
    // it has waited the whole of wait_ms: the wait is spent before the claim
    // begins, since the request arrived before that statement started.
    app.db
        .wait_for_a_lock_wait_of(Duration::from_millis(1000))
        .await;
    held.release().await;
    let released = std::time::Instant::now();
    let (status, answered) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Counted from arrival: answered at once, with nothing left to wait.
    // Counted from the claim's start it would wait 1000 ms more.
    let after_release = answered.duration_since(released);
    assert!(
        after_release < Duration::from_millis(600),
        "answered {after_release:?} after the session check could proceed"
    );
}
