//! Crowds of long-poll claims: the bounds on waiters raced on both sides,
//! the database work of waiting against the number of waiters, and clients
//! that hang up while they wait or while their claim runs.

use super::participant;
use auth_api::config::ApiConfig;
use auth_core::config::QueuePolicy;
use auth_core::wakeups::WaiterLimits;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use test_support::TestApp;
use test_support::app::{task_ids, test_config};
use test_support::concurrency::run_together;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Long polls one session may have waiting, and one instance.
const PER_CREDENTIAL: usize = 4;
const PER_INSTANCE: usize = 6;

fn bounded(queue: QueuePolicy) -> ApiConfig {
    ApiConfig {
        queue: QueuePolicy {
            waiters: WaiterLimits {
                per_credential: PER_CREDENTIAL,
                per_instance: PER_INSTANCE,
            },
            ..queue
        },
        ..test_config()
    }
}

/// A claim written on a connection of its own, never read: its client
/// hangs up by dropping it.
async fn raw_claim(app: &TestApp, token: &str, body: &Value) -> TcpStream {
    let host = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /v1/tasks/claim HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Yields until `done()` holds; panics with `why` after 15 s.
async fn eventually(why: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{why}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn waiters_beyond_the_bounds_are_refused_at_once() {
    let app = TestApp::spawn_with(bounded(QueuePolicy::default())).await;
    let boss = app.signup("boss@example.com").await;
    // Per credential: one session's long polls, below, at, just above and
    // three times the bound; per instance: each from a session of its own.
    let mut users = Vec::new();
    for i in 0..3 * PER_INSTANCE {
        users.push(app.signup(&format!("w{i}@example.com")).await.token);
    }
    let cases: Vec<(&str, usize, usize)> = [3, 4, 5, 3 * PER_CREDENTIAL]
        .map(|n| ("one session", n, PER_CREDENTIAL))
        .into_iter()
        .chain([5, 6, 7, 3 * PER_INSTANCE].map(|n| ("sessions of their own", n, PER_INSTANCE)))
        .collect();
    for (whose, n, bound) in cases {
        let refused = Arc::new(AtomicUsize::new(0));
        let (answers, parked) = tokio::join!(
            run_together(n, |i| {
                let p = participant(&app);
                let token = if whose == "one session" {
                    users[0].clone()
                } else {
                    users[i].clone()
                };
                let refused = refused.clone();
                async move {
                    let res = p
                        .client
                        .post(p.url("/v1/tasks/claim"))
                        .bearer_auth(token)
                        .json(&json!({"count": 1, "wait_ms": 20000}))
                        .send()
                        .await
                        .unwrap();
                    let status = res.status().as_u16();
                    let retry = res.headers().contains_key("retry-after");
                    let body: Value = res.json().await.unwrap();
                    if status == 429 {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    (
                        status,
                        body["code"].as_str().unwrap_or("").to_owned(),
                        retry,
                    )
                }
            }),
            async {
                // Every claim parked or refused; then the waiters get work.
                let wakeups = app.state.queue.wakeups();
                eventually(&format!("{whose} x{n}: not all parked or refused"), || {
                    wakeups.waiting() + refused.load(Ordering::SeqCst) == n
                })
                .await;
                let parked = wakeups.waiting();
                app.create_n_tasks(&boss.token, &format!("{whose}-{n}"), parked)
                    .await;
                parked
            }
        );
        let admitted = n.min(bound);
        assert_eq!(parked, admitted, "{whose} x{n}: {answers:?}");
        let waited = answers.iter().filter(|a| a.0 == 200).count();
        let limited = answers
            .iter()
            .filter(|a| a.0 == 429 && a.1 == "too_many_waiters" && a.2)
            .count();
        assert_eq!(
            (waited, limited),
            (admitted, n - admitted),
            "{whose} x{n}: {answers:?}"
        );
    }
    // Every task created went to one waiter (fresh read).
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE status = 'assigned' AND attempt = 1")
            .await,
        app.db.count("SELECT count(*) AS n FROM tasks").await
    );
}

#[tokio::test]
async fn waiting_costs_one_re_check_per_instance_whatever_the_number_of_waiters() {
    let (app, _, proxy) = TestApp::spawn_counted(test_config()).await;
    let ada = app.signup("ada@example.com").await;
    // What one try costs here (directly or behind a pooler): a claim that
    // finds nothing, less the validation of its token.
    let before = proxy.sent();
    app.current(&ada.token).await;
    let validation = proxy.sent() - before;
    let before = proxy.sent();
    app.claim_ok(&ada.token, 1).await;
    let one_try = (proxy.sent() - before).round_trips - validation.round_trips;
    let mut spent = Vec::new();
    // One waiter, and forty: past the one-second re-check, a waiter that
    // re-checked on its own would have tried once more.
    for n in [1, 40] {
        let wait_ms = 1500;
        let mark = std::sync::Mutex::new(None);
        let (answers, ()) = tokio::join!(
            run_together(n, |_| {
                let p = participant(&app);
                let token = ada.token.clone();
                async move {
                    p.send(
                        p.client
                            .post(p.url("/v1/tasks/claim"))
                            .bearer_auth(token)
                            .json(&json!({"count": 1, "wait_ms": wait_ms})),
                    )
                    .await
                }
            }),
            async {
                // From the moment all wait to the moment all answered.
                app.wait_for_claim_waiters(n).await;
                *mark.lock().unwrap() = Some((proxy.sent(), Instant::now()));
            }
        );
        let (from, at) = mark.lock().unwrap().expect("marked");
        let used = proxy.sent() - from;
        // The instance re-checks once a second, however many wait: the
        // window allows one try per second begun, one more for a try a
        // tick began just before the mark that lands inside it, and one
        // more for a wake-up passed on by a waiter that was leaving (waits
        // count from each request's arrival, so they end apart). A waiter
        // that re-checked on its own would cost forty times as much.
        let allowed = (at.elapsed().as_secs_f64().ceil() as u64 + 2) * one_try;
        assert!(
            answers
                .iter()
                .all(|(s, body)| *s == 200 && body["claimed"] == 0),
            "{answers:?}"
        );
        spent.push((n, used.round_trips, allowed));
    }
    assert!(
        spent.iter().all(|(_, trips, allowed)| trips <= allowed),
        "round trips while waiting, by waiters (spent, allowed): {spent:?}; one try costs {one_try}"
    );
}

#[tokio::test]
async fn waiters_that_hung_up_take_nothing_and_the_next_waiter_is_served() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = json!({"count": 1, "wait_ms": 20000});
    let mut gone = Vec::new();
    for _ in 0..5 {
        gone.push(raw_claim(&app, &ada.token, &body).await);
    }
    app.wait_for_claim_waiters(5).await;
    // They hang up; one waiter that stays comes after them.
    drop(gone);
    app.wait_for_no_claim_waiters().await;
    let stays = app.spawn_claim(&ada.token, body.clone());
    app.wait_for_claim_waiters(1).await;
    let created = app.create_n_tasks(&ada.token, "after", 5).await;
    let (status, answer) = stays.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let taken = task_ids(&answer);
    assert_eq!(taken.len(), 1, "{answer}");
    // Fresh read: the one that stayed holds one task; the other four are
    // claimable, their attempts untouched.
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM tasks WHERE status = 'unassigned' AND attempt = 0")
            .await,
        4
    );
    assert!(created.contains(&taken[0]));
    assert_eq!(app.state.queue.handed_back(), 0);
}

#[tokio::test]
async fn a_claim_under_way_when_its_client_hangs_up_is_handed_back() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    app.create_n_tasks(&ada.token, "t", 5).await;
    // The claim waits in PostgreSQL, behind the test's lock on the table.
    let held = app.db.hold("LOCK TABLE tasks IN EXCLUSIVE MODE").await;
    let client = raw_claim(&app, &ada.token, &json!({"count": 5, "wait_ms": 20000})).await;
    app.db.wait_for_lock_waiters(1).await;
    drop(client);
    let wakeups = app.state.queue.wakeups();
    eventually("the hung-up claim was still being served", || {
        wakeups.under_way() == 0
    })
    .await;
    held.release().await;
    eventually("the claimed tasks were not handed back", || {
        app.state.queue.handed_back() == 5
    })
    .await;
    // Fresh read: claimed once and handed back, attempts returned.
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) AS n FROM tasks WHERE status = 'unassigned' AND assigned_to IS NULL
                   AND attempt = 1 AND released = 1"
            )
            .await,
        5
    );
    let again = app.claim_ok(&ada.token, 5).await;
    assert_eq!(again["claimed"], 5, "{again}");
}
