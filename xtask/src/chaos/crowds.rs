//! The crowd cases: what a crowd costs and whether the rules hold while it
//! runs, against the release service, each with a counter-proof: the same
//! crowd against the faulty build under the fault that restores the
//! behaviour the rule replaced, which must fail the same check.
//!
//! - `login-crowd`: N concurrent logins of one user with the right password
//!   (production argon2): every one 201, the cap keeps 10; 40 wrong
//!   passwords: 10 checked. Directly and behind PgBouncer.
//! - `locked-crowd`: N logins of an email already limited, beside a
//!   validating user: all 429 at once, a handful of database transactions.
//! - `waiters`: N long polls on an empty queue, beside paced heartbeats and
//!   validations: database transactions while they wait (flat in N), how
//!   late each wait ends, the others' latency.
//! - `hang-ups`: waiters whose clients hang up, then tasks arrive: all of
//!   them stay claimable.
//! - `padded-bodies`: 100 concurrent 1 MiB creates padded with an unknown
//!   member: 422, and what they cost in memory.
//!
//! The crowds themselves are `tessera-crowd`'s (load-tests); this judges.

use super::findings::{CaseReport, Timeline, check};
use crate::load::service::{CROWD_BIN, Service, cheap_hashing, memory_mib};
use crate::pgbouncer::{PgBouncer, Pooling};
use crate::psql::Psql;
use anyhow::Context as _;
use harness::checks::Check;
use harness::round_trips::CountingProxy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The crowd cases, by the name `--case` takes.
pub const CASES: [&str; 5] = [
    "login-crowd",
    "locked-crowd",
    "waiters",
    "hang-ups",
    "padded-bodies",
];

/// How big the crowds are: the full run's, or test-all's smaller ones.
pub struct Sizes {
    pub logins: Vec<usize>,
    pub behind_pgbouncer: Vec<usize>,
    pub locked: usize,
    pub waiters: Vec<usize>,
    pub wait_ms: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            logins: vec![30, 100, 300],
            behind_pgbouncer: vec![30, 100, 300],
            locked: 300,
            waiters: vec![100, 1000, 5000],
            wait_ms: 8000,
        }
    }

    pub fn short() -> Sizes {
        Sizes {
            logins: vec![30, 100],
            behind_pgbouncer: vec![30],
            locked: 100,
            waiters: vec![100, 1000],
            wait_ms: 4000,
        }
    }
}

/// The login limit and session cap the services run with (the contract's).
const LIMIT: usize = harness::contract::LIMITS.login_failures as usize;
const CAP: i64 = harness::contract::LIMITS.sessions_per_user as i64;
/// Wrong passwords sent at once: four times the limit.
const WRONG: usize = 4 * LIMIT;
/// Waits must end within this of their `wait_ms` (p99).
const WAIT_END_MS: u64 = 100;
/// Latency the others keep while a crowd runs (p99).
const OTHERS_P99_MS: u64 = 50;
/// The padded creates.
const PADDED: usize = 100;
const PADDED_SIZE: usize = 1024 * 1024;
/// The target for the whole crowd (reported, see below).
const PADDED_RSS_MIB: f64 = 16.0;
/// The service's own share of a padded crowd's memory, past what the HTTP
/// layer costs to receive the same bytes (actix reads ahead of a request
/// in progress: ~270 KiB a connection, measured).
const OWN_SHARE_MIB: f64 = 4.0;

pub fn run(
    name: &str,
    server: &pg_provision::Server,
    admin: &Psql,
    dir: &Path,
    sizes: &Sizes,
) -> anyhow::Result<CaseReport> {
    let database = format!("tessera_{}", name.replace('-', "_"));
    let crowd = Crowd {
        admin,
        dir,
        database,
    };
    let checks = match name {
        "login-crowd" => crowd.logins(server, sizes)?,
        "locked-crowd" => crowd.locked(sizes)?,
        "waiters" => crowd.waiters(sizes)?,
        "hang-ups" => crowd.hangups()?,
        _ => crowd.padded()?,
    };
    Ok(CaseReport {
        name: name.to_owned(),
        requests: checks.requests,
        statuses: checks.statuses,
        recovery: None,
        lost: 0,
        checks: checks.checks,
        timeline: Timeline::default(),
        marks: Vec::new(),
    })
}

/// What a case found.
#[derive(Default)]
struct Found {
    requests: usize,
    statuses: BTreeMap<String, usize>,
    checks: Vec<Check>,
}

impl Found {
    fn saw(&mut self, out: &Value) {
        for key in ["statuses", "validation_statuses", "heartbeat_statuses"] {
            for (status, n) in out[key].as_object().into_iter().flatten() {
                let n = n.as_u64().unwrap_or(0) as usize;
                *self.statuses.entry(status.clone()).or_default() += n;
                self.requests += n;
            }
        }
    }
}

/// One case's database, log directory, and services.
struct Crowd<'a> {
    admin: &'a Psql,
    dir: &'a Path,
    database: String,
}

/// Which build serves a run: the release, or the faulty one under a fault.
#[derive(Clone, Copy)]
enum Build<'f> {
    Release,
    Faulty(&'f str),
}

impl Crowd<'_> {
    /// A fresh database `suffix` and a service on it (through `url_for`
    /// when behind a pooler).
    fn service(
        &self,
        suffix: &str,
        build: Build<'_>,
        env: &[(&str, String)],
        url_for: &dyn Fn(&Psql) -> String,
    ) -> anyhow::Result<(Service, Psql)> {
        let name = format!("{}_{suffix}", self.database);
        let db = self.admin.fresh(&name)?;
        let log = self.dir.join(format!("{name}.server.log"));
        let url = url_for(&db);
        let service = match build {
            Build::Release => Service::start(&url, env, &log)?,
            Build::Faulty(fault) => Service::start_faulty(fault, &url, env, &log)?,
        };
        Ok((service, db))
    }

    /// [`Crowd::service`] reaching PostgreSQL through a counting proxy,
    /// its LISTEN connection too.
    fn counted_service(
        &self,
        suffix: &str,
        build: Build<'_>,
        env: &[(&str, String)],
    ) -> anyhow::Result<(Service, CountingProxy)> {
        let proxy = CountingProxy::start(self.admin.url().host_port())?;
        let through = |db: &Psql| db.url().with_host_port("127.0.0.1", proxy.port).to_string();
        let (service, _) = self.service(suffix, build, env, &through)?;
        Ok((service, proxy))
    }

    fn logins(&self, server: &pg_provision::Server, sizes: &Sizes) -> anyhow::Result<Found> {
        let mut found = Found::default();
        let direct = |db: &Psql| db.url().to_string();
        let (service, db) = self.service("direct", Build::Release, &[], &direct)?;
        self.judge_logins(&mut found, &service, &db, &sizes.logins, "directly")?;
        drop(service);

        let bouncer = PgBouncer::start(
            &server.url,
            &Pooling {
                default_pool_size: 20,
                sized: &[],
            },
            &self.dir.join(format!("{}.pgbouncer", self.database)),
        )?;
        let pooled = |db: &Psql| bouncer.url_for(db.url()).to_string();
        let env = [("TESSERA_DB_POOLER", "transaction".to_owned())];
        let (service, db) = self.service("pgbouncer", Build::Release, &env, &pooled)?;
        self.judge_logins(
            &mut found,
            &service,
            &db,
            &sizes.behind_pgbouncer,
            "behind PgBouncer",
        )?;
        drop(service);
        drop(bouncer);

        // Counter-proof: a check in flight counted as a failure (v1.1).
        let n = sizes.logins[0];
        let (service, _) = self.service(
            "counter",
            Build::Faulty("login_limit_refuses_in_flight"),
            &[],
            &direct,
        )?;
        let out = crowd(&[
            "logins",
            "--base",
            &service.base_url,
            "--email",
            "cp@example.com",
            "--n",
            &n.to_string(),
        ])?;
        let refused = out["statuses"]["429"].as_u64().unwrap_or(0);
        found.checks.push(check(
            "counter-proof: with checks in flight refused (fault login_limit_refuses_in_flight) the same crowd is not all 201",
            refused > 0,
            format!("{n} right passwords: {}", out["statuses"]),
        ));
        Ok(found)
    }

    fn judge_logins(
        &self,
        found: &mut Found,
        service: &Service,
        db: &Psql,
        sizes: &[usize],
        how: &str,
    ) -> anyhow::Result<()> {
        let base = &service.base_url;
        for &n in sizes {
            let email = format!("ada{n}@example.com");
            let out = crowd(&[
                "logins",
                "--base",
                base,
                "--email",
                &email,
                "--n",
                &n.to_string(),
            ])?;
            found.saw(&out);
            let active = db.number(&format!(
                "SELECT count(*) FROM sessions
                 WHERE user_id = (SELECT id FROM users WHERE email = '{email}') AND {}",
                harness::contract::ACTIVE_SESSION_SQL
            ))?;
            let all_created = out["statuses"]["201"].as_u64() == Some(n as u64);
            found.checks.push(check(
                &format!(
                    "{how}: {n} right passwords at once, every one 201, {CAP} sessions active after"
                ),
                all_created && active == CAP,
                format!(
                    "{}; {active} active; login p50 {} ms, p99 {} ms, max {} ms",
                    out["statuses"],
                    out["latency"]["p50_ms"],
                    out["latency"]["p99_ms"],
                    out["latency"]["max_ms"]
                ),
            ));
        }
        let email = "eve@example.com";
        let out = crowd(&[
            "logins",
            "--base",
            base,
            "--email",
            email,
            "--n",
            &WRONG.to_string(),
            "--wrong",
        ])?;
        found.saw(&out);
        let failed = db.number(&format!(
            "SELECT count(*) FROM login_attempts WHERE email = '{email}' AND outcome = 'failed'"
        ))?;
        let answered_checked = out["statuses"]["401"].as_u64().unwrap_or(0);
        let limited = out["codes"]["too_many_attempts"].as_u64().unwrap_or(0);
        found.checks.push(check(
            &format!("{how}: {WRONG} wrong passwords at once, {LIMIT} checked, the rest 429"),
            failed == LIMIT as i64
                && answered_checked == LIMIT as u64
                && limited == (WRONG - LIMIT) as u64,
            format!(
                "{}; {failed} failures recorded; p99 {} ms",
                out["statuses"], out["latency"]["p99_ms"]
            ),
        ));
        Ok(())
    }

    fn locked(&self, sizes: &Sizes) -> anyhow::Result<Found> {
        let mut found = Found::default();
        let n = sizes.locked;
        let crowd_at = |build: Build<'_>, suffix: &str| -> anyhow::Result<(Value, f64)> {
            let (service, proxy) = self.counted_service(suffix, build, &[])?;
            let args = [
                "locked",
                "--base",
                &service.base_url,
                "--n",
                &n.to_string(),
                "--limit",
                &LIMIT.to_string(),
            ];
            let (out, trips, _) = round_trips_between(&proxy, &args, ("crowd_start", "crowd_end"))?;
            drop(service);
            Ok((out, trips))
        };
        let (out, trips) = crowd_at(Build::Release, "release")?;
        let (counter, counter_trips) =
            crowd_at(Build::Faulty("login_limit_refusal_not_shared"), "counter")?;
        found.saw(&out);
        found.saw(&counter);
        found.checks.push(check(
            &format!(
                "{n} logins of a limited email: every one 429 too_many_attempts with Retry-After"
            ),
            out["limited"].as_u64() == Some(n as u64),
            format!(
                "{}; answered in p50 {} ms, p99 {} ms; the crowd took {} ms",
                out["statuses"], out["latency"]["p50_ms"], out["latency"]["p99_ms"], out["wall_ms"]
            ),
        ));
        // One admission per instance decides for every login waiting in the
        // email's line meanwhile: the crowd costs one per batch of arrivals.
        // An admission is three round trips (BEGIN with the lock, the
        // statement, COMMIT); one decides for every login then waiting in the
        // email's line, so the crowd costs one per batch of arrivals.
        found.checks.push(check(
            "the crowd shares its admissions: at most one for every two logins",
            trips <= (3 * n / 2) as f64,
            format!(
                "{trips} round trips (about {:.0} admissions) for {n} logins (validations not counted)",
                trips / 3.0
            ),
        ));
        found.checks.push(check(
            &format!("another user's validations keep p99 under {OTHERS_P99_MS} ms meanwhile"),
            out["validations"]["p99_ms"].as_u64().unwrap_or(u64::MAX) < OTHERS_P99_MS
                && out["validation_statuses"]
                    .as_object()
                    .is_some_and(|s| s.keys().all(|k| k == "200")),
            format!(
                "{} validations: {}",
                out["validations"]["count"], out["validations"]
            ),
        ));
        // Under the fault each refusal is an admission of its own, one after
        // another in the line: the logins that were decided at all cost
        // their round trips, the rest wait out their deadline (503).
        let counter_refused = counter["limited"].as_u64().unwrap_or(0) as f64;
        found.checks.push(check(
            "counter-proof: each login admitted on its own (fault login_limit_refusal_not_shared) costs a round trip or more a refusal",
            counter_trips >= counter_refused,
            format!(
                "{counter_trips} round trips; {} (the crowd took {} ms)",
                counter["statuses"], counter["wall_ms"]
            ),
        ));
        Ok(found)
    }

    fn waiters(&self, sizes: &Sizes) -> anyhow::Result<Found> {
        let mut found = Found::default();
        let env = cheap_hashing();
        let wait_ms = sizes.wait_ms.to_string();
        let run = |build: Build<'_>, n: usize, suffix: &str| -> anyhow::Result<(Value, f64)> {
            let (service, proxy) = self.counted_service(suffix, build, &env)?;
            let args = [
                "waiters",
                "--base",
                &service.base_url,
                "--n",
                &n.to_string(),
                "--wait-ms",
                &wait_ms,
            ];
            let (out, trips, secs) =
                round_trips_between(&proxy, &args, ("window_start", "window_end"))?;
            drop(service);
            Ok((out, trips / secs.max(0.001)))
        };
        let mut per_second = Vec::new();
        for &n in &sizes.waiters {
            let (out, per_sec) = run(Build::Release, n, &format!("n{n}"))?;
            found.saw(&out);
            per_second.push((n, per_sec));
            let lateness = &out["wait_end_lateness"];
            found.checks.push(check(
                &format!("{n} waiters: all parked, every wait ends empty within {WAIT_END_MS} ms of wait_ms (p99)"),
                out["all_parked"] == true
                    && out["claimed_none"].as_u64() == Some(n as u64)
                    && out["ended_early"] == 0
                    && lateness["p99_ms"].as_u64().unwrap_or(u64::MAX) <= WAIT_END_MS,
                format!(
                    "{}; late by p50 {} ms, p99 {} ms, max {} ms; ramp {} ms",
                    out["statuses"], lateness["p50_ms"], lateness["p99_ms"], lateness["max_ms"], out["ramp_ms"]
                ),
            ));
            found.checks.push(check(
                &format!(
                    "{n} waiters: heartbeats and validations keep p99 under {OTHERS_P99_MS} ms"
                ),
                out["heartbeats"]["p99_ms"].as_u64().unwrap_or(u64::MAX) < OTHERS_P99_MS
                    && out["validations"]["p99_ms"].as_u64().unwrap_or(u64::MAX) < OTHERS_P99_MS,
                format!(
                    "heartbeats p99 {} ms ({:?}), validations p99 {} ms ({:?})",
                    out["heartbeats"]["p99_ms"],
                    out["heartbeat_statuses"],
                    out["validations"]["p99_ms"],
                    out["validation_statuses"]
                ),
            ));
        }
        // Flat: what one more waiter adds to the round trips a second, from
        // the smallest crowd to the largest (the first design added about
        // two: its own re-check and claim every second).
        let (first, last) = (per_second[0], per_second[per_second.len() - 1]);
        let per_waiter = (last.1 - first.1) / (last.0 - first.0).max(1) as f64;
        found.checks.push(check(
            "database work of waiting: flat in the number of waiters (under 1/100 of a round trip a second per waiter added), a few a second in all",
            per_waiter < 0.01 && per_second.iter().all(|(_, r)| *r <= 10.0),
            format!(
                "{}; per waiter added: {per_waiter:.5}/s",
                per_second
                    .iter()
                    .map(|(n, r)| format!("{n} waiters: {r:.1}/s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        let n = sizes.waiters[0];
        let (counter, per_sec) = run(Build::Faulty("long_poll_recheck_per_waiter"), n, "counter")?;
        found.saw(&counter);
        found.checks.push(check(
            "counter-proof: waiters re-checking on their own (fault long_poll_recheck_per_waiter) cost round trips in proportion",
            per_sec >= n as f64,
            format!("{n} waiters: {per_sec:.1}/s"),
        ));
        Ok(found)
    }

    fn hangups(&self) -> anyhow::Result<Found> {
        const N: usize = 5;
        let mut found = Found::default();
        let direct = |db: &Psql| db.url().to_string();
        let env = cheap_hashing();
        let run = |build: Build<'_>, suffix: &str| -> anyhow::Result<Value> {
            let (service, _) = self.service(suffix, build, &env, &direct)?;
            crowd(&[
                "hangups",
                "--base",
                &service.base_url,
                "--n",
                &N.to_string(),
            ])
        };
        let out = run(Build::Release, "release")?;
        let counter = run(Build::Faulty("hang_ups_ignored"), "counter")?;
        found.saw(&out);
        found.saw(&counter);
        let kept = |o: &Value| {
            o["claimable_within_1s"].as_u64() == Some(N as u64) && o["assigned_after"] == 0
        };
        found.checks.push(check(
            &format!("{N} waiters hang up, {N} tasks created: all {N} claimable within 1 s, none leased to the departed"),
            out["all_parked"] == true && out["dropped_by_the_service"] == true && kept(&out),
            format!(
                "dropped {} ms after the hang-up; {} claimable after {} ms; {} assigned a second later",
                out["noticed_ms"], out["claimable_within_1s"], out["checked_after_ms"], out["assigned_after"]
            ),
        ));
        found.checks.push(check(
            "counter-proof: with hang-ups ignored (fault hang_ups_ignored) the departed take the tasks",
            !kept(&counter),
            format!(
                "{} claimable within 1 s, {} assigned a second later",
                counter["claimable_within_1s"], counter["assigned_after"]
            ),
        ));
        Ok(found)
    }

    fn padded(&self) -> anyhow::Result<Found> {
        let mut found = Found::default();
        let direct = |db: &Psql| db.url().to_string();
        let env = cheap_hashing();
        // The crowd sent to `path`: what it was told, and RSS before it and
        // at its peak (sampled every 5 ms while it ran).
        let run =
            |build: Build<'_>, suffix: &str, path: &str| -> anyhow::Result<(Value, f64, f64)> {
                let (service, _) = self.service(suffix, build, &env, &direct)?;
                let before = service.rss_mib().context("reading RSS")?;
                let sampling = Arc::new(AtomicBool::new(true));
                let pid = service.pid();
                let sampler = {
                    let sampling = sampling.clone();
                    std::thread::spawn(move || {
                        let mut peak = 0.0_f64;
                        while sampling.load(Ordering::SeqCst) {
                            peak = peak.max(memory_mib(pid, "VmRSS").unwrap_or(0.0));
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        peak
                    })
                };
                let out = crowd(&[
                    "padded",
                    "--base",
                    &service.base_url,
                    "--n",
                    &PADDED.to_string(),
                    "--size",
                    &PADDED_SIZE.to_string(),
                    "--path",
                    path,
                ]);
                sampling.store(false, Ordering::SeqCst);
                let peak = sampler
                    .join()
                    .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
                Ok((out?, before, peak))
            };
        // The same bytes to a route that never reads its body: what the
        // server's HTTP layer costs to receive them, whatever the service does.
        let never_read = "/v1/tasks/00000000-0000-0000-0000-000000000000/complete";
        let (base, b_before, b_peak) = run(Build::Release, "baseline", never_read)?;
        let (out, before, peak) = run(Build::Release, "release", "/v1/tasks")?;
        let (counter, c_before, c_peak) =
            run(Build::Faulty("body_read_whole"), "counter", "/v1/tasks")?;
        for o in [&base, &out, &counter] {
            found.saw(o);
        }
        let (baseline, growth, counter_growth) =
            (b_peak - b_before, peak - before, c_peak - c_before);
        found.checks.push(check(
            &format!(
                "{PADDED} concurrent 1 MiB bodies padded with an unknown member: every one 422"
            ),
            out["statuses"]["422"].as_u64() == Some(PADDED as u64),
            format!("{}; p99 {} ms", out["statuses"], out["latency"]["p99_ms"]),
        ));
        found.checks.push(check(
            &format!(
                "memory while they ran: no more than the same bytes cost a route that never reads them, + {OWN_SHARE_MIB} MiB"
            ),
            growth <= baseline + OWN_SHARE_MIB,
            format!(
                "RSS {before:.1} -> peak {peak:.1} MiB (+{growth:.1}); never read: +{baseline:.1} MiB ({}); the {PADDED_RSS_MIB} MiB target: {}",
                base["statuses"],
                if growth < PADDED_RSS_MIB { "met" } else { "not met" }
            ),
        ));
        found.checks.push(check(
            "counter-proof: bodies read whole (fault body_read_whole) cost past that bound",
            counter_growth > baseline + OWN_SHARE_MIB,
            format!(
                "RSS {c_before:.1} -> peak {c_peak:.1} MiB (+{counter_growth:.1}); {}",
                counter["statuses"]
            ),
        ));
        Ok(found)
    }
}

/// Runs one `tessera-crowd` scenario; its figures. For each event line it
/// prints (a moment to measure at), `on_event` runs as the line arrives.
fn crowd_with(args: &[&str], on_event: &mut dyn FnMut(&str)) -> anyhow::Result<Value> {
    use std::io::BufRead as _;
    let mut child = Command::new(CROWD_BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {CROWD_BIN} {}", args[0]))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut last = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line: Value = serde_json::from_str(&line?)
            .with_context(|| format!("reading what {CROWD_BIN} {} printed", args[0]))?;
        match line["event"].as_str() {
            Some(event) => on_event(event),
            None => last = Some(line),
        }
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{CROWD_BIN} {} failed: {}",
        args[0],
        String::from_utf8_lossy(&output.stderr)
    );
    last.with_context(|| format!("{CROWD_BIN} {} printed no figures", args[0]))
}

fn crowd(args: &[&str]) -> anyhow::Result<Value> {
    crowd_with(args, &mut |_| {})
}

/// Round trips the service sent PostgreSQL between the events `from` and
/// `to` of one scenario, less those of the side traffic it reports; and the
/// seconds between.
fn round_trips_between(
    proxy: &CountingProxy,
    args: &[&str],
    (from, to): (&str, &str),
) -> anyhow::Result<(Value, f64, f64)> {
    let mut marks: BTreeMap<String, (harness::round_trips::Sent, std::time::Instant)> =
        BTreeMap::new();
    let out = crowd_with(args, &mut |event| {
        marks.insert(event.to_owned(), (proxy.sent(), std::time::Instant::now()));
    })?;
    let (Some(start), Some(end)) = (marks.get(from), marks.get(to)) else {
        anyhow::bail!("{CROWD_BIN} {} did not mark {from} and {to}", args[0]);
    };
    let side = out["side_round_trips"].as_u64().unwrap_or(0);
    let trips = (end.0 - start.0).round_trips as f64 - side as f64;
    Ok((out, trips, (end.1 - start.1).as_secs_f64()))
}
