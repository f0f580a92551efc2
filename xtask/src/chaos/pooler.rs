//! The `pgbouncer` case: the service behind a real PgBouncer in transaction
//! pooling, where each transaction may land on a different server session.
//! With `TESSERA_DB_POOLER=transaction` the chaos tier's traffic and every
//! tier-2 race must hold through it exactly as they do directly; with
//! `none` (the service as it was before the setting existed) the same
//! traffic must fail, which shows the case can tell the two apart.

use super::Pace;
use super::findings::{CaseReport, Timeline, check, correctness, tally};
use crate::load::service::{Service, cheap_hashing};
use crate::pgbouncer::{PgBouncer, Pooling};
use crate::psql::Psql;
use anyhow::Context as _;
use harness::checks::Check;
use harness::traffic::{Traffic, agent};
use pg_provision::Server;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Server sessions PgBouncer gives the service's database: fewer than the
/// service's pools hold (10 + 10 + 2), so transactions really share them.
const SERVICE_POOL: u32 = 4;
/// Server sessions for each tier-2 test database: the forced interleavings
/// park up to 40 requests on a lock at once, each on its own session.
const RACE_POOL: u32 = 50;
/// Concurrent clients of the counter-proof.
const WORKERS: usize = 8;
/// How long the counter-proof's service may take to become ready.
const NONE_READY_WITHIN: Duration = Duration::from_secs(15);

fn env(pooler: &str) -> Vec<(&'static str, String)> {
    let mut env = cheap_hashing();
    env.push(("TESSERA_DB_POOLER", pooler.to_owned()));
    env
}

pub fn run(
    server: &Server,
    admin: &Psql,
    database: &str,
    pace: &Pace,
    log: &Path,
) -> anyhow::Result<CaseReport> {
    let db = admin.on(database);
    let broken_db = format!("{database}_none");
    admin.recreate_database(&broken_db)?;
    let dir = log.with_extension("d");
    let bouncer = PgBouncer::start(
        &server.url,
        &Pooling {
            default_pool_size: RACE_POOL,
            sized: &[(database, SERVICE_POOL), (&broken_db, SERVICE_POOL)],
        },
        &dir,
    )?;

    let service = Service::start(
        &bouncer.url_for(db.url()).to_string(),
        &env("transaction"),
        log,
    )?;
    let traffic = Traffic::start(&service.base_url, pace.workers, "pgbouncer")?;
    std::thread::sleep(pace.before + pace.after);
    let outcome = traffic.stop();
    drop(service);
    let failures = outcome
        .calls
        .iter()
        .filter(|c| c.status == 0 || c.status >= 500)
        .count();
    let unexpected = outcome.calls.iter().filter(|c| c.unexpected).count();
    let mut checks = vec![check(
        "through PgBouncer (transaction pooling) no request fails",
        failures == 0 && unexpected == 0 && !outcome.calls.is_empty(),
        format!(
            "{} requests, {failures} 5xx or unanswered, {unexpected} unexpected; \
             {SERVICE_POOL} server sessions for the service's pools of 22",
            outcome.calls.len()
        ),
    )];

    checks.push(tier2_through(server, &bouncer, &dir)?);
    checks.push(without_the_setting(
        &bouncer,
        &admin.on(&broken_db),
        &log.with_extension("none.log"),
    )?);
    drop(bouncer);

    let (lost, correctness_checks) = correctness(&outcome.record, &db)?;
    checks.extend(correctness_checks);
    Ok(CaseReport {
        name: "pgbouncer".into(),
        requests: outcome.calls.len(),
        statuses: tally(&outcome.calls),
        recovery: None,
        lost,
        checks,
        timeline: Timeline::of(&outcome.calls),
        marks: Vec::new(),
    })
}

/// Every tier-2 race (session cap, refresh, login limit, claims, ...) with
/// the service under test reaching its database through PgBouncer; the
/// tests' own checks still read the database directly.
fn tier2_through(server: &Server, bouncer: &PgBouncer, dir: &Path) -> anyhow::Result<Check> {
    let started = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "concurrent::",
        ])
        .env("DATABASE_URL", server.url.to_string())
        // test-support then runs every service with transaction pooling.
        .env("TESSERA_TEST_PGBOUNCER", bouncer.address())
        .output()
        .context("running the tier-2 tests")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("tier2.log"), &text)?;
    let counts = crate::test_all::counts_in(&text);
    Ok(check(
        "every tier-2 race holds through PgBouncer",
        out.status.success() && counts.passed > 0 && counts.failed == 0,
        format!(
            "{} passed, {} failed in {:.0} s (log: {})",
            counts.passed,
            counts.failed,
            started.elapsed().as_secs_f64(),
            dir.join("tier2.log").display()
        ),
    ))
}

/// The same service with `TESSERA_DB_POOLER=none` through the same
/// PgBouncer: its cached prepared statements meet server sessions that
/// never saw them, so requests fail. If they did not, this case could not
/// tell a service that is safe behind PgBouncer from one that is not.
fn without_the_setting(bouncer: &PgBouncer, db: &Psql, log: &Path) -> anyhow::Result<Check> {
    let mut service = Service::spawn(&bouncer.url_for(db.url()).to_string(), &env("none"), log)?;
    // Its connections may not even get set up (diesel-async's set-up
    // statements are prepared outside a transaction): never ready is
    // failing too.
    if let Err(never_ready) = service.wait_ready(NONE_READY_WITHIN, log) {
        return Ok(check(
            "without the setting (TESSERA_DB_POOLER=none) the same service fails through it",
            true,
            format!("it never became ready: {never_ready}"),
        ));
    }
    // Concurrent, like the traffic above: one request at a time would keep
    // one server session busy and never meet a second.
    let barrier = Arc::new(Barrier::new(WORKERS));
    let statuses: Vec<u16> = (0..WORKERS)
        .map(|w| {
            let (base, barrier) = (service.base_url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(10));
                barrier.wait();
                let mut statuses = Vec::new();
                for i in 0..10 {
                    let body = serde_json::json!({
                        "email": format!("none{w}-{i}@pgbouncer.example.com"),
                        "password": "pgbouncer case password",
                    });
                    for path in ["/v1/users", "/v1/sessions"] {
                        let status = agent
                            .post(&format!("{base}{path}"))
                            .content_type("application/json")
                            .send(body.to_string())
                            .map_or(0, |r| r.status().as_u16());
                        statuses.push(status);
                    }
                }
                statuses
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect();
    drop(service);
    let failed = statuses.iter().filter(|s| **s == 0 || **s >= 500).count();
    Ok(check(
        "without the setting (TESSERA_DB_POOLER=none) the same service fails through it",
        failed > 0,
        format!(
            "{failed} of {} registrations and logins failed",
            statuses.len()
        ),
    ))
}
