//! The seeded generator: each round, a few steps from several users over
//! the two instances, chosen from what the run holds (tokens current and
//! rotated away, sessions, tasks and who holds them), and now and then a
//! clock move that lands just past a deadline the model knows.
//!
//! One round in five is a crowd instead: many steps on one hot thing (a
//! user's logins, an email's guesses, a token, a key, a line of tasks, a
//! user's sessions), sized past the limit it touches, some of them sent the
//! moment another step answered.

use crate::history::{Act, Item, Op, Round, Step, StepId, TaskRef};
use crate::rules::{Model, Ms, NotBefore, SLACK_MS, Settings};
use crate::runner::{Script, USERS, View};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The most steps a round holds.
pub const MAX_STEPS: usize = 6;

pub struct Generator {
    rng: StdRng,
    rounds_left: usize,
}

impl Generator {
    pub fn new(seed: u64, rounds: usize) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            rounds_left: rounds,
        }
    }
}

/// Every instant at which some rule the model knows changes its answer.
pub fn deadlines(model: &Model, settings: &Settings) -> Vec<Ms> {
    let mut out = Vec::new();
    for s in model.sessions.values().filter(|s| !s.revoked) {
        out.extend([s.idle_expires, s.absolute_expires]);
    }
    for t in model.tokens.values() {
        out.extend(t.rotated_at.map(|at| at + settings.grace_ms));
    }
    for t in model.tasks.values() {
        out.push(t.lease_expires);
        match t.not_before {
            NotBefore::Free => {}
            NotBefore::At(at) => out.push(at),
            NotBefore::Between(from, to) => out.extend([from, to]),
        }
    }
    for failures in model.failures.values() {
        out.extend(failures.iter().map(|at| at + settings.window_ms));
    }
    // In order: maps keyed by random ids must not steer a seeded choice.
    out.sort_unstable();
    out.dedup();
    out
}

impl Script for Generator {
    fn next_round(&mut self, view: &View<'_>) -> Option<Round> {
        if self.rounds_left == 0 {
            return None;
        }
        self.rounds_left -= 1;
        let mut advance_ms = self.advance(view);
        let crowd = match self.rng.random_bool(CROWDS) {
            true => self.crowd(view),
            false => None,
        };
        let planned = match crowd {
            Some((planned, at_least)) => {
                advance_ms = advance_ms.max(at_least);
                planned
            }
            None => {
                let n = self.rng.random_range(1..=MAX_STEPS);
                (0..n).map(|_| Planned::now(self.op(view))).collect()
            }
        };
        let steps = planned
            .into_iter()
            .enumerate()
            .map(|(i, p)| Step {
                id: view.next_step + i as StepId,
                instance: match p.instance {
                    Some(instance) => instance,
                    None => self.rng.random_range(0..2),
                },
                op: p.op,
                after: p.after.map(|j| view.next_step + j as StepId),
            })
            .collect();
        Some(Round { advance_ms, steps })
    }
}

/// The share of rounds that are crowds.
const CROWDS: f64 = 0.2;

/// A step as planned: its operation, the instance if it matters, and the
/// step of its round (by index) it is sent after.
struct Planned {
    op: Op,
    instance: Option<u8>,
    after: Option<usize>,
}

impl Planned {
    fn now(op: Op) -> Planned {
        Planned {
            op,
            instance: None,
            after: None,
        }
    }

    fn after(op: Op, first: usize, instance: u8) -> Planned {
        Planned {
            op,
            instance: Some(instance),
            after: Some(first),
        }
    }
}

impl Generator {
    /// One round in four moves the clock: just past a deadline ahead, or by
    /// one of the settings' own spans.
    fn advance(&mut self, view: &View<'_>) -> Ms {
        if !self.rng.random_bool(0.25) {
            return 0;
        }
        let ahead: Vec<Ms> = deadlines(view.model, view.settings)
            .into_iter()
            .filter(|d| *d > view.now)
            .collect();
        if !ahead.is_empty() && self.rng.random_bool(0.7) {
            let d = ahead[self.rng.random_range(0..ahead.len())];
            return d - view.now + self.rng.random_range(SLACK_MS + 1..2 * SLACK_MS);
        }
        let s = view.settings;
        let spans = [s.grace_ms, s.lease_ms, s.idle_ms, s.window_ms, 5_000];
        spans[self.rng.random_range(0..spans.len())] + 1_500
    }

    /// Tokens worth presenting: mostly those of live sessions, newest
    /// first, sometimes one rotated away or ended.
    fn token(&mut self, view: &View<'_>) -> Option<(StepId, Option<usize>)> {
        let live = live_tokens(view);
        let dead: Vec<(StepId, Option<usize>)> = view
            .model
            .tokens
            .iter()
            .filter(|(step, _)| !live.iter().any(|(l, _)| l == *step))
            .map(|(step, t)| (*step, view.model.sessions.get(&t.session).map(|s| s.user)))
            .collect();
        if !dead.is_empty() && (live.is_empty() || self.rng.random_bool(0.12)) {
            return Some(dead[self.rng.random_range(0..dead.len())]);
        }
        if live.is_empty() {
            return None;
        }
        // Newer tokens more often: races on one token are the point.
        let from = live.len().saturating_sub(6);
        let (step, user) = live[self.rng.random_range(from..live.len())];
        Some((step, Some(user)))
    }

    /// A crowd on one hot thing, with how far the clock must move first,
    /// or `None` when the run holds nothing it could crowd.
    fn crowd(&mut self, view: &View<'_>) -> Option<(Vec<Planned>, Ms)> {
        let s = view.settings;
        let live = live_tokens(view);
        let plan = match self.rng.random_range(0..7) {
            // The cap: more logins of one user than it allows, now and
            // then one with a wrong password among them.
            0 => {
                let user = self.rng.random_range(0..USERS);
                let n = self.rng.random_range(s.cap + 1..=s.cap + 4);
                let wrong = self.rng.random_bool(0.3);
                (0..n)
                    .map(|i| {
                        Planned::now(Op::Login {
                            email: user,
                            right: !(wrong && i == 0),
                        })
                    })
                    .collect()
            }
            // The login limit: guesses at one email, at and past the limit,
            // now and then the right password among them.
            1 => {
                let email = self.rng.random_range(0..=USERS);
                let n = self.rng.random_range(s.login_limit..=s.login_limit + 4);
                let right = email < USERS && self.rng.random_bool(0.3);
                (0..n)
                    .map(|i| {
                        Planned::now(Op::Login {
                            email,
                            right: right && i == n - 1,
                        })
                    })
                    .collect()
            }
            // Rotation: refreshes of one token, now and then its log out
            // among them, and a validation of it once the first answered.
            2 => {
                let &(token, _) = live.last()?;
                let n = self.rng.random_range(2..=5);
                let mut plan: Vec<Planned> = (0..n)
                    .map(|_| Planned::now(Op::Refresh { token }))
                    .collect();
                if self.rng.random_bool(0.4) {
                    plan.push(Planned::now(Op::Logout { token }));
                }
                plan.push(Planned::after(Op::Validate { token }, 0, 1));
                plan
            }
            // An idempotency key: creates of one key at once.
            3 => {
                let &(token, _) = live.last()?;
                let key = format!("key-{}", self.rng.random_range(0..4));
                let n = self.rng.random_range(3..=6);
                (0..n)
                    .map(|_| {
                        let items = vec![Item::keyed(key.clone())];
                        Planned::now(Op::Create { token, items })
                    })
                    .collect()
            }
            // The claim: a line of tasks created, then claims from every
            // live token the moment the create answered.
            4 => {
                let &(token, _) = live.last()?;
                let items = (0..self.rng.random_range(3..=6))
                    .map(|_| Item {
                        priority: [-1, 0, 1][self.rng.random_range(0..3)],
                        max_attempts: self.rng.random_range(1..=3),
                        key: None,
                    })
                    .collect();
                let mut plan = vec![Planned::now(Op::Create { token, items })];
                let from = live.len().saturating_sub(6);
                for &(token, _) in &live[from..] {
                    let count = self.rng.random_range(1..=2);
                    let claim = Op::Claim {
                        token,
                        count,
                        wait_ms: 0,
                    };
                    plan.push(Planned::after(claim, 0, self.rng.random_range(0..2)));
                }
                plan
            }
            // Revocation: one user's sessions revoked (through its oldest
            // session, the one a login at the cap evicts, or its newest)
            // while others of them refresh, validate (their touch due) and
            // log out, and two logins come; validations sent the moment
            // the revocation answered.
            5 => {
                let &(_, user) = live.last()?;
                let mine: Vec<StepId> = live
                    .iter()
                    .filter(|(_, u)| *u == user)
                    .map(|(t, _)| *t)
                    .collect();
                let token = match self.rng.random_bool(0.5) {
                    true => mine[0],
                    false => mine[mine.len() - 1],
                };
                let others: Vec<StepId> = mine.iter().copied().filter(|t| *t != token).collect();
                let session_of = |t: StepId| {
                    let id = view.model.tokens.get(&t)?.session;
                    view.logins
                        .iter()
                        .find(|(_, s)| **s == id)
                        .map(|(step, _)| *step)
                };
                let target = others.last().and_then(|t| session_of(*t));
                let first = match (self.rng.random_range(0..5), target) {
                    (0..2, Some(session)) => Op::RevokeOne { token, session },
                    (0..3, _) => Op::RevokeAll { token },
                    _ => Op::Logout { token },
                };
                let mut plan = vec![Planned::now(first)];
                for &other in others.iter().rev().take(3) {
                    let op = match self.rng.random_range(0..4) {
                        0 => Op::Refresh { token: other },
                        1 => Op::Logout { token: other },
                        _ => Op::Validate { token: other },
                    };
                    plan.push(Planned::now(op));
                }
                for _ in 0..2 {
                    plan.push(Planned::now(Op::Login {
                        email: user,
                        right: true,
                    }));
                }
                plan.push(Planned::after(Op::Validate { token }, 0, 1));
                plan.push(Planned::after(Op::Validate { token }, 0, 0));
                // Each validation's touch is due: it writes the row.
                return Some((plan, s.touch_ms + 500));
            }
            // Reuse: tokens rotated away past their grace, presented
            // again, and their sessions' current tokens the moment after.
            _ => {
                let stale = stale_tokens(view);
                let &(old, current) = stale.last()?;
                let mut plan = vec![Planned::now(Op::Validate { token: old })];
                plan.push(Planned::after(Op::Validate { token: current }, 0, 1));
                for &(old, _) in stale.iter().rev().skip(1).take(2) {
                    plan.push(Planned::now(Op::Refresh { token: old }));
                }
                plan
            }
        };
        Some((plan, 0))
    }

    fn op(&mut self, view: &View<'_>) -> Op {
        let Some((token, user)) = self.token(view) else {
            return self.login(true);
        };
        match self.rng.random_range(0..100) {
            0..14 => self.login(true),
            14..22 => self.login(false),
            22..30 => Op::Validate { token },
            30..37 => Op::Refresh { token },
            37..40 => Op::Logout { token },
            40..43 => {
                let sessions: Vec<StepId> = view.logins.keys().copied().collect();
                match sessions.is_empty() {
                    true => Op::ListSessions { token },
                    false => Op::RevokeOne {
                        token,
                        session: sessions[self.rng.random_range(0..sessions.len())],
                    },
                }
            }
            43..44 => Op::RevokeAll { token },
            44..47 => Op::ListSessions { token },
            47..58 => Op::Create {
                token,
                items: self.items(),
            },
            58..70 => Op::Claim {
                token,
                count: self.rng.random_range(1..=3),
                wait_ms: if self.rng.random_bool(0.2) { 300 } else { 0 },
            },
            70..97 => self.act(view, token, user),
            _ => Op::Stats { token },
        }
    }

    fn login(&mut self, right: bool) -> Op {
        // Wrong passwords now and then for an email nobody registered.
        let email = match right {
            true => self.rng.random_range(0..USERS),
            false => self.rng.random_range(0..=USERS),
        };
        Op::Login { email, right }
    }

    fn items(&mut self) -> Vec<Item> {
        let n = self.rng.random_range(1..=3);
        let mut keys: Vec<String> = Vec::new();
        (0..n)
            .map(|_| {
                let key = match self.rng.random_bool(0.3) {
                    true => Some(format!("key-{}", self.rng.random_range(0..4))),
                    false => None,
                }
                .filter(|k| !keys.contains(k));
                keys.extend(key.clone());
                match key {
                    Some(key) => Item::keyed(key),
                    None => Item {
                        priority: [-1, 0, 0, 1][self.rng.random_range(0..4)],
                        max_attempts: self.rng.random_range(1..=3),
                        key: None,
                    },
                }
            })
            .collect()
    }

    /// An action on a task, mostly by its holder.
    fn act(&mut self, view: &View<'_>, token: StepId, user: Option<usize>) -> Op {
        let refs: Vec<(TaskRef, bool)> = view
            .tasks
            .iter()
            .map(|(&(create, item), id)| {
                let held = view.model.tasks.get(id).is_some_and(|t| {
                    t.assigned_to == user && t.assigned_to.is_some() && t.lease_expires > view.now
                });
                (TaskRef { create, item }, held)
            })
            .collect();
        if refs.is_empty() {
            return Op::Claim {
                token,
                count: 1,
                wait_ms: 0,
            };
        }
        let held: Vec<TaskRef> = refs.iter().filter(|r| r.1).map(|r| r.0).collect();
        let task = match !held.is_empty() && self.rng.random_bool(0.75) {
            true => held[self.rng.random_range(0..held.len())],
            false => refs[self.rng.random_range(0..refs.len())].0,
        };
        let act = match self.rng.random_range(0..16) {
            0..3 => Act::Heartbeat {
                lease_secs: [None, Some(20), Some(90)][self.rng.random_range(0..3)],
            },
            3..7 => Act::Complete,
            7..10 => Act::Release,
            10..14 => Act::Fail {
                retry: self.rng.random_bool(0.7),
                error: format!("error {}", self.rng.random_range(0..3)),
            },
            _ => Act::Cancel,
        };
        Op::Act { token, task, act }
    }
}

/// The tokens of live sessions not rotated away, with their users, oldest
/// first.
fn live_tokens(view: &View<'_>) -> Vec<(StepId, usize)> {
    view.model
        .tokens
        .iter()
        .filter(|(_, t)| t.rotated_at.is_none())
        .filter_map(|(step, t)| {
            let s = view.model.sessions.get(&t.session)?;
            s.active(view.now).then_some((*step, s.user))
        })
        .collect()
}

/// Tokens rotated away longer than the grace ago whose session is still
/// live, each with its session's current token, oldest first.
fn stale_tokens(view: &View<'_>) -> Vec<(StepId, StepId)> {
    let model = view.model;
    let current: BTreeMap<Uuid, StepId> = model
        .tokens
        .iter()
        .filter(|(_, t)| t.rotated_at.is_none())
        .map(|(step, t)| (t.session, *step))
        .collect();
    model
        .tokens
        .iter()
        .filter(|(_, t)| {
            t.rotated_at
                .is_some_and(|at| view.now - at > view.settings.grace_ms + SLACK_MS)
        })
        .filter(|(_, t)| {
            model
                .sessions
                .get(&t.session)
                .is_some_and(|s| s.active(view.now))
        })
        .filter_map(|(step, t)| Some((*step, *current.get(&t.session)?)))
        .collect()
}
