//! `cargo xtask chaos`: the chaos tier. Each case runs traffic against the
//! release service, injects one fault, and ends with the correctness checks
//! (nothing acknowledged lost, no task held twice); then schemathesis runs
//! against the service's own OpenAPI document. It always provisions its own
//! throwaway cluster, because one case restarts PostgreSQL.

mod cases;
mod crowds;
mod findings;
mod hostile;
mod long_poll;
mod pooler;
mod recovery_chart;
mod schemathesis;
mod startup;

use crate::summary::{Counts, Row};
use findings::CaseReport;
use indicatif::{ProgressBar, ProgressStyle};
use pg_provision::Server;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Only these cases (repeatable): kill-connections, postgres-restart,
    /// pool-exhaustion, sigterm, startup, pgbouncer, bounds, hash-flood, bulkhead,
    /// long-poll, login-crowd, locked-crowd, waiters, hang-ups, padded-bodies,
    /// schemathesis.
    #[arg(long = "case")]
    cases: Vec<String>,
    /// Traffic threads per case.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seconds of traffic before the fault and after it ends.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Schemathesis examples per operation and phase.
    #[arg(long, default_value_t = 100)]
    examples: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    KillConnections,
    PostgresRestart,
    PoolExhaustion,
    Sigterm,
    Startup,
    Pgbouncer,
}

const FAULT_CASES: [Case; 6] = [
    Case::KillConnections,
    Case::PostgresRestart,
    Case::PoolExhaustion,
    Case::Sigterm,
    Case::Startup,
    Case::Pgbouncer,
];

impl Case {
    pub fn slug(self) -> &'static str {
        match self {
            Case::KillConnections => "kill-connections",
            Case::PostgresRestart => "postgres-restart",
            Case::PoolExhaustion => "pool-exhaustion",
            Case::Sigterm => "sigterm",
            Case::Startup => "startup",
            Case::Pgbouncer => "pgbouncer",
        }
    }
}

/// How much traffic a case runs around its fault.
pub struct Pace {
    pub workers: usize,
    pub before: Duration,
    pub after: Duration,
    /// The `long-poll` case's `wait_ms` (each waiter's last wait lasts it).
    pub long_poll_wait: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let known: Vec<&str> = FAULT_CASES
        .iter()
        .map(|c| c.slug())
        .chain(hostile::CASES)
        .chain(crowds::CASES)
        .chain([long_poll::NAME, "schemathesis"])
        .collect();
    if let Some(unknown) = args.cases.iter().find(|c| !known.contains(&c.as_str())) {
        anyhow::bail!("unknown case `{unknown}`; known: {}", known.join(", "));
    }
    let wanted = |slug: &str| args.cases.is_empty() || args.cases.iter().any(|c| c == slug);
    let pace = Pace {
        workers: args.workers.max(1),
        before: Duration::from_secs(args.seconds),
        after: Duration::from_secs(args.seconds),
        long_poll_wait: Duration::from_secs(10),
    };
    let reports = run_cases(&pace, &crowds::Sizes::full(), args.examples, &wanted)?;
    anyhow::ensure!(
        reports.iter().all(CaseReport::ok),
        "chaos cases failed: {}",
        reports
            .iter()
            .filter(|r| !r.ok())
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// test-all's short version: every case with less traffic and fewer examples.
pub fn short() -> Row {
    let started = Instant::now();
    let pace = Pace {
        workers: 4,
        before: Duration::from_secs(1),
        after: Duration::from_secs(2),
        long_poll_wait: Duration::from_secs(3),
    };
    let outcome = run_cases(&pace, &crowds::Sizes::short(), 25, &|_| true);
    let (tests, ok) = match &outcome {
        Ok(reports) => {
            let checks = reports.iter().flat_map(|r| &r.checks);
            let failed = checks.clone().filter(|c| !c.ok).count() as u64;
            let passed = checks.count() as u64 - failed;
            (
                Some(Counts {
                    passed,
                    failed,
                    ignored: 0,
                }),
                failed == 0,
            )
        }
        Err(e) => {
            println!("FAILED chaos: {e:#}");
            (None, false)
        }
    };
    Row {
        name: "chaos (short)".into(),
        tests,
        ok,
        wall: started.elapsed(),
    }
}

fn run_cases(
    pace: &Pace,
    crowd_sizes: &crowds::Sizes,
    examples: u32,
    wanted: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<CaseReport>> {
    crate::load::service::build_release(false)?;
    if crowds::CASES.iter().any(|c| wanted(c)) {
        // The crowd cases' counter-proofs run the faulty build.
        crate::load::service::build_faulty()?;
    }
    let mut server = Server::throwaway()?;
    let dir = PathBuf::from("target/chaos-reports")
        .join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    for case in FAULT_CASES.into_iter().filter(|c| wanted(c.slug())) {
        reports.push(shown(case.slug(), || {
            cases::run(case, &mut server, pace, &dir)
        })?);
    }
    let admin = crate::psql::Psql::new(&server, server.url.clone());
    for name in hostile::CASES.into_iter().filter(|c| wanted(c)) {
        reports.push(shown(name, || hostile::run(name, &admin, &dir))?);
    }
    for name in crowds::CASES.into_iter().filter(|c| wanted(c)) {
        reports.push(shown(name, || {
            crowds::run(name, &server, &admin, &dir, crowd_sizes)
        })?);
    }
    if wanted(long_poll::NAME) {
        reports.push(shown(long_poll::NAME, || {
            long_poll::run(&admin, &dir, pace.long_poll_wait)
        })?);
    }
    if wanted("schemathesis") {
        reports.push(shown("schemathesis", || {
            schemathesis::run(&server, examples, &dir)
        })?);
    }
    let table = findings::table(&reports);
    let details = findings::details(&reports);
    println!("\n{table}{details}");
    std::fs::write(
        dir.join("summary.md"),
        format!("# Chaos tier\n\n{table}\n```\n{details}```\n"),
    )?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&reports)?,
    )?;
    recovery_chart::draw(&reports, &dir.join("timeline.svg"))?;
    println!("report: {}", dir.join("summary.md").display());
    Ok(reports)
}

/// Runs one case under a spinner and prints its line when it ends.
fn shown(
    name: &str,
    case: impl FnOnce() -> anyhow::Result<CaseReport>,
) -> anyhow::Result<CaseReport> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} chaos case {prefix} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(name.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    let report = case()?;
    bar.finish_and_clear();
    println!(
        "{} {:<18} {:>6} requests  lost {}  {}",
        if report.ok() { "ok    " } else { "FAILED" },
        report.name,
        report.requests,
        report.lost,
        report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("[{}: {}]", c.name, c.detail))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(report)
}
