//! The post-run correctness checks: what the clients were told (the
//! [`Record`]), compared with what the database holds, read afresh after the
//! traffic stopped. The checks state their SQL; the caller runs it
//! ([`Counter`]), so this crate needs no database driver.

use crate::contract::{ACTIVE_SESSION_SQL, Limits};
use crate::record::Record;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// One judged rule of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: String) -> Check {
        Check {
            name: name.to_owned(),
            ok,
            detail,
        }
    }
}

/// Runs a query whose one row and column is a count.
pub trait Counter {
    fn count(&self, sql: &str) -> anyhow::Result<i64>;
}

/// Checks that need only what the clients saw.
pub fn from_record(record: &Record) -> Vec<Check> {
    let mut claims: HashMap<Uuid, i64> = HashMap::new();
    for id in &record.claimed {
        *claims.entry(*id).or_default() += 1;
    }
    for id in record.released.iter().chain(&record.retried) {
        *claims.entry(*id).or_default() -= 1;
    }
    // Each release or retried failure lets a task be claimed once more;
    // beyond that, two workers held it at once.
    let held_twice = claims.values().filter(|&&n| n > 1).count();
    let mut keys: HashMap<&str, std::collections::HashSet<Uuid>> = HashMap::new();
    for (key, id) in &record.keyed {
        keys.entry(key.as_str()).or_default().insert(*id);
    }
    let split_keys = keys.values().filter(|ids| ids.len() > 1).count();
    vec![
        Check::new(
            "no task held twice",
            held_twice == 0,
            format!(
                "{held_twice} of {} claimed tasks were claimed again without a release",
                claims.len()
            ),
        ),
        Check::new(
            "claim answers are honest",
            record.dishonest_claims == 0 && record.claimed.len() as u64 == record.claimed_total,
            format!(
                "{} of {} answers inconsistent; {} tasks listed vs {} reported ({} empty claims)",
                record.dishonest_claims,
                record.claim_calls,
                record.claimed.len(),
                record.claimed_total,
                record.empty_claims
            ),
        ),
        Check::new(
            "every answer for one idempotency key names one task",
            split_keys == 0,
            format!(
                "{split_keys} of {} keys were answered with more than one task",
                keys.len()
            ),
        ),
        Check::new(
            "no session valid after its logout returned",
            record.accepted_after_logout == 0,
            format!(
                "{} of {} validations after logout succeeded",
                record.accepted_after_logout, record.validations_after_logout
            ),
        ),
        Check::new(
            "no request served without its right",
            record.forbidden_served == 0,
            format!(
                "{} of {} requests without the right were served",
                record.forbidden_served, record.forbidden_probes
            ),
        ),
        Check::new(
            "no API key served after its revocation returned",
            record.served_after_revocation == 0,
            format!(
                "{} of {} uses after revocation were served",
                record.served_after_revocation, record.uses_after_revocation
            ),
        ),
    ]
}

/// `SELECT count(*)` of the rows of `table` among `ids` that match `condition`.
pub fn count_among_sql(table: &str, condition: &str, ids: &[Uuid]) -> String {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!("SELECT count(*) FROM {table} WHERE id = ANY(ARRAY[{list}]::uuid[]) AND {condition};")
}

fn count_among(
    db: &dyn Counter,
    table: &str,
    condition: &str,
    ids: &[Uuid],
) -> anyhow::Result<i64> {
    if ids.is_empty() {
        return Ok(0);
    }
    db.count(&count_among_sql(table, condition, ids))
}

/// The users holding more active sessions than the limit.
pub fn over_limit_sql(limits: &Limits) -> String {
    format!(
        "SELECT count(*) FROM (SELECT user_id FROM sessions WHERE {ACTIVE_SESSION_SQL}
           GROUP BY user_id HAVING count(*) > {}) AS over",
        limits.sessions_per_user
    )
}

/// After a run whose service purged as it went: no row is past its
/// retention (`purged`: what the service's /metrics said it deleted).
pub fn retention_check(db: &dyn Counter, purged: f64) -> anyhow::Result<Check> {
    let left = db.count(&crate::contract::past_retention_sql())?;
    Ok(Check::new(
        "no row past its retention after the cleanup ran",
        left == 0,
        format!("{left} rows left past retention; the service purged {purged:.0}"),
    ))
}

/// Tasks claimed more often than their attempts allow (a release hands
/// its attempt back).
pub const PAST_MAX_ATTEMPTS_SQL: &str =
    "SELECT count(*) FROM tasks WHERE attempt - released > max_attempts";

fn distinct(ids: &[Uuid]) -> i64 {
    ids.iter().collect::<std::collections::HashSet<_>>().len() as i64
}

/// Of the (key, task) pairs the clients were answered with, the keys whose
/// row is not exactly that one task.
fn keys_not_once(db: &dyn Counter, record: &Record) -> anyhow::Result<i64> {
    let pairs: std::collections::BTreeSet<(&str, Uuid)> = record
        .keyed
        .iter()
        .map(|(k, id)| (k.as_str(), *id))
        .collect();
    if pairs.is_empty() {
        return Ok(0);
    }
    let values = pairs
        .iter()
        .map(|(k, id)| format!("('{}', '{id}'::uuid)", k.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    db.count(&format!(
        // A key whose task is gone (retention) says nothing either way.
        "SELECT count(*) FROM (VALUES {values}) AS answered(key, id)
         WHERE (SELECT count(*) FROM tasks t WHERE t.key = answered.key) > 1
            OR (EXISTS (SELECT 1 FROM tasks t WHERE t.key = answered.key)
                AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.key = answered.key AND t.id = answered.id))"
    ))
}

/// What of the acknowledged writes the database holds, read once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Sum of `attempt`: every assignment ever made.
    pub assignments: i64,
    pub users: i64,
    pub completed: i64,
    pub revoked: i64,
    pub tasks: i64,
    /// Users above the session limit right now.
    pub over_limit: i64,
    pub failed: i64,
    /// Retried failures whose error is on record (the task may have moved on).
    pub retried: i64,
    pub cancelled: i64,
    /// Of the tasks whose holder was refused, those cancelled.
    pub fenced_cancelled: i64,
    /// Tasks claimed more often than their attempts allow.
    pub past_max_attempts: i64,
    /// Keys the clients were answered with that do not name exactly one row.
    pub keys_not_once: i64,
    /// API keys whose revocation was acknowledged and that are still there.
    pub keys_left: i64,
}

impl Persisted {
    pub fn read(record: &Record, db: &dyn Counter, limits: &Limits) -> anyhow::Result<Persisted> {
        Ok(Persisted {
            assignments: db.count("SELECT coalesce(sum(attempt), 0) FROM tasks")?,
            users: count_among(db, "users", "true", &record.registered)?,
            completed: count_among(db, "tasks", "status = 'completed'", &record.completed)?,
            revoked: count_among(db, "sessions", "revoked_at IS NOT NULL", &record.logged_out)?,
            tasks: db.count("SELECT count(*) FROM tasks")?,
            over_limit: db.count(&over_limit_sql(limits))?,
            failed: count_among(db, "tasks", "status = 'failed'", &record.failed)?,
            retried: count_among(db, "tasks", "last_error IS NOT NULL", &record.retried)?,
            cancelled: count_among(db, "tasks", "status = 'cancelled'", &record.cancelled)?,
            fenced_cancelled: count_among(db, "tasks", "status = 'cancelled'", &record.fenced)?,
            past_max_attempts: db.count(PAST_MAX_ATTEMPTS_SQL)?,
            keys_not_once: keys_not_once(db, record)?,
            keys_left: count_among(db, "api_keys", "true", &record.keys_revoked)?,
        })
    }

    /// Acknowledged registrations, completions, logouts and task creations
    /// the database does not have.
    pub fn lost(&self, record: &Record) -> i64 {
        (record.registered.len() as i64 - self.users)
            + (record.completed.len() as i64 - self.completed)
            + (record.logged_out.len() as i64 - self.revoked)
            + (record.tasks_created as i64 - self.tasks).max(0)
            + (distinct(&record.failed) - self.failed)
            + (distinct(&record.cancelled) - self.cancelled)
    }

    /// Nothing acknowledged is missing; nobody is over the session limit.
    pub fn checks(&self, record: &Record, limits: &Limits) -> Vec<Check> {
        vec![
            Check::new(
                "acknowledged registrations persisted",
                self.users == record.registered.len() as i64,
                format!("{} of {} found", self.users, record.registered.len()),
            ),
            Check::new(
                "acknowledged completions persisted",
                self.completed == record.completed.len() as i64,
                format!(
                    "{} of {} completed in the database",
                    self.completed,
                    record.completed.len()
                ),
            ),
            Check::new(
                "acknowledged logouts persisted",
                self.revoked == record.logged_out.len() as i64,
                format!(
                    "{} of {} revoked in the database",
                    self.revoked,
                    record.logged_out.len()
                ),
            ),
            Check::new(
                "no user over the session limit",
                self.over_limit == 0,
                format!(
                    "{} users above {} active sessions",
                    self.over_limit, limits.sessions_per_user
                ),
            ),
            Check::new(
                "acknowledged failures persisted",
                self.failed == distinct(&record.failed)
                    && self.retried == distinct(&record.retried),
                format!(
                    "{} of {} failed, {} of {} retried tasks carry their error",
                    self.failed,
                    distinct(&record.failed),
                    self.retried,
                    distinct(&record.retried)
                ),
            ),
            Check::new(
                "acknowledged cancels persisted",
                self.cancelled == distinct(&record.cancelled),
                format!(
                    "{} of {} cancelled in the database",
                    self.cancelled,
                    distinct(&record.cancelled)
                ),
            ),
            Check::new(
                "a holder's write was refused only for a cancelled task",
                self.fenced_cancelled == distinct(&record.fenced),
                format!(
                    "{} of {} refused tasks are cancelled",
                    self.fenced_cancelled,
                    distinct(&record.fenced)
                ),
            ),
            Check::new(
                "no task claimed past its max_attempts",
                self.past_max_attempts == 0,
                format!("{} tasks", self.past_max_attempts),
            ),
            Check::new(
                "no idempotency key stored twice or answered with a missing task",
                self.keys_not_once == 0,
                format!("{} keys", self.keys_not_once),
            ),
            Check::new(
                "acknowledged key revocations persisted",
                self.keys_left == 0,
                format!(
                    "{} of {} revoked keys still in the database",
                    self.keys_left,
                    record.keys_revoked.len()
                ),
            ),
            Check::new(
                "acknowledged task creations persisted",
                self.tasks >= record.tasks_created as i64,
                format!(
                    "{} tasks in the database, {} acknowledged",
                    self.tasks, record.tasks_created
                ),
            ),
        ]
    }

    /// Every assignment was reported to a client: only meaningful when no
    /// answer can be lost (not in the chaos tier, where a claim may commit
    /// as its connection dies).
    pub fn claims_check(&self, record: &Record) -> Check {
        Check::new(
            "claims reported == rows assigned",
            self.assignments == record.claimed_total as i64,
            format!(
                "database: {} assignments (sum of attempt); answers reported {}",
                self.assignments, record.claimed_total
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::LIMITS;
    use std::cell::RefCell;

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_task_claimed_twice_without_a_release_fails_and_with_one_passes() {
        let task = Uuid::new_v4();
        let mut record = Record {
            claimed: vec![task, task],
            claimed_total: 2,
            claim_calls: 2,
            ..Record::default()
        };
        assert_eq!(failed(&from_record(&record)), ["no task held twice"]);
        record.released.push(task);
        assert_eq!(failed(&from_record(&record)), Vec::<&str>::new());
    }

    #[test]
    fn a_claim_answer_listing_other_than_it_reported_is_dishonest() {
        let record = Record {
            claimed: vec![Uuid::new_v4()],
            claimed_total: 2,
            ..Record::default()
        };
        assert_eq!(failed(&from_record(&record)), ["claim answers are honest"]);
        let flagged = Record {
            dishonest_claims: 1,
            ..Record::default()
        };
        assert_eq!(failed(&from_record(&flagged)), ["claim answers are honest"]);
    }

    #[test]
    fn a_session_accepted_after_its_logout_fails() {
        let record = Record {
            validations_after_logout: 3,
            accepted_after_logout: 1,
            ..Record::default()
        };
        assert_eq!(
            failed(&from_record(&record)),
            ["no session valid after its logout returned"]
        );
    }

    #[test]
    fn a_forbidden_request_or_a_revoked_key_served_fails() {
        let refused = Record {
            forbidden_probes: 4,
            uses_after_revocation: 2,
            ..Record::default()
        };
        assert_eq!(failed(&from_record(&refused)), Vec::<&str>::new());
        let served = Record {
            forbidden_served: 1,
            served_after_revocation: 1,
            ..refused
        };
        assert_eq!(
            failed(&from_record(&served)),
            [
                "no request served without its right",
                "no API key served after its revocation returned"
            ]
        );
    }

    #[test]
    fn a_revoked_key_left_in_the_database_fails() {
        let record = Record {
            keys_revoked: vec![Uuid::new_v4()],
            ..Record::default()
        };
        let persisted = Persisted {
            keys_left: 1,
            ..Persisted::default()
        };
        assert_eq!(
            failed(&persisted.checks(&record, &LIMITS)),
            ["acknowledged key revocations persisted"]
        );
    }

    #[test]
    fn a_key_answered_with_two_tasks_fails_and_a_retried_task_may_be_claimed_again() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let record = Record {
            keyed: vec![("k".into(), a), ("k".into(), a), ("j".into(), b)],
            claimed: vec![a, a],
            claimed_total: 2,
            retried: vec![a],
            ..Record::default()
        };
        assert!(failed(&from_record(&record)).is_empty());
        let split = Record {
            keyed: vec![("k".into(), a), ("k".into(), b)],
            ..Record::default()
        };
        assert_eq!(
            failed(&from_record(&split)),
            ["every answer for one idempotency key names one task"]
        );
    }

    #[test]
    fn unpersisted_failures_and_cancels_a_task_past_its_attempts_and_a_split_key_fail()
    -> anyhow::Result<()> {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let record = Record {
            failed: vec![a, a],
            retried: vec![b],
            cancelled: vec![c],
            fenced: vec![c],
            keyed: vec![("k".into(), a)],
            ..Record::default()
        };
        // assignments, tasks, over limit, failed, retried, cancelled, fenced, past max, keys
        let db = Scripted {
            answers: RefCell::new(vec![0, 0, 0, 1, 0, 0, 0, 2, 1]),
            asked: RefCell::default(),
        };
        let persisted = Persisted::read(&record, &db, &LIMITS)?;
        assert_eq!(persisted.lost(&record), 1, "the cancel");
        assert_eq!(
            failed(&persisted.checks(&record, &LIMITS)),
            [
                "acknowledged failures persisted",
                "acknowledged cancels persisted",
                "a holder's write was refused only for a cancelled task",
                "no task claimed past its max_attempts",
                "no idempotency key stored twice or answered with a missing task"
            ]
        );
        let asked = db.asked.borrow();
        assert!(asked[3].contains("status = 'failed'") && asked[3].contains(&a.to_string()));
        assert!(asked[8].contains("('k', '"), "{asked:?}");
        Ok(())
    }

    /// Answers each query with the next count, remembering the SQL.
    struct Scripted {
        answers: RefCell<Vec<i64>>,
        asked: RefCell<Vec<String>>,
    }

    impl Counter for Scripted {
        fn count(&self, sql: &str) -> anyhow::Result<i64> {
            self.asked.borrow_mut().push(sql.to_owned());
            Ok(self.answers.borrow_mut().remove(0))
        }
    }

    #[test]
    fn what_the_database_lacks_is_lost_and_fails_its_check() -> anyhow::Result<()> {
        let record = Record {
            registered: vec![Uuid::new_v4(), Uuid::new_v4()],
            completed: vec![Uuid::new_v4()],
            logged_out: vec![Uuid::new_v4()],
            tasks_created: 5,
            claimed_total: 4,
            ..Record::default()
        };
        // assignments, users, completed, revoked, tasks, over limit, past max_attempts
        let db = Scripted {
            answers: RefCell::new(vec![4, 1, 1, 1, 5, 0, 0]),
            asked: RefCell::default(),
        };
        let persisted = Persisted::read(&record, &db, &LIMITS)?;
        assert_eq!(persisted.lost(&record), 1);
        assert_eq!(
            failed(&persisted.checks(&record, &LIMITS)),
            ["acknowledged registrations persisted"]
        );
        assert!(persisted.claims_check(&record).ok);
        let asked = db.asked.borrow();
        assert!(
            asked[1].contains(&record.registered[0].to_string()),
            "{asked:?}"
        );
        assert!(asked[5].contains("HAVING count(*) > 10"), "{asked:?}");
        Ok(())
    }

    #[test]
    fn a_user_over_the_limit_and_unreported_assignments_fail() {
        let record = Record {
            claimed_total: 3,
            ..Record::default()
        };
        let persisted = Persisted {
            assignments: 4,
            over_limit: 1,
            ..Persisted::default()
        };
        assert_eq!(
            failed(&persisted.checks(&record, &LIMITS)),
            ["no user over the session limit"]
        );
        assert!(!persisted.claims_check(&record).ok);
    }

    #[test]
    fn no_ids_asks_nothing_of_the_database() -> anyhow::Result<()> {
        let db = Scripted {
            answers: RefCell::new(vec![0, 0, 0, 0]),
            asked: RefCell::default(),
        };
        let persisted = Persisted::read(&Record::default(), &db, &LIMITS)?;
        assert_eq!(db.asked.borrow().len(), 4, "only the four totals");
        assert_eq!(persisted.lost(&Record::default()), 0);
        Ok(())
    }

    #[test]
    fn rows_left_past_their_retention_fail_the_retention_check() -> anyhow::Result<()> {
        for (left, ok) in [(0, true), (5, false)] {
            let db = Scripted {
                answers: RefCell::new(vec![left]),
                asked: RefCell::default(),
            };
            let check = retention_check(&db, 1000.0)?;
            assert_eq!(check.ok, ok, "{check:?}");
            assert!(db.asked.borrow()[0].contains("604800 seconds"));
        }
        Ok(())
    }
}
