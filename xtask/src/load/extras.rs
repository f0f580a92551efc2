//! `--ceiling` (the database's own validate throughput, by pgbench) and
//! `--storm` (login throughput against argon2 alone, and validation latency
//! while logins run).

use super::service::{self, ARGON2_RATE_BIN, Service, VALIDATE_SQL_BIN};
use super::{Plan, goose};
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::process::Command;

/// The target of the issue: the service reaches this share of pgbench.
const CEILING_TARGET: f64 = 0.4;
const STORM_LOGIN_TARGET: f64 = 0.9;
const STORM_VALIDATE_P99_MS: f64 = 20.0;
const PGBENCH_TOKENS: u32 = 1000;

fn start(
    plan: &Plan,
    server: &Server,
    profile: &str,
    name: &str,
) -> anyhow::Result<(Psql, Service, std::path::PathBuf)> {
    let dir = plan.out_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let admin = Psql::new(server, server.url.clone());
    let database = format!("tessera_{name}");
    admin.recreate_database(&database)?;
    let db = admin.on(&database);
    let service = Service::start(
        &db.url().to_string(),
        &[("TESSERA_POOL_PROFILE", profile.to_owned())],
        &dir.join("server.log"),
    )?;
    Ok((db, service, dir))
}

pub fn ceiling(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (db, mut service, dir) = start(plan, server, profile, "ceiling")?;
    let server_cpu_before = service.cpu_seconds();
    let peaks = goose::run(&goose::Run {
        host: &service.base_url,
        users: plan.users,
        rate: plan.rate,
        run_time_secs: plan.run_time_secs,
        scenarios: "validator",
        dir: &dir,
        label: "ceiling: service",
    })?;
    let server_cpu = server_cpu_before
        .zip(service.cpu_seconds())
        .map_or(0.0, |(b, a)| a - b);
    // pgbench gets as many clients as the service had connections.
    let clients = super::pool_size(&service::scrape(&service.base_url)?, 1)
        .context("the service exported no pool size")?;
    service.stop()?;
    let report = harness::goose_report::read(&dir.join("report.json"))?;
    let validate = report
        .endpoint("GET /v1/sessions/current")
        .context("the validator run made no validations")?;
    anyhow::ensure!(
        report.failures == 0,
        "the validator run had {} errors",
        report.failures
    );

    // Sessions whose token hash pgbench can compute: sha256(int4send(n)).
    db.query(&format!(
        "INSERT INTO users (id, email, password_hash) VALUES (gen_random_uuid(), 'ceiling@example.test', 'x');
         INSERT INTO sessions (id, user_id, token_hash, idle_expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), (SELECT id FROM users WHERE email = 'ceiling@example.test'),
                sha256(int4send(g)), now() + interval '1 hour', now() + interval '1 hour'
         FROM generate_series(1, {PGBENCH_TOKENS}) AS g;
         ANALYZE sessions;"
    ))?;
    let script = Command::new(VALIDATE_SQL_BIN)
        .output()
        .context("running tessera-validate-sql")?;
    anyhow::ensure!(script.status.success(), "tessera-validate-sql failed");
    let script_path = dir.join("validate.pgbench.sql");
    std::fs::write(&script_path, &script.stdout)?;
    let pgbench = match &server.cluster {
        Some(cluster) => cluster.bin_dir().join("pgbench"),
        None => pg_provision::find_bin_dir()?.join("pgbench"),
    };
    eprintln!(
        "xtask: pgbench, {clients} clients, {} s...",
        plan.run_time_secs
    );
    let out = Command::new(pgbench)
        .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
        .args([
            "-j",
            &plan.cores.to_string(),
            "-T",
            &plan.run_time_secs.to_string(),
        ])
        .args(["-D", &format!("tokens={PGBENCH_TOKENS}"), "-f"])
        .arg(&script_path)
        .arg(db.url().to_string())
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join("pgbench.log"), &text)?;
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .context("no tps line in pgbench's output")?;
    let ratio = validate.rps / tps;
    let ok = ratio >= CEILING_TARGET;
    let summary = format!(
        "# Ceiling\n\nProfile `{profile}`; {} validator users for {} s against the service; pgbench with {clients} clients (the pool's size) running the service's own validate statement for the same time, on the same machine.\n\n| | validations/s |\n|---|---:|\n| service (goose, HTTP) | {:.0} |\n| pgbench (the statement alone) | {tps:.0} |\n| ratio | {ratio:.2} (target >= {CEILING_TARGET}) |\n\nService validate latency p50/p95/p99: {:.0} / {:.0} / {:.0} ms. CPU used during the service run (ramp-up included): auth-api {server_cpu:.1} s, the goose client {:.1} s, of {:.0} core-seconds.\n",
        plan.users,
        plan.run_time_secs,
        validate.rps,
        validate.p50_ms,
        validate.p95_ms,
        validate.p99_ms,
        peaks.goose_cpu_secs,
        (plan.run_time_secs as f64 + f64::from(plan.users) / plan.rate) * plan.cores as f64
    );
    std::fs::write(dir.join("ceiling.md"), &summary)?;
    println!(
        "\nceiling: service {:.0} validations/s, pgbench {tps:.0}/s: ratio {ratio:.2} (target >= {CEILING_TARGET}) {}; CPU: auth-api {server_cpu:.1} s, goose {:.1} s",
        validate.rps,
        if ok { "ok" } else { "MISSED" },
        peaks.goose_cpu_secs
    );
    Ok(ok)
}

pub fn storm(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (_db, mut service, dir) = start(plan, server, profile, "storm")?;
    let peaks = goose::run(&goose::Run {
        host: &service.base_url,
        users: plan.users,
        rate: plan.rate,
        run_time_secs: plan.run_time_secs,
        scenarios: "loginstorm,pacedvalidator",
        dir: &dir,
        label: "login storm",
    })?;
    let metrics = service::scrape(&service.base_url)?;
    service.stop()?;
    let hash_mean_ms = 1000.0 * metrics.get("tessera_password_hash_seconds_total")
        / metrics.get("tessera_password_hashes_total").max(1.0);
    let workers = metrics.get("tessera_password_hash_workers").max(1.0) as u32;
    let report = harness::goose_report::read(&dir.join("report.json"))?;
    let login = report
        .endpoint("POST /v1/sessions")
        .context("the storm made no logins")?;
    let validate = report
        .endpoint("GET /v1/sessions/current")
        .context("the storm made no validations")?;
    eprintln!("xtask: argon2 alone, {workers} workers, 10 s...");
    let alone = Command::new(ARGON2_RATE_BIN)
        .args([workers.to_string(), "10".into()])
        .output()
        .context("running tessera-argon2-rate")?;
    anyhow::ensure!(alone.status.success(), "tessera-argon2-rate failed");
    let alone: f64 = String::from_utf8_lossy(&alone.stdout).trim().parse()?;
    let ratio = login.rps / alone;
    let ok = ratio >= STORM_LOGIN_TARGET
        && validate.p99_ms < STORM_VALIDATE_P99_MS
        && report.failures == 0;
    let summary = format!(
        "# Login storm\n\nProfile `{profile}`; {} users, half logging in back to back, half validating every 50-150 ms, for {} s; {workers} hashing workers.\n\n| | figure | target |\n|---|---:|---|\n| logins/s under load | {:.1} | |\n| argon2 verifications/s alone ({workers} workers, same parameters) | {alone:.1} | |\n| ratio | {ratio:.2} | >= {STORM_LOGIN_TARGET} |\n| validation p50 / p95 / p99 ms | {:.0} / {:.0} / {:.0} | p99 < {STORM_VALIDATE_P99_MS} |\n| mean time of one hash in the service (/metrics, whole run) | {hash_mean_ms:.1} ms | |\n| peak hash queue depth (/metrics) | {} | visible |\n| errors | {} | 0 |\n",
        plan.users,
        plan.run_time_secs,
        login.rps,
        validate.p50_ms,
        validate.p95_ms,
        validate.p99_ms,
        peaks.hash_queue,
        report.failures
    );
    std::fs::write(dir.join("storm.md"), &summary)?;
    println!(
        "\nlogin storm: {:.1} logins/s vs argon2 alone {alone:.1}/s: ratio {ratio:.2} (target >= {STORM_LOGIN_TARGET}); service hash mean {hash_mean_ms:.1} ms; validation p99 {:.0} ms (target < {STORM_VALIDATE_P99_MS}); peak hash queue {}; errors {} {}",
        login.rps,
        validate.p99_ms,
        peaks.hash_queue,
        report.failures,
        if ok { "ok" } else { "MISSED" }
    );
    Ok(ok)
}
