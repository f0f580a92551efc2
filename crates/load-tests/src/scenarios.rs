//! The clients: session users (people, with sessions), queue workers and
//! producers (machines, each with an API key of the role it needs, made by
//! its user's session), and the two focused mixes (`validator` for the
//! ceiling run, `loginstorm`).

use crate::acknowledged;
use crate::client::Call;
use goose::prelude::*;
use rand::Rng as _;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const PASSWORD: &str = "load-test password 123";

/// A signed-up user with a live session; each goose user keeps one. A
/// machine (worker, producer) also holds an API key, which its queue calls
/// send.
#[derive(Debug, Clone)]
struct Account {
    email: String,
    user_id: Uuid,
    token: String,
    session_id: Uuid,
    key: Option<MachineKey>,
}

#[derive(Debug, Clone)]
struct MachineKey {
    id: Uuid,
    key: String,
}

impl Account {
    /// The credential of the queue's calls: the key, for a machine.
    fn machine(&self) -> &str {
        self.key.as_ref().map_or(&self.token, |k| &k.key)
    }
}

#[derive(Deserialize)]
struct IssuedKey {
    id: Uuid,
    key: String,
}

#[derive(Deserialize)]
struct Registered {
    id: Uuid,
}

#[derive(Deserialize)]
struct Login {
    token: String,
    session_id: Uuid,
    user_id: Uuid,
}

#[derive(Deserialize)]
struct Current {
    session_id: Uuid,
}

#[derive(Deserialize)]
struct SessionList {
    sessions: Vec<ListedSession>,
}

#[derive(Deserialize)]
struct ListedSession {
    session_id: Uuid,
    current: bool,
}

#[derive(Deserialize)]
struct Task {
    id: Uuid,
    status: String,
    assigned_to: Option<Uuid>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    tasks: Vec<Task>,
    created: u64,
}

#[derive(Deserialize)]
struct Claim {
    requested: u64,
    claimed: u64,
    tasks: Vec<Task>,
}

#[derive(Deserialize)]
struct Tasks {
    tasks: Vec<Task>,
}

fn account(user: &GooseUser) -> Result<Account, Box<TransactionError>> {
    user.get_session_data::<Account>().cloned().ok_or_else(|| {
        Box::new(TransactionError::Custom(
            "no account (sign-up failed)".into(),
        ))
    })
}

async fn login(user: &mut GooseUser, email: &str) -> Result<Login, Box<TransactionError>> {
    let mut reply = Call::new(GooseMethod::Post, "/v1/sessions", &[201])
        .json(json!({"email": email, "password": PASSWORD}))
        .send(user)
        .await?;
    reply.parse(user)
}

/// on_start: register a fresh user and log in.
async fn sign_up(user: &mut GooseUser) -> TransactionResult {
    let email = format!("load-{}@example.test", Uuid::new_v4().simple());
    let mut reply = Call::new(GooseMethod::Post, "/v1/users", &[201])
        .json(json!({"email": email, "password": PASSWORD}))
        .send(user)
        .await?;
    let registered: Registered = reply.parse(user)?;
    acknowledged::with(|r| r.registered.push(registered.id));
    let session = login(user, &email).await?;
    user.set_session_data(Account {
        email,
        user_id: session.user_id,
        token: session.token,
        session_id: session.session_id,
        key: None,
    });
    Ok(())
}

/// A new API key carrying `roles`, made with the user's session.
async fn make_key(
    user: &mut GooseUser,
    roles: &[&str],
) -> Result<MachineKey, Box<TransactionError>> {
    let me = account(user)?;
    let mut reply = Call::new(GooseMethod::Post, "/v1/api-keys", &[201])
        .token(&me.token)
        .json(json!({"name": "load machine", "roles": roles}))
        .send(user)
        .await?;
    let issued: IssuedKey = reply.parse(user)?;
    Ok(MachineKey {
        id: issued.id,
        key: issued.key,
    })
}

/// on_start of a machine: sign up, then work with a key carrying `roles`.
async fn sign_up_machine(user: &mut GooseUser, roles: &[&str]) -> TransactionResult {
    sign_up(user).await?;
    let key = make_key(user, roles).await?;
    let me = account(user)?;
    user.set_session_data(Account {
        key: Some(key),
        ..me
    });
    Ok(())
}

async fn sign_up_worker(user: &mut GooseUser) -> TransactionResult {
    sign_up_machine(user, &["worker"]).await
}

/// Who the caller is, by `credential`, named by `kind` (`session` or `API
/// key`): the same route validated both ways, side by side in one run.
async fn whoami(
    user: &mut GooseUser,
    credential: &str,
    kind: &str,
    me: &Account,
) -> TransactionResult {
    let name = format!("/v1/users/me ({kind})");
    let mut reply = Call::new(GooseMethod::Get, "/v1/users/me", &[200])
        .named(&name)
        .token(credential)
        .send(user)
        .await?;
    let found: Registered = reply.parse(user)?;
    if found.id != me.user_id {
        return Err(reply.fail(user, "/v1/users/me answered another user"));
    }
    Ok(())
}

async fn whoami_by_session(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    whoami(user, &me.token, "session", &me).await
}

async fn whoami_by_key(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    whoami(user, me.machine(), "API key", &me).await
}

/// A worker's key asks for the task counts, which need `assigner`: the
/// answer must be 403 (a 200 is counted, then failed).
async fn forbidden_probe(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let reply = Call::new(GooseMethod::Get, "/v1/tasks/stats", &[403, 200])
        .named("/v1/tasks/stats (worker key: forbidden)")
        .token(me.machine())
        .send(user)
        .await?;
    let served = reply.status == 200;
    acknowledged::with(|r| {
        r.forbidden_probes += 1;
        if served {
            r.forbidden_served += 1;
        }
    });
    if served {
        let mut reply = reply;
        return Err(reply.fail(user, "a worker's key was served what needs assigner"));
    }
    Ok(())
}

/// A machine's key rotation, as an operator does it: a new key made, the
/// old one revoked (204), then the old one sent once more, which must be
/// refused (401; a 200 is counted, then failed).
async fn rotate_key(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let Some(old) = me.key.clone() else {
        return Ok(());
    };
    let new = make_key(user, &["worker"]).await?;
    Call::new(
        GooseMethod::Delete,
        &format!("/v1/api-keys/{}", old.id),
        &[204],
    )
    .named("/v1/api-keys/{id}")
    .token(&me.token)
    .send(user)
    .await?;
    acknowledged::with(|r| r.keys_revoked.push(old.id));
    user.set_session_data(Account {
        key: Some(new),
        ..me
    });
    let stale = Call::new(GooseMethod::Get, "/v1/users/me", &[401, 200])
        .named("/v1/users/me (revoked key)")
        .token(&old.key)
        .send(user)
        .await?;
    let served = stale.status == 200;
    acknowledged::with(|r| {
        r.uses_after_revocation += 1;
        if served {
            r.served_after_revocation += 1;
        }
    });
    if served {
        let mut stale = stale;
        return Err(stale.fail(user, "a revoked key was served"));
    }
    Ok(())
}

async fn validate(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let mut reply = Call::new(GooseMethod::Get, "/v1/sessions/current", &[200])
        .token(&me.token)
        .send(user)
        .await?;
    let current: Current = reply.parse(user)?;
    if current.session_id != me.session_id {
        return Err(reply.fail(user, "validate returned another session"));
    }
    Ok(())
}

async fn list_sessions(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let mut reply = Call::new(GooseMethod::Get, "/v1/sessions", &[200])
        .token(&me.token)
        .send(user)
        .await?;
    let list: SessionList = reply.parse(user)?;
    let mine = list
        .sessions
        .iter()
        .any(|s| s.session_id == me.session_id && s.current);
    if !mine {
        return Err(reply.fail(user, "session list lacks the current session"));
    }
    Ok(())
}

async fn refresh(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let mut reply = Call::new(GooseMethod::Post, "/v1/sessions/current/refresh", &[201])
        .token(&me.token)
        .send(user)
        .await?;
    let rotated: Login = reply.parse(user)?;
    if rotated.session_id != me.session_id || rotated.token == me.token {
        return Err(reply.fail(user, "refresh changed the session or kept the token"));
    }
    user.set_session_data(Account {
        token: rotated.token,
        ..me
    });
    Ok(())
}

/// Logout, then prove the old token is dead (an expected 401), then log in again.
async fn logout_and_login(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    Call::new(GooseMethod::Delete, "/v1/sessions/current", &[204])
        .token(&me.token)
        .send(user)
        .await?;
    acknowledged::with(|r| r.logged_out.push(me.session_id));
    // 200 is listed as allowed only so it can be counted here, then failed.
    let mut stale = Call::new(GooseMethod::Get, "/v1/sessions/current", &[401, 200])
        .named("/v1/sessions/current (after logout)")
        .token(&me.token)
        .send(user)
        .await?;
    let accepted = stale.status == 200;
    acknowledged::with(|r| {
        r.validations_after_logout += 1;
        if accepted {
            r.accepted_after_logout += 1;
        }
    });
    if accepted {
        return Err(stale.fail(user, "a logged-out token was accepted"));
    }
    let session = login(user, &me.email).await?;
    user.set_session_data(Account {
        token: session.token,
        session_id: session.session_id,
        ..me
    });
    Ok(())
}

/// Claims 1..=5 tasks (a quarter of the time as a long poll), checks the
/// answer is honest, then for each: completes it (some after a heartbeat),
/// releases it, or fails it with or without a retry.
async fn work(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let count: u64 = rand::rng().random_range(1..=5);
    let long_poll = rand::rng().random_bool(0.25);
    let (body, name) = if long_poll {
        (
            json!({"count": count, "wait_ms": 500}),
            "/v1/tasks/claim (long-poll)",
        )
    } else {
        (json!({"count": count}), "/v1/tasks/claim")
    };
    let mut reply = Call::new(GooseMethod::Post, "/v1/tasks/claim", &[200])
        .named(name)
        .token(me.machine())
        .json(body)
        .send(user)
        .await?;
    let claim: Claim = reply.parse(user)?;
    let honest = claim.requested == count
        && claim.claimed == claim.tasks.len() as u64
        && claim.claimed <= count
        && claim
            .tasks
            .iter()
            .all(|t| t.status == "assigned" && t.assigned_to == Some(me.user_id));
    acknowledged::with(|r| {
        r.claim_calls += 1;
        r.requested_total += claim.requested;
        r.claimed_total += claim.claimed;
        if claim.claimed == 0 {
            r.empty_claims += 1;
        }
        if !honest {
            r.dishonest_claims += 1;
        }
        r.claimed.extend(claim.tasks.iter().map(|t| t.id));
    });
    if !honest {
        return Err(reply.fail(user, "claim answer does not match what it claimed"));
    }
    for task in claim.tasks {
        let roll: f64 = rand::rng().random();
        let outcome = match roll {
            r if r < 0.6 => Outcome::Complete,
            r if r < 0.7 => Outcome::HeartbeatThenComplete,
            r if r < 0.8 => Outcome::Release,
            r if r < 0.92 => Outcome::Fail { retry: true },
            _ => Outcome::Fail { retry: false },
        };
        finish(user, &me, task.id, outcome).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Complete,
    HeartbeatThenComplete,
    Release,
    Fail { retry: bool },
}

/// Ends one held task as `outcome` says, checking the state it answers with.
async fn finish(
    user: &mut GooseUser,
    me: &Account,
    id: Uuid,
    outcome: Outcome,
) -> TransactionResult {
    if let Outcome::HeartbeatThenComplete = outcome {
        let mut beat = Call::new(
            GooseMethod::Post,
            &format!("/v1/tasks/{id}/heartbeat"),
            &[200, 409],
        )
        .named("/v1/tasks/{id}/heartbeat")
        .token(me.machine())
        .json(json!({"lease_secs": 600}))
        .send(user)
        .await?;
        if beat.status == 409 {
            acknowledged::with(|r| r.fenced.push(id));
            return Ok(());
        }
        let after: Task = beat.parse(user)?;
        if after.status != "assigned" {
            return Err(beat.fail(user, "a heartbeat lost the task"));
        }
    }
    let (action, body) = match outcome {
        Outcome::Complete | Outcome::HeartbeatThenComplete => ("complete", json!({})),
        Outcome::Release => ("release", json!({})),
        Outcome::Fail { retry } => (
            "fail",
            json!({"error": "load: simulated failure", "retry": retry}),
        ),
    };
    let path = format!("/v1/tasks/{id}/{action}");
    let name = format!("/v1/tasks/{{id}}/{action}");
    // 409: a producer cancelled it meanwhile (checked against the database
    // after the run: every such task must be cancelled).
    let mut done = Call::new(GooseMethod::Post, &path, &[200, 409])
        .named(&name)
        .token(me.machine())
        .json(body)
        .send(user)
        .await?;
    if done.status == 409 {
        acknowledged::with(|r| r.fenced.push(id));
        return Ok(());
    }
    let after: Task = done.parse(user)?;
    let acceptable: &[&str] = match outcome {
        Outcome::Complete | Outcome::HeartbeatThenComplete => &["completed"],
        Outcome::Release => &["unassigned"],
        // A retry goes back to the queue unless that was its last attempt.
        Outcome::Fail { retry: true } => &["unassigned", "failed"],
        Outcome::Fail { retry: false } => &["failed"],
    };
    if !acceptable.contains(&after.status.as_str()) {
        return Err(done.fail(user, "task in the wrong state after its worker's write"));
    }
    acknowledged::with(|r| match (outcome, after.status.as_str()) {
        (Outcome::Release, _) => r.released.push(id),
        (Outcome::Fail { .. }, "unassigned") => r.retried.push(id),
        (Outcome::Fail { .. }, _) => r.failed.push(id),
        _ => r.completed.push(id),
    });
    Ok(())
}

async fn my_tasks(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let mut reply = Call::new(
        GooseMethod::Get,
        "/v1/tasks?assignee=me&status=assigned",
        &[200],
    )
    .named("/v1/tasks")
    .token(me.machine())
    .send(user)
    .await?;
    let mine: Tasks = reply.parse(user)?;
    let all_mine = mine
        .tasks
        .iter()
        .all(|t| t.status == "assigned" && t.assigned_to == Some(me.user_id));
    if !all_mine {
        return Err(reply.fail(user, "my assigned tasks listed another's or a finished one"));
    }
    Ok(())
}

async fn stats(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    Call::new(GooseMethod::Get, "/v1/tasks/stats", &[200])
        .token(me.machine())
        .send(user)
        .await?;
    Ok(())
}

/// Keyed items of recent batches, by their creator: a producer sometimes
/// sends one of its own again, as a client retrying a create would, and
/// must get the same task back (a key is its creator's, and is sent again
/// with the content it was first sent with).
fn recent_keys() -> &'static std::sync::Mutex<Vec<(Uuid, serde_json::Value)>> {
    static KEYS: std::sync::OnceLock<std::sync::Mutex<Vec<(Uuid, serde_json::Value)>>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

async fn create_batch(user: &mut GooseUser, size: usize) -> TransactionResult {
    let me = account(user)?;
    let again: Option<serde_json::Value> = {
        let keys = recent_keys()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine: Vec<&serde_json::Value> = keys
            .iter()
            .filter(|(creator, _)| *creator == me.user_id)
            .map(|(_, item)| item)
            .collect();
        (!mine.is_empty()).then(|| mine[rand::rng().random_range(0..mine.len())].clone())
    };
    let tasks: Vec<_> = (0..size)
        .map(|i| {
            let mut rng = rand::rng();
            // A few tasks are not schedulable: claims must pass over them.
            let mut task = json!({
                "title": format!("load task {i}"),
                "schedulable": i % 20 != 0,
                "priority": rng.random_range(-5..=5),
            });
            if rng.random_bool(0.1) {
                let due = chrono::Utc::now()
                    + chrono::Duration::milliseconds(rng.random_range(200..3000));
                task["not_before"] = json!(due.to_rfc3339());
            }
            if rng.random_bool(0.1) {
                task["max_attempts"] = json!(2);
            }
            if let (0, Some(item)) = (i, &again) {
                return item.clone();
            }
            if rng.random_bool(0.3) {
                task["key"] = json!(format!("load-{}", Uuid::new_v4().simple()));
            }
            task
        })
        .collect();
    let keyed_items: Vec<serde_json::Value> = tasks
        .iter()
        .filter(|t| t.get("key").is_some())
        .cloned()
        .collect();
    let mut reply = Call::new(GooseMethod::Post, "/v1/tasks", &[201])
        .token(me.machine())
        .json(json!({"tasks": tasks}))
        .send(user)
        .await?;
    let created: Created = reply.parse(user)?;
    if created.tasks.len() != size || created.created > size as u64 {
        return Err(reply.fail(user, "batch create returned a different count"));
    }
    let keyed: Vec<(String, Uuid)> = created
        .tasks
        .iter()
        .filter_map(|t| t.key.clone().map(|k| (k, t.id)))
        .collect();
    {
        let mut keys = recent_keys()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.extend(keyed_items.into_iter().map(|item| (me.user_id, item)));
        let excess = keys.len().saturating_sub(100);
        keys.drain(..excess);
    }
    acknowledged::with(|r| {
        r.tasks_created += created.created;
        r.keyed.extend(keyed);
    });
    // Now and then a producer changes its mind about one task.
    if rand::rng().random_bool(0.2) {
        let victim = created.tasks[rand::rng().random_range(0..created.tasks.len())].id;
        let cancel = Call::new(
            GooseMethod::Post,
            &format!("/v1/tasks/{victim}/cancel"),
            &[200, 409],
        )
        .named("/v1/tasks/{id}/cancel")
        .token(me.machine())
        .json(json!({}))
        .send(user)
        .await?;
        if cancel.status == 200 {
            acknowledged::with(|r| r.cancelled.push(victim));
        }
    }
    Ok(())
}

async fn seed_work(user: &mut GooseUser) -> TransactionResult {
    sign_up_machine(user, &["assigner"]).await?;
    create_batch(user, 200).await
}

async fn produce(user: &mut GooseUser) -> TransactionResult {
    create_batch(user, 20).await
}

async fn login_again(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    login(user, &me.email).await?;
    Ok(())
}

fn wait(min_ms: u64, max_ms: u64) -> (Duration, Duration) {
    (Duration::from_millis(min_ms), Duration::from_millis(max_ms))
}

/// Every scenario. The default run (`xtask load`) selects the first three.
pub fn all() -> Result<Vec<Scenario>, GooseError> {
    let (think_min, think_max) = wait(100, 300);
    let (produce_min, produce_max) = wait(500, 1500);
    Ok(vec![
        scenario!("SessionUser")
            .set_weight(6)?
            .set_wait_time(think_min, think_max)?
            .register_transaction(transaction!(sign_up).set_on_start())
            // Mostly validations; a re-login (argon2, ~40 ms of a core) is
            // rare, as for real users, or hashing alone would fill the cores.
            .register_transaction(transaction!(validate).set_weight(40)?)
            .register_transaction(transaction!(whoami_by_session).set_weight(4)?)
            .register_transaction(transaction!(list_sessions).set_weight(4)?)
            .register_transaction(transaction!(refresh).set_weight(2)?)
            .register_transaction(transaction!(logout_and_login)),
        scenario!("QueueWorker")
            .set_weight(3)?
            .set_wait_time(think_min, think_max)?
            .register_transaction(transaction!(sign_up_worker).set_on_start())
            .register_transaction(transaction!(work).set_weight(8)?)
            .register_transaction(transaction!(whoami_by_key).set_weight(4)?)
            .register_transaction(transaction!(my_tasks))
            .register_transaction(transaction!(forbidden_probe))
            .register_transaction(transaction!(rotate_key)),
        scenario!("Producer")
            .set_weight(1)?
            .set_wait_time(produce_min, produce_max)?
            .register_transaction(transaction!(seed_work).set_on_start())
            .register_transaction(transaction!(produce))
            .register_transaction(transaction!(stats)),
        // As fast as it can: validations only (the `--ceiling` comparison).
        scenario!("Validator")
            .register_transaction(transaction!(sign_up).set_on_start())
            .register_transaction(transaction!(validate)),
        // Validations at a human-ish pace: the traffic a login storm must not starve.
        scenario!("PacedValidator")
            .set_wait_time(Duration::from_millis(50), Duration::from_millis(150))?
            .register_transaction(transaction!(sign_up).set_on_start())
            .register_transaction(transaction!(validate)),
        // `GET /v1/users/me` as fast as it goes, by session and by API key
        // (run both together: the two validations side by side under one
        // load, each named apart in goose's report).
        scenario!("SessionWhoami")
            .register_transaction(transaction!(sign_up).set_on_start())
            .register_transaction(transaction!(whoami_by_session)),
        scenario!("KeyWhoami")
            .register_transaction(transaction!(sign_up_worker).set_on_start())
            .register_transaction(transaction!(whoami_by_key)),
        // Logins back to back: the argon2 pool's throughput under load.
        scenario!("LoginStorm")
            .register_transaction(transaction!(sign_up).set_on_start())
            .register_transaction(transaction!(login_again)),
    ])
}
