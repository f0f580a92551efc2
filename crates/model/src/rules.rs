//! The interface's rules as a plain state machine: no database, no threads,
//! time passed in by the caller. `Model::apply` takes one call and the
//! answer the service gave, and returns every state the rules allow after
//! it (none: the answer breaks a rule; two or more: the rules leave a
//! choice, such as which of two sessions born together is the older).
//!
//! What the service leaves to chance (a task's age among tasks created in
//! the same round, the jitter of a backoff, the instant of a touch) the
//! model keeps open until the end of the round, when the fresh read of the
//! database settles it (`Model::settle`).

use crate::history::{Act, Answer, Call, Counts, Status};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Model time, in milliseconds since the run began (clock moves included).
pub type Ms = i64;

/// The settings the run gives the service: small, and each distinct, so a
/// rule that reads the wrong one shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub idle_ms: Ms,
    pub absolute_ms: Ms,
    pub touch_ms: Ms,
    pub cap: usize,
    pub login_limit: usize,
    pub window_ms: Ms,
    pub grace_ms: Ms,
    pub lease_ms: Ms,
}

impl Settings {
    pub const RUN: Settings = Settings {
        idle_ms: 60_000,
        absolute_ms: 150_000,
        touch_ms: 1_000,
        cap: 3,
        login_limit: 4,
        window_ms: 90_000,
        grace_ms: 10_000,
        lease_ms: 30_000,
    };
}

/// How long a round may take and still be judged at one instant: the
/// generator keeps every deadline this far from a round's start.
pub const SLACK_MS: Ms = 3_000;

/// Where an entity stands among those of its kind, oldest first: the round
/// it was born in, then, once the database told, its order within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Age {
    pub round: u32,
    pub within: Option<i64>,
}

impl Age {
    /// Strictly older, as far as anyone knows yet.
    fn older_than(self, other: Age) -> bool {
        match (self.within, other.within) {
            _ if self.round != other.round => self.round < other.round,
            (Some(a), Some(b)) => a < b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Session {
    pub user: usize,
    pub age: Age,
    pub last_seen: Ms,
    pub idle_expires: Ms,
    pub absolute_expires: Ms,
    pub revoked: bool,
    /// Revoked by the cap: older than every session of its user still
    /// active (the database's order of creation must agree).
    pub evicted: bool,
}

impl Session {
    pub fn active(&self, now: Ms) -> bool {
        !self.revoked && now < self.idle_expires && now < self.absolute_expires
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    pub session: Uuid,
    /// When a refresh replaced it.
    pub rotated_at: Option<Ms>,
}

/// When a task may be claimed: known, or (a backoff's jitter) a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotBefore {
    Free,
    At(Ms),
    Between(Ms, Ms),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    pub age: Age,
    pub priority: i32,
    pub max_attempts: i32,
    pub key: Option<String>,
    pub status: Status,
    pub assigned_to: Option<usize>,
    pub lease_expires: Ms,
    /// Claims so far (the fencing counter).
    pub attempt: i32,
    /// Claims handed back by release (they do not count as attempts).
    pub released: i32,
    pub not_before: NotBefore,
    pub last_error: Option<String>,
}

impl Task {
    fn counted(&self) -> i32 {
        self.attempt - self.released
    }

    /// The status every reader sees: a lapsed lease reads as unassigned,
    /// or as failed on the last allowed attempt.
    pub fn shown(&self, now: Ms) -> Status {
        if self.status == Status::Assigned && self.lease_expires <= now {
            if self.counted() >= self.max_attempts {
                return Status::Failed;
            }
            return Status::Unassigned;
        }
        self.status
    }

    pub fn shown_error(&self, now: Ms) -> Option<&str> {
        if self.status == Status::Assigned && self.shown(now) == Status::Failed {
            return Some("lease expired");
        }
        self.last_error.as_deref()
    }

    /// Claimable now: `Some(true)`, not: `Some(false)`, or a backoff whose
    /// end falls within the round: `None`.
    fn claimable(&self, now: Ms) -> Option<bool> {
        if self.shown(now) != Status::Unassigned || self.counted() >= self.max_attempts {
            return Some(false);
        }
        match self.not_before {
            NotBefore::Free => Some(true),
            NotBefore::At(at) => Some(at <= now),
            NotBefore::Between(_, to) if to <= now => Some(true),
            NotBefore::Between(from, _) if from > now + SLACK_MS => Some(false),
            NotBefore::Between(..) => None,
        }
    }

    fn delayed(&self, now: Ms) -> Option<bool> {
        if self.shown(now) != Status::Unassigned {
            return Some(false);
        }
        match self.not_before {
            NotBefore::Free => Some(false),
            NotBefore::At(at) => Some(at > now),
            NotBefore::Between(_, to) if to <= now => Some(false),
            NotBefore::Between(from, _) if from > now + SLACK_MS => Some(true),
            NotBefore::Between(..) => None,
        }
    }

    fn precedes(&self, other: &Task) -> bool {
        self.priority > other.priority
            || (self.priority == other.priority && self.age.older_than(other.age))
    }
}

/// Everything the rules remember.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Model {
    /// Failed logins per email (index; users first, then unknown emails)
    /// since its last success, oldest first.
    pub failures: BTreeMap<usize, Vec<Ms>>,
    pub sessions: BTreeMap<Uuid, Session>,
    /// Tokens by the step that received them.
    pub tokens: BTreeMap<u32, Token>,
    pub tasks: BTreeMap<Uuid, Task>,
    /// Each creator's idempotency keys (interface v2: scoped to the user
    /// who created the task).
    pub keys: BTreeMap<(usize, String), Uuid>,
}

/// What a call needs besides the model: the instant, the round, who the
/// users are, and which tasks other calls of the round could have held
/// locked while this one ran (a claim may pass over those).
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub now: Ms,
    pub round: u32,
    pub step: u32,
    pub users: &'a [Uuid],
    pub contended: &'a BTreeSet<Uuid>,
    /// Another claim ran beside this step: it may have held a delayed task
    /// that came due while promoting it (`promote_due` skips locked rows).
    pub other_claims: bool,
}

/// The rules' verdict on one answer: the states that may follow, or why
/// none can.
pub type Verdict = Result<Vec<Model>, String>;

fn expect(answer: &Answer, wanted: &Answer) -> Result<(), String> {
    if answer == wanted {
        Ok(())
    } else {
        Err(format!("expected {wanted}, got {answer}"))
    }
}

impl Model {
    /// The states allowed after `call` answered `answer`.
    pub fn apply(&self, call: &Call, answer: &Answer, cx: &Context<'_>) -> Verdict {
        self.step(call, answer, cx)
            .map_err(|why| format!("{why} [{}]", self.explain(call, cx)))
    }

    /// What the model holds about the token and the task a call names.
    fn explain(&self, call: &Call, cx: &Context<'_>) -> String {
        let mut out = format!("model time {} ms", cx.now);
        let token = call.token();
        if let Some(token) = token {
            match self.tokens.get(&token) {
                None => out.push_str(&format!("; token of #{token}: never issued")),
                Some(t) => {
                    out.push_str(&format!("; token of #{token}: {t:?}"));
                    if let Some(s) = self.sessions.get(&t.session) {
                        out.push_str(&format!(", its session {s:?}"));
                    }
                }
            }
        }
        if let Some(task) = call.task().and_then(|id| self.tasks.get(&id)) {
            out.push_str(&format!("; task {task:?}"));
        }
        out
    }

    fn step(&self, call: &Call, answer: &Answer, cx: &Context<'_>) -> Verdict {
        let mut next = self.clone();
        match call {
            Call::Login { email, right } => return next.login(*email, *right, answer, cx),
            Call::Validate { token } => {
                let session = next.authenticate(*token, cx);
                match session {
                    Some(session) => expect(answer, &Answer::Valid { session })?,
                    None => expect(answer, &Answer::invalid_token())?,
                }
            }
            Call::Refresh { token } => {
                let Some(session) = next.authenticate(*token, cx) else {
                    expect(answer, &Answer::invalid_token())?;
                    return Ok(vec![next]);
                };
                let user = cx.users[next.sessions[&session].user];
                expect(answer, &Answer::Session { session, user })?;
                if let Some(old) = next.tokens.get_mut(token) {
                    old.rotated_at = Some(cx.now);
                }
                next.tokens.insert(
                    cx.step,
                    Token {
                        session,
                        rotated_at: None,
                    },
                );
                next.slide(session, cx);
            }
            Call::Logout { token } => match next.authenticate(*token, cx) {
                Some(session) => {
                    expect(answer, &Answer::Done)?;
                    next.revoke(session);
                }
                None => expect(answer, &Answer::invalid_token())?,
            },
            Call::RevokeOne { token, session } => match next.authenticate(*token, cx) {
                Some(mine) => {
                    let user = next.sessions[&mine].user;
                    let owned = next
                        .sessions
                        .get(session)
                        .is_some_and(|s| s.user == user && s.active(cx.now));
                    if owned {
                        expect(answer, &Answer::Done)?;
                        next.revoke(*session);
                    } else {
                        expect(answer, &Answer::problem(404, "not_found"))?;
                    }
                }
                None => expect(answer, &Answer::invalid_token())?,
            },
            Call::RevokeAll { token } => match next.authenticate(*token, cx) {
                Some(mine) => {
                    let ids = next.active_of(next.sessions[&mine].user, cx.now);
                    expect(answer, &Answer::Revoked(ids.len() as u32))?;
                    for id in ids {
                        next.revoke(id);
                    }
                }
                None => expect(answer, &Answer::invalid_token())?,
            },
            Call::ListSessions { token } => match next.authenticate(*token, cx) {
                Some(mine) => {
                    let ids = next.active_of(next.sessions[&mine].user, cx.now);
                    expect(answer, &Answer::Sessions(ids.into_iter().collect()))?;
                }
                None => expect(answer, &Answer::invalid_token())?,
            },
            Call::Create { token, items } => {
                let Some(mine) = next.authenticate(*token, cx) else {
                    expect(answer, &Answer::invalid_token())?;
                    return Ok(vec![next]);
                };
                let creator = next.sessions[&mine].user;
                let Answer::Created { ids, created } = answer else {
                    return Err(format!("expected 201 with the tasks, got {answer}"));
                };
                if ids.len() != items.len() {
                    return Err(format!(
                        "{} items, {} tasks answered",
                        items.len(),
                        ids.len()
                    ));
                }
                let mut new = 0;
                for (item, id) in items.iter().zip(ids) {
                    let known = item
                        .key
                        .as_ref()
                        .and_then(|k| next.keys.get(&(creator, k.clone())));
                    match known {
                        Some(existing) if existing == id => {}
                        Some(existing) => {
                            return Err(format!(
                                "key {:?} belongs to task {existing}, the answer gave {id}",
                                item.key
                            ));
                        }
                        None if next.tasks.contains_key(id) => {
                            return Err(format!("task {id} answered as new twice"));
                        }
                        None => {
                            new += 1;
                            if let Some(key) = &item.key {
                                next.keys.insert((creator, key.clone()), *id);
                            }
                            next.tasks.insert(
                                *id,
                                Task {
                                    age: Age {
                                        round: cx.round,
                                        within: None,
                                    },
                                    priority: item.priority,
                                    max_attempts: item.max_attempts,
                                    key: item.key.clone(),
                                    status: Status::Unassigned,
                                    assigned_to: None,
                                    lease_expires: 0,
                                    attempt: 0,
                                    released: 0,
                                    not_before: NotBefore::Free,
                                    last_error: None,
                                },
                            );
                        }
                    }
                }
                if *created != new {
                    return Err(format!("created: {created}, but {new} tasks are new"));
                }
            }
            Call::Claim { token, count, .. } => {
                let Some(mine) = next.authenticate(*token, cx) else {
                    expect(answer, &Answer::invalid_token())?;
                    return Ok(vec![next]);
                };
                let Answer::Claimed(ids) = answer else {
                    return Err(format!("expected 200 with the claimed tasks, got {answer}"));
                };
                let user = next.sessions[&mine].user;
                next.check_claim(ids, *count as usize, cx)?;
                for id in ids {
                    let task = next.tasks.get_mut(id).ok_or("claimed an unknown task")?;
                    task.status = Status::Assigned;
                    task.assigned_to = Some(user);
                    task.attempt += 1;
                    task.lease_expires = cx.now + cx.settings.lease_ms;
                    task.not_before = match task.not_before {
                        NotBefore::Between(..) => NotBefore::At(cx.now),
                        other => other,
                    };
                }
            }
            Call::Act { token, task, act } => {
                let Some(mine) = next.authenticate(*token, cx) else {
                    expect(answer, &Answer::invalid_token())?;
                    return Ok(vec![next]);
                };
                let user = next.sessions[&mine].user;
                next.act(user, *task, act, answer, cx)?;
            }
            Call::Stats { token } => {
                if next.authenticate(*token, cx).is_none() {
                    expect(answer, &Answer::invalid_token())?;
                    return Ok(vec![next]);
                }
                let Answer::Counts(counts) = answer else {
                    return Err(format!("expected 200 with counts, got {answer}"));
                };
                next.check_counts(counts, cx)?;
            }
        }
        Ok(vec![next])
    }

    fn login(mut self, email: usize, right: bool, answer: &Answer, cx: &Context<'_>) -> Verdict {
        let window = cx.settings.window_ms;
        let failures = self.failures.entry(email).or_default();
        failures.retain(|at| cx.now - at < window);
        if failures.len() >= cx.settings.login_limit {
            expect(answer, &Answer::problem(429, "too_many_attempts"))?;
            return Ok(vec![self]);
        }
        let Some(&user_id) = cx.users.get(email).filter(|_| right) else {
            failures.push(cx.now);
            expect(answer, &Answer::problem(401, "invalid_credentials"))?;
            return Ok(vec![self]);
        };
        let Answer::Session { session, user } = answer else {
            return Err(format!("expected 201 with a session, got {answer}"));
        };
        if *user != user_id || self.sessions.contains_key(session) {
            return Err(format!("a login of user {user_id} answered {answer}"));
        }
        failures.clear();
        self.sessions.insert(
            *session,
            Session {
                user: email,
                age: Age {
                    round: cx.round,
                    within: None,
                },
                last_seen: cx.now,
                idle_expires: cx.now + cx.settings.idle_ms,
                absolute_expires: cx.now + cx.settings.absolute_ms,
                revoked: false,
                evicted: false,
            },
        );
        self.tokens.insert(
            cx.step,
            Token {
                session: *session,
                rotated_at: None,
            },
        );
        // The cap: the oldest active sessions go. Sessions born in the same
        // round have no known order yet: each oldest candidate is a branch.
        let active = self.active_of(email, cx.now);
        if active.len() <= cx.settings.cap {
            return Ok(vec![self]);
        }
        let oldest: Vec<Uuid> = active
            .iter()
            .copied()
            .filter(|id| {
                let age = self.sessions[id].age;
                !active
                    .iter()
                    .any(|other| self.sessions[other].age.older_than(age))
            })
            .filter(|id| id != session)
            .collect();
        Ok(oldest
            .into_iter()
            .map(|id| {
                let mut branch = self.clone();
                branch.revoke(id);
                if let Some(s) = branch.sessions.get_mut(&id) {
                    s.evicted = true;
                }
                branch
            })
            .collect())
    }

    /// The session a token opens, after the use's side effects: a token
    /// rotated away longer than the grace ago revokes its whole session.
    fn authenticate(&mut self, token: u32, cx: &Context<'_>) -> Option<Uuid> {
        let Token {
            session,
            rotated_at,
        } = self.tokens.get(&token)?.clone();
        if let Some(rotated) = rotated_at {
            if cx.now - rotated > cx.settings.grace_ms {
                self.revoke(session);
            }
            return None;
        }
        let s = self.sessions.get_mut(&session)?;
        if !s.active(cx.now) {
            return None;
        }
        if cx.now - s.last_seen >= cx.settings.touch_ms {
            self.slide(session, cx);
        }
        Some(session)
    }

    fn slide(&mut self, session: Uuid, cx: &Context<'_>) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seen = cx.now;
            s.idle_expires = (cx.now + cx.settings.idle_ms).min(s.absolute_expires);
        }
    }

    fn revoke(&mut self, session: Uuid) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.revoked = true;
        }
    }

    fn active_of(&self, user: usize, now: Ms) -> Vec<Uuid> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.user == user && s.active(now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A claim takes claimable tasks only, in claim order, as many as asked
    /// for while any are left; it may pass over a task that another call of
    /// its round could have held locked.
    fn check_claim(&self, ids: &[Uuid], count: usize, cx: &Context<'_>) -> Result<(), String> {
        let taken: BTreeSet<Uuid> = ids.iter().copied().collect();
        if taken.len() != ids.len() || ids.len() > count {
            return Err(format!("a claim of {count} answered {ids:?}"));
        }
        for id in ids {
            match self.tasks.get(id).map(|t| t.claimable(cx.now)) {
                Some(Some(true) | None) => {}
                _ => return Err(format!("claimed task {id}, which is not claimable")),
            }
        }
        for (id, task) in &self.tasks {
            if taken.contains(id)
                || task.claimable(cx.now) != Some(true)
                || cx.contended.contains(id)
            {
                continue;
            }
            if ids.len() < count {
                return Err(format!(
                    "a claim of {count} took {} while task {id} was claimable",
                    ids.len()
                ));
            }
            if let Some(later) = ids.iter().find(|t| task.precedes(&self.tasks[*t])) {
                return Err(format!(
                    "the claim took task {later} before task {id}, which comes first"
                ));
            }
        }
        Ok(())
    }

    fn act(
        &mut self,
        user: usize,
        id: Uuid,
        act: &Act,
        answer: &Answer,
        cx: &Context<'_>,
    ) -> Result<(), String> {
        let Some(task) = self.tasks.get_mut(&id) else {
            return expect(answer, &Answer::problem(404, "not_found"));
        };
        let shown = task.shown(cx.now);
        if let Act::Cancel = act {
            if !matches!(shown, Status::Unassigned | Status::Assigned) {
                return expect(answer, &Answer::problem(409, "not_cancellable"));
            }
            expect(
                answer,
                &Answer::Task {
                    status: Status::Cancelled,
                },
            )?;
            task.status = Status::Cancelled;
            task.assigned_to = None;
            return Ok(());
        }
        if shown != Status::Assigned || task.assigned_to != Some(user) {
            return expect(answer, &Answer::problem(409, "not_assignee"));
        }
        match act {
            Act::Heartbeat { lease_secs } => {
                task.lease_expires =
                    cx.now + lease_secs.map_or(cx.settings.lease_ms, |s| i64::from(s) * 1000);
            }
            Act::Complete => task.status = Status::Completed,
            Act::Release => {
                task.status = Status::Unassigned;
                task.assigned_to = None;
                task.released += 1;
            }
            Act::Fail { retry, error } => {
                task.last_error = Some(error.clone());
                if *retry && task.counted() < task.max_attempts {
                    let full = (1i64 << (task.counted() - 1).clamp(0, 12)).min(3600) * 1000;
                    task.status = Status::Unassigned;
                    task.assigned_to = None;
                    task.not_before = NotBefore::Between(cx.now + full * 8 / 10, cx.now + full);
                } else {
                    task.status = Status::Failed;
                }
            }
            Act::Cancel => unreachable!("answered above"),
        }
        expect(
            answer,
            &Answer::Task {
                status: task.status,
            },
        )
    }

    fn check_counts(&self, counts: &Counts, cx: &Context<'_>) -> Result<(), String> {
        let mut want = Counts::default();
        let mut maybe_delayed = 0;
        for task in self.tasks.values() {
            match task.shown(cx.now) {
                Status::Unassigned => want.unassigned += 1,
                Status::Assigned => want.assigned += 1,
                Status::Completed => want.completed += 1,
                Status::Failed => want.failed += 1,
                Status::Cancelled => want.cancelled += 1,
            }
            match task.delayed(cx.now) {
                Some(true) => want.delayed += 1,
                Some(false) => {}
                None => maybe_delayed += 1,
            }
        }
        let delayed_ok = (want.delayed..=want.delayed + maybe_delayed).contains(&counts.delayed);
        let others = Counts {
            delayed: want.delayed,
            ..*counts
        };
        if others != want || !delayed_ok {
            return Err(format!(
                "stats answered {counts:?}, the model counts {want:?} (+{maybe_delayed} maybe delayed)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
