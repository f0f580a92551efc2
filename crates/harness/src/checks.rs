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
    for id in &record.released {
        *claims.entry(*id).or_default() -= 1;
    }
    // Each release lets a task be claimed once more; beyond that, two
    // workers held it at once.
    let held_twice = claims.values().filter(|&&n| n > 1).count();
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
            "no session valid after its logout returned",
            record.accepted_after_logout == 0,
            format!(
                "{} of {} validations after logout succeeded",
                record.accepted_after_logout, record.validations_after_logout
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

/// What of the acknowledged writes the database holds, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    /// Sum of `attempt`: every assignment ever made.
    pub assignments: i64,
    pub users: i64,
    pub completed: i64,
    pub revoked: i64,
    pub tasks: i64,
    /// Users above the session limit right now.
    pub over_limit: i64,
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
        })
    }

    /// Acknowledged registrations, completions, logouts and task creations
    /// the database does not have.
    pub fn lost(&self, record: &Record) -> i64 {
        (record.registered.len() as i64 - self.users)
            + (record.completed.len() as i64 - self.completed)
            + (record.logged_out.len() as i64 - self.revoked)
            + (record.tasks_created as i64 - self.tasks).max(0)
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
    /// answer can be lost (not in the fault tier, where a claim may commit
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
        // assignments, users, completed, revoked, tasks, over limit
        let db = Scripted {
            answers: RefCell::new(vec![4, 1, 1, 1, 5, 0]),
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
            users: 0,
            completed: 0,
            revoked: 0,
            tasks: 0,
            over_limit: 1,
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
            answers: RefCell::new(vec![0, 0, 0]),
            asked: RefCell::default(),
        };
        let persisted = Persisted::read(&Record::default(), &db, &LIMITS)?;
        assert_eq!(db.asked.borrow().len(), 3, "only the three totals");
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
