use super::participant;
use serde_json::json;
use test_support::TestApp;
use test_support::app::json_uuid;
use test_support::concurrency::{ReportedClaim, check_claims, run_together};
use uuid::Uuid;

/// Every task the database holds as assigned, with its assignee: a fresh read.
async fn assigned_in_db(app: &TestApp) -> Vec<(Uuid, Uuid)> {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        assigned_to: Uuid,
    }
    let mut conn = app.db.connect().await;
    diesel::sql_query(
        "SELECT id, assigned_to FROM tasks WHERE status = 'assigned' AND lease_expires_at > now()",
    )
    .get_results::<Row>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.id, r.assigned_to))
    .collect()
}

/// Claimers racing in rounds.
const CLAIMERS: usize = 10;

#[tokio::test]
async fn racing_claimers_never_share_or_lose_a_task() {
    // Supply just below, at, just above and well above what one round of
    // claims asks for (claimers x count), with a middling count and the
    // largest a claim may ask (30).
    for (count, supply) in [(7, 69), (7, 70), (7, 71), (7, 150), (30, 300), (30, 301)] {
        claimers_race(count, supply).await;
    }
}

/// `CLAIMERS` workers claim `count` at a time until none is left of
/// `supply` tasks; every task ends claimed exactly once.
async fn claimers_race(count: usize, supply: usize) {
    let app = TestApp::spawn().await;
    let producer = app.signup("producer@example.com").await;
    let ids = app.create_n_tasks(&producer.token, "race", supply).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE status = 'unassigned' AND schedulable")
            .await,
        supply as i64
    );
    let mut workers = Vec::new();
    for i in 0..CLAIMERS {
        workers.push(app.signup(&format!("worker{i}@example.com")).await);
    }
    let reports = run_together(CLAIMERS, |i| {
        let p = participant(&app);
        let me = workers[i].clone();
        async move {
            let mut claims = Vec::new();
            // Bounded even against a server that lies about `claimed`: stop
            // when a claim lists no task, and after more rounds than the
            // supply could ever need.
            for _ in 0..supply.div_ceil(count) + 2 {
                let req = p
                    .client
                    .post(p.url("/v1/tasks/claim"))
                    .bearer_auth(&me.token)
                    .json(&json!({"count": count}));
                let (status, body) = p.send(req).await;
                assert_eq!(status, 200, "{body}");
                let tasks: Vec<Uuid> = body["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| json_uuid(&t["id"]))
                    .collect();
                let claimed = body["claimed"].as_u64().unwrap_or(u64::MAX) as usize;
                let done = tasks.is_empty();
                claims.push(ReportedClaim {
                    participant: i,
                    assignee: me.user_id,
                    claimed,
                    tasks,
                });
                if done {
                    break;
                }
            }
            claims
        }
    })
    .await;
    let claims: Vec<ReportedClaim<Uuid>> = reports.into_iter().flatten().collect();
    let in_db = assigned_in_db(&app).await;
    check_claims(&claims, &in_db).unwrap_or_else(|e| panic!("count {count}, supply {supply}: {e}"));
    assert_eq!(
        in_db.len(),
        ids.len(),
        "count {count}, supply {supply}: every task claimed exactly once, none lost"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE attempt <> 1")
            .await,
        0,
        "count {count}, supply {supply}: each task claimed once"
    );
}

#[tokio::test]
async fn a_late_completion_never_wins_over_a_reclaim() {
    let app = TestApp::spawn().await;
    let slow = app.signup("slow@example.com").await;
    let fast = app.signup("fast@example.com").await;
    let ids = app.create_n_tasks(&slow.token, "fence", 6).await;
    let first = app.claim(&slow.token, &json!({"count": 6})).await;
    assert_eq!(first.status().as_u16(), 200);
    app.db
        .execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
        .await;

    // Six participants: one re-claims everything, five late completions race it.
    let results = run_together(6, |i| {
        let p = participant(&app);
        let (slow, fast) = (slow.token.clone(), fast.token.clone());
        let ids = ids.clone();
        async move {
            if i == 0 {
                let req = p
                    .client
                    .post(p.url("/v1/tasks/claim"))
                    .bearer_auth(&fast)
                    .json(&json!({"count": 6}));
                let (status, body) = p.send(req).await;
                assert_eq!(status, 200, "{body}");
                body["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| (json_uuid(&t["id"]), 0u16))
                    .collect::<Vec<_>>()
            } else {
                let id = ids[i];
                let (status, _) = p
                    .send(
                        p.client
                            .post(p.url(&format!("/v1/tasks/{id}/complete")))
                            .bearer_auth(&slow),
                    )
                    .await;
                vec![(id, status)]
            }
        }
    })
    .await;
    let reclaimed: Vec<Uuid> = results[0].iter().map(|(id, _)| *id).collect();
    for (id, status) in results[1..].iter().flatten() {
        assert_eq!(
            *status, 409,
            "a completion under an expired lease must be refused (task {id})"
        );
    }
    assert_eq!(reclaimed.len(), 6, "the re-claim got every task");
    let held_by_fast = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM tasks WHERE status = 'assigned' AND assigned_to = '{}'",
            fast.user_id
        ))
        .await;
    assert_eq!(
        held_by_fast, 6,
        "fresh read: nothing completed behind the new holder's back"
    );
}

#[tokio::test]
async fn complete_release_and_claims_of_one_task_have_one_consistent_outcome() {
    let app = TestApp::spawn().await;
    let holder = app.signup("holder@example.com").await;
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(app.signup(&format!("claimer{i}@example.com")).await);
    }
    let ids = app.create_n_tasks(&holder.token, "contested", 1).await;
    let id = ids[0];
    let first = app.claim(&holder.token, &json!({"count": 1})).await;
    assert_eq!(first.status().as_u16(), 200);

    // The holder completes and releases the same task while four others claim.
    let results = run_together(6, |i| {
        let p = participant(&app);
        let token = match i {
            0 | 1 => holder.token.clone(),
            _ => others[i - 2].token.clone(),
        };
        async move {
            let req = match i {
                0 => p.client.post(p.url(&format!("/v1/tasks/{id}/complete"))),
                1 => p.client.post(p.url(&format!("/v1/tasks/{id}/release"))),
                _ => p
                    .client
                    .post(p.url("/v1/tasks/claim"))
                    .json(&json!({"count": 1})),
            };
            p.send(req.bearer_auth(&token)).await
        }
    })
    .await;
    let (completed, released) = (results[0].0 == 200, results[1].0 == 200);
    for (status, body) in &results[..2] {
        assert!(
            *status == 200 || (*status == 409 && body["code"] == "not_assignee"),
            "{results:?}"
        );
    }
    assert!(
        completed != released,
        "exactly one of complete and release wins: {results:?}"
    );
    let claimed_by: Vec<Uuid> = results[2..]
        .iter()
        .enumerate()
        .filter(|(_, (_, b))| b["claimed"] == 1)
        .map(|(k, _)| others[k].user_id)
        .collect();
    assert!(results[2..].iter().all(|(s, _)| *s == 200), "{results:?}");
    // Fresh read of the one task.
    let status_is =
        |s: &str| format!("SELECT count(*) AS n FROM tasks WHERE id = '{id}' AND status = '{s}'");
    if completed {
        assert!(
            claimed_by.is_empty(),
            "a completed task was claimed: {claimed_by:?}"
        );
        assert_eq!(app.db.count(&status_is("completed")).await, 1);
    } else {
        assert!(claimed_by.len() <= 1, "claimed twice: {claimed_by:?}");
        let assigned = assigned_in_db(&app).await;
        assert_eq!(
            assigned,
            claimed_by.iter().map(|who| (id, *who)).collect::<Vec<_>>(),
            "the database agrees with the claim answers"
        );
    }
    let attempts = app
        .db
        .count(&format!(
            "SELECT attempt::bigint AS n FROM tasks WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(
        attempts,
        1 + claimed_by.len() as i64,
        "every claim counted once"
    );
}

/// Writers append count deltas while folders fold them and a reader reads
/// stats: no fold may lose or double a delta (the final stats equal a fresh
/// count of the view) and no stats answer may show a total other than the
/// tasks that exist (status changes move counts, never drop them).
#[tokio::test]
async fn folding_the_task_counts_while_workers_write_loses_no_change() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const TASKS: i64 = 200;
    const WORKERS: usize = 5;
    let app = TestApp::spawn().await;
    let producer = app.signup("producer@example.com").await;
    app.create_n_tasks(&producer.token, "fold", TASKS as usize)
        .await;
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(app.signup(&format!("worker{i}@example.com")).await);
    }
    let finished = Arc::new(AtomicUsize::new(0));
    // Participants 0..5 write, 5 and 6 fold, 7 reads stats.
    let totals = run_together(WORKERS + 3, |i| {
        let p = participant(&app);
        let me = workers.get(i).cloned().unwrap_or_else(|| producer.clone());
        let queue = app.state.queue.clone();
        let finished = finished.clone();
        async move {
            let mut totals = Vec::new();
            if i < WORKERS {
                for _ in 0..12 {
                    let claim = p
                        .client
                        .post(p.url("/v1/tasks/claim"))
                        .bearer_auth(&me.token)
                        .json(&json!({"count": 3}));
                    let (status, body) = p.send(claim).await;
                    assert_eq!(status, 200, "{body}");
                    let ids: Vec<String> = body["tasks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["id"].as_str().map(str::to_owned))
                        .collect();
                    for (k, id) in ids.iter().take(2).enumerate() {
                        let action = if k == 0 { "complete" } else { "release" };
                        let req = p
                            .client
                            .post(p.url(&format!("/v1/tasks/{id}/{action}")))
                            .bearer_auth(&me.token);
                        let (status, body) = p.send(req).await;
                        assert_eq!(status, 200, "{action}: {body}");
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            } else if i < WORKERS + 2 {
                // Bounded: at most 2,000 folds, fewer once the writers are done.
                for _ in 0..2_000 {
                    if finished.load(Ordering::SeqCst) == WORKERS {
                        break;
                    }
                    if let Err(e) = queue.compact_counts().await {
                        panic!("fold failed: {e}");
                    }
                }
            } else {
                for _ in 0..2_000 {
                    if finished.load(Ordering::SeqCst) == WORKERS {
                        break;
                    }
                    let (status, body) = p
                        .send(
                            p.client
                                .get(p.url("/v1/tasks/stats"))
                                .bearer_auth(&me.token),
                        )
                        .await;
                    assert_eq!(status, 200, "{body}");
                    let total: i64 = ["unassigned", "assigned", "completed"]
                        .iter()
                        .map(|s| body[*s].as_i64().unwrap_or(-1))
                        .sum();
                    totals.push(total);
                }
            }
            totals
        }
    })
    .await;
    let totals: Vec<i64> = totals.into_iter().flatten().collect();
    assert!(
        !totals.is_empty(),
        "the reader read stats while writers wrote"
    );
    let wrong: Vec<&i64> = totals.iter().filter(|t| **t != TASKS).collect();
    assert!(
        wrong.is_empty(),
        "stats totals other than {TASKS}: {wrong:?}"
    );

    let stats = app.state.queue.stats().await.unwrap();
    let shown =
        |status: &str| format!("SELECT count(*) AS n FROM task_view WHERE status = '{status}'");
    let fresh = (
        app.db.count(&shown("unassigned")).await,
        app.db.count(&shown("assigned")).await,
        app.db.count(&shown("completed")).await,
    );
    assert_eq!((stats.unassigned, stats.assigned, stats.completed), fresh);
    assert!(
        fresh.2 > 0 && fresh.1 > 0,
        "the writers changed statuses: {fresh:?}"
    );
    // Per stored status, the deltas sum to the rows (none lost, none twice).
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) AS n FROM (
                     SELECT status, count(*) AS n FROM tasks GROUP BY status
                 ) AS t FULL JOIN (
                     SELECT status, sum(n) AS n FROM task_count_deltas GROUP BY status
                 ) AS d USING (status)
                 WHERE t.n IS DISTINCT FROM d.n"
            )
            .await,
        0,
        "a stored status whose deltas do not sum to its rows"
    );
}
