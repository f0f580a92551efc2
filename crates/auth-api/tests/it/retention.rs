//! The retention cleanup (the contract's "Retention" sections): exactly the
//! rows past their retention go, in batches, one instance at a time; the
//! counts and /metrics follow.

use auth_core::retention::{CleanupRun, Purged};
use auth_core::store::retention::CLEANUP_LOCK;
use reqwest::StatusCode;
use test_support::TestApp;
use test_support::app::expect_status;
use test_support::app::test_config;
use uuid::Uuid;

/// Retention 7 days (the default), batches of 2 so every table needs several.
async fn app() -> TestApp {
    let mut config = test_config();
    config.retention.batch = 2;
    TestApp::spawn_with(config).await
}

/// Inserts a session of `user` whose end (revocation or idle expiry) is
/// `ended` ago, as an SQL interval expression; `None`: active. (Shared
/// with the edge tests.)
pub(crate) async fn session(
    app: &TestApp,
    user: Uuid,
    revoked: Option<&str>,
    idle_ended: Option<&str>,
) -> Uuid {
    let id = Uuid::new_v4();
    let idle = idle_ended.map_or("now() + interval '30 minutes'".to_owned(), |ago| {
        format!("now() - ({ago})")
    });
    let revoked = revoked.map_or("NULL".to_owned(), |ago| format!("now() - ({ago})"));
    app.db
        .execute(&format!(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at,
                                   idle_expires_at, absolute_expires_at, revoked_at)
             VALUES ('{id}', '{user}', sha256('{id}'::text::bytea), now() - interval '30 days',
                     now() - interval '30 days', {idle}, {idle} + interval '1 hour', {revoked})"
        ))
        .await;
    id
}

/// A task created 40 days ago in `status`, finished `finished_ago` ago (an
/// SQL interval expression; completed ones also show it as
/// `completed_at`); an assigned one's lease lapsed long ago. (Shared with
/// the edge tests.)
pub(crate) async fn task(app: &TestApp, status: &str, finished_ago: Option<&str>) -> Uuid {
    let id = Uuid::new_v4();
    let finished = finished_ago.map_or("NULL".to_owned(), |ago| format!("now() - ({ago})"));
    let completed = if status == "completed" {
        finished.as_str()
    } else {
        "NULL"
    };
    let (lease, assigned_at) = if status == "assigned" {
        ("now() - interval '30 days'", "now() - interval '30 days'")
    } else {
        ("NULL", "NULL")
    };
    app.db
        .execute(&format!(
            "INSERT INTO tasks (id, title, status, created_at, completed_at, finished_at,
                                lease_expires_at, assigned_at)
             VALUES ('{id}', 'kept?', '{status}', now() - interval '40 days', {completed}, {finished},
                     {lease}, {assigned_at})"
        ))
        .await;
    id
}

#[tokio::test]
async fn the_cleanup_deletes_exactly_the_rows_past_their_retention() {
    let app = app().await;
    let user = app.signup("keeper@example.com").await;
    let mut kept = vec![user.session_id];
    let mut gone = Vec::new();
    gone.push(session(&app, user.user_id, Some("interval '8 days'"), None).await);
    gone.push(
        session(
            &app,
            user.user_id,
            Some("interval '9 days'"),
            Some("interval '10 days'"),
        )
        .await,
    );
    gone.push(session(&app, user.user_id, None, Some("interval '8 days'")).await);
    kept.push(session(&app, user.user_id, Some("interval '6 days'"), None).await);
    kept.push(session(&app, user.user_id, None, Some("interval '1 day'")).await);
    kept.push(session(&app, user.user_id, None, None).await);
    for finished in ["completed", "failed", "cancelled"] {
        gone.push(task(&app, finished, Some("interval '8 days'")).await);
        kept.push(task(&app, finished, Some("interval '6 days'")).await);
    }
    kept.push(task(&app, "unassigned", None).await);
    // Keys: expired 8 and 9 days ago (gone); 6 days ago, expiring
    // tomorrow, never expiring (kept). A revoked key is deleted at once.
    let keys = [
        ("gone-8", "now() - interval '8 days'"),
        ("gone-9", "now() - interval '9 days'"),
        ("kept-6", "now() - interval '6 days'"),
        ("kept-expiring", "now() + interval '1 day'"),
        ("kept-live", "NULL"),
    ];
    for (name, expires) in keys {
        let id = Uuid::new_v4();
        app.db
            .execute(&format!(
                "INSERT INTO api_keys (id, user_id, name, key_hash, roles, expires_at)
                 VALUES ('{id}', '{}', '{name}', sha256('{name}'::bytea), '{{worker}}', {expires})",
                user.user_id
            ))
            .await;
        match name.starts_with("gone") {
            true => gone.push(id),
            false => kept.push(id),
        }
    }
    app.db
        .execute(
            "INSERT INTO login_attempts (email, attempted_at, outcome) VALUES
               ('a@example.com', now() - interval '16 minutes', 'failed'),
               ('a@example.com', now() - interval '14 minutes', 'failed')",
        )
        .await;

    let run = app.state.cleanup.run().await.unwrap();
    assert_eq!(
        run,
        CleanupRun::Done(Purged {
            sessions: 3,
            api_keys: 2,
            login_attempts: 1,
            tasks: 3,
        })
    );
    let ids = |list: &[Uuid]| {
        list.iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let present = |list: &[Uuid]| {
        format!(
            "SELECT count(*) AS n FROM (SELECT id FROM sessions UNION ALL SELECT id FROM tasks
                UNION ALL SELECT id FROM api_keys) AS r
              WHERE id IN ({})",
            ids(list)
        )
    };
    assert_eq!(
        app.db.count(&present(&gone)).await,
        0,
        "a row past its retention stayed"
    );
    assert_eq!(
        app.db.count(&present(&kept)).await,
        kept.len() as i64,
        "a kept row went"
    );
    // The 16-minute-old attempt left the 15-minute window; the 14-minute-old
    // one and the signup's login stay.
    let attempts = "SELECT count(*) AS n FROM login_attempts";
    assert_eq!(
        app.db
            .count(&format!("{attempts} WHERE email = 'a@example.com'"))
            .await,
        1
    );
    assert_eq!(
        app.db
            .count(&format!(
                "{attempts} WHERE attempted_at < now() - interval '15 minutes'"
            ))
            .await,
        0
    );
    // The live session still validates; the counts follow the deletion.
    expect_status(app.current(&user.token).await, StatusCode::OK).await;
    app.state.queue.compact_counts().await.unwrap();
    let stats = expect_status(app.stats(&user.token).await, StatusCode::OK).await;
    assert_eq!(
        [
            &stats["completed"],
            &stats["failed"],
            &stats["cancelled"],
            &stats["unassigned"]
        ],
        [1, 1, 1, 1],
        "{stats}"
    );
    // A second run finds nothing.
    assert_eq!(
        app.state.cleanup.run().await.unwrap(),
        CleanupRun::Done(Purged::default())
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for line in [
        r#"tessera_cleanup_purged_rows_total{table="sessions"} 3"#,
        r#"tessera_cleanup_purged_rows_total{table="api_keys"} 2"#,
        r#"tessera_cleanup_purged_rows_total{table="login_attempts"} 1"#,
        r#"tessera_cleanup_purged_rows_total{table="tasks"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    assert!(
        !metrics.contains("tessera_cleanup_last_run_timestamp_seconds 0\n"),
        "the last run is not shown"
    );
}

#[tokio::test]
async fn a_run_yields_while_another_instance_holds_the_cleanup_lock() {
    let app = app().await;
    let user = app.signup("yield@example.com").await;
    let old = session(&app, user.user_id, Some("interval '8 days'"), None).await;
    let other_instance = app
        .db
        .hold(&format!("SELECT pg_advisory_xact_lock({CLEANUP_LOCK})"))
        .await;
    assert_eq!(
        app.state.cleanup.run().await.unwrap(),
        CleanupRun::Yielded(Purged::default())
    );
    let still = format!("SELECT count(*) AS n FROM sessions WHERE id = '{old}'");
    assert_eq!(
        app.db.count(&still).await,
        1,
        "deleted under another instance's lock"
    );
    other_instance.release().await;
    assert!(matches!(
        app.state.cleanup.run().await.unwrap(),
        CleanupRun::Done(Purged { sessions: 1, .. })
    ));
    assert_eq!(app.db.count(&still).await, 0);
}
