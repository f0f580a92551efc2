//! `cargo xtask load`: the load tier. Builds the release service, runs the
//! goose scenarios against it once per pool profile, checks correctness in
//! the database afterwards, and writes reports under
//! `target/load-reports/<timestamp>/`.

mod ceiling;
mod cpu;
mod extras;
mod fleet;
mod goose;
mod queue;
mod results;
pub mod service;
mod soak;
mod soak_chart;
mod stress;
mod summary_chart;
mod timed;

use crate::psql::Psql;
use crate::summary::{Counts, Row};
use anyhow::Context as _;
use fleet::Fleet;
use harness::checks::{self, Check, Persisted};
use harness::contract::LIMITS;
use harness::goose_report;
use harness::record::Record;
use harness::thresholds::Thresholds;
use pg_provision::Server;
use results::{PoolFigures, ProfileResult};
use service::Samples;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const PROFILES_FILE: &str = "config/pool-profiles.toml";
const THRESHOLDS_FILE: &str = "config/load-thresholds.toml";
/// The mixed workload: session users, queue workers, producers.
const MIXED: &str = "sessionuser,queueworker,producer";
/// Finished tasks tier 3 starts from (a short run's drift check).
const TIER3_SEEDED_TASKS: u64 = 200_000;

#[derive(clap::Args)]
pub struct Args {
    /// Pool profile(s) from config/pool-profiles.toml (repeatable; default: default).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Every profile in config/pool-profiles.toml.
    #[arg(long, conflicts_with = "profiles")]
    all_profiles: bool,
    /// Concurrent simulated users.
    #[arg(long, default_value_t = 100)]
    users: u32,
    /// Users started per second (default 5). Each start registers and logs in (two
    /// argon2 hashes, ~35-45 ms each here), so the default of 5/s keeps the
    /// sign-up burst at ~10 hashes/s, well inside what one hashing worker
    /// does, instead of measuring a sign-up backlog.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to hold all users, after ramp-up (e.g. 60s, 2m).
    #[arg(long, default_value = "60s")]
    run_time: String,
    /// A soak run of this length (e.g. 10m) instead of --run-time: sampled
    /// over time (latency per request, pool, hash queue, RSS, table sizes),
    /// charted, and judged on drift as well (`[drift]` in the thresholds).
    #[arg(long, conflicts_with = "target")]
    soak: Option<String>,
    /// Start from a database holding this many completed tasks.
    #[arg(long, default_value_t = 0, conflicts_with = "target")]
    seed_tasks: u64,
    /// ... and this many expired sessions (100 per seeded user).
    #[arg(long, default_value_t = 0, conflicts_with = "target")]
    seed_sessions: u64,
    /// Run against an already running implementation of the contract; the
    /// database checks are skipped, the client-side ones still run.
    #[arg(long, conflicts_with_all = ["profiles", "all_profiles"])]
    target: Option<String>,
    /// Instead of the mixed load: the service's validate throughput under
    /// wrk against pgbench running the validate statement (3 rounds, back
    /// to back), goose's figure beside it, and CPU per request by party.
    #[arg(long)]
    ceiling: bool,
    /// Instead of the mixed load: queue throughput from claim to completion
    /// (workers x batch sizes swept) against pgbench running the claim and
    /// complete statements, and EXPLAIN of both on 1M tasks.
    #[arg(long)]
    queue: bool,
    /// Instead of the mixed load: validation p99 under stress (a login
    /// storm, a retention purge of 1M sessions, PgBouncer in between), each
    /// against the same validators without it.
    #[arg(long)]
    stress: bool,
    /// Instead of the mixed load: a login storm (login throughput vs argon2
    /// alone, and validation latency while it runs).
    #[arg(long)]
    storm: bool,
    /// Run a build with this deliberate fault (see `cargo xtask prove`) to
    /// show that the post-run checks catch it; the run must then FAIL.
    #[arg(long, conflicts_with = "target")]
    fault: Option<String>,
    /// Have the service try its retention cleanup every this many seconds
    /// (default: its own 600), and check afterwards that no row is left
    /// past its retention (with --seed-sessions: a purge under load).
    #[arg(long, conflicts_with = "target")]
    cleanup_every: Option<u64>,
    /// Run this many auth-api processes on one database behind nginx (from
    /// Debian's packages), and race requests across them before the load.
    #[arg(long, default_value_t = 1, conflicts_with = "target")]
    instances: usize,
    /// Put a real PgBouncer (Debian's package, transaction pooling) between
    /// the service and PostgreSQL and run the service with
    /// `TESSERA_DB_POOLER=transaction`; the post-run checks read the
    /// database directly.
    #[arg(long, conflicts_with = "target")]
    pgbouncer: bool,
}

impl Args {
    /// The profiles asked for, each known.
    fn selected(&self, specs: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
        let selected: Vec<String> = if self.all_profiles {
            specs.keys().cloned().collect()
        } else if self.profiles.is_empty() {
            vec!["default".into()]
        } else {
            self.profiles.clone()
        };
        for name in &selected {
            anyhow::ensure!(
                specs.contains_key(name),
                "no profile `{name}` in {PROFILES_FILE}"
            );
        }
        Ok(selected)
    }

    /// Whether a measurement of its own (--ceiling, --storm, --queue,
    /// --stress) replaces the mixed load.
    fn measures(&self) -> bool {
        self.ceiling || self.storm || self.queue || self.stress
    }

    /// The measurements asked for; whether each met its target.
    fn measure(&self, plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
        let mut ok = true;
        if self.ceiling {
            ok &= ceiling::run(plan, server, profile)?;
        }
        if self.storm {
            ok &= extras::storm(plan, server, profile)?;
        }
        if self.queue {
            ok &= queue::run(plan, server, profile)?;
        }
        if self.stress {
            ok &= stress::run(plan, server, profile)?;
        }
        Ok(ok)
    }
}

/// Server sessions PgBouncer opens per database: its own default, which
/// is fewer than the service's pools hold (10 + 10 + 2 with `default`).
const PGBOUNCER_POOL_SIZE: u32 = 20;

/// Settings shared by every run of one invocation.
pub struct Plan {
    /// `TESSERA_FAULT` for the service (a build with the `faults` feature).
    pub fault: Option<String>,
    pub users: u32,
    pub rate: f64,
    pub run_time_secs: u64,
    pub thresholds: Thresholds,
    pub out_dir: PathBuf,
    pub cores: usize,
    /// auth-api processes per profile (nginx in front when more than one).
    pub instances: usize,
    /// Sampled over time and judged on drift too.
    pub soak: bool,
    pub seed: soak::Seed,
    /// `TESSERA_CLEANUP_INTERVAL_SECS` for the service, and the retention check.
    pub cleanup_every: Option<u64>,
    /// PgBouncer (transaction pooling) between the service and PostgreSQL.
    pub pgbouncer: bool,
}

impl Plan {
    /// A goose run of the plan's users, rate and length: `scenarios`
    /// against `host`, its report written into `dir`.
    pub fn goose<'a>(
        &self,
        host: &'a str,
        scenarios: &'a str,
        dir: &'a Path,
        label: &'a str,
    ) -> goose::Run<'a> {
        goose::Run {
            host,
            users: self.users,
            rate: self.rate,
            run_time_secs: self.run_time_secs,
            scenarios,
            dir,
            label,
        }
    }
}

/// The profiles' names and descriptions, for choosing and reporting. What a
/// profile sets is the service's business (auth-core's `PoolProfiles`): the
/// pool size a report shows is what the running service exports.
fn profiles() -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(PROFILES_FILE)
        .with_context(|| format!("reading {PROFILES_FILE}"))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {PROFILES_FILE}"))?;
    Ok(table
        .into_iter()
        .map(|(name, profile)| {
            let description = profile.get("description").and_then(toml::Value::as_str);
            (name, description.unwrap_or_default().to_owned())
        })
        .collect())
}

/// The size of the sessions pool a service (or the first of a fleet) runs with.
fn pool_size(samples: &Samples, instances: usize) -> Option<u32> {
    let total = samples.get(r#"tessera_db_pool_max_connections{pool="sessions"}"#);
    (total > 0.0).then(|| (total / instances.max(1) as f64).round() as u32)
}

/// "60s", "2m", "1m30s" or a bare number of seconds; more than zero.
fn parse_secs(text: &str) -> anyhow::Result<u64> {
    let secs = match text.parse() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(text)
            .with_context(|| format!("bad duration `{text}` (use e.g. 60s, 2m)"))?
            .as_secs(),
    };
    anyhow::ensure!(secs > 0, "bad duration `{text}`");
    Ok(secs)
}

fn new_plan(
    users: u32,
    rate: Option<f64>,
    run_time_secs: u64,
    fault: Option<String>,
) -> anyhow::Result<Plan> {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let out_dir = PathBuf::from("target/load-reports").join(stamp);
    std::fs::create_dir_all(&out_dir)?;
    Ok(Plan {
        fault,
        users,
        rate: rate.unwrap_or(5.0),
        run_time_secs,
        thresholds: Thresholds::load(Path::new(THRESHOLDS_FILE))?,
        out_dir,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        instances: 1,
        soak: false,
        seed: soak::Seed::default(),
        cleanup_every: None,
        pgbouncer: false,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run_time = parse_secs(args.soak.as_deref().unwrap_or(&args.run_time))?;
    let mut plan = new_plan(args.users, args.rate, run_time, args.fault.clone())?;
    plan.instances = args.instances.max(1);
    plan.cleanup_every = args.cleanup_every;
    plan.pgbouncer = args.pgbouncer;
    plan.soak = args.soak.is_some();
    plan.seed = soak::Seed {
        completed_tasks: args.seed_tasks,
        expired_sessions: args.seed_sessions,
    };
    if let Some(fault) = &args.fault {
        // The service ignores a name it does not know: refuse it here, or
        // the "faulty" run would quietly test the correct build.
        anyhow::ensure!(
            crate::prove::FAULTS.contains(&fault.as_str()),
            "unknown fault `{fault}`; known: {}",
            crate::prove::FAULTS.join(", ")
        );
    }
    let specs = profiles()?;
    let selected = args.selected(&specs)?;
    eprintln!("xtask: reports go to {}", plan.out_dir.display());
    let mut results = Vec::new();
    let mut server = None;
    if let Some(target) = &args.target {
        results.push(run_against_target(&plan, target)?);
    } else {
        let provisioned = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
        eprintln!("xtask: PostgreSQL at {}", provisioned.url.redacted());
        eprintln!("xtask: building auth-api and tessera-load (release)...");
        service::build_release(plan.fault.is_some())?;
        // --ceiling, --storm and --queue are measurements of their own: the
        // mixed load runs only when none of them is asked for.
        if !args.measures() {
            for name in &selected {
                results.push(run_profile(&plan, &provisioned, name, &specs[name])?);
            }
        }
        server = Some(provisioned);
    }
    if !results.is_empty() {
        write_summary(&plan, &results)?;
    }
    let extra_ok = match &server {
        Some(server) => {
            let profile = selected.first().map_or("default", String::as_str);
            args.measure(&plan, server, profile)?
        }
        None => {
            if args.measures() {
                eprintln!(
                    "xtask: --ceiling, --storm, --queue and --stress need the database; skipped with --target"
                );
            }
            true
        }
    };
    drop(server);
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.profile.as_str())
        .collect();
    for r in results.iter().filter(|r| !r.pass) {
        for rule in r.failed_rules() {
            println!("{}: {rule}", r.profile);
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "thresholds failed for: {}",
        failed.join(", ")
    );
    anyhow::ensure!(
        extra_ok,
        "the ceiling, storm, queue or stress run missed its target"
    );
    Ok(())
}

/// test-all's tier 3: a short run of the default profile with the thresholds.
pub fn tier3(server: &Server) -> anyhow::Result<Row> {
    let started = Instant::now();
    let mut plan = new_plan(100, None, 20, None)?;
    // History that a scan would pay for: the reads' p99 limits fail if
    // stats or listings read the finished tasks.
    plan.seed = soak::Seed {
        completed_tasks: TIER3_SEEDED_TASKS,
        expired_sessions: 0,
    };
    service::build_release(false)?;
    let specs = profiles()?;
    let description = specs.get("default").context("no `default` profile")?;
    let result = run_profile(&plan, server, "default", description)?;
    write_summary(&plan, std::slice::from_ref(&result))?;
    let judged = result.verdicts.len() + result.checks.len();
    let failed = result.failed_rules();
    for rule in &failed {
        println!("  ! {rule}");
    }
    Ok(Row {
        name: "tier 3: load (100 users, 200k finished tasks)".into(),
        tests: Some(Counts {
            passed: (judged - failed.len()) as u64,
            failed: failed.len() as u64,
            ignored: 0,
        }),
        ok: result.pass,
        wall: started.elapsed(),
    })
}

/// A measurement's own folder in the report (`<name>/`) and its own new
/// database (`tessera_<name>`).
fn stage(plan: &Plan, server: &Server, name: &str) -> anyhow::Result<(PathBuf, Psql)> {
    let dir = plan.out_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let db = Psql::new(server, server.url.clone()).fresh(&format!("tessera_{name}"))?;
    Ok((dir, db))
}

fn database_name(profile: &str) -> String {
    format!("tessera_load_{}", profile.replace('-', "_"))
}

fn run_profile(
    plan: &Plan,
    server: &Server,
    name: &str,
    description: &str,
) -> anyhow::Result<ProfileResult> {
    let dir = plan.out_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let admin = Psql::new(server, server.url.clone());
    let database = database_name(name);
    let db = admin.fresh(&database)?;
    let mut env = service_env(plan, name);
    let cross_instance = if plan.instances > 1 {
        fleet::cross_instance_checks(&admin, &database, &env, &dir, plan.instances)?
    } else {
        Vec::new()
    };
    // Dropped (stopped) after the fleet, below.
    let bouncer = plan
        .pgbouncer
        .then(|| start_pgbouncer(server, &dir))
        .transpose()?;
    let service_url = match &bouncer {
        Some(bouncer) => {
            env.push(("TESSERA_DB_POOLER", "transaction".to_owned()));
            bouncer.url_for(db.url())
        }
        None => db.url().clone(),
    };
    let mut fleet = Fleet::start(&service_url.to_string(), &env, &dir, plan.instances)?;
    if !plan.seed.is_empty() {
        plan.seed.apply(&db)?;
    }
    let before = fleet.scrape()?;
    let cpu_before = fleet.cpu_seconds();
    let (peaks, points) = drive(plan, &fleet, &db, &dir, name)?;
    let final_sizes = soak::table_sizes(&db).unwrap_or_default();
    let after = fleet.scrape()?;
    let cpu = cpu_before.zip(fleet.cpu_seconds()).map(|(b, a)| a - b);
    let peak_rss = fleet.peak_rss_mib();
    fleet.stop()?;
    drop(bouncer);

    let report = goose_report::read(&dir.join("report.json"))?;
    let mut all_checks = cross_instance;
    all_checks.extend(database_checks(plan, &dir, &db, &after)?);
    let pool = pool_delta(&before, &after);
    let mut result = ProfileResult::judged(&plan.thresholds, report, all_checks, Some(pool), peaks);
    result.profile = name.to_owned();
    result.description = description.to_owned();
    result.max_size = pool_size(&before, plan.instances);
    result.users = plan.users;
    result.server_cpu_secs = cpu;
    result.server_peak_rss_mib = peak_rss;
    if plan.soak {
        let (soak, drift) = judge_soak(plan, &dir, points, final_sizes.clone())?;
        result.verdicts.extend(drift);
        result.pass &= result.verdicts.iter().all(|v| v.ok);
        result.soak = Some(soak);
    }
    result.table_sizes = final_sizes;
    println!(
        "{:<22} {:>7.0} req/s  p99 {:>5.0} ms  errors {}  waited {:.0}  {}",
        name,
        result.report.rps,
        result.report.p99_ms,
        result.report.failures,
        pool.waited,
        if result.pass { "pass" } else { "FAIL" }
    );
    Ok(result)
}

/// The service's settings for one profile's run.
fn service_env(plan: &Plan, profile: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![("TESSERA_POOL_PROFILE", profile.to_owned())];
    if let Some(fault) = &plan.fault {
        env.push(("TESSERA_FAULT", fault.clone()));
    }
    if let Some(every) = plan.cleanup_every {
        env.push(("TESSERA_CLEANUP_INTERVAL_SECS", every.to_string()));
    }
    env
}

fn start_pgbouncer(server: &Server, dir: &Path) -> anyhow::Result<crate::pgbouncer::PgBouncer> {
    crate::pgbouncer::PgBouncer::start(
        &server.url,
        &crate::pgbouncer::Pooling {
            default_pool_size: PGBOUNCER_POOL_SIZE,
            sized: &[],
        },
        &dir.join("pgbouncer"),
    )
}

/// The mixed goose load against the fleet, sampled over time for a soak.
fn drive(
    plan: &Plan,
    fleet: &Fleet,
    db: &Psql,
    dir: &Path,
    label: &str,
) -> anyhow::Result<(goose::Peaks, Vec<soak::Point>)> {
    let goose_run = plan.goose(&fleet.base_url, MIXED, dir, label);
    let mut sampler = soak::Sampler::new(&fleet.services, db);
    let peaks = if plan.soak {
        goose::run_sampled(&goose_run, Some(soak::WINDOW_SECS), &mut |t, s| {
            sampler.observe(t, s)
        })?
    } else {
        goose::run(&goose_run)?
    };
    Ok((peaks, std::mem::take(&mut sampler.points)))
}

/// What the clients were told, judged against a fresh read of the database.
fn database_checks(
    plan: &Plan,
    dir: &Path,
    db: &Psql,
    after: &Samples,
) -> anyhow::Result<Vec<Check>> {
    let record = Record::read(&dir.join("record.json"))?;
    let mut all_checks = checks::from_record(&record);
    let persisted = Persisted::read(&record, db, &LIMITS)?;
    all_checks.push(persisted.claims_check(&record));
    all_checks.extend(persisted.checks(&record, &LIMITS));
    if plan.cleanup_every.is_some() {
        let purged = after.get(r#"tessera_cleanup_purged_rows_total{table="sessions"}"#)
            + after.get(r#"tessera_cleanup_purged_rows_total{table="tasks"}"#);
        all_checks.push(checks::retention_check(db, purged)?);
    }
    Ok(all_checks)
}

fn judge_soak(
    plan: &Plan,
    dir: &Path,
    points: Vec<soak::Point>,
    final_sizes: Vec<(String, f64, f64)>,
) -> anyhow::Result<(soak::SoakResult, Vec<harness::thresholds::Verdict>)> {
    let timeline = soak::read_timeline(&dir.join("timeline.json"))?;
    let ramp_secs = (f64::from(plan.users) / plan.rate).ceil() as u64;
    let (soak, drift) = soak::SoakResult::judge(
        &plan.thresholds.drift,
        &timeline,
        points,
        ramp_secs,
        plan.run_time_secs,
        final_sizes,
    );
    soak_chart::draw(&soak, &timeline, &dir.join("soak.svg"))?;
    Ok((soak, drift))
}

fn run_against_target(plan: &Plan, target: &str) -> anyhow::Result<ProfileResult> {
    let dir = plan.out_dir.join("target");
    std::fs::create_dir_all(&dir)?;
    service::build_release(false)?;
    let host = target.trim_end_matches('/');
    let before = service::scrape(host).ok();
    let peaks = goose::run(&plan.goose(host, MIXED, &dir, "target"))?;
    let after = service::scrape(host).ok();
    let report = goose_report::read(&dir.join("report.json"))?;
    let record = Record::read(&dir.join("record.json"))?;
    let all_checks = checks::from_record(&record);
    let pool = before.zip(after).map(|(b, a)| pool_delta(&b, &a));
    let mut result = ProfileResult::judged(&plan.thresholds, report, all_checks, pool, peaks);
    result.profile = "target".into();
    result.description = format!("{host} (database checks skipped)");
    result.users = plan.users;
    Ok(result)
}

fn pool_delta(before: &Samples, after: &Samples) -> PoolFigures {
    let d = |key: &str| after.get(key) - before.get(key);
    PoolFigures {
        checkouts: d("tessera_db_pool_checkouts_total"),
        waited: d("tessera_db_pool_checkouts_total{outcome=\"waited\"}"),
        timed_out: d("tessera_db_pool_checkouts_total{outcome=\"timed_out\"}"),
        wait_secs: d("tessera_db_pool_wait_seconds_total"),
        connections_created: d("tessera_db_pool_connections_created_total"),
        hashes: d("tessera_password_hashes_total"),
        hash_secs: d("tessera_password_hash_seconds_total"),
    }
}

fn write_summary(plan: &Plan, results: &[ProfileResult]) -> anyhow::Result<()> {
    let header = format!(
        "{} users (started at {}/s), {} s measured after ramp-up, mixed workload ({MIXED}); {}; machine: {} cores, PostgreSQL on the same host; thresholds: {THRESHOLDS_FILE}.",
        plan.users,
        plan.rate,
        plan.run_time_secs,
        match plan.instances {
            1 => "one auth-api process".to_owned(),
            n => format!("{n} auth-api processes on one database behind nginx"),
        } + &if plan.pgbouncer {
            format!(
                ", reaching PostgreSQL through PgBouncer (transaction pooling, {PGBOUNCER_POOL_SIZE} server sessions)"
            )
        } else {
            String::new()
        },
        plan.cores
    );
    let mut md = results::markdown(results, &header, plan.cores);
    for r in results {
        if let Some(soak) = &r.soak {
            md.push_str(&format!(
                "\n## Drift over the soak: {}\n\n![over time]({}/soak.svg)\n\n{}",
                r.profile,
                r.profile,
                soak.table()
            ));
        } else if !r.table_sizes.is_empty() {
            md.push_str(&format!(
                "\ntables at the end of {} (heap / indexes, MiB): {}\n",
                r.profile,
                r.table_sizes
                    .iter()
                    .map(|(t, h, i)| format!("{t} {h:.1} / {i:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    std::fs::write(plan.out_dir.join("summary.md"), &md)?;
    let recommendation = results::recommend(results);
    let json = serde_json::json!({
        "users": plan.users,
        "run_time_secs": plan.run_time_secs,
        "cores": plan.cores,
        "profiles": results,
        "recommendation": recommendation.as_ref().map(|(p, r)| serde_json::json!({"profile": p, "reason": r})),
    });
    std::fs::write(
        plan.out_dir.join("summary.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    summary_chart::draw(results, &plan.out_dir.join("summary.svg"))?;
    println!();
    print!("{}", results::table(results, plan.cores));
    for r in results {
        if let Some(soak) = &r.soak {
            println!("\ndrift over the soak ({}):\n{}", r.profile, soak.table());
        }
    }
    match recommendation {
        Some((profile, reason)) => println!("\nrecommended profile: {profile} ({reason})"),
        None => println!("\nno profile met every threshold"),
    }
    println!("report: {}", plan.out_dir.join("summary.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn durations() -> anyhow::Result<()> {
        assert_eq!(parse_secs("60s")?, 60);
        assert_eq!(parse_secs("2m")?, 120);
        assert_eq!(parse_secs("1m30s")?, 90);
        assert_eq!(parse_secs("45")?, 45);
        assert!(parse_secs("5 junk").is_err());
        assert!(parse_secs("0s").is_err());
        Ok(())
    }
}
