//! The seeded generator: each round, a few steps from several users over
//! the two instances, chosen from what the run holds (tokens current and
//! rotated away, sessions, tasks and who holds them), and now and then a
//! clock move that lands just past a deadline the model knows.

use crate::history::{Act, Item, Op, Round, Step, StepId, TaskRef};
use crate::rules::{Model, Ms, NotBefore, SLACK_MS, Settings};
use crate::runner::{Script, USERS, View};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
        let advance_ms = self.advance(view);
        let n = self.rng.random_range(1..=MAX_STEPS);
        let steps = (0..n)
            .map(|i| Step {
                id: view.next_step + i as StepId,
                instance: self.rng.random_range(0..2),
                op: self.op(view),
            })
            .collect();
        Some(Round { advance_ms, steps })
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
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (step, token) in &view.model.tokens {
            let session = view.model.sessions.get(&token.session);
            let user = session.map(|s| s.user);
            if token.rotated_at.is_none() && session.is_some_and(|s| s.active(view.now)) {
                live.push((*step, user));
            } else {
                dead.push((*step, user));
            }
        }
        if !dead.is_empty() && (live.is_empty() || self.rng.random_bool(0.12)) {
            return Some(dead[self.rng.random_range(0..dead.len())]);
        }
        if live.is_empty() {
            return None;
        }
        // Newer tokens more often: races on one token are the point.
        let from = live.len().saturating_sub(6);
        Some(live[self.rng.random_range(from..live.len())])
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
                Item {
                    priority: [-1, 0, 0, 1][self.rng.random_range(0..4)],
                    max_attempts: self.rng.random_range(1..=3),
                    key,
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
