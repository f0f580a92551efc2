//! The cleanup racing the traffic it must never block: a backlog of expired
//! sessions drains while users validate and log in, and while one expired
//! row is locked by a transaction the test holds (as a login's own purge of
//! its user's expired sessions holds it).

use super::participant;
use auth_core::retention::CleanupRun;
use test_support::TestApp;
use test_support::concurrency::run_together;

const BACKLOG: i64 = 200;
const USERS: usize = 6;
const VALIDATIONS: usize = 20;

#[tokio::test]
async fn the_cleanup_skips_locked_rows_and_touches_no_active_session_while_users_work() {
    let mut config = test_support::app::test_config();
    config.retention.batch = 25;
    let app = TestApp::spawn_with(config).await;
    let owner = app.signup("backlog@example.com").await;
    app.db
        .execute(&format!(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at,
                                   idle_expires_at, absolute_expires_at)
             SELECT gen_random_uuid(), '{}', sha256(int4send(g)), now() - interval '20 days',
                    now() - interval '20 days', now() - interval '10 days', now() - interval '9 days'
               FROM generate_series(1, {BACKLOG}) AS g",
            owner.user_id
        ))
        .await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(app.signup(&format!("worker{i}@example.com")).await);
    }
    let locked = app
        .db
        .uuids(&format!(
            "SELECT id FROM sessions WHERE user_id = '{}' AND idle_expires_at < now() LIMIT 1",
            owner.user_id
        ))
        .await[0];
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM sessions WHERE id = '{locked}' FOR UPDATE"
        ))
        .await;

    let cleanup = app.state.cleanup.clone();
    let results = run_together(USERS + 1, |i| {
        let cleanup = cleanup.clone();
        let client = participant(&app);
        let user = users.get(i.wrapping_sub(1)).cloned();
        async move {
            let Some(user) = user else {
                return (None, Some(cleanup.run().await.map_err(|e| e.to_string())));
            };
            let mut statuses = Vec::new();
            for _ in 0..VALIDATIONS {
                let req = client
                    .client
                    .get(client.url("/v1/sessions/current"))
                    .bearer_auth(&user.token);
                statuses.push(client.send(req).await.0);
            }
            let login = client
                .client
                .post(client.url("/v1/sessions"))
                .json(&serde_json::json!({
                    "email": user.email, "password": test_support::app::PASSWORD
                }));
            statuses.push(client.send(login).await.0);
            (Some(statuses), None)
        }
    })
    .await;
    held.release().await;

    let mut cleanup_runs = Vec::new();
    for (statuses, run) in results {
        if let Some(statuses) = statuses {
            let (validations, login) = statuses.split_at(VALIDATIONS);
            assert!(
                validations.iter().all(|s| *s == 200),
                "validations: {validations:?}"
            );
            assert_eq!(login, [201], "login");
        }
        cleanup_runs.extend(run);
    }
    assert_eq!(cleanup_runs.len(), 1);
    let purged = match &cleanup_runs[0] {
        Ok(CleanupRun::Done(purged)) => purged.sessions,
        other => panic!("the cleanup did not finish past the locked row: {other:?}"),
    };
    // Fresh reads: every expired row but the locked one went; no live one did.
    assert_eq!(purged, BACKLOG as u64 - 1);
    let left = app
        .db
        .uuids(&format!(
            "SELECT id FROM sessions WHERE user_id = '{}' AND idle_expires_at < now() - interval '7 days'",
            owner.user_id
        ))
        .await;
    assert_eq!(left, [locked], "only the locked row may stay");
    let live = app
        .db
        .count(
            "SELECT count(*) AS n FROM sessions
              WHERE revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()",
        )
        .await;
    // Each user's signup session and its login inside the race, plus the owner's.
    assert_eq!(live, (2 * USERS + 1) as i64);
}
