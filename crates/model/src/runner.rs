//! Runs a history against two instances of the service on one database:
//! each round's steps start together behind a barrier, each answer is
//! recorded with when it was sent and answered, and the round is judged
//! (`judge::linearize`, then `settle::settle` on a fresh read) before the
//! next one starts. Between rounds the service's clock moves forward the
//! way tests age rows: every stored instant moves back.

use crate::history::{Act, Answer, Call, Counts, Event, History, Op, Round, Status, Step, StepId};
use crate::rules::{Model, Ms, SLACK_MS, Settings};
use crate::settle::{Stored, StoredSession, StoredTask};
use crate::{judge, settle};
use auth_api::config::ApiConfig;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use test_support::app::{TestApp, test_config};
use uuid::Uuid;

/// The users' password (the wrong one is this reversed).
const PASSWORD: &str = "model-run-password";
/// How many users the run registers.
pub const USERS: usize = 3;

/// Where rounds come from: a generator that looks at what the run holds,
/// or a history written down.
pub trait Script {
    fn next_round(&mut self, run: &View<'_>) -> Option<Round>;
}

/// What a script may look at between rounds.
pub struct View<'a> {
    pub model: &'a Model,
    pub now: Ms,
    pub settings: &'a Settings,
    pub next_step: StepId,
    pub logins: &'a BTreeMap<StepId, Uuid>,
    pub tasks: &'a BTreeMap<(StepId, u8), Uuid>,
}

/// Why a run failed: the round, what broke, and the history up to it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub round: usize,
    pub kind: Kind,
    pub why: String,
    pub history: History,
}

/// What kind of thing broke (a shrink keeps to the kind it started from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No order of the round's steps explains their answers.
    Answer,
    /// The database holds none of the states the answers allow.
    State,
    /// The round took too long to be judged at one instant.
    Overrun,
}

impl Kind {
    fn says(self, why: String) -> (Kind, String) {
        (self, why)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub rounds: usize,
    pub steps: usize,
    pub moved_ms: Ms,
    pub answers: BTreeMap<String, usize>,
}

/// The service's configuration for a run: the model's settings.
pub fn config(settings: &Settings) -> ApiConfig {
    let mut config = test_config();
    let ms = |ms: Ms| Duration::from_millis(ms as u64);
    config.sessions.idle_timeout = ms(settings.idle_ms);
    config.sessions.absolute_lifetime = ms(settings.absolute_ms);
    config.sessions.touch_interval = ms(settings.touch_ms);
    config.sessions.max_sessions_per_user = u32::try_from(settings.cap)
        .ok()
        .and_then(|cap| cap.try_into().ok())
        .unwrap_or_else(|| panic!("a session cap of {}", settings.cap));
    config.sessions.max_failed_logins = settings.login_limit as u32;
    config.sessions.failure_window = ms(settings.window_ms);
    config.sessions.reuse_grace = ms(settings.grace_ms);
    config.queue.lease = ms(settings.lease_ms);
    config.queue.max_wait = Duration::from_millis(500);
    config
}

/// Runs `script` on two fresh instances over a fresh database.
pub async fn run(
    seed: u64,
    settings: Settings,
    script: &mut dyn Script,
) -> Result<Outcome, Box<Failure>> {
    let first = TestApp::spawn_with(config(&settings)).await;
    let second = first.spawn_beside(config(&settings)).await;
    let mut run = Run {
        apps: [Arc::new(first), Arc::new(second)],
        settings,
        users: Vec::new(),
        start_us: epoch_us(),
        moved_ms: 0,
        tokens: HashMap::new(),
        logins: BTreeMap::new(),
        tasks: BTreeMap::new(),
        models: vec![Model::default()],
        history: History {
            seed,
            rounds: Vec::new(),
        },
        outcome: Outcome::default(),
    };
    run.register().await;
    loop {
        let next_step = run.history.steps() as StepId;
        let view = View {
            model: &run.models[0],
            now: run.now(),
            settings: &run.settings,
            next_step,
            logins: &run.logins,
            tasks: &run.tasks,
        };
        let Some(round) = script.next_round(&view) else {
            break;
        };
        run.history.rounds.push(round.clone());
        if let Err((kind, why)) = run.round(round).await {
            return Err(Box::new(Failure {
                round: run.history.rounds.len() - 1,
                kind,
                why,
                history: run.history,
            }));
        }
    }
    run.outcome.rounds = run.history.rounds.len();
    run.outcome.steps = run.history.steps();
    run.outcome.moved_ms = run.moved_ms;
    Ok(run.outcome)
}

/// Replays a history written down.
pub struct Replay(pub std::collections::VecDeque<Round>);

impl Script for Replay {
    fn next_round(&mut self, _: &View<'_>) -> Option<Round> {
        self.0.pop_front()
    }
}

struct Run {
    apps: [Arc<TestApp>; 2],
    settings: Settings,
    users: Vec<Uuid>,
    start_us: i64,
    moved_ms: Ms,
    tokens: HashMap<StepId, String>,
    /// The session each successful login opened.
    logins: BTreeMap<StepId, Uuid>,
    tasks: BTreeMap<(StepId, u8), Uuid>,
    /// The states the rules allow so far (they differ only in what no read
    /// shows yet); never empty.
    models: Vec<Model>,
    history: History,
    outcome: Outcome,
}

fn epoch_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub fn email(user: usize) -> String {
    format!("user{user}@model.example")
}

impl Run {
    fn now(&self) -> Ms {
        (epoch_us() - self.start_us) / 1000 + self.moved_ms
    }

    async fn register(&mut self) {
        for user in 0..USERS {
            let res = self.apps[0].register(&email(user), PASSWORD).await;
            assert_eq!(res.status(), 201, "registering the run's users");
            let body: Value = res.json().await.unwrap_or_default();
            let id = body["id"].as_str().and_then(|s| s.parse().ok());
            self.users
                .push(id.unwrap_or_else(|| panic!("a registration answered {body}")));
        }
    }

    async fn round(&mut self, round: Round) -> Result<(), (Kind, String)> {
        let advance = round.advance_ms + self.clear_of_deadlines(round.advance_ms);
        if advance > 0 {
            self.move_clock(advance).await;
        }
        let now = self.now();
        let started = epoch_us();
        let calls: Vec<(Step, Call, Request)> = round
            .steps
            .iter()
            .map(|step| {
                let (call, request) = self.resolve(step);
                (step.clone(), call, request)
            })
            .collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
        // Each step says when it has answered; a step `after` another waits
        // for that before it is sent.
        let answered: HashMap<StepId, Arc<tokio::sync::watch::Sender<bool>>> = calls
            .iter()
            .map(|(step, ..)| (step.id, Arc::new(tokio::sync::watch::channel(false).0)))
            .collect();
        let handles: Vec<_> = calls
            .iter()
            .map(|(step, _, request)| {
                let app = self.apps[usize::from(step.instance % 2)].clone();
                let (barrier, request) = (barrier.clone(), request.clone());
                let done = answered[&step.id].clone();
                let first = step
                    .after
                    .and_then(|id| answered.get(&id))
                    .map(|s| s.subscribe());
                let start_us = self.start_us;
                tokio::spawn(async move {
                    barrier.wait().await;
                    if let Some(mut first) = first {
                        // The senders outlive every step of the round.
                        let _ = first.wait_for(|done| *done).await;
                    }
                    let sent = epoch_us() - start_us;
                    let answer = send(&app, &request).await;
                    let answered = epoch_us() - start_us;
                    done.send_replace(true);
                    (sent, answered, answer)
                })
            })
            .collect();
        let mut events = Vec::new();
        for ((step, call, _), handle) in calls.into_iter().zip(handles) {
            let (sent, answered_at, (status, body)) = handle
                .await
                .map_err(|e| Kind::Answer.says(format!("step #{} panicked: {e}", step.id)))?;
            let answer = self.read_answer(&step, status, &body);
            *self
                .outcome
                .answers
                .entry(answer_kind(&answer))
                .or_default() += 1;
            events.push(Event {
                step: step.id,
                call,
                answer,
                sent,
                answered: answered_at,
            });
        }
        let took = (epoch_us() - started) / 1000;
        // Judged at one instant: sound while no deadline fell within the
        // time the round took (the generator keeps them `SLACK_MS` away).
        if took > SLACK_MS {
            let crossed = self
                .models
                .iter()
                .flat_map(|m| crate::generate::deadlines(m, &self.settings))
                .find(|d| *d > now - SLACK_MS && *d <= now + took + SLACK_MS);
            if let Some(deadline) = crossed {
                return Err(Kind::Overrun.says(format!(
                    "the round took {took} ms and crossed a deadline at {deadline} ms (model time {now}): it cannot be judged at one instant"
                )));
            }
        }
        let judged = judge::Round {
            settings: &self.settings,
            now,
            round: self.history.rounds.len() as u32,
            users: &self.users,
            events: &events,
        };
        let ends = judge::linearize(&self.models, &judged)
            .map_err(|why| Kind::Answer.says(format!("{why}\n{}", timeline(&events))))?;
        let stored = self.read_stored().await;
        self.models = settle::settle(&ends, &stored, now, &self.users)
            .map_err(|why| Kind::State.says(format!("{why}\n{}", timeline(&events))))?;
        Ok(())
    }

    /// How much further the clock must move so that no deadline the model
    /// knows falls within a round's reach of now (a round is judged at one
    /// instant; its steps spread over up to `SLACK_MS`).
    fn clear_of_deadlines(&self, advance: Ms) -> Ms {
        let deadlines: Vec<Ms> = self
            .models
            .iter()
            .flat_map(|m| crate::generate::deadlines(m, &self.settings))
            .collect();
        let mut extra = 0;
        for _ in 0..deadlines.len() + 1 {
            let now = self.now() + advance + extra;
            match deadlines
                .iter()
                .find(|&&d| d > now - SLACK_MS && d <= now + 2 * SLACK_MS)
            {
                Some(&d) => extra += d + SLACK_MS + 1 - now,
                None => break,
            }
        }
        extra
    }

    async fn move_clock(&mut self, ms: Ms) {
        let by = format!("make_interval(secs => {})", ms as f64 / 1000.0);
        let shift = |table: &str, columns: &[&str]| {
            let set: Vec<String> = columns
                .iter()
                .map(|c| format!("{c} = {c} - {by}"))
                .collect();
            format!("UPDATE {table} SET {}", set.join(", "))
        };
        test_support::db::TestDb::execute(
            &self.apps[0].db,
            &format!(
                "BEGIN; {}; {}; {}; {}; {}; COMMIT",
                shift("users", &["created_at"]),
                shift(
                    "sessions",
                    &[
                        "created_at",
                        "last_seen_at",
                        "idle_expires_at",
                        "absolute_expires_at",
                        "revoked_at"
                    ]
                ),
                shift("rotated_tokens", &["rotated_at"]),
                shift("login_attempts", &["attempted_at", "settled_at"]),
                shift(
                    "tasks",
                    &[
                        "created_at",
                        "assigned_at",
                        "lease_expires_at",
                        "completed_at",
                        "not_before",
                        "finished_at"
                    ]
                ),
            ),
        )
        .await;
        self.moved_ms += ms;
    }

    fn resolve(&self, step: &Step) -> (Call, Request) {
        let token = |t: StepId| {
            self.tokens
                .get(&t)
                .cloned()
                .unwrap_or_else(|| format!("no-such-token-{t}"))
        };
        let unknown =
            |n: u32| Uuid::from_u128(0x00de_ad00_0000_4000_8000_0000_0000_0000 | u128::from(n));
        let get = |path: String, t: StepId| Request::new("GET", path, Some(token(t)), None);
        let post = |path: String, t: StepId, body: Value| {
            Request::new("POST", path, Some(token(t)), Some(body))
        };
        let delete = |path: String, t: StepId| Request::new("DELETE", path, Some(token(t)), None);
        match &step.op {
            Op::Login { email: e, right } => (
                Call::Login {
                    email: *e,
                    right: *right,
                },
                Request::new(
                    "POST",
                    "/v1/sessions".into(),
                    None,
                    Some(json!({
                        "email": email(*e),
                        "password": if *right { PASSWORD.to_owned() } else { PASSWORD.chars().rev().collect() },
                    })),
                ),
            ),
            Op::Validate { token: t } => (
                Call::Validate { token: *t },
                get("/v1/sessions/current".into(), *t),
            ),
            Op::Refresh { token: t } => (
                Call::Refresh { token: *t },
                Request::new(
                    "POST",
                    "/v1/sessions/current/refresh".into(),
                    Some(token(*t)),
                    None,
                ),
            ),
            Op::Logout { token: t } => (
                Call::Logout { token: *t },
                delete("/v1/sessions/current".into(), *t),
            ),
            Op::RevokeOne { token: t, session } => {
                let id = self
                    .logins
                    .get(session)
                    .copied()
                    .unwrap_or(unknown(*session));
                (
                    Call::RevokeOne {
                        token: *t,
                        session: id,
                    },
                    delete(format!("/v1/sessions/{id}"), *t),
                )
            }
            Op::RevokeAll { token: t } => (
                Call::RevokeAll { token: *t },
                delete("/v1/sessions".into(), *t),
            ),
            Op::ListSessions { token: t } => (
                Call::ListSessions { token: *t },
                get("/v1/sessions".into(), *t),
            ),
            Op::Create { token: t, items } => {
                let tasks: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut task = json!({
                            "title": format!("step {} item {i}", step.id),
                            "priority": item.priority,
                            "max_attempts": item.max_attempts,
                        });
                        // A key is sent with one content every time (a
                        // key repeated with other content is a conflict,
                        // which the generator never asks for).
                        if let Some(key) = &item.key {
                            task["key"] = json!(key);
                            task["title"] = json!(format!("keyed {key}"));
                        }
                        task
                    })
                    .collect();
                (
                    Call::Create {
                        token: *t,
                        items: items.clone(),
                    },
                    post("/v1/tasks".into(), *t, json!({ "tasks": tasks })),
                )
            }
            Op::Claim {
                token: t,
                count,
                wait_ms,
            } => (
                Call::Claim {
                    token: *t,
                    count: *count,
                    wait_ms: *wait_ms,
                },
                post(
                    "/v1/tasks/claim".into(),
                    *t,
                    json!({"count": count, "wait_ms": wait_ms}),
                ),
            ),
            Op::Act {
                token: t,
                task,
                act,
            } => {
                let id = self
                    .tasks
                    .get(&(task.create, task.item))
                    .copied()
                    .unwrap_or(unknown(task.create * 1000 + u32::from(task.item)));
                let (path, body) = match act {
                    Act::Heartbeat { lease_secs } => {
                        ("heartbeat", lease_secs.map(|s| json!({ "lease_secs": s })))
                    }
                    Act::Complete => ("complete", None),
                    Act::Release => ("release", None),
                    Act::Fail { retry, error } => {
                        ("fail", Some(json!({"error": error, "retry": retry})))
                    }
                    Act::Cancel => ("cancel", None),
                };
                (
                    Call::Act {
                        token: *t,
                        task: id,
                        act: act.clone(),
                    },
                    Request::new(
                        "POST",
                        format!("/v1/tasks/{id}/{path}"),
                        Some(token(*t)),
                        body,
                    ),
                )
            }
            Op::Stats { token: t } => {
                (Call::Stats { token: *t }, get("/v1/tasks/stats".into(), *t))
            }
        }
    }

    /// The answer reduced to what the rules speak of; what the step
    /// produced (a token, a session, tasks) is remembered under its number.
    fn read_answer(&mut self, step: &Step, status: u16, body: &Value) -> Answer {
        let uuid = |v: &Value| v.as_str().and_then(|s| s.parse::<Uuid>().ok());
        let unexpected = || Answer::Unexpected(format!("{status} {body}"));
        if status >= 400 {
            return match body["code"].as_str() {
                Some(code) => Answer::problem(status, code),
                None => unexpected(),
            };
        }
        match (&step.op, status) {
            (Op::Login { .. } | Op::Refresh { .. }, 201) => {
                let (Some(session), Some(user), Some(token)) = (
                    uuid(&body["session_id"]),
                    uuid(&body["user_id"]),
                    body["token"].as_str(),
                ) else {
                    return unexpected();
                };
                self.tokens.insert(step.id, token.to_owned());
                if let Op::Login { .. } = step.op {
                    self.logins.insert(step.id, session);
                }
                Answer::Session { session, user }
            }
            (Op::Validate { .. }, 200) => match uuid(&body["session_id"]) {
                Some(session) => Answer::Valid { session },
                None => unexpected(),
            },
            (Op::Logout { .. } | Op::RevokeOne { .. }, 204) => Answer::Done,
            (Op::RevokeAll { .. }, 200) => match body["revoked"].as_u64() {
                Some(n) => Answer::Revoked(n as u32),
                None => unexpected(),
            },
            (Op::ListSessions { .. }, 200) => {
                let ids: Option<_> = body["sessions"]
                    .as_array()
                    .map(|list| list.iter().map(|s| uuid(&s["session_id"])).collect());
                match ids {
                    Some(Some(ids)) => Answer::Sessions(ids),
                    _ => unexpected(),
                }
            }
            (Op::Create { .. }, 201) => {
                let ids: Option<Option<Vec<Uuid>>> = body["tasks"]
                    .as_array()
                    .map(|list| list.iter().map(|t| uuid(&t["id"])).collect());
                let (Some(Some(ids)), Some(created)) = (ids, body["created"].as_u64()) else {
                    return unexpected();
                };
                for (i, id) in ids.iter().enumerate() {
                    self.tasks.insert((step.id, i as u8), *id);
                }
                Answer::Created {
                    ids,
                    created: created as u32,
                }
            }
            (Op::Claim { .. }, 200) => {
                let ids: Option<Option<Vec<Uuid>>> = body["tasks"]
                    .as_array()
                    .map(|list| list.iter().map(|t| uuid(&t["id"])).collect());
                match ids {
                    Some(Some(ids)) if body["claimed"].as_u64() == Some(ids.len() as u64) => {
                        Answer::Claimed(ids)
                    }
                    _ => unexpected(),
                }
            }
            (Op::Act { .. }, 200) => match body["status"].as_str().and_then(Status::parse) {
                Some(status) => Answer::Task { status },
                None => unexpected(),
            },
            (Op::Stats { .. }, 200) => {
                let n = |k: &str| body[k].as_i64();
                match (
                    n("unassigned"),
                    n("assigned"),
                    n("completed"),
                    n("failed"),
                    n("cancelled"),
                    n("delayed"),
                ) {
                    (Some(u), Some(a), Some(c), Some(f), Some(x), Some(d)) => {
                        Answer::Counts(Counts {
                            unassigned: u,
                            assigned: a,
                            completed: c,
                            failed: f,
                            cancelled: x,
                            delayed: d,
                        })
                    }
                    _ => unexpected(),
                }
            }
            _ => unexpected(),
        }
    }

    /// Sessions and tasks as stored, read afresh, instants in model time.
    async fn read_stored(&self) -> Stored {
        let to_model = format!(
            "((extract(epoch FROM {{}}) * 1000000)::bigint - {}) / 1000 + {}",
            self.start_us, self.moved_ms
        );
        let at = |column: &str| to_model.replace("{}", column);
        let sessions = format!(
            "SELECT coalesce(json_agg(json_build_object(
                 'id', id, 'user_id', user_id, 'revoked', revoked_at IS NOT NULL,
                 'created', {}, 'last_seen', {}, 'idle', {}, 'absolute', {})), '[]')::text AS doc
             FROM sessions",
            at("created_at"),
            at("last_seen_at"),
            at("idle_expires_at"),
            at("absolute_expires_at")
        );
        let tasks = format!(
            "SELECT coalesce(json_agg(json_build_object(
                 'id', v.id, 'seq', t.seq, 'status', v.status, 'assigned_to', v.assigned_to,
                 'attempt', t.attempt, 'released', t.released, 'max_attempts', t.max_attempts,
                 'priority', t.priority, 'key', t.key, 'last_error', v.last_error,
                 'not_before', {}, 'lease', {})), '[]')::text AS doc
             FROM task_view v JOIN tasks t ON t.id = v.id",
            at("v.not_before"),
            at("v.lease_expires_at")
        );
        let mut conn = self.apps[0].db.connect().await;
        let sessions: Vec<StoredSession> = read_json(&mut conn, &sessions).await;
        let tasks: Vec<StoredTask> = read_json(&mut conn, &tasks).await;
        Stored { sessions, tasks }
    }
}

#[derive(diesel::QueryableByName)]
struct Doc {
    #[diesel(sql_type = Text)]
    doc: String,
}

async fn read_json<T: serde::de::DeserializeOwned>(
    conn: &mut diesel_async::AsyncPgConnection,
    sql: &str,
) -> T {
    let doc: Doc = diesel::sql_query(sql)
        .get_result(conn)
        .await
        .unwrap_or_else(|e| panic!("reading the stored state: {e}"));
    serde_json::from_str(&doc.doc).unwrap_or_else(|e| panic!("reading {}: {e}", doc.doc))
}

/// The round as it ran: each step's answer and when it was sent and
/// answered, from the first send (what the judge's orders must respect).
fn timeline(events: &[Event]) -> String {
    let first = events.iter().map(|e| e.sent).min().unwrap_or(0);
    let ms = |us: i64| (us - first) as f64 / 1000.0;
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "  #{:<4} sent +{:.1} ms, answered +{:.1} ms: {}",
                e.step,
                ms(e.sent),
                ms(e.answered),
                e.answer
            )
        })
        .collect();
    format!("the round as it ran:\n{}", lines.join("\n"))
}

fn answer_kind(answer: &Answer) -> String {
    match answer {
        Answer::Problem { status, code } => format!("{status} {code}"),
        Answer::Unexpected(_) => "unexpected".into(),
        other => {
            let text = format!("{other:?}");
            text.split([' ', '{', '(']).next().unwrap_or("").to_owned()
        }
    }
}

/// One HTTP request, ready to send.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    token: Option<String>,
    body: Option<Value>,
}

impl Request {
    fn new(method: &'static str, path: String, token: Option<String>, body: Option<Value>) -> Self {
        Request {
            method,
            path,
            token,
            body,
        }
    }
}

async fn send(app: &TestApp, request: &Request) -> (u16, Value) {
    let url = app.url(&request.path);
    let mut builder = match request.method {
        "GET" => app.client.get(url),
        "DELETE" => app.client.delete(url),
        _ => app.client.post(url),
    };
    if let Some(token) = &request.token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    match builder.timeout(Duration::from_secs(30)).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let bytes = res.bytes().await.unwrap_or_default();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }
        Err(e) => (0, json!({ "transport": e.to_string() })),
    }
}
