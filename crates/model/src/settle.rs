//! The end of a round: one of the states the judge allows must be what the
//! database holds, read afresh. The one that is becomes the model, with the
//! database's own instants and orders (what the rules left open) put in.

use crate::history::Status;
use crate::rules::{Model, Ms, NotBefore, SLACK_MS};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A session as stored, its instants in model time.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StoredSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub revoked: bool,
    pub created: Ms,
    pub last_seen: Ms,
    pub idle: Ms,
    pub absolute: Ms,
}

/// A task as every reader sees it (`task_view`), its instants in model time.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StoredTask {
    pub id: Uuid,
    pub seq: i64,
    pub status: Status,
    pub assigned_to: Option<Uuid>,
    pub attempt: i32,
    pub released: i32,
    pub max_attempts: i32,
    pub priority: i32,
    pub key: Option<String>,
    pub last_error: Option<String>,
    pub not_before: Option<Ms>,
    pub lease: Option<Ms>,
}

#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub sessions: Vec<StoredSession>,
    pub tasks: Vec<StoredTask>,
}

/// Every one of `ends` the database agrees with, settled to its instants
/// (they differ in what the read does not show, such as the failed logins
/// counted; the next round starts from each); else what differs from the
/// closest.
pub fn settle(
    ends: &[Model],
    stored: &Stored,
    now: Ms,
    users: &[Uuid],
) -> Result<Vec<Model>, String> {
    let mut closest: Option<Vec<String>> = None;
    let mut agreed: Vec<Model> = Vec::new();
    for end in ends {
        let differences = differences(end, stored, now, users);
        if differences.is_empty() {
            let settled = adopt(end.clone(), stored);
            if !agreed.contains(&settled) {
                agreed.push(settled);
            }
        } else if closest.as_ref().is_none_or(|c| differences.len() < c.len()) {
            closest = Some(differences);
        }
    }
    if !agreed.is_empty() {
        return Ok(agreed);
    }
    Err(format!(
        "the database holds none of the {} states the answers allow; closest: {}",
        ends.len(),
        closest.unwrap_or_default().join("; ")
    ))
}

fn near(a: Ms, b: Ms) -> bool {
    (a - b).abs() <= SLACK_MS
}

fn differences(model: &Model, stored: &Stored, now: Ms, users: &[Uuid]) -> Vec<String> {
    let mut out = Vec::new();
    let sessions: BTreeMap<Uuid, &StoredSession> =
        stored.sessions.iter().map(|s| (s.id, s)).collect();
    for (id, s) in &model.sessions {
        let Some(db) = sessions.get(id) else {
            // A login drops its user's expired sessions (revoked by a
            // reused token or not): nothing can tell.
            let expired = now >= s.idle_expires || now >= s.absolute_expires;
            if !expired {
                out.push(format!("session {id} is not stored"));
            }
            continue;
        };
        let active = !db.revoked && db.idle > now && db.absolute > now;
        if active != s.active(now) {
            let theirs: Vec<String> = model
                .sessions
                .iter()
                .filter(|(_, other)| other.user == s.user)
                .map(|(id, other)| {
                    let stored = sessions.get(id).map(|db| (db.created, db.revoked));
                    format!("{id}: model {other:?}, stored (created, revoked) {stored:?}")
                })
                .collect();
            out.push(format!(
                "session {id}: stored {}, the model has it {}; the user's sessions:\n    {}",
                if active { "active" } else { "ended" },
                if s.active(now) { "active" } else { "ended" },
                theirs.join("\n    ")
            ));
        }
        if users.get(s.user) != Some(&db.user_id) {
            out.push(format!("session {id}: another user"));
        }
        if !near(db.absolute, s.absolute_expires) {
            out.push(format!(
                "session {id}: absolute expiry {} ms, the model's {}",
                db.absolute, s.absolute_expires
            ));
        }
        if active && !near(db.idle, s.idle_expires) {
            out.push(format!(
                "session {id}: idle expiry {} ms, the model's {}",
                db.idle, s.idle_expires
            ));
        }
    }
    out.extend(evictions_out_of_order(model, &sessions, now));
    for id in sessions
        .keys()
        .filter(|id| !model.sessions.contains_key(id))
    {
        out.push(format!("session {id} is stored, the model never opened it"));
    }
    let tasks: BTreeMap<Uuid, &StoredTask> = stored.tasks.iter().map(|t| (t.id, t)).collect();
    for (id, t) in &model.tasks {
        let Some(db) = tasks.get(id) else {
            out.push(format!("task {id} is not stored"));
            continue;
        };
        let shown = t.shown(now);
        let mut differ = |what: &str, stored: String, model: String| {
            if stored != model {
                out.push(format!("task {id}: {what} {stored}, the model's {model}"));
            }
        };
        differ("status", format!("{:?}", db.status), format!("{shown:?}"));
        differ(
            "attempt",
            format!("{}-{}", db.attempt, db.released),
            format!("{}-{}", t.attempt, t.released),
        );
        differ(
            "settings",
            format!("{} {} {:?}", db.priority, db.max_attempts, db.key),
            format!("{} {} {:?}", t.priority, t.max_attempts, t.key),
        );
        differ(
            "last error",
            format!("{:?}", db.last_error),
            format!("{:?}", t.shown_error(now)),
        );
        if shown == Status::Assigned {
            let holder = t.assigned_to.and_then(|u| users.get(u));
            differ(
                "assignee",
                format!("{:?}", db.assigned_to),
                format!("{holder:?}"),
            );
            if !db.lease.is_some_and(|l| near(l, t.lease_expires)) {
                out.push(format!(
                    "task {id}: lease to {:?} ms, the model's {}",
                    db.lease, t.lease_expires
                ));
            }
        }
        if shown == Status::Unassigned {
            let fits = match (t.not_before, db.not_before) {
                (NotBefore::Free, None) => true,
                (NotBefore::At(at), Some(db)) => near(at, db),
                (NotBefore::Between(from, to), Some(db)) => {
                    from - SLACK_MS <= db && db <= to + SLACK_MS
                }
                _ => false,
            };
            if !fits {
                out.push(format!(
                    "task {id}: not before {:?} ms, the model's {:?}",
                    db.not_before, t.not_before
                ));
            }
        }
    }
    for id in tasks.keys().filter(|id| !model.tasks.contains_key(id)) {
        out.push(format!("task {id} is stored, the model never created it"));
    }
    out
}

/// The cap takes the oldest: a session it evicted (in this state) must
/// not have been created after one of its user's sessions still active.
/// The database's order of creation is the service's: a login stamped
/// with its transaction's start, not its insert, breaks this.
fn evictions_out_of_order(
    model: &Model,
    stored: &BTreeMap<Uuid, &StoredSession>,
    now: Ms,
) -> Vec<String> {
    let mut out = Vec::new();
    let created = |id: &Uuid| stored.get(id).map(|s| s.created);
    for (evicted, e) in model.sessions.iter().filter(|(_, s)| s.evicted) {
        let Some(evicted_at) = created(evicted) else {
            continue;
        };
        for (active, _) in model
            .sessions
            .iter()
            .filter(|(_, s)| s.user == e.user && s.active(now))
        {
            if let Some(at) = created(active).filter(|at| *at < evicted_at) {
                out.push(format!(
                    "session {evicted} was evicted by the cap, yet session {active}, still active, was created {} ms before it",
                    evicted_at - at
                ));
            }
        }
    }
    out
}

/// The model with the database's instants and orders put in.
fn adopt(mut model: Model, stored: &Stored) -> Model {
    let kept: std::collections::BTreeSet<Uuid> = stored.sessions.iter().map(|s| s.id).collect();
    model.sessions.retain(|id, _| kept.contains(id));
    for db in &stored.sessions {
        if let Some(s) = model.sessions.get_mut(&db.id) {
            s.age.within = Some(db.created);
            s.last_seen = db.last_seen;
            s.idle_expires = db.idle;
            s.absolute_expires = db.absolute;
        }
    }
    for db in &stored.tasks {
        if let Some(t) = model.tasks.get_mut(&db.id) {
            t.age.within = Some(db.seq);
            if let Some(lease) = db.lease {
                t.lease_expires = lease;
            }
            t.not_before = db.not_before.map_or(NotBefore::Free, NotBefore::At);
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Age, Session};

    fn session(user: usize, round: u32, revoked: bool, evicted: bool) -> Session {
        Session {
            user,
            age: Age {
                round,
                within: None,
            },
            last_seen: 0,
            idle_expires: 60_000,
            absolute_expires: 150_000,
            revoked,
            evicted,
        }
    }

    fn stored(id: Uuid, created: Ms, revoked: bool) -> StoredSession {
        StoredSession {
            id,
            user_id: Uuid::from_u128(1),
            revoked,
            created,
            last_seen: 0,
            idle: 60_000,
            absolute: 150_000,
        }
    }

    /// The cap takes the oldest: an evicted session created after one still
    /// active is a difference, one created before it is not.
    #[test]
    fn an_eviction_of_a_session_newer_than_one_still_active_is_a_difference() {
        let (evicted, kept) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let mut model = Model::default();
        model.sessions.insert(evicted, session(0, 1, true, true));
        model.sessions.insert(kept, session(0, 1, false, false));
        let users = [Uuid::from_u128(1)];
        for (evicted_at, kept_at, differs) in [(100, 200, false), (200, 100, true)] {
            let db = Stored {
                sessions: vec![
                    stored(evicted, evicted_at, true),
                    stored(kept, kept_at, false),
                ],
                tasks: Vec::new(),
            };
            let found = differences(&model, &db, 1_000, &users);
            assert_eq!(!found.is_empty(), differs, "{found:?}");
        }
    }
}
