//! The judge of a round: some order of its steps that respects real time
//! (a step answered before another was sent comes first) must explain
//! every answer by the rules; then one of the states such orders end in
//! must be what a fresh read of the database shows (`settle`).
//!
//! The search is a depth-first walk over orders, pruned at the first
//! answer the rules refuse and at any (steps placed, state) already seen.
//! A round holds a few steps, so the walk is small.

use crate::history::{Call, Event};
use crate::rules::{Context, Model, Ms, Settings};
use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use uuid::Uuid;

/// The most states a round may end in, and the most nodes a search may
/// visit, before the round is called too big to judge.
const MAX_ENDS: usize = 256;
const MAX_NODES: usize = 500_000;

pub struct Round<'a> {
    pub settings: &'a Settings,
    pub now: Ms,
    pub round: u32,
    pub users: &'a [Uuid],
    pub events: &'a [Event],
}

/// Every state the round's answers allow it to end in, from any of the
/// states it may have started in (at least one), or the explanation the
/// deepest order got before the rules refused it.
pub fn linearize(starts: &[Model], round: &Round<'_>) -> Result<Vec<Model>, String> {
    let n = round.events.len();
    assert!(n < 64, "a round of {n} steps");
    let before: Vec<u64> = round
        .events
        .iter()
        .map(|e| {
            round
                .events
                .iter()
                .enumerate()
                .filter(|(_, f)| f.answered < e.sent)
                .fold(0, |m, (j, _)| m | 1 << j)
        })
        .collect();
    let contended: Vec<BTreeSet<Uuid>> = round
        .events
        .iter()
        .map(|e| contended(e, round.events))
        .collect();
    let other_claims: Vec<bool> = round
        .events
        .iter()
        .map(|e| {
            round.events.iter().any(|o| {
                o.step != e.step
                    && matches!(o.call, Call::Claim { .. })
                    && o.sent < e.answered
                    && e.sent < o.answered
            })
        })
        .collect();
    let mut search = Search {
        round,
        before,
        contended,
        other_claims,
        seen: HashSet::new(),
        ends: Vec::new(),
        deepest: (0, String::new()),
        nodes: 0,
    };
    for start in starts {
        search.walk(start.clone(), 0);
    }
    if search.nodes > MAX_NODES || search.ends.len() > MAX_ENDS {
        return Err(format!(
            "round {} is too big to judge ({} nodes, {} end states)",
            round.round,
            search.nodes,
            search.ends.len()
        ));
    }
    if search.ends.is_empty() {
        return Err(search.deepest.1);
    }
    Ok(search.ends)
}

/// The tasks another step of the round could have held locked while `e`
/// ran: those a concurrent claim took, and those a concurrent action
/// changed (one refused with 404 or 409 locked nothing).
fn contended(e: &Event, events: &[Event]) -> BTreeSet<Uuid> {
    let mut tasks = BTreeSet::new();
    for other in events {
        let overlaps = other.step != e.step && other.sent < e.answered && e.sent < other.answered;
        if !overlaps {
            continue;
        }
        match &other.answer {
            crate::history::Answer::Claimed(ids) => tasks.extend(ids.iter().copied()),
            crate::history::Answer::Task { .. } => tasks.extend(other.call.task()),
            _ => {}
        }
    }
    tasks
}

struct Search<'r, 'a> {
    round: &'r Round<'a>,
    before: Vec<u64>,
    contended: Vec<BTreeSet<Uuid>>,
    other_claims: Vec<bool>,
    seen: HashSet<(u64, u64)>,
    ends: Vec<Model>,
    deepest: (usize, String),
    nodes: usize,
}

impl Search<'_, '_> {
    fn walk(&mut self, model: Model, placed: u64) {
        self.nodes += 1;
        if self.nodes > MAX_NODES || self.ends.len() > MAX_ENDS {
            return;
        }
        let events = self.round.events;
        if placed.count_ones() as usize == events.len() {
            if !self.ends.contains(&model) {
                self.ends.push(model);
            }
            return;
        }
        for (i, event) in events.iter().enumerate() {
            let bit = 1u64 << i;
            if placed & bit != 0 || self.before[i] & !placed != 0 {
                continue;
            }
            let cx = Context {
                settings: self.round.settings,
                now: self.round.now,
                round: self.round.round,
                step: event.step,
                users: self.round.users,
                contended: &self.contended[i],
                other_claims: self.other_claims[i],
            };
            match model.apply(&event.call, &event.answer, &cx) {
                Ok(nexts) => {
                    for next in nexts {
                        if self.seen.insert((placed | bit, fingerprint(&next))) {
                            self.walk(next, placed | bit);
                        }
                    }
                }
                Err(why) => {
                    let depth = placed.count_ones() as usize + 1;
                    if depth > self.deepest.0 {
                        self.deepest = (depth, describe(event, &why, placed, events));
                    }
                }
            }
        }
    }
}

fn fingerprint(model: &Model) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    model.hash(&mut h);
    h.finish()
}

fn describe(event: &Event, why: &str, placed: u64, events: &[Event]) -> String {
    let order: Vec<String> = events
        .iter()
        .enumerate()
        .filter(|(j, _)| placed & (1 << j) != 0)
        .map(|(_, e)| format!("#{}", e.step))
        .collect();
    format!(
        "step #{} {} answered {}: {why} (after {})",
        event.step,
        call_name(&event.call),
        event.answer,
        if order.is_empty() {
            "nothing else of its round".to_owned()
        } else {
            order.join(", ")
        }
    )
}

pub fn call_name(call: &Call) -> String {
    format!("{call:?}")
}
