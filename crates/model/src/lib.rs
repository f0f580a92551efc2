//! The randomized run: histories nobody wrote down, judged by a model of
//! the interface's rules.
//!
//! - `rules`: the model, a plain state machine with explicit time.
//! - `history`: steps, rounds, answers and events.
//! - `generate`: the seeded generator of rounds.
//! - `runner`: two instances on one database, rounds behind a barrier, the
//!   clock moved between them.
//! - `judge`: some real-time-respecting order of a round's steps explains
//!   every answer; `settle`: one state it ends in is the database's.
//! - `shrink`: a failing history cut to the fewest steps that still fail.
//!
//! Tier 2 runs four short fixed seeds (`fixed_seed_histories_are_explained_by_the_model_of_the_rules`);
//! `cargo xtask model --seeds N` runs many random ones; `prove` runs the
//! tier-2 one under the fault of its row (`prove --every-test`: under every
//! deliberate fault).

pub mod generate;
pub mod history;
pub mod judge;
pub mod rules;
pub mod runner;
pub mod settle;
pub mod shrink;

use history::{History, Op};
use rules::Settings;
use runner::{Failure, Outcome};
use std::fmt::Write as _;

/// Whether a failing history is shrunk before it is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    Yes,
    /// As it failed (tier 2: `prove --every-test` runs it under every fault
    /// and must not spend minutes shrinking each).
    No,
}

/// Runs `rounds` generated from `seed`.
pub async fn check(seed: u64, rounds: usize, shrink: Shrink) -> Result<Outcome, Box<Failure>> {
    let settings = Settings::RUN;
    let mut generator = generate::Generator::new(seed, rounds);
    match runner::run(seed, settings, &mut generator).await {
        Ok(outcome) => Ok(outcome),
        Err(failure) if shrink == Shrink::No => Err(failure),
        Err(failure) => {
            let (shrunk, _) = shrink::shrink(*failure, settings).await;
            Err(Box::new(shrunk))
        }
    }
}

/// A failure as printed: the seed, what broke, the history step by step,
/// and the command that replays it.
pub fn describe(failure: &Failure, saved: Option<&str>) -> String {
    let mut out = String::new();
    let h = &failure.history;
    let _ = writeln!(
        out,
        "seed {}: round {} of {} ({} steps) broke a rule:\n  {}\n",
        h.seed,
        failure.round,
        h.rounds.len(),
        h.steps(),
        failure.why
    );
    out.push_str(&listing(h));
    if let Some(path) = saved {
        let _ = writeln!(out, "\nreplay: cargo xtask model --replay {path}");
    }
    out
}

/// The history, a line per step, rounds apart.
pub fn listing(history: &History) -> String {
    let mut out = String::new();
    for (i, round) in history.rounds.iter().enumerate() {
        let moved = match round.advance_ms {
            0 => String::new(),
            ms => format!(" (clock +{:.1} s)", ms as f64 / 1000.0),
        };
        let _ = writeln!(out, "round {i}{moved}:");
        for step in &round.steps {
            let after = match step.after {
                Some(id) => format!(", once #{id} answered"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  #{:<4} instance {}  {}{after}",
                step.id,
                step.instance,
                op_line(&step.op)
            );
        }
    }
    out
}

fn op_line(op: &Op) -> String {
    match op {
        Op::Login { email, right } => format!(
            "login user{email} with the {} password",
            if *right { "right" } else { "wrong" }
        ),
        Op::Validate { token } => format!("validate token of #{token}"),
        Op::Refresh { token } => format!("refresh token of #{token}"),
        Op::Logout { token } => format!("logout token of #{token}"),
        Op::RevokeOne { token, session } => {
            format!("revoke the session of #{session} with token of #{token}")
        }
        Op::RevokeAll { token } => format!("log out everywhere with token of #{token}"),
        Op::ListSessions { token } => format!("list sessions with token of #{token}"),
        Op::Create { token, items } => format!("create {items:?} with token of #{token}"),
        Op::Claim {
            token,
            count,
            wait_ms,
        } => format!("claim {count} (wait {wait_ms} ms) with token of #{token}"),
        Op::Act { token, task, act } => format!(
            "{act:?} task #{}.{} with token of #{token}",
            task.create, task.item
        ),
        Op::Stats { token } => format!("stats with token of #{token}"),
    }
}
