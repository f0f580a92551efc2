//! What a fault case found, the correctness checks every case ends with,
//! and the summary table.

use crate::psql::Psql;
use harness::checks::{self, Check, Persisted};
use harness::contract::LIMITS;
use harness::record::Record;
use harness::traffic::Call;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub requests: usize,
    /// Answers by status ("no answer" for a refused or reset connection).
    pub statuses: BTreeMap<String, usize>,
    /// From the fault's end to the last failed answer.
    #[serde(serialize_with = "millis")]
    pub recovery: Option<Duration>,
    /// Acknowledged registrations, logouts, completions and task creations
    /// missing from the database.
    pub lost: i64,
    pub checks: Vec<Check>,
    /// Answers per time slice, for the chart.
    pub timeline: Timeline,
    /// Named moments (the fault, its end), seconds from the traffic's start.
    pub marks: Vec<(String, f64)>,
}

/// Answers per 100 ms slice: served (below 500), 503, other 5xx, no answer.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    pub slice_secs: f64,
    pub served: Vec<u32>,
    pub unavailable: Vec<u32>,
    pub server_errors: Vec<u32>,
    pub no_answer: Vec<u32>,
}

impl Timeline {
    pub fn of(calls: &[Call]) -> Timeline {
        const SLICE: f64 = 0.1;
        let slices = calls
            .iter()
            .map(|c| (c.at.as_secs_f64() / SLICE) as usize + 1)
            .max()
            .unwrap_or(0);
        let mut t = Timeline {
            slice_secs: SLICE,
            served: vec![0; slices],
            unavailable: vec![0; slices],
            server_errors: vec![0; slices],
            no_answer: vec![0; slices],
        };
        for c in calls {
            let i = (c.at.as_secs_f64() / SLICE) as usize;
            let series = match c.status {
                0 => &mut t.no_answer,
                503 => &mut t.unavailable,
                500.. => &mut t.server_errors,
                _ => &mut t.served,
            };
            series[i] += 1;
        }
        t
    }
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u128(d.as_millis()),
        None => s.serialize_none(),
    }
}

impl CaseReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn count(&self, pick: impl Fn(&str) -> bool) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| pick(s))
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn check(name: &str, ok: bool, detail: String) -> Check {
    Check::new(name, ok, detail)
}

pub fn tally(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in calls {
        let key = if c.status == 0 {
            "no answer".to_owned()
        } else {
            c.status.to_string()
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The load tier's checks that still mean something when answers can be
/// lost: nothing acknowledged is missing, no task held twice, answers
/// honest, no session valid after its logout. (Not its "claims reported ==
/// rows assigned": a claim that committed just as its connection was
/// killed was never acknowledged, so the database may hold more.)
pub fn correctness(record: &Record, db: &Psql) -> anyhow::Result<(i64, Vec<Check>)> {
    let persisted = Persisted::read(record, db, &LIMITS)?;
    let mut all = checks::from_record(record);
    all.extend(persisted.checks(record, &LIMITS));
    Ok((persisted.lost(record), all))
}

pub fn table(reports: &[CaseReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | requests | 2xx | 4xx | 503 | other 5xx | no answer | recovery ms | lost | checks | result |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in reports {
        let passed = r.checks.iter().filter(|c| c.ok).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
            r.name,
            r.requests,
            r.count(|s| s.starts_with('2')),
            r.count(|s| s.starts_with('4')),
            r.count(|s| s == "503"),
            r.count(|s| s.starts_with('5') && s != "503"),
            r.count(|s| s == "no answer"),
            r.recovery.map_or("-".into(), |d| d.as_millis().to_string()),
            r.lost,
            passed,
            r.checks.len(),
            if r.ok() { "pass" } else { "FAIL" }
        );
    }
    out
}

/// Every check of every case, failed ones marked.
pub fn details(reports: &[CaseReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "\n{}:", r.name);
        for c in &r.checks {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    out
}
