//! The post-run correctness checks: what the clients were told, compared
//! with what the database holds, read afresh after the service stopped.

use crate::psql::Psql;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// `record.json`, written by tessera-load.
#[derive(Debug, Default, Deserialize)]
pub struct Record {
    pub registered: Vec<String>,
    pub logged_out: Vec<String>,
    pub validations_after_logout: u64,
    pub accepted_after_logout: u64,
    pub claim_calls: u64,
    pub empty_claims: u64,
    pub claimed_total: u64,
    pub dishonest_claims: u64,
    pub claimed: Vec<String>,
    pub released: Vec<String>,
    pub completed: Vec<String>,
    pub tasks_created: u64,
}

pub fn read_record(path: &Path) -> anyhow::Result<Record> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).context("parsing record.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        detail,
    }
}

/// Checks that need only what the clients saw.
pub fn from_record(record: &Record) -> Vec<Check> {
    let mut claims: HashMap<&str, i64> = HashMap::new();
    for id in &record.claimed {
        *claims.entry(id).or_default() += 1;
    }
    for id in &record.released {
        *claims.entry(id).or_default() -= 1;
    }
    // Each release lets a task be claimed once more; beyond that, two
    // workers held it at once.
    let held_twice = claims.values().filter(|&&n| n > 1).count();
    vec![
        check(
            "no task held twice",
            held_twice == 0,
            format!(
                "{held_twice} of {} claimed tasks were claimed again without a release",
                claims.len()
            ),
        ),
        check(
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
        check(
            "no session valid after its logout returned",
            record.accepted_after_logout == 0,
            format!(
                "{} of {} validations after logout succeeded",
                record.accepted_after_logout, record.validations_after_logout
            ),
        ),
    ]
}

fn uuid_array(ids: &[String]) -> String {
    format!(
        "ARRAY[{}]::uuid[]",
        ids.iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// What of the acknowledged writes the database holds, read once.
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
    pub fn read(record: &Record, db: &Psql, session_limit: i64) -> anyhow::Result<Persisted> {
        Ok(Persisted {
            assignments: db.number("SELECT coalesce(sum(attempt), 0) FROM tasks")?,
            users: count_in(db, "users", "true", &record.registered)?,
            completed: count_in(db, "tasks", "status = 'completed'", &record.completed)?,
            revoked: count_in(db, "sessions", "revoked_at IS NOT NULL", &record.logged_out)?,
            tasks: db.number("SELECT count(*) FROM tasks")?,
            over_limit: db.number(&format!(
                "SELECT count(*) FROM (SELECT user_id FROM sessions
                   WHERE revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
                   GROUP BY user_id HAVING count(*) > {session_limit}) AS over"
            ))?,
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
    pub fn checks(&self, record: &Record, session_limit: i64) -> Vec<Check> {
        vec![
            check(
                "acknowledged registrations persisted",
                self.users == record.registered.len() as i64,
                format!("{} of {} found", self.users, record.registered.len()),
            ),
            check(
                "acknowledged completions persisted",
                self.completed == record.completed.len() as i64,
                format!(
                    "{} of {} completed in the database",
                    self.completed,
                    record.completed.len()
                ),
            ),
            check(
                "acknowledged logouts persisted",
                self.revoked == record.logged_out.len() as i64,
                format!(
                    "{} of {} revoked in the database",
                    self.revoked,
                    record.logged_out.len()
                ),
            ),
            check(
                "no user over the session limit",
                self.over_limit == 0,
                format!(
                    "{} users above {session_limit} active sessions",
                    self.over_limit
                ),
            ),
            check(
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
        check(
            "claims reported == rows assigned",
            self.assignments == record.claimed_total as i64,
            format!(
                "database: {} assignments (sum of attempt); answers reported {}",
                self.assignments, record.claimed_total
            ),
        )
    }
}

/// How many of `ids` are rows of `table` matching `condition` (tens of
/// thousands of ids: `Psql::query` feeds them through stdin).
pub fn count_in(db: &Psql, table: &str, condition: &str, ids: &[String]) -> anyhow::Result<i64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT count(*) FROM {table} WHERE id = ANY({}) AND {condition};",
        uuid_array(ids)
    );
    let text = db.query(&sql)?;
    text.parse()
        .with_context(|| format!("expected a count, got `{text}`"))
}
