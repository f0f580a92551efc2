use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::app::{expect_problem, expect_status, json_uuid};
use test_support::{LoggedIn, TestApp};
use uuid::Uuid;

/// Claimable right now, counted afresh by the database (the claim predicate).
const CLAIMABLE: &str =
    "SELECT count(*) AS n FROM tasks WHERE schedulable AND status <> 'completed'
                         AND (lease_expires_at IS NULL OR lease_expires_at <= now())";

/// Creates `n` claimable tasks and proves, by a fresh query, that exactly
/// those `n` are claimable: a broken fixture fails here, loudly, instead of
/// letting later assertions pass over an empty queue.
async fn claimable_fixture(app: &TestApp, who: &LoggedIn, n: usize) -> Vec<Uuid> {
    let before = app.db.count(CLAIMABLE).await;
    let ids = app.create_n_tasks(&who.token, "fixture", n).await;
    assert_eq!(ids.len(), n);
    assert_eq!(
        app.db.count(CLAIMABLE).await - before,
        n as i64,
        "fixture: exactly {n} new claimable tasks"
    );
    ids
}

fn ids_of(body: &Value) -> Vec<Uuid> {
    body["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json_uuid(&t["id"]))
        .collect()
}

async fn status_of(app: &TestApp, id: Uuid) -> (i64, i64) {
    let assigned = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM task_view WHERE id = '{id}' AND status = 'assigned'"
        ))
        .await;
    let completed = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM task_view WHERE id = '{id}' AND status = 'completed'"
        ))
        .await;
    (assigned, completed)
}

#[tokio::test]
async fn create_returns_the_tasks_in_order_with_defaults() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let res = app
        .create_tasks(
            &ada.token,
            &json!({"tasks": [{"title": "one"}, {"title": "two", "schedulable": false}]}),
        )
        .await;
    let body = expect_status(res, StatusCode::CREATED).await;
    let tasks = body["tasks"].as_array().cloned().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["title"], "one");
    assert_eq!(tasks[0]["schedulable"], true);
    assert_eq!(tasks[1]["schedulable"], false);
    for t in &tasks {
        assert_eq!(t["status"], "unassigned");
        for key in [
            "assigned_to",
            "assigned_by",
            "assigned_at",
            "lease_expires_at",
            "completed_at",
        ] {
            assert!(t[key].is_null(), "{key} in {t}");
        }
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 2);
}

#[tokio::test]
async fn create_rejects_bad_batches_with_422_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"title": format!("t{i}")}))
        .collect();
    for (body, field) in [
        (json!({"tasks": []}), "tasks"),
        (json!({"tasks": too_many}), "tasks"),
        (
            json!({"tasks": [{"title": "ok"}, {"title": ""}]}),
            "tasks[1].title",
        ),
        (
            json!({"tasks": [{"title": "x".repeat(501)}]}),
            "tasks[0].title",
        ),
        (json!({"tasks": [{"title": 3}]}), "tasks[0].title"),
        // Found by schemathesis: PostgreSQL text cannot hold NUL (was a 500).
        (json!({"tasks": [{"title": "a\u{0}b"}]}), "tasks[0].title"),
        (
            json!({"tasks": [{"title": "ok", "schedulable": "yes"}]}),
            "tasks[0].schedulable",
        ),
        (json!({"tasks": "nope"}), "tasks"),
        (json!({}), "tasks"),
    ] {
        let problem = expect_problem(
            app.create_tasks(&ada.token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // 500 characters (of a 2-byte letter) is allowed; 1000 tasks is allowed.
    let full: Vec<Value> = (0..1000)
        .map(|_| json!({"title": "é".repeat(500)}))
        .collect();
    expect_status(
        app.create_tasks(&ada.token, &json!({"tasks": full})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 1000);
}

#[tokio::test]
async fn task_routes_require_a_token() {
    let app = TestApp::spawn().await;
    let body = json!({"tasks": [{"title": "x"}]});
    expect_problem(
        app.post_json("/v1/tasks", None, &body).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_problem(
        app.post_json("/v1/tasks/claim", None, &json!({"count": 1}))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_problem(
        app.get("/v1/tasks", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_problem(
        app.get("/v1/tasks/stats", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 0);
}

#[tokio::test]
async fn claim_reports_exactly_what_it_assigned() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let ids = claimable_fixture(&app, &ada, 5).await;
    app.create_tasks(
        &ada.token,
        &json!({"tasks": [{"title": "held back", "schedulable": false}]}),
    )
    .await;

    let first = expect_status(
        app.claim(&ada.token, &json!({"count": 3})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (first["requested"].as_i64(), first["claimed"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(ids_of(&first), ids[..3], "oldest first");
    for t in first["tasks"].as_array().into_iter().flatten() {
        assert_eq!(t["status"], "assigned");
        assert_eq!(json_uuid(&t["assigned_to"]), ada.user_id);
        assert_eq!(json_uuid(&t["assigned_by"]), ada.user_id);
        assert!(t["assigned_at"].is_string() && t["lease_expires_at"].is_string());
    }
    // Only two schedulable tasks remain: a claim of 30 gets exactly those.
    let second = expect_status(
        app.claim(&ada.token, &json!({"count": 30})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (second["requested"].as_i64(), second["claimed"].as_i64()),
        (Some(30), Some(2))
    );
    assert_eq!(ids_of(&second), ids[3..]);
    // Nothing free: 200 with claimed 0, which is not an error.
    let empty = expect_status(
        app.claim(&ada.token, &json!({"count": 5})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            empty["claimed"].as_i64(),
            empty["tasks"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    let assigned = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM tasks WHERE status = 'assigned' AND assigned_to = '{}'",
            ada.user_id
        ))
        .await;
    assert_eq!(
        assigned, 5,
        "fresh read: the five schedulable tasks, and only they"
    );
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) AS n FROM tasks WHERE NOT schedulable AND status = 'unassigned'"
            )
            .await,
        1
    );
}

#[tokio::test]
async fn claim_validates_count_and_assignee() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    claimable_fixture(&app, &ada, 3).await;
    for body in [
        json!({"count": 0}),
        json!({"count": 31}),
        json!({"count": "3"}),
        json!({"count": 1.5}),
        json!({}),
    ] {
        expect_problem(
            app.claim(&ada.token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let unknown = json!({"count": 1, "assignee_id": Uuid::new_v4()});
    let problem = expect_problem(
        app.claim(&ada.token, &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "assignee_id");
    expect_problem(
        app.claim(&ada.token, &json!({"count": 1, "assignee_id": "bob"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE status <> 'unassigned'")
            .await,
        0,
        "nothing claimed"
    );
}

#[tokio::test]
async fn claim_for_another_user_records_who_assigned() {
    let app = TestApp::spawn().await;
    let lead = app.signup("lead@example.com").await;
    let clerk = app.signup("clerk@example.com").await;
    let ids = claimable_fixture(&app, &lead, 1).await;
    let body = expect_status(
        app.claim(
            &lead.token,
            &json!({"count": 1, "assignee_id": clerk.user_id}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["claimed"], 1);
    let row = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM tasks WHERE id = '{}' AND assigned_to = '{}' AND assigned_by = '{}'",
            ids[0], clerk.user_id, lead.user_id
        ))
        .await;
    assert_eq!(row, 1);
    // Only the assignee may complete it.
    expect_problem(
        app.complete(&lead.token, &ids[0].to_string()).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    expect_status(
        app.complete(&clerk.token, &ids[0].to_string()).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn complete_and_release_are_for_the_assignee_only() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let ids = claimable_fixture(&app, &ada, 2).await;
    expect_status(
        app.claim(&ada.token, &json!({"count": 2})).await,
        StatusCode::OK,
    )
    .await;
    let (a, b) = (ids[0].to_string(), ids[1].to_string());

    expect_problem(
        app.complete(&bob.token, &a).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    expect_problem(
        app.release(&bob.token, &a).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    expect_problem(
        app.complete(&ada.token, &Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.release(&ada.token, "not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        status_of(&app, ids[0]).await,
        (1, 0),
        "bob's attempts changed nothing"
    );

    let done = expect_status(app.complete(&ada.token, &a).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed");
    assert!(done["completed_at"].is_string());
    assert_eq!(status_of(&app, ids[0]).await, (0, 1));
    expect_problem(
        app.complete(&ada.token, &a).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;

    let released = expect_status(app.release(&ada.token, &b).await, StatusCode::OK).await;
    assert_eq!(released["status"], "unassigned");
    assert!(released["assigned_to"].is_null());
    assert_eq!(status_of(&app, ids[1]).await, (0, 0));
    let again = expect_status(
        app.claim(&bob.token, &json!({"count": 5})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids_of(&again),
        [ids[1]],
        "a released task is claimable again; a completed one is not"
    );
}

#[tokio::test]
async fn an_expired_lease_frees_the_task_and_fences_the_late_worker() {
    let app = TestApp::spawn().await;
    let slow = app.signup("slow@example.com").await;
    let fast = app.signup("fast@example.com").await;
    let ids = claimable_fixture(&app, &slow, 1).await;
    expect_status(
        app.claim(&slow.token, &json!({"count": 1})).await,
        StatusCode::OK,
    )
    .await;

    // The lease runs out (moved into the past by the test, no sleeping).
    app.db
        .execute(&format!(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = '{}'",
            ids[0]
        ))
        .await;
    let listed = expect_status(
        app.list_tasks(&fast.token, "?status=unassigned").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&listed), ids, "an expired lease shows as unassigned");
    assert!(listed["tasks"][0]["assigned_to"].is_null());
    let stats = expect_status(app.stats(&fast.token).await, StatusCode::OK).await;
    assert_eq!(
        (stats["unassigned"].as_i64(), stats["assigned"].as_i64()),
        (Some(1), Some(0))
    );
    expect_problem(
        app.complete(&slow.token, &ids[0].to_string()).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;

    let reclaimed = expect_status(
        app.claim(&fast.token, &json!({"count": 1})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&reclaimed), ids);
    // The late worker's write is refused and changes nothing.
    expect_problem(
        app.complete(&slow.token, &ids[0].to_string()).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    expect_problem(
        app.release(&slow.token, &ids[0].to_string()).await,
        StatusCode::CONFLICT,
        "not_assignee",
    )
    .await;
    let held = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM tasks WHERE id = '{}' AND status = 'assigned' AND assigned_to = '{}' AND attempt = 2",
            ids[0], fast.user_id
        ))
        .await;
    assert_eq!(
        held, 1,
        "still held by the second claimer, under the second attempt"
    );
}

#[tokio::test]
async fn list_filters_by_status_assignee_and_limit() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let ids = claimable_fixture(&app, &ada, 6).await;
    expect_status(
        app.claim(&ada.token, &json!({"count": 2})).await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.claim(&bob.token, &json!({"count": 1})).await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.complete(&ada.token, &ids[0].to_string()).await,
        StatusCode::OK,
    )
    .await;

    let all = expect_status(app.list_tasks(&ada.token, "").await, StatusCode::OK).await;
    assert_eq!(ids_of(&all), ids, "oldest first");
    let mine = expect_status(
        app.list_tasks(&ada.token, "?assignee=me").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&mine), ids[..2]);
    let mine_open = expect_status(
        app.list_tasks(&ada.token, "?assignee=me&status=assigned")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&mine_open), ids[1..2]);
    let unassigned = expect_status(
        app.list_tasks(&bob.token, "?status=unassigned&limit=2")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&unassigned), ids[3..5]);
    for bad in [
        "?status=lost",
        "?limit=0",
        "?limit=1001",
        "?limit=abc",
        "?assignee=someone",
    ] {
        expect_problem(
            app.list_tasks(&ada.token, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
}

#[tokio::test]
async fn the_task_body_limit_is_one_mebibyte() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let filler = "x".repeat(1100 * 1024);
    let body = json!({"tasks": [{"title": "t"}], "pad": filler})
        .to_string()
        .into_bytes();
    let res = app
        .client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&ada.token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // 20 KiB is over the general limit but fine for tasks.
    let medium: Vec<Value> = (0..100)
        .map(|_| json!({"title": "y".repeat(200)}))
        .collect();
    expect_status(
        app.create_tasks(&ada.token, &json!({"tasks": medium}))
            .await,
        StatusCode::CREATED,
    )
    .await;
}

/// The listing runs on the stored columns and their indexes; what it shows
/// must be exactly what the plain filter over `task_view` shows, for every
/// filter and limit, with lapsed leases interleaved among the others.
#[tokio::test]
async fn every_listing_matches_the_plain_filter_over_the_view() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let ids = claimable_fixture(&app, &ada, 12).await;
    app.claim_ok(&ada.token, 4).await;
    app.claim_ok(&bob.token, 3).await;
    // ada holds 0..4, bob 4..7; 0 and 5 complete, 1 and 4 lapse (4 on its
    // last attempt: spent), 6 fails on its last attempt, 11 is cancelled.
    app.finish_ok(&ada.token, "complete", ids[0]).await;
    app.finish_ok(&bob.token, "complete", ids[5]).await;
    app.db
        .execute(&format!(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id IN ('{}', '{}');
             UPDATE tasks SET max_attempts = 1 WHERE id IN ('{}', '{}')",
            ids[1], ids[4], ids[4], ids[6]
        ))
        .await;
    let fail = format!("/v1/tasks/{}/fail", ids[6]);
    let failed = app
        .post_json(&fail, Some(&bob.token), &json!({"error": "boom"}))
        .await;
    expect_status(failed, StatusCode::OK).await;
    let cancel = format!("/v1/tasks/{}/cancel", ids[11]);
    let cancelled = app.post_json(&cancel, Some(&ada.token), &json!({})).await;
    expect_status(cancelled, StatusCode::OK).await;

    for status in [
        None,
        Some("unassigned"),
        Some("assigned"),
        Some("completed"),
        Some("failed"),
        Some("cancelled"),
    ] {
        for (mine, who) in [(false, &ada), (true, &ada), (true, &bob)] {
            for limit in [1, 2, 3, 100] {
                let mut query = format!("?limit={limit}");
                let mut wheres = vec!["TRUE".to_owned()];
                if let Some(status) = status {
                    query.push_str(&format!("&status={status}"));
                    wheres.push(format!("status = '{status}'"));
                }
                if mine {
                    query.push_str("&assignee=me");
                    wheres.push(format!("assigned_to = '{}'", who.user_id));
                }
                let expected = app
                    .db
                    .uuids(&format!(
                        "SELECT id FROM task_view WHERE {} ORDER BY seq LIMIT {limit}",
                        wheres.join(" AND ")
                    ))
                    .await;
                let listed =
                    expect_status(app.list_tasks(&who.token, &query).await, StatusCode::OK).await;
                assert_eq!(ids_of(&listed), expected, "{query}");
            }
        }
    }
    // The fixture really mixes every case (else the loop above proves less).
    assert_eq!(app.db.shown_task_counts().await, (5, 2, 2));
    assert_eq!(
        app.db.shown_tasks("failed").await,
        2,
        "one failed, one spent"
    );
    assert_eq!(app.db.shown_tasks("cancelled").await, 1);
}

/// Stats are counted from the database at the time of the call: they sum
/// the deltas the writers appended, including writes made behind the
/// service's back (nothing is cached), and folding the deltas changes
/// nothing a caller can see.
#[tokio::test]
async fn stats_are_counted_from_the_database_before_and_after_a_fold() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let ids = claimable_fixture(&app, &ada, 6).await;
    app.claim_ok(&ada.token, 4).await;
    app.finish_ok(&ada.token, "complete", ids[0]).await;
    app.finish_ok(&ada.token, "release", ids[1]).await;
    app.db
        .execute(&format!(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = '{}';
             DELETE FROM tasks WHERE id = '{}'",
            ids[2], ids[5]
        ))
        .await;
    let expected = json!({"unassigned": 3, "assigned": 1, "completed": 1,
                          "failed": 0, "cancelled": 0, "delayed": 0});
    assert_eq!(app.db.shown_task_stats().await, expected);
    let deltas = "SELECT count(*) AS n FROM task_count_deltas";
    assert!(app.db.count(deltas).await > 3, "unfolded deltas to sum");
    assert_eq!(
        expect_status(app.stats(&ada.token).await, StatusCode::OK).await,
        expected
    );
    let folded = app.state.queue.compact_counts().await;
    assert!(matches!(folded, Ok(n) if n > 3), "{folded:?}");
    assert!(app.db.count(deltas).await <= 3, "one row per status left");
    assert_eq!(
        expect_status(app.stats(&ada.token).await, StatusCode::OK).await,
        expected
    );
}

/// The queue's own batch rules, called directly: the HTTP reader stops at
/// its own bounds first, so only here does the queue's check decide.
#[tokio::test]
async fn the_queue_refuses_empty_and_oversized_batches_and_caps_title_errors() {
    use auth_core::QueueError;
    use auth_core::queue::NewTask;
    let app = TestApp::spawn().await;
    let task = NewTask::titled;
    for batch in [vec![], vec![task("ok"); 1001]] {
        let n = batch.len();
        match app.state.queue.create(Uuid::nil(), batch).await {
            Err(QueueError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{n} tasks: {errors:?}")
            }
            other => panic!("{n} tasks: {other:?}"),
        }
    }
    // 60 empty titles: 51 errors are collected (50 shown + `truncated`), not 60.
    match app
        .state
        .queue
        .create(Uuid::nil(), vec![task(""); 60])
        .await
    {
        Err(QueueError::Invalid(errors)) => {
            assert_eq!(errors.len(), auth_core::domain::MAX_FIELD_ERRORS + 1);
            assert_eq!(errors[0].field, "tasks[0].title");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 0);
    let made = app
        .state
        .queue
        .create(Uuid::nil(), vec![task("ok"); 1000])
        .await;
    assert!(
        matches!(&made, Ok(made) if made.tasks.len() == 1000 && made.created == 1000),
        "1000 is allowed"
    );
}

/// A create of `items` as `who`: its status and body.
async fn create_as(app: &TestApp, who: &LoggedIn, items: Value) -> (StatusCode, Value) {
    let res = app.create_tasks(&who.token, &json!({"tasks": items})).await;
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_idempotency_key_is_its_creators_and_other_content_is_a_conflict() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let item = json!({"title": "invoice 9", "key": "inv-9", "priority": 3, "max_attempts": 2,
                      "not_before": "2026-01-01T00:00:00.123456Z"});
    let (status, made) = create_as(&app, &ada, json!([item])).await;
    assert_eq!(
        (status, &made["created"]),
        (StatusCode::CREATED, &json!(1)),
        "{made}"
    );
    let task = made["tasks"][0].clone();
    assert_eq!(json_uuid(&task["created_by"]), ada.user_id, "{task}");

    // Another user's identical key is another key: its own task.
    let (status, theirs) = create_as(&app, &bob, json!([item])).await;
    assert_eq!(
        (status, &theirs["created"]),
        (StatusCode::CREATED, &json!(1)),
        "{theirs}"
    );
    assert_ne!(theirs["tasks"][0]["id"], task["id"]);
    assert_eq!(json_uuid(&theirs["tasks"][0]["created_by"]), bob.user_id);

    // The same content again: the same task; `schedulable` is not part of it.
    let mut same = item.clone();
    same["schedulable"] = json!(false);
    let (status, again) = create_as(&app, &ada, json!([same])).await;
    assert_eq!(
        (status, &again["created"]),
        (StatusCode::CREATED, &json!(0)),
        "{again}"
    );
    assert_eq!(again["tasks"][0]["id"], task["id"]);

    // Each part of the content changed: 409, and the batch creates nothing.
    let changes = [
        ("title", json!("invoice 9b")),
        ("priority", json!(4)),
        ("max_attempts", json!(3)),
        ("not_before", json!("2026-01-01T00:00:00.123457Z")),
    ];
    for (field, value) in changes {
        let mut changed = item.clone();
        changed[field] = value;
        let batch = json!([{"title": "keyless"}, changed]);
        let res = app.create_tasks(&ada.token, &json!({"tasks": batch})).await;
        let problem = expect_problem(res, StatusCode::CONFLICT, "key_conflict").await;
        assert!(
            problem["detail"].as_str().unwrap_or("").contains("inv-9"),
            "{field}: {problem}"
        );
    }
    // Within one batch too.
    let mut twin = item.clone();
    twin["title"] = json!("other");
    twin["key"] = json!("inv-10");
    let mut first = item.clone();
    first["key"] = json!("inv-10");
    let res = app
        .create_tasks(&ada.token, &json!({"tasks": [first, twin]}))
        .await;
    expect_problem(res, StatusCode::CONFLICT, "key_conflict").await;
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM tasks").await,
        2,
        "nothing else was created"
    );

    // Below the microsecond, what is stored, is not a change.
    let mut finer = item.clone();
    finer["not_before"] = json!("2026-01-01T00:00:00.123456789Z");
    let (status, same) = create_as(&app, &ada, json!([finer])).await;
    assert_eq!(
        (status, &same["tasks"][0]["id"]),
        (StatusCode::CREATED, &task["id"]),
        "{same}"
    );

    // Another user's key being inserted (uncommitted) blocks nobody else.
    let held = app
        .db
        .hold(&format!(
            "INSERT INTO tasks (id, title, key, created_by) VALUES (gen_random_uuid(), 'bob''s', 'busy', '{}')",
            bob.user_id
        ))
        .await;
    let res = app
        .client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&ada.token)
        .timeout(std::time::Duration::from_secs(5))
        .json(&json!({"tasks": [{"title": "mine", "key": "busy"}]}))
        .send()
        .await
        .expect("answered without waiting on another user's key");
    let mine = expect_status(res, StatusCode::CREATED).await;
    assert_eq!(json_uuid(&mine["tasks"][0]["created_by"]), ada.user_id);
    held.release().await;

    // What became of the task since does not matter: a retried failure
    // moved its not_before, and the original content still names it.
    let (status, now) = create_as(
        &app,
        &ada,
        json!([{"title": "soon", "key": "soon", "priority": 10}]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = json_uuid(&now["tasks"][0]["id"]);
    let claimed = app.claim_ok(&ada.token, 1).await;
    assert_eq!(json_uuid(&claimed["tasks"][0]["id"]), id, "{claimed}");
    let failed = app
        .post_json(
            &format!("/v1/tasks/{id}/fail"),
            Some(&ada.token),
            &json!({"error": "flaky"}),
        )
        .await;
    let failed = expect_status(failed, StatusCode::OK).await;
    assert!(failed["not_before"].is_string(), "{failed}");
    let (status, replay) = create_as(
        &app,
        &ada,
        json!([{"title": "soon", "key": "soon", "priority": 10}]),
    )
    .await;
    assert_eq!(
        (status, json_uuid(&replay["tasks"][0]["id"])),
        (StatusCode::CREATED, id),
        "{replay}"
    );
}
