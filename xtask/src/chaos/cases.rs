//! The fault cases. Each starts the release service on its own database,
//! runs traffic, injects one fault at a point it controls (a kill, a
//! restart, a lock it holds, a signal), and ends with the correctness checks
//! read afresh from the database.

use super::findings::{CaseReport, Timeline, check, correctness, tally};
use super::{Case, Pace};
use crate::load::service::{Service, cheap_hashing};
use crate::psql::Psql;
use anyhow::Context as _;
use harness::checks::Check;
use harness::traffic::agent;
use harness::traffic::{Call, Outcome, Traffic, fresh_token};
use pg_provision::Server;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How long after a fault ends the service must be serving normally again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

pub fn run(
    case: Case,
    server: &mut Server,
    pace: &Pace,
    dir: &std::path::Path,
) -> anyhow::Result<CaseReport> {
    let admin = Psql::new(server, server.url.clone());
    let database = format!("tessera_fault_{}", case.slug().replace('-', "_"));
    let db = admin.fresh(&database)?;
    let log = dir.join(format!("{}.server.log", case.slug()));
    match case {
        Case::KillConnections => kill_connections(&admin, &db, &database, pace, &log),
        Case::PostgresRestart => postgres_restart(server, &db, pace, &log),
        Case::PoolExhaustion => pool_exhaustion(&db, pace, &log),
        Case::Sigterm => sigterm(&db, pace, &log),
        Case::Startup => super::startup::run(server, &admin, &database, &log),
        Case::Pgbouncer => super::pooler::run(server, &admin, &database, pace, &log),
    }
}

fn start(db: &Psql, env: &[(&str, &str)], log: &std::path::Path) -> anyhow::Result<Service> {
    let mut all = cheap_hashing();
    all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Service::start(&db.url().to_string(), &all, log)
}

/// All of the service's connections terminated mid-run.
fn kill_connections(
    admin: &Psql,
    db: &Psql,
    database: &str,
    pace: &Pace,
    log: &std::path::Path,
) -> anyhow::Result<CaseReport> {
    let service = start(db, &[], log)?;
    let traffic = Traffic::start(&service.base_url, pace.workers, "kill")?;
    std::thread::sleep(pace.before);
    let killed = admin.number(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = '{database}' AND pid <> pg_backend_pid()) AS k"
    ))?;
    let fault_over = traffic.elapsed();
    std::thread::sleep(pace.after);
    let outcome = traffic.stop();
    drop(service);
    let mut checks = vec![check(
        "the service's connections were killed",
        killed > 0,
        format!("{killed} backends terminated"),
    )];
    checks.extend(failure_checks(&outcome.calls, fault_over, None));
    let marks = vec![("connections killed", fault_over)];
    finish(
        Case::KillConnections,
        db,
        outcome,
        Some(fault_over),
        marks,
        checks,
    )
}

/// The private cluster stopped and started again under the running service.
fn postgres_restart(
    server: &mut Server,
    db: &Psql,
    pace: &Pace,
    log: &std::path::Path,
) -> anyhow::Result<CaseReport> {
    let mut service = start(db, &[], log)?;
    let pid = service.pid();
    let base = service.base_url.clone();
    let traffic = Traffic::start(&base, pace.workers, "restart")?;
    std::thread::sleep(pace.before);
    let down_at = traffic.elapsed();
    let cluster = server
        .cluster
        .as_mut()
        .context("the chaos tier needs its own cluster")?;
    let unready_while_down =
        cluster.restart_around(|| readyz_becomes(&base, 503, Duration::from_secs(20)))?;
    let fault_over = traffic.elapsed();
    let ready_after = readyz_becomes(&base, 200, Duration::from_secs(20));
    std::thread::sleep(pace.after);
    let outcome = traffic.stop();
    let same_process = service.is_running() && service.pid() == pid;
    drop(service);
    let mut checks = vec![
        check(
            "/readyz is 503 while PostgreSQL is down",
            unready_while_down.is_some(),
            describe_wait(unready_while_down, "after the stop began"),
        ),
        check(
            "/readyz is 200 once it is back",
            ready_after.is_some(),
            describe_wait(ready_after, "after the start"),
        ),
        check(
            "no process restart",
            same_process,
            format!(
                "pid {pid} {}",
                if same_process {
                    "still serving"
                } else {
                    "gone"
                }
            ),
        ),
    ];
    checks.extend(failure_checks(&outcome.calls, fault_over, None));
    let marks = vec![
        ("PostgreSQL stopped", down_at),
        ("started again", fault_over),
    ];
    finish(
        Case::PostgresRestart,
        db,
        outcome,
        Some(fault_over),
        marks,
        checks,
    )
}

/// A pool of one whose connection is stuck behind a lock the test holds,
/// and 50 concurrent callers on top of the traffic.
fn pool_exhaustion(db: &Psql, pace: &Pace, log: &std::path::Path) -> anyhow::Result<CaseReport> {
    const CONNECTION_TIMEOUT: Duration = Duration::from_millis(1000);
    const STATEMENT_TIMEOUT: Duration = Duration::from_millis(2000);
    let service = start(
        db,
        &[
            ("TESSERA_POOL_MAX_SIZE", "1"),
            ("TESSERA_POOL_MIN_IDLE", "0"),
            ("TESSERA_POOL_CONNECTION_TIMEOUT_MS", "1000"),
            ("TESSERA_STATEMENT_TIMEOUT_MS", "2000"),
        ],
        log,
    )?;
    let traffic = Traffic::start(&service.base_url, pace.workers, "pool")?;
    let token = fresh_token(&service.base_url, "pool-burst")?;
    std::thread::sleep(pace.before);
    let locked_at = traffic.elapsed();
    let lock = lock_sessions(db)?;
    let burst = concurrent_validations(&service.base_url, &token, 50);
    lock.release()?;
    let fault_over = traffic.elapsed();
    std::thread::sleep(pace.after);
    let outcome = traffic.stop();
    drop(service);

    let limit = STATEMENT_TIMEOUT + Duration::from_millis(1000);
    let slowest = burst.iter().map(|b| b.took).max().unwrap_or_default();
    let all_503 = burst
        .iter()
        .filter(|b| b.status == 503 && b.retry_after)
        .count();
    let within_pool_timeout = burst
        .iter()
        .filter(|b| b.took <= CONNECTION_TIMEOUT + Duration::from_millis(500))
        .count();
    let mut checks = vec![
        check(
            "all 50 concurrent callers got 503 with Retry-After",
            all_503 == burst.len() && burst.len() == 50,
            format!(
                "{all_503} of {} (statuses {})",
                burst.len(),
                statuses(&burst)
            ),
        ),
        check(
            "nothing hangs: every answer within the statement timeout + 1 s",
            slowest <= limit,
            format!(
                "slowest {} ms; {within_pool_timeout} of 50 within the 1 s connection timeout + 0.5 s",
                slowest.as_millis()
            ),
        ),
        check(
            "callers waiting for the pool answer within its timeout",
            within_pool_timeout >= 49,
            format!(
                "{within_pool_timeout} of 50 (one may hold the connection until the statement timeout)"
            ),
        ),
    ];
    checks.extend(failure_checks(&outcome.calls, fault_over, None));
    let marks = vec![("lock taken", locked_at), ("released", fault_over)];
    finish(
        Case::PoolExhaustion,
        db,
        outcome,
        Some(fault_over),
        marks,
        checks,
    )
}

/// SIGTERM while requests are in flight (held in the database by a lock
/// the test controls): they finish, new connections are refused, exit 0.
fn sigterm(db: &Psql, pace: &Pace, log: &std::path::Path) -> anyhow::Result<CaseReport> {
    const IN_FLIGHT: usize = 6;
    const GRACE: Duration = Duration::from_secs(10);
    // A pool big enough that every request gets a connection and waits in
    // PostgreSQL, where the test can count it.
    let mut service = start(
        db,
        &[
            ("TESSERA_STATEMENT_TIMEOUT_MS", "30000"),
            ("TESSERA_POOL_MAX_SIZE", "32"),
        ],
        log,
    )?;
    let base = service.base_url.clone();
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("service port")?;
    let traffic = Traffic::start(&base, pace.workers, "sigterm")?;
    let token = fresh_token(&base, "sigterm-burst")?;
    std::thread::sleep(pace.before);
    let lock = lock_sessions(db)?;
    let in_flight = {
        let (base, token) = (base.clone(), token.clone());
        std::thread::spawn(move || concurrent_validations(&base, &token, IN_FLIGHT))
    };
    // Every request touches `sessions` first, so each traffic worker ends up
    // blocked behind the lock too: wait until all of them and our 6 are.
    wait_until(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        (pace.workers + IN_FLIGHT) as i64,
    )?;
    let signalled = Instant::now();
    let fault_at = traffic.elapsed();
    service.terminate();
    let refused_after = refused_within(port, Duration::from_secs(5));
    lock.release()?;
    let finished = in_flight
        .join()
        .map_err(|_| anyhow::anyhow!("the in-flight validations' thread panicked"))?;
    let exit = service.wait_for_exit(GRACE + Duration::from_secs(2))?;
    let exit_took = signalled.elapsed();
    let outcome = traffic.stop();
    drop(service);

    // In flight at the signal: answered 200, and only after it.
    let completed = finished
        .iter()
        .filter(|b| b.status == 200 && b.answered_at.is_some_and(|t| t > signalled))
        .count();
    let mut checks = vec![
        check(
            "in-flight requests finish",
            completed == IN_FLIGHT,
            format!(
                "{completed} of {IN_FLIGHT} held in PostgreSQL at the signal answered 200 after it (statuses {})",
                statuses(&finished)
            ),
        ),
        check(
            "new connections are refused",
            refused_after.is_some(),
            describe_wait(refused_after, "after SIGTERM"),
        ),
        check(
            "the process exits 0 within the grace period",
            exit.is_some_and(|s| s.success()) && exit_took <= GRACE,
            format!(
                "{exit:?} after {} ms (grace {} s)",
                exit_took.as_millis(),
                GRACE.as_secs()
            ),
        ),
    ];
    checks.extend(failure_checks(&outcome.calls, fault_at, Some(fault_at)));
    let marks = vec![("SIGTERM", fault_at)];
    finish(Case::Sigterm, db, outcome, None, marks, checks)
}

/// The checks every case shares about failed requests: none unexpected,
/// every failure a 503 with Retry-After (or, after a shutdown began, a
/// refused connection), and normal service within 5 s of the fault's end.
fn failure_checks(
    calls: &[Call],
    fault_over: Duration,
    shutdown_at: Option<Duration>,
) -> Vec<Check> {
    let unexpected: Vec<String> = calls
        .iter()
        .filter(|c| c.unexpected)
        .take(5)
        .map(|c| format!("{} -> {}", c.op, c.status))
        .collect();
    let unexpected_n = calls.iter().filter(|c| c.unexpected).count();
    let after_shutdown = |c: &Call| shutdown_at.is_some_and(|t| c.at >= t);
    let bad_failures = calls
        .iter()
        .filter(|c| (c.status == 503 && !c.retry_after) || (c.status == 0 && !after_shutdown(c)))
        .count();
    let mut checks = vec![
        check(
            "no unexpected answers",
            unexpected_n == 0,
            format!("{unexpected_n} unexpected {unexpected:?}"),
        ),
        check(
            "failures are 503 with Retry-After",
            bad_failures == 0,
            format!("{bad_failures} failures without Retry-After or without an answer"),
        ),
    ];
    if shutdown_at.is_none() {
        let recovery = recovery(calls, fault_over);
        let served_after = calls
            .iter()
            .filter(|c| c.at > fault_over + recovery && ok(c))
            .count();
        checks.push(check(
            "serving normally within 5 s of the fault's end",
            recovery <= RECOVERY_LIMIT && served_after > 0,
            format!(
                "last failure {} ms after the fault ended; {served_after} successes after it",
                recovery.as_millis()
            ),
        ));
    }
    checks
}

fn ok(c: &Call) -> bool {
    (200..300).contains(&c.status)
}

fn failed(c: &Call) -> bool {
    c.status == 0 || c.status >= 500
}

/// Time from the fault's end to the last failed answer (0 if none after it).
pub fn recovery(calls: &[Call], fault_over: Duration) -> Duration {
    calls
        .iter()
        .filter(|c| failed(c))
        .map(|c| c.at.saturating_sub(fault_over))
        .max()
        .unwrap_or_default()
}

fn finish(
    case: Case,
    db: &Psql,
    outcome: Outcome,
    fault_over: Option<Duration>,
    marks: Vec<(&str, Duration)>,
    mut checks: Vec<Check>,
) -> anyhow::Result<CaseReport> {
    let Outcome { calls, record } = outcome;
    let (lost, correctness_checks) = correctness(&record, db)?;
    checks.extend(correctness_checks);
    Ok(CaseReport {
        name: case.slug().to_owned(),
        requests: calls.len(),
        statuses: tally(&calls),
        // A shutdown has no recovery: refusing is the point.
        recovery: fault_over.map(|t| recovery(&calls, t)),
        lost,
        checks,
        timeline: Timeline::of(&calls),
        marks: marks
            .into_iter()
            .map(|(m, t)| (m.to_owned(), t.as_secs_f64()))
            .collect(),
    })
}

/// One answer of a burst.
#[derive(Debug, Clone, Default)]
pub struct BurstAnswer {
    pub status: u16,
    pub retry_after: bool,
    pub took: Duration,
    pub answered_at: Option<Instant>,
}

/// `n` validations, each on its own connection, released together.
fn concurrent_validations(base: &str, token: &str, n: usize) -> Vec<BurstAnswer> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, url, auth) = (
                barrier.clone(),
                format!("{base}/v1/sessions/current"),
                format!("Bearer {token}"),
            );
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(40));
                barrier.wait();
                let started = Instant::now();
                match agent.get(&url).header("Authorization", auth).call() {
                    Ok(r) => BurstAnswer {
                        status: r.status().as_u16(),
                        retry_after: r.headers().contains_key("retry-after"),
                        took: started.elapsed(),
                        answered_at: Some(Instant::now()),
                    },
                    Err(_) => BurstAnswer {
                        took: started.elapsed(),
                        ..BurstAnswer::default()
                    },
                }
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

fn statuses(answers: &[BurstAnswer]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for a in answers {
        *counts.entry(a.status).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls /readyz until it answers `status`; how long that took.
fn readyz_becomes(base: &str, status: u16, within: Duration) -> Option<Duration> {
    let agent = agent(Duration::from_secs(10));
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(r) = agent.get(&format!("{base}/readyz")).call()
            && r.status().as_u16() == status
        {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Takes `ACCESS EXCLUSIVE` on `sessions` in a transaction the test holds,
/// and returns once PostgreSQL has granted it.
fn lock_sessions(db: &Psql) -> anyhow::Result<crate::psql::OpenTransaction> {
    let lock = db.hold("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")?;
    wait_until(
        db,
        "SELECT count(*) FROM pg_locks WHERE relation = 'sessions'::regclass
           AND mode = 'AccessExclusiveLock' AND granted",
        1,
    )?;
    Ok(lock)
}

/// Waits (at most 20 s) until `sql`'s count reaches `at_least`.
fn wait_until(db: &Psql, sql: &str, at_least: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let n = db.number(sql)?;
        if n >= at_least {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let activity = db.query(
                "SELECT state, wait_event_type, wait_event, left(query, 70)
                   FROM pg_stat_activity WHERE datname = current_database()",
            )?;
            anyhow::bail!(
                "waited 20 s for `{sql}` to reach {at_least} (at {n}); sessions:\n{activity}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long until a TCP connect to the port is refused.
fn refused_within(port: u16, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while started.elapsed() < within {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn describe_wait(waited: Option<Duration>, when: &str) -> String {
    match waited {
        Some(d) => format!("{} ms {when}", d.as_millis()),
        None => "never observed".into(),
    }
}
