//! Races of the queue's v1.1 rules: idempotent creates, long-poll waiters
//! and bursts, the worker's writes against cancel and a re-claim, and the
//! attempt limit under lapsing leases.

use super::{TestApp2, behind_lock, participant};
use serde_json::{Value, json};
use test_support::TestApp;
use test_support::app::{json_uuid, task_ids as ids, test_config};
use test_support::concurrency::{ReportedClaim, check_claims, run_together};
use uuid::Uuid;

/// `POST /v1/tasks` with `body`, as `token`'s caller, from participant `p`.
async fn create_from(p: TestApp2, token: String, body: Value) -> (u16, Value) {
    p.send(
        p.client
            .post(p.url("/v1/tasks"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// The test's own uncommitted task holding `key` of `creator`: creates of
/// that key by that creator wait on it until it is released (rolled back).
async fn hold_key(app: &TestApp, creator: Uuid, key: &str) -> test_support::db::Held {
    app.db
        .hold(&format!(
            "INSERT INTO tasks (id, title, key, created_by)
             VALUES (gen_random_uuid(), 'held', '{key}', '{creator}')"
        ))
        .await
}

/// Claimable now, by a fresh read (the contract's definition).
const CLAIMABLE: &str = "SELECT count(*) AS n FROM tasks
     WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
       AND (lease_expires_at IS NULL OR lease_expires_at <= now())
       AND (not_before IS NULL OR not_before <= now())";

/// Every task the database holds under a live lease, with its assignee.
async fn held_in_db(app: &TestApp) -> Vec<(Uuid, Uuid)> {
    let mut held = Vec::new();
    for id in app
        .db
        .uuids("SELECT id FROM tasks WHERE status = 'assigned' AND lease_expires_at > now() ORDER BY id")
        .await
    {
        let by = app
            .db
            .uuids(&format!("SELECT assigned_to AS id FROM tasks WHERE id = '{id}'"))
            .await;
        held.push((id, by[0]));
    }
    held
}

/// Ten creates of one key, all held behind the test's own uncommitted row
/// with that key until every one waits on it (so all have passed any check
/// made before inserting, in their statement or before it), then the row
/// rolled back: one row, and every answer names it; the keyless task each
/// also sent is never lost.
#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_row_and_every_answer_names_it() {
    // A connection per participant, so all ten can wait on the key.
    let mut config = test_config();
    config.pool.max_size = 10;
    let app = TestApp::spawn_with(config).await;
    let ada = app.signup("ada@example.com").await;
    let held = hold_key(&app, ada.user_id, "invoice-7").await;
    let answers = behind_lock(&app, held, 10, |i| {
        let p = participant(&app);
        let token = ada.token.clone();
        async move {
            let body = json!({"tasks": [
                {"title": "invoice 7", "key": "invoice-7"},
                {"title": format!("keyless {i}")}
            ]});
            create_from(p, token, body).await
        }
    })
    .await;
    let mut named = Vec::new();
    let mut created = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        named.push(json_uuid(&body["tasks"][0]["id"]));
        created += body["created"].as_u64().unwrap_or(0);
    }
    let rows = app
        .db
        .uuids("SELECT id FROM tasks WHERE key = 'invoice-7'")
        .await;
    assert_eq!(rows.len(), 1, "one row for the key");
    assert!(
        named.iter().all(|id| *id == rows[0]),
        "every answer names the stored task: {named:?} vs {rows:?}"
    );
    assert_eq!(created, 11, "the key once, each keyless task once");
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE key IS NULL")
            .await,
        10
    );
}

/// One user's task under a key, committed; then `others` other users and
/// the first one create with that key at once (barrier): each other user
/// gets a task of its own (a key is its creator's), the first its own
/// task again; a fresh read finds one row per creator, each answered to
/// its creator only. With 2 and 5 other users.
#[tokio::test]
async fn users_creating_with_one_key_at_once_each_get_their_own_task() {
    for others in [2usize, 5] {
        let mut config = test_config();
        config.pool.max_size = 8;
        let app = TestApp::spawn_with(config).await;
        let ada = app.signup("ada@example.com").await;
        let item = json!({"tasks": [{"title": "nightly report", "key": "nightly"}]});
        let first = app.create_tasks(&ada.token, &item).await;
        let first = json_uuid(
            &test_support::app::expect_status(first, reqwest::StatusCode::CREATED).await["tasks"]
                [0]["id"],
        );
        let mut users = vec![ada];
        for i in 0..others {
            users.push(app.signup(&format!("user{i}@example.com")).await);
        }
        let tokens: Vec<String> = users.iter().map(|u| u.token.clone()).collect();
        let answers = run_together(users.len(), |i| {
            let p = participant(&app);
            let (token, body) = (tokens[i].clone(), item.clone());
            async move { create_from(p, token, body).await }
        })
        .await;
        let mut named = Vec::new();
        for (i, (status, body)) in answers.iter().enumerate() {
            assert_eq!(*status, 201, "{others} others, user {i}: {body}");
            let task = &body["tasks"][0];
            assert_eq!(
                json_uuid(&task["created_by"]),
                users[i].user_id,
                "{others} others, user {i}: {body}"
            );
            assert_eq!(
                body["created"],
                json!(u64::from(i != 0)),
                "{others} others, user {i}: {body}"
            );
            named.push(json_uuid(&task["id"]));
        }
        assert_eq!(named[0], first, "{others} others: the first user's task");
        let distinct: std::collections::BTreeSet<Uuid> = named.iter().copied().collect();
        assert_eq!(distinct.len(), users.len(), "{others} others: {named:?}");
        for (i, id) in named.iter().enumerate() {
            let mine = format!(
                "SELECT count(*) AS n FROM tasks WHERE id = '{id}' AND key = 'nightly' AND created_by = '{}'",
                users[i].user_id
            );
            assert_eq!(app.db.count(&mine).await, 1, "{others} others, user {i}");
        }
        let rows = app
            .db
            .count("SELECT count(*) AS n FROM tasks WHERE key = 'nightly'")
            .await;
        assert_eq!(
            rows,
            users.len() as i64,
            "{others} others: one row per creator"
        );
    }
}

/// One user's creates of one key, half with one title and half with
/// another, all held behind the test's `SHARE` lock on `tasks` until every
/// one waits to insert, then let go: one row; every create that sent the
/// stored title is answered with it, every other one `409 key_conflict`
/// and creates nothing (the keyless task each also sent is not stored).
/// With 1 + 1 and 3 + 3 creates.
#[tokio::test]
async fn a_key_replayed_with_other_content_beside_the_original_makes_one_task_and_conflicts() {
    for per_title in [1usize, 3] {
        let mut config = test_config();
        config.pool.max_size = 8;
        let app = TestApp::spawn_with(config).await;
        let ada = app.signup("ada@example.com").await;
        let held = app.db.hold("LOCK TABLE tasks IN SHARE MODE").await;
        let answers = behind_lock(&app, held, 2 * per_title, |i| {
            let p = participant(&app);
            let token = ada.token.clone();
            async move {
                let body = json!({"tasks": [
                    {"title": format!("version {}", i % 2), "key": "invoice-8"},
                    {"title": format!("keyless {i}")}
                ]});
                let answer = create_from(p, token, body).await;
                (i % 2, answer)
            }
        })
        .await;
        let rows = app
            .db
            .uuids("SELECT id FROM tasks WHERE key = 'invoice-8'")
            .await;
        assert_eq!(rows.len(), 1, "{per_title} per title: one row for the key");
        let stored = app
            .db
            .count(&format!(
                "SELECT count(*) AS n FROM tasks WHERE id = '{}' AND title = 'version 1'",
                rows[0]
            ))
            .await as usize;
        let mut wrong = Vec::new();
        for (version, (status, body)) in &answers {
            let ok = match *version == stored {
                true => *status == 201 && json_uuid(&body["tasks"][0]["id"]) == rows[0],
                false => *status == 409 && body["code"] == json!("key_conflict"),
            };
            if !ok {
                wrong.push((version, status, body));
            }
        }
        assert!(
            wrong.is_empty(),
            "{per_title} per title (stored: version {stored}): {wrong:?}"
        );
        let keyless = app
            .db
            .count("SELECT count(*) AS n FROM tasks WHERE key IS NULL")
            .await;
        assert_eq!(
            keyless, per_title as i64,
            "{per_title} per title: only the accepted batches' keyless tasks"
        );
    }
}

/// Two keyed batches of one user naming keys k1, k2, k3 in opposite
/// orders, both held on the test's uncommitted row with k2 (for that
/// user) until both wait, then the row rolled back: each batch holds the
/// keys it inserted until it commits, so side by side the two would each
/// wait on the other (a deadlock); in line, the second finds the first's
/// tasks. Both are answered 201 with the same task for each key, one row
/// per key.
#[tokio::test]
async fn keyed_batches_of_one_user_in_opposite_orders_never_deadlock() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let held = hold_key(&app, ada.user_id, "k2").await;
    let item = |k: &str| json!({"title": format!("task {k}"), "key": k});
    let orders = [["k1", "k2", "k3"], ["k3", "k2", "k1"]];
    let answers = behind_lock(&app, held, 2, |i| {
        let p = participant(&app);
        let token = ada.token.clone();
        let body = json!({"tasks": orders[i].map(item)});
        async move { create_from(p, token, body).await }
    })
    .await;
    let mut by_key: std::collections::BTreeMap<String, Vec<Uuid>> = Default::default();
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        for task in body["tasks"].as_array().unwrap() {
            let key = task["key"].as_str().unwrap().to_owned();
            by_key.entry(key).or_default().push(json_uuid(&task["id"]));
        }
    }
    for (key, ids) in &by_key {
        assert!(ids.len() == 2 && ids[0] == ids[1], "{key}: {ids:?}");
        let rows = app
            .db
            .count(&format!(
                "SELECT count(*) AS n FROM tasks WHERE key = '{key}'"
            ))
            .await;
        assert_eq!(rows, 1, "{key}");
    }
}

/// Ten users each create a batch of 1000 keyed tasks (the most a batch
/// holds), all held behind the test's `SHARE` lock on `tasks` until every
/// one has taken its key locks and waits to insert: the locks they hold
/// together are counted then, and must be bounded per batch
/// (`KEY_LOCK_BUCKETS`), not one per key. One per key would be 10,000 here,
/// and a crowd of such batches (some 20,000 locks on this server's
/// defaults) fills PostgreSQL's shared lock table and fails every request
/// that needs a lock meanwhile. Every batch then succeeds.
#[tokio::test]
async fn a_crowd_of_the_largest_keyed_batches_holds_a_bounded_number_of_locks() {
    const USERS: usize = 10;
    let mut config = test_config();
    config.pool.max_size = USERS as u32;
    let app = TestApp::spawn_with(config).await;
    let mut tokens = Vec::new();
    for i in 0..USERS {
        tokens.push(app.signup(&format!("user{i}@example.com")).await.token);
    }
    let held = app.db.hold("LOCK TABLE tasks IN SHARE MODE").await;
    let batches = run_together(USERS, |i| {
        let p = participant(&app);
        let token = tokens[i].clone();
        let items: Vec<Value> = (0..1000)
            .map(|k| json!({"title": "bulk", "key": format!("bulk-{k}"), "schedulable": false}))
            .collect();
        create_from(p, token, json!({"tasks": items}))
    });
    let (answers, locks) = tokio::join!(batches, async {
        app.db.wait_for_lock_waiters(USERS as i64).await;
        let locks = app
            .db
            // This database's two-key advisory locks (other tests' logins
            // take one-key ones, elsewhere).
            .count(
                "SELECT count(*) AS n FROM pg_locks
                 WHERE locktype = 'advisory' AND objsubid = 2
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await;
        held.release().await;
        locks
    });
    let bound = (USERS * auth_core::store::tasks::KEY_LOCK_BUCKETS) as i64;
    assert!(
        locks <= bound,
        "{locks} advisory locks held by {USERS} batches (bound {bound})"
    );
    for (status, body) in &answers {
        assert_eq!(
            *status,
            201,
            "{}",
            body.to_string().chars().take(300).collect::<String>()
        );
    }
    let rows = app.db.count("SELECT count(*) AS n FROM tasks").await;
    assert_eq!(rows, (USERS * 1000) as i64);
}

/// Ten long-poll waiters (`wait_ms` 1500, beyond the 1 s re-check), a queue pool of 4, and 60 tasks arriving in five
/// bursts while validations keep running: every task claimed exactly once
/// (tally per id against a fresh read), none left claimable when the
/// waiters time out empty, and no validation refused.
#[tokio::test]
async fn long_poll_waiters_take_every_burst_once_and_validations_keep_flowing() {
    const WAITERS: usize = 10;
    let config = test_config();
    assert!(
        config.pool.max_size < WAITERS as u32,
        "a pool smaller than the waiters"
    );
    let app = TestApp::spawn_with(config).await;
    let producer = app.signup("producer@example.com").await;
    let mut workers = Vec::new();
    for i in 0..WAITERS {
        workers.push(app.signup(&format!("waiter{i}@example.com")).await);
    }
    let waiting = run_together(WAITERS + 1, |i| {
        let p = participant(&app);
        let me = workers.get(i).cloned();
        let checker = producer.token.clone();
        async move {
            let Some(me) = me else {
                // The validator: sessions must be served while the waiters wait.
                let mut refused = 0;
                for _ in 0..60 {
                    let req = p
                        .client
                        .get(p.url("/v1/sessions/current"))
                        .bearer_auth(&checker);
                    if p.send(req).await.0 != 200 {
                        refused += 1;
                    }
                }
                return (Vec::new(), refused);
            };
            let mut claims = Vec::new();
            // Until a wait ends empty; bounded: 60 tasks, 1-3 per claim.
            for _ in 0..80 {
                let req = p
                    .client
                    .post(p.url("/v1/tasks/claim"))
                    .bearer_auth(&me.token)
                    .json(&json!({"count": 1 + i % 3, "wait_ms": 1500}));
                let (status, body) = p.send(req).await;
                assert_eq!(status, 200, "{body}");
                let tasks = ids(&body);
                let done = tasks.is_empty();
                claims.push(ReportedClaim {
                    participant: i,
                    assignee: me.user_id,
                    claimed: body["claimed"].as_u64().unwrap_or(u64::MAX) as usize,
                    tasks,
                });
                if done {
                    break;
                }
            }
            (claims, 0)
        }
    });
    let bursts = async {
        let mut made = Vec::new();
        for burst in 0..5 {
            // Every waiter parked: each has just found the queue empty.
            app.wait_for_claim_waiters(WAITERS).await;
            made.extend(
                app.create_n_tasks(&producer.token, &format!("burst {burst}"), 12)
                    .await,
            );
        }
        made
    };
    let (results, made) = tokio::join!(waiting, bursts);
    let refused: usize = results.iter().map(|r| r.1).sum();
    assert_eq!(refused, 0, "validations refused while claims waited");
    let claims: Vec<ReportedClaim<Uuid>> = results.into_iter().flat_map(|r| r.0).collect();
    let held = held_in_db(&app).await;
    check_claims(&claims, &held).unwrap();
    assert_eq!(held.len(), made.len(), "all 60 claimed, each once");
    assert_eq!(
        app.db.count(CLAIMABLE).await,
        0,
        "a waiter timed out empty while tasks were claimable"
    );
}

/// A lapsed claim's worker writes while another worker re-claims: every
/// late write is refused, whatever the order, and the re-claim holds.
/// Then the new holder's complete, fail, release and heartbeat race a
/// cancel: exactly one of complete, fail, release and cancel wins, and the
/// stored task is what that winner made it. Six rounds, fresh tasks.
#[tokio::test]
async fn a_workers_writes_race_a_reclaim_and_a_cancel_with_one_outcome_per_attempt() {
    let app = TestApp::spawn().await;
    let late = app.signup("late@example.com").await;
    let next = app.signup("next@example.com").await;
    let boss = app.signup("boss@example.com").await;
    for round in 0..6 {
        let id = app
            .create_n_tasks(&late.token, &format!("round {round}"), 1)
            .await[0];
        assert_eq!(app.claim_ok(&late.token, 1).await["claimed"], 1);
        app.db
            .execute(&format!(
                "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = '{id}'"
            ))
            .await;
        let writes = ["heartbeat", "complete", "fail", "release"];
        let answers = run_together(5, |i| {
            let p = participant(&app);
            let (late, next) = (late.token.clone(), next.token.clone());
            async move {
                let req = match writes.get(i) {
                    Some(&"fail") => p
                        .client
                        .post(p.url(&format!("/v1/tasks/{id}/fail")))
                        .bearer_auth(late)
                        .json(&json!({"error": "late", "retry": false})),
                    Some(action) => p
                        .client
                        .post(p.url(&format!("/v1/tasks/{id}/{action}")))
                        .bearer_auth(late)
                        .json(&json!({})),
                    None => p
                        .client
                        .post(p.url("/v1/tasks/claim"))
                        .bearer_auth(next)
                        .json(&json!({"count": 1})),
                };
                p.send(req).await
            }
        })
        .await;
        for (action, (status, body)) in writes.iter().zip(&answers) {
            assert_eq!(
                *status, 409,
                "round {round}: a late {action} was accepted: {body}"
            );
        }
        assert_eq!(ids(&answers[4].1), vec![id], "round {round}: the re-claim");
        assert_eq!(held_in_db(&app).await, vec![(id, next.user_id)]);

        let outcomes = ["complete", "fail", "release", "cancel", "heartbeat"];
        let answers = run_together(5, |i| {
            let p = participant(&app);
            let token = if outcomes[i] == "cancel" {
                boss.token.clone()
            } else {
                next.token.clone()
            };
            // Each write its own body (a member it lacks is a 422).
            let body = match outcomes[i] {
                "fail" => json!({"error": "gave up", "retry": false}),
                _ => json!({}),
            };
            async move {
                let req = p
                    .client
                    .post(p.url(&format!("/v1/tasks/{id}/{}", outcomes[i])))
                    .bearer_auth(token)
                    .json(&body);
                p.send(req).await
            }
        })
        .await;
        for (action, (status, body)) in outcomes.iter().zip(&answers) {
            assert!(
                [200, 409].contains(status),
                "round {round}: {action}: {status} {body}"
            );
        }
        // The attempt ends once: by complete, fail or release; a cancel
        // ends the task, before them or after a release (the one open state).
        let worker_won: Vec<&str> = outcomes[..3]
            .iter()
            .zip(&answers)
            .filter(|(_, (status, _))| *status == 200)
            .map(|(action, _)| *action)
            .collect();
        let cancelled = answers[3].0 == 200;
        let consistent = matches!(
            (worker_won.as_slice(), cancelled),
            ([], true) | ([_], false) | (["release"], true)
        );
        assert!(
            consistent,
            "round {round}: {worker_won:?} and cancel {cancelled}: {answers:?}"
        );
        let expected = match (worker_won.first(), cancelled) {
            (_, true) => "status = 'cancelled' AND assigned_to IS NULL",
            (Some(&"complete"), _) => "status = 'completed'",
            (Some(&"fail"), _) => "status = 'failed' AND last_error = 'gave up'",
            _ => "status = 'unassigned' AND assigned_to IS NULL",
        };
        assert_eq!(
            app.db
                .count(&format!(
                    "SELECT count(*) AS n FROM tasks WHERE id = '{id}' AND {expected}"
                ))
                .await,
            1,
            "round {round}: the stored task is not what {worker_won:?} / cancel {cancelled} made it"
        );
        // Leave nothing claimable for the next round.
        app.db
            .execute(&format!("UPDATE tasks SET status = 'cancelled', finished_at = now(), assigned_to = NULL, assigned_by = NULL, assigned_at = NULL, lease_expires_at = NULL WHERE id = '{id}' AND status = 'unassigned'"))
            .await;
    }
}

/// A task allowed 3 attempts whose every lease lapses, raced each round by
/// six claimers: claimed exactly 3 times in all, then `failed` with "lease
/// expired", and never claimed again.
#[tokio::test]
async fn a_task_whose_lease_keeps_lapsing_fails_after_max_attempts_and_is_never_claimed_again() {
    let app = TestApp::spawn().await;
    let producer = app.signup("producer@example.com").await;
    let mut claimers = Vec::new();
    for i in 0..6 {
        claimers.push(app.signup(&format!("claimer{i}@example.com")).await);
    }
    let res = app
        .create_tasks(
            &producer.token,
            &json!({"tasks": [{"title": "cursed", "max_attempts": 3}]}),
        )
        .await;
    let id = ids(&res.json::<Value>().await.unwrap())[0];
    let mut claimed = Vec::new();
    for round in 0..5 {
        let got = run_together(6, |i| {
            let p = participant(&app);
            let token = claimers[i].token.clone();
            async move {
                let req = p
                    .client
                    .post(p.url("/v1/tasks/claim"))
                    .bearer_auth(token)
                    .json(&json!({"count": 1}));
                let (status, body) = p.send(req).await;
                assert_eq!(status, 200, "{body}");
                ids(&body)
            }
        })
        .await;
        let this_round: Vec<Uuid> = got.into_iter().flatten().collect();
        assert!(
            this_round.len() <= 1,
            "round {round}: claimed twice at once: {this_round:?}"
        );
        claimed.extend(this_round);
        app.db
            .execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE status = 'assigned'")
            .await;
    }
    assert_eq!(claimed, vec![id; 3], "claimed exactly max_attempts times");
    let shown = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM task_view WHERE id = '{id}' AND status = 'failed' AND last_error = 'lease expired' AND attempt = 3"
        ))
        .await;
    assert_eq!(shown, 1, "shown failed after its last lease lapsed");
    assert_eq!(app.db.count(CLAIMABLE).await, 0);
}
