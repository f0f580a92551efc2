//! The chaos tier's own traffic: a few threads doing what users and workers
//! do (validate, list, claim and complete, create tasks, log out and in,
//! register), logging every answer with its time and keeping what the
//! service acknowledged, in the same `Record` the load tier's checks read.

use crate::record::Record;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Per worker, at most this many requests: a case cannot run away.
const MAX_REQUESTS_PER_WORKER: u64 = 50_000;

/// One answer (or its absence).
#[derive(Debug, Clone)]
pub struct Call {
    /// When the answer arrived, from the start of the traffic.
    pub at: Duration,
    pub op: &'static str,
    /// 0: no HTTP answer (connection refused or reset, timeout).
    pub status: u16,
    pub retry_after: bool,
    /// The status is not one this request can legitimately get (e.g. a 500,
    /// a 401 for a live token); 503 is not listed here, the case judges it.
    pub unexpected: bool,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Vec<Call>, Record)>>,
    started: Instant,
}

pub struct Outcome {
    pub calls: Vec<Call>,
    pub record: Record,
}

impl Traffic {
    /// Starts `workers` threads against `base_url`, released together once
    /// each has registered and logged in.
    pub fn start(base_url: &str, workers: usize, tag: &str) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(workers + 1));
        let started = Instant::now();
        let mut handles = Vec::new();
        for n in 0..workers {
            let mut worker = Worker::new(base_url, format!("{tag}-{n}"), started);
            worker
                .sign_up()
                .with_context(|| format!("worker {n} signing up"))?;
            let (stop, barrier) = (stop.clone(), barrier.clone());
            handles.push(std::thread::spawn(move || {
                barrier.wait();
                worker.run(&stop);
                (worker.calls, worker.record)
            }));
        }
        barrier.wait();
        Ok(Traffic {
            stop,
            workers: handles,
            started,
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every worker after its current request and merges what they saw.
    pub fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        let mut record = Record::default();
        for handle in self.workers {
            // A worker that panicked would take what it was told with it
            // and make the checks pass on less: fail loudly instead.
            let (c, r) = handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            calls.extend(c);
            record.merge(r);
        }
        calls.sort_by_key(|c| c.at);
        Outcome { calls, record }
    }
}

/// An answer as the worker needs it.
struct Answer {
    status: u16,
    body: Value,
}

struct Worker {
    agent: ureq::Agent,
    base: String,
    email: String,
    token: Option<String>,
    started: Instant,
    calls: Vec<Call>,
    record: Record,
    extra_users: u64,
    /// Batches created, and tasks finished (complete or fail), so far.
    batches: u64,
    finished: u64,
}

const PASSWORD: &str = "chaos tier password";

impl Worker {
    fn new(base: &str, name: String, started: Instant) -> Worker {
        Worker {
            agent: agent(Duration::from_secs(20)),
            base: base.to_owned(),
            email: format!("{name}@faults.example.com"),
            token: None,
            started,
            calls: Vec::new(),
            record: Record::default(),
            extra_users: 0,
            batches: 0,
            finished: 0,
        }
    }

    fn sign_up(&mut self) -> anyhow::Result<()> {
        let status = self.register(&self.email.clone());
        anyhow::ensure!(status == 201, "registration answered {status}");
        self.login();
        anyhow::ensure!(self.token.is_some(), "login failed");
        Ok(())
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut n: u64 = 0;
        while !stop.load(Ordering::SeqCst) && n < MAX_REQUESTS_PER_WORKER {
            if self.token.is_none() {
                self.login();
            } else {
                match n % 16 {
                    0..=7 => self.validate(),
                    8 => self.list_sessions(),
                    9 | 12 => self.claim_and_complete(),
                    10 => self.create_tasks(),
                    11 => self.stats(),
                    13 => self.logout_and_back(),
                    14 => self.register_another(),
                    _ => self.validate(),
                }
            }
            n += 1;
        }
    }

    fn validate(&mut self) {
        let a = self.send("validate", "GET", "/v1/sessions/current", None, &[200]);
        self.forget_token_unless_ok(&a);
    }

    fn list_sessions(&mut self) {
        let a = self.send("list sessions", "GET", "/v1/sessions", None, &[200]);
        self.forget_token_unless_ok(&a);
    }

    fn stats(&mut self) {
        let a = self.send("stats", "GET", "/v1/tasks/stats", None, &[200]);
        self.forget_token_unless_ok(&a);
    }

    /// Creates 5 tasks, one under an idempotency key of this worker (sent
    /// twice in a row: the second answer must name the same task), then
    /// cancels one of them.
    fn create_tasks(&mut self) {
        self.batches += 1;
        let key = format!("{}-{}", self.email, self.batches);
        let tasks: Vec<Value> = (0..5)
            .map(|i| match i {
                0 => json!({"title": "fault keyed", "key": key, "priority": 5}),
                _ => json!({"title": format!("fault {i}")}),
            })
            .collect();
        for _ in 0..2 {
            let a = self.send(
                "create tasks",
                "POST",
                "/v1/tasks",
                Some(json!({"tasks": tasks})),
                &[201],
            );
            if a.status != 201 {
                continue;
            }
            self.record.tasks_created += a.body["created"].as_u64().unwrap_or(0);
            if let Some(id) = uuid_of(&a.body["tasks"][0]["id"]) {
                self.record.keyed.push((key.clone(), id));
            }
            if let Some(victim) = uuid_of(&a.body["tasks"][4]["id"]) {
                let c = self.send(
                    "cancel",
                    "POST",
                    &format!("/v1/tasks/{victim}/cancel"),
                    None,
                    &[200, 409],
                );
                if c.status == 200 {
                    self.record.cancelled.push(victim);
                }
            }
        }
    }

    /// Claims 2; completes most, fails every fourth for good.
    fn claim_and_complete(&mut self) {
        let a = self.send(
            "claim",
            "POST",
            "/v1/tasks/claim",
            Some(json!({"count": 2})),
            &[200],
        );
        if a.status != 200 {
            return;
        }
        let listed = a.body["tasks"].as_array().map_or(&[][..], Vec::as_slice);
        let ids: Vec<Uuid> = listed.iter().filter_map(|t| uuid_of(&t["id"])).collect();
        let claimed = a.body["claimed"].as_u64().unwrap_or(u64::MAX);
        self.record.claim_calls += 1;
        self.record.claimed_total += claimed;
        if claimed == 0 {
            self.record.empty_claims += 1;
        }
        if claimed != ids.len() as u64 || ids.len() != listed.len() || claimed > 2 {
            self.record.dishonest_claims += 1;
        }
        for id in ids {
            self.record.claimed.push(id);
            self.finished += 1;
            if self.finished.is_multiple_of(4) {
                let failed = self.send(
                    "fail",
                    "POST",
                    &format!("/v1/tasks/{id}/fail"),
                    Some(json!({"error": "chaos tier", "retry": false})),
                    &[200, 409],
                );
                self.settled(id, failed.status, |record| &mut record.failed);
                continue;
            }
            let done = self.send(
                "complete",
                "POST",
                &format!("/v1/tasks/{id}/complete"),
                None,
                &[200, 409],
            );
            self.settled(id, done.status, |record| &mut record.completed);
        }
    }

    /// Where a holder's write of task `id` goes in the record: acknowledged
    /// (200) into `acknowledged`'s list; refused `409 not_assignee` into
    /// `fenced`, which the checks allow only for a task someone cancelled
    /// (producers cancel tasks workers may already hold).
    fn settled(&mut self, id: Uuid, status: u16, acknowledged: fn(&mut Record) -> &mut Vec<Uuid>) {
        match status {
            200 => acknowledged(&mut self.record).push(id),
            409 => self.record.fenced.push(id),
            _ => {}
        }
    }

    /// Logs out; once that is acknowledged the old token must be refused.
    fn logout_and_back(&mut self) {
        let session = self.send("validate", "GET", "/v1/sessions/current", None, &[200]);
        let Some(session_id) = uuid_of(&session.body["session_id"]) else {
            self.forget_token_unless_ok(&session);
            return;
        };
        let old = self.token.clone();
        let a = self.send("logout", "DELETE", "/v1/sessions/current", None, &[204]);
        if a.status == 204 {
            self.record.logged_out.push(session_id);
            let after = self.send(
                "validate after logout",
                "GET",
                "/v1/sessions/current",
                None,
                &[401],
            );
            if after.status != 503 && after.status != 0 {
                self.record.validations_after_logout += 1;
                if after.status == 200 {
                    self.record.accepted_after_logout += 1;
                }
            }
        }
        // Whatever the answer, this token is done with (a logout whose
        // answer was lost may still have happened).
        if self.token == old {
            self.token = None;
        }
    }

    fn register_another(&mut self) {
        self.extra_users += 1;
        let email = self.email.replace('@', &format!("+{}@", self.extra_users));
        self.register(&email);
    }

    /// Registers `email`, keeping the user if the service acknowledged it.
    fn register(&mut self, email: &str) -> u16 {
        let a = self.send(
            "register",
            "POST",
            "/v1/users",
            Some(credentials(email)),
            &[201],
        );
        if a.status == 201
            && let Some(id) = uuid_of(&a.body["id"])
        {
            self.record.registered.push(id);
        }
        a.status
    }

    fn login(&mut self) {
        let email = self.email.clone();
        let a = self.send(
            "login",
            "POST",
            "/v1/sessions",
            Some(credentials(&email)),
            &[201],
        );
        self.token = a.body["token"].as_str().map(str::to_owned);
    }

    /// A token is dropped only when the service says it is no longer valid;
    /// a 503 leaves it as it was.
    fn forget_token_unless_ok(&mut self, a: &Answer) {
        if a.status == 401 {
            self.token = None;
        }
    }

    fn send(
        &mut self,
        op: &'static str,
        method: &str,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), auth).call(),
            (_, Some(body)) => with_auth(self.agent.post(&url), auth)
                .content_type("application/json")
                .send(body.to_string()),
            (_, None) => with_auth(self.agent.post(&url), auth).send_empty(),
        };
        let (status, retry_after, body) = match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let text = response.body_mut().read_to_string().unwrap_or_default();
                (
                    status,
                    retry_after,
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                )
            }
            Err(_) => {
                // Back off as a real client would, instead of spinning on a
                // refused connection (after a shutdown) thousands of times.
                std::thread::sleep(Duration::from_millis(20));
                (0, false, Value::Null)
            }
        };
        self.calls.push(Call {
            at: self.started.elapsed(),
            op,
            status,
            retry_after,
            unexpected: status != 0 && status != 503 && !ok.contains(&status),
        });
        Answer { status, body }
    }
}

/// A token of a new user, for requests outside the workers' loops.
pub fn fresh_token(base_url: &str, name: &str) -> anyhow::Result<String> {
    let mut worker = Worker::new(base_url, name.to_owned(), Instant::now());
    worker.sign_up()?;
    worker.token.context("no token")
}

fn uuid_of(value: &Value) -> Option<Uuid> {
    value.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// An HTTP client that hands every status back as an answer.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

fn credentials(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, auth: Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}
