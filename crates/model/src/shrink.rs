//! Shrinking a failing history: take out whole rounds, then single steps,
//! then clock moves, keeping each cut after which a fresh run on a fresh
//! database still fails. What is left is a history of a few steps that
//! `tessera-model --replay` runs again.

use crate::history::History;
use crate::rules::Settings;
use crate::runner::{Failure, Kind, Replay, run};
use std::time::{Duration, Instant};

/// A shrink stops after this many runs or this long, keeping the smallest
/// failing history found.
const MAX_RUNS: usize = 200;
const MAX_TIME: Duration = Duration::from_secs(240);

/// The smallest failing history found from `failure`'s, and how many runs
/// it took.
pub async fn shrink(failure: Failure, settings: Settings) -> (Failure, usize) {
    let mut budget = Budget {
        runs: 0,
        started: Instant::now(),
    };
    // A failure that a replay does not repeat cannot be shrunk: it hangs
    // on timing the history does not hold.
    let mut repeated = None;
    for _ in 0..3 {
        budget.more();
        if let Some(again) = still_fails(failure.history.clone(), settings, failure.kind).await {
            repeated = Some(again);
            break;
        }
    }
    let kind = failure.kind;
    let Some(mut best) = repeated.map(|_| failure.clone()) else {
        let mut failure = failure;
        failure
            .why
            .push_str(" (three replays of this history passed: not shrunk)");
        return (failure, budget.runs);
    };
    // Whole rounds, in chunks that halve (the failing round stays last).
    let mut chunk = best.history.rounds.len() / 2;
    while chunk >= 1 {
        let mut from = 0;
        while from + 1 < best.history.rounds.len() {
            if !budget.more() {
                return (best, budget.runs);
            }
            let to = (from + chunk).min(best.history.rounds.len() - 1);
            let mut cut = best.history.clone();
            cut.rounds.drain(from..to);
            match still_fails(cut, settings, kind).await {
                Some(smaller) => best = smaller,
                None => from = to,
            }
        }
        chunk /= 2;
    }
    // Single steps, in every round.
    let mut r = 0;
    while r < best.history.rounds.len() {
        let mut s = 0;
        while s < best.history.rounds[r].steps.len() {
            if !budget.more() {
                return (best, budget.runs);
            }
            let mut cut = best.history.clone();
            cut.rounds[r].steps.remove(s);
            if cut.rounds[r].steps.is_empty() {
                cut.rounds.remove(r);
            }
            match still_fails(cut, settings, kind).await {
                Some(smaller) => best = smaller,
                None => s += 1,
            }
            if r >= best.history.rounds.len() {
                break;
            }
        }
        r += 1;
    }
    // Clock moves.
    for r in 0..best.history.rounds.len() {
        if best.history.rounds[r].advance_ms == 0 || !budget.more() {
            continue;
        }
        let mut cut = best.history.clone();
        cut.rounds[r].advance_ms = 0;
        if let Some(smaller) = still_fails(cut, settings, kind).await {
            best = smaller;
        }
    }
    (best, budget.runs)
}

struct Budget {
    runs: usize,
    started: Instant,
}

impl Budget {
    fn more(&mut self) -> bool {
        self.runs += 1;
        self.runs <= MAX_RUNS && self.started.elapsed() < MAX_TIME
    }
}

/// The failure of `history` run afresh, of the same kind, cut to the
/// round that failed; a race may need a second try to show again.
async fn still_fails(history: History, settings: Settings, kind: Kind) -> Option<Failure> {
    for _ in 0..2 {
        let mut replay = Replay(history.rounds.iter().cloned().collect());
        if let Err(failure) = run(history.seed, settings, &mut replay).await
            && failure.kind == kind
        {
            return Some(*failure);
        }
    }
    None
}
