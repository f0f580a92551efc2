//! The model's own tests: each rule at its edges, and the differences the
//! judge must report.

use super::*;
use crate::history::Item;

const ADA: usize = 0;
const UNKNOWN: usize = 2;

fn users() -> Vec<Uuid> {
    vec![Uuid::from_u128(1), Uuid::from_u128(2)]
}

struct World {
    model: Model,
    users: Vec<Uuid>,
    now: Ms,
    round: u32,
    step: u32,
    contended: BTreeSet<Uuid>,
}

impl World {
    fn new() -> World {
        World {
            model: Model::default(),
            users: users(),
            now: 0,
            round: 0,
            step: 0,
            contended: BTreeSet::new(),
        }
    }

    /// Every state the rules allow after `call` answered `answer`.
    fn all(&mut self, call: Call, answer: Answer) -> Verdict {
        self.step += 1;
        let cx = Context {
            settings: &Settings::RUN,
            now: self.now,
            round: self.round,
            step: self.step,
            users: &self.users,
            contended: &self.contended,
            other_claims: false,
        };
        self.model.apply(&call, &answer, &cx)
    }

    /// Applies an answer the rules must accept with exactly one outcome.
    fn ok(&mut self, call: Call, answer: Answer) {
        let next = self.all(call.clone(), answer.clone());
        match next {
            Ok(mut states) if states.len() == 1 => self.model = states.remove(0),
            other => panic!("{call:?} answered {answer}: {other:?}"),
        }
    }

    fn refused(&mut self, call: Call, answer: Answer) -> String {
        let before = self.model.clone();
        let verdict = self.all(call.clone(), answer.clone());
        assert_eq!(self.model, before);
        verdict.expect_err(&format!("{call:?} answered {answer} was accepted"))
    }

    /// A login of `user` that opens session `n`; returns its token's step.
    fn login(&mut self, user: usize, n: u128) -> u32 {
        self.ok(
            Call::Login {
                email: user,
                right: true,
            },
            Answer::Session {
                session: Uuid::from_u128(100 + n),
                user: self.users[user],
            },
        );
        self.step
    }

    fn create(&mut self, token: u32, tasks: &[(u128, i32)]) -> Vec<Uuid> {
        let ids: Vec<Uuid> = tasks
            .iter()
            .map(|(n, _)| Uuid::from_u128(1000 + n))
            .collect();
        self.ok(
            Call::Create {
                token,
                items: tasks
                    .iter()
                    .map(|(_, priority)| Item {
                        priority: *priority,
                        max_attempts: 2,
                        key: None,
                    })
                    .collect(),
            },
            Answer::Created {
                ids: ids.clone(),
                created: ids.len() as u32,
            },
        );
        ids
    }
}

fn wrong(email: usize) -> Call {
    Call::Login {
        email,
        right: false,
    }
}

#[test]
fn the_login_limit_refuses_even_the_right_password_once_reached_and_lifts_with_the_window() {
    let mut w = World::new();
    for _ in 0..Settings::RUN.login_limit {
        w.ok(wrong(ADA), Answer::problem(401, "invalid_credentials"));
    }
    let right = Call::Login {
        email: ADA,
        right: true,
    };
    w.ok(right.clone(), Answer::problem(429, "too_many_attempts"));
    w.refused(
        right.clone(),
        Answer::Session {
            session: Uuid::from_u128(9),
            user: users()[ADA],
        },
    );
    w.now += Settings::RUN.window_ms;
    w.login(ADA, 1);
    // Unknown emails are limited alike.
    for _ in 0..Settings::RUN.login_limit {
        w.ok(wrong(UNKNOWN), Answer::problem(401, "invalid_credentials"));
    }
    w.ok(wrong(UNKNOWN), Answer::problem(429, "too_many_attempts"));
}

#[test]
fn a_success_clears_the_failures_before_it() {
    let mut w = World::new();
    for _ in 0..Settings::RUN.login_limit - 1 {
        w.ok(wrong(ADA), Answer::problem(401, "invalid_credentials"));
    }
    w.login(ADA, 1);
    for _ in 0..Settings::RUN.login_limit {
        w.ok(wrong(ADA), Answer::problem(401, "invalid_credentials"));
    }
    w.ok(wrong(ADA), Answer::problem(429, "too_many_attempts"));
}

#[test]
fn the_cap_evicts_the_oldest_and_sessions_born_together_are_each_a_branch() {
    let mut w = World::new();
    let cap = Settings::RUN.cap as u128;
    for n in 0..cap {
        w.login(ADA, n);
    }
    // Born in one round: which is the oldest is not known, so two branches.
    let states = w
        .all(
            Call::Login {
                email: ADA,
                right: true,
            },
            Answer::Session {
                session: Uuid::from_u128(200),
                user: users()[ADA],
            },
        )
        .unwrap();
    assert_eq!(states.len(), cap as usize);
    // Once the ages are known, one branch: the oldest goes.
    for (i, s) in w.model.sessions.values_mut().enumerate() {
        s.age.within = Some(i as i64);
    }
    w.round += 1;
    w.login(ADA, 200);
    let revoked: Vec<Uuid> = w
        .model
        .sessions
        .iter()
        .filter(|(_, s)| s.revoked)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(revoked, vec![Uuid::from_u128(100)]);
}

#[test]
fn a_rotated_token_is_refused_and_past_the_grace_revokes_its_session() {
    let mut w = World::new();
    let old = w.login(ADA, 1);
    let session = Uuid::from_u128(101);
    w.ok(
        Call::Refresh { token: old },
        Answer::Session {
            session,
            user: users()[ADA],
        },
    );
    let new = w.step;
    w.ok(Call::Validate { token: old }, Answer::invalid_token());
    w.ok(Call::Validate { token: new }, Answer::Valid { session });
    w.now += Settings::RUN.grace_ms + 1;
    w.ok(Call::Validate { token: old }, Answer::invalid_token());
    w.ok(Call::Validate { token: new }, Answer::invalid_token());
}

#[test]
fn a_session_ends_at_its_idle_expiry_unless_used_and_at_its_absolute_one_regardless() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let session = Uuid::from_u128(101);
    w.now += Settings::RUN.idle_ms - 1;
    w.ok(Call::Validate { token }, Answer::Valid { session });
    w.now += Settings::RUN.idle_ms - 1;
    w.ok(Call::Validate { token }, Answer::Valid { session });
    w.now = Settings::RUN.absolute_ms;
    w.ok(Call::Validate { token }, Answer::invalid_token());
}

#[test]
fn a_claim_takes_the_highest_priority_then_the_oldest_unless_another_step_held_it() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let low = w.create(token, &[(1, 0)])[0];
    w.round += 1;
    let high = w.create(token, &[(2, 1)])[0];
    w.round += 1;
    let claim = |count| Call::Claim {
        token,
        count,
        wait_ms: 0,
    };
    let why = w.refused(claim(1), Answer::Claimed(vec![low]));
    assert!(why.contains("comes first"), "{why}");
    w.refused(claim(2), Answer::Claimed(vec![high]));
    w.contended.insert(high);
    w.ok(claim(1), Answer::Claimed(vec![low]));
    w.contended.clear();
    w.ok(claim(1), Answer::Claimed(vec![high]));
    w.ok(claim(1), Answer::Claimed(vec![]));
}

#[test]
fn a_lapsed_lease_frees_the_task_and_on_the_last_attempt_fails_it() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let id = w.create(token, &[(1, 0)])[0];
    let claim = Call::Claim {
        token,
        count: 1,
        wait_ms: 0,
    };
    w.ok(claim.clone(), Answer::Claimed(vec![id]));
    w.now += Settings::RUN.lease_ms;
    let complete = Call::Act {
        token,
        task: id,
        act: Act::Complete,
    };
    w.ok(complete.clone(), Answer::problem(409, "not_assignee"));
    w.ok(claim.clone(), Answer::Claimed(vec![id]));
    w.now += Settings::RUN.lease_ms;
    assert_eq!(w.model.tasks[&id].shown(w.now), Status::Failed);
    assert_eq!(w.model.tasks[&id].shown_error(w.now), Some("lease expired"));
    w.ok(claim, Answer::Claimed(vec![]));
}

#[test]
fn a_retry_waits_its_backoff_and_a_release_is_no_attempt() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let id = w.create(token, &[(1, 0)])[0];
    let claim = Call::Claim {
        token,
        count: 1,
        wait_ms: 0,
    };
    let act = |act| Call::Act {
        token,
        task: id,
        act,
    };
    for _ in 0..3 {
        w.ok(claim.clone(), Answer::Claimed(vec![id]));
        w.ok(
            act(Act::Release),
            Answer::Task {
                status: Status::Unassigned,
            },
        );
    }
    w.ok(claim.clone(), Answer::Claimed(vec![id]));
    let fail = Act::Fail {
        retry: true,
        error: "boom".into(),
    };
    w.ok(
        act(fail.clone()),
        Answer::Task {
            status: Status::Unassigned,
        },
    );
    assert_eq!(
        w.model.tasks[&id].not_before,
        NotBefore::Between(w.now + 800, w.now + 1000)
    );
    w.now += 10_000;
    w.ok(claim, Answer::Claimed(vec![id]));
    w.ok(
        act(fail),
        Answer::Task {
            status: Status::Failed,
        },
    );
}

#[test]
fn a_key_makes_one_task_and_returns_it_to_every_later_create() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let keyed = |key: &str| Item {
        priority: 0,
        max_attempts: 1,
        key: Some(key.into()),
    };
    let first = Uuid::from_u128(7);
    w.ok(
        Call::Create {
            token,
            items: vec![keyed("k")],
        },
        Answer::Created {
            ids: vec![first],
            created: 1,
        },
    );
    let again = Call::Create {
        token,
        items: vec![keyed("k")],
    };
    w.refused(
        again.clone(),
        Answer::Created {
            ids: vec![Uuid::from_u128(8)],
            created: 1,
        },
    );
    w.ok(
        again,
        Answer::Created {
            ids: vec![first],
            created: 0,
        },
    );
}

#[test]
fn cancel_ends_an_open_task_and_its_holder_is_fenced_out() {
    let mut w = World::new();
    let token = w.login(ADA, 1);
    let id = w.create(token, &[(1, 0)])[0];
    w.ok(
        Call::Claim {
            token,
            count: 1,
            wait_ms: 0,
        },
        Answer::Claimed(vec![id]),
    );
    let act = |act| Call::Act {
        token,
        task: id,
        act,
    };
    w.ok(
        act(Act::Cancel),
        Answer::Task {
            status: Status::Cancelled,
        },
    );
    w.ok(act(Act::Complete), Answer::problem(409, "not_assignee"));
    w.ok(act(Act::Cancel), Answer::problem(409, "not_cancellable"));
}
