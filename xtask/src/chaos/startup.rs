//! The `startup` case: instances that start at the same time on an empty
//! database, and one that starts while PostgreSQL is down. Both must become
//! ready by themselves: migrations under an advisory lock (applied once,
//! no instance failing on another's half-made schema), and a service that
//! keeps trying the database while it reports not-ready.

use super::findings::{CaseReport, Timeline, check};
use crate::load::service::{Service, cheap_hashing, get};
use crate::psql::Psql;
use anyhow::Context as _;
use harness::checks::Check;
use pg_provision::Server;
use std::path::Path;
use std::time::Duration;

const INSTANCES: usize = 4;
const READY_WITHIN: Duration = Duration::from_secs(60);

fn log_of(log: &Path, part: &str) -> std::path::PathBuf {
    log.with_extension(format!("{part}.log"))
}

pub fn run(
    server: &mut Server,
    admin: &Psql,
    database: &str,
    log: &Path,
) -> anyhow::Result<CaseReport> {
    let mut checks = together_on_an_empty_database(&admin.on(database), log)?;
    let late = format!("{database}_late");
    admin.recreate_database(&late)?;
    checks.extend(before_postgres(server, &admin.on(&late), log)?);
    Ok(CaseReport {
        name: "startup".into(),
        requests: 0,
        statuses: Default::default(),
        recovery: None,
        lost: 0,
        checks,
        timeline: Timeline::default(),
        marks: Vec::new(),
    })
}

/// The migrations shipped with this tree.
fn shipped_migrations() -> anyhow::Result<i64> {
    Ok(std::fs::read_dir("migrations")
        .context("reading migrations/")?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count() as i64)
}

fn together_on_an_empty_database(db: &Psql, log: &Path) -> anyhow::Result<Vec<Check>> {
    let url = db.url().to_string();
    let logs: Vec<_> = (0..INSTANCES)
        .map(|i| log_of(log, &format!("instance{i}")))
        .collect();
    let mut services = logs
        .iter()
        .map(|log| Service::spawn(&url, &cheap_hashing(), log))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ready: Vec<Result<Duration, String>> = services
        .iter_mut()
        .zip(&logs)
        .map(|(s, log)| s.wait_ready(READY_WITHIN, log).map_err(|e| e.to_string()))
        .collect();
    let pids_alive = services
        .iter_mut()
        .map(|s| s.is_running())
        .filter(|r| *r)
        .count();
    for s in &mut services {
        s.stop()?;
    }
    let applied = db.number("SELECT count(DISTINCT version) FROM __diesel_schema_migrations")?;
    let rows = db.number("SELECT count(*) FROM __diesel_schema_migrations")?;
    let shipped = shipped_migrations()?;
    let mut retried = 0;
    for l in &logs {
        let text =
            std::fs::read_to_string(l).with_context(|| format!("reading {}", l.display()))?;
        retried += text.matches("migrations not applied yet").count();
    }
    let slowest = ready.iter().filter_map(|r| r.as_ref().ok()).max().copied();
    Ok(vec![
        check(
            &format!(
                "{INSTANCES} instances started together on an empty database all become ready"
            ),
            ready.iter().all(Result::is_ok) && pids_alive == INSTANCES,
            match slowest {
                Some(t) if ready.iter().all(Result::is_ok) => {
                    format!(
                        "all ready, the last after {} ms; {pids_alive} still running",
                        t.as_millis()
                    )
                }
                _ => format!("{ready:?}"),
            },
        ),
        check(
            "every migration applied exactly once",
            applied == shipped && rows == shipped,
            format!("{rows} rows for {applied} versions; {shipped} shipped"),
        ),
        check(
            "no instance failed a migration (they took turns)",
            retried == 0,
            format!("{retried} failed migration attempts logged"),
        ),
    ])
}

fn before_postgres(server: &mut Server, db: &Psql, log: &Path) -> anyhow::Result<Vec<Check>> {
    let log = log_of(log, "early");
    let url = db.url().to_string();
    let cluster = server
        .cluster
        .as_mut()
        .context("the chaos tier needs its own cluster")?;
    let (service, live_while_down, ready_while_down) = cluster.restart_around(|| {
        let service = Service::spawn(&url, &cheap_hashing(), &log);
        // Until its port answers, give it a moment (it binds at once).
        let base = service
            .as_ref()
            .map(|s| s.base_url.clone())
            .unwrap_or_default();
        let mut live = false;
        for _ in 0..50 {
            live = get(&format!("{base}/healthz")).is_ok();
            if live {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ready = get(&format!("{base}/readyz")).is_ok();
        (service, live, ready)
    })?;
    let mut service = service?;
    let became_ready = service.wait_ready(READY_WITHIN, &log);
    let same_process = service.is_running();
    service.stop()?;
    Ok(vec![
        check(
            "started while PostgreSQL is down: /healthz 200, /readyz 503",
            live_while_down && !ready_while_down,
            format!("healthz answered: {live_while_down}; readyz 200: {ready_while_down}"),
        ),
        check(
            "... and ready, migrated, in the same process once PostgreSQL is up",
            became_ready.is_ok() && same_process,
            match &became_ready {
                Ok(t) => format!("ready {} ms after PostgreSQL started", t.as_millis()),
                Err(e) => e.to_string(),
            },
        ),
    ])
}
