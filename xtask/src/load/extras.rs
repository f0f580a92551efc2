//! `--storm`: login throughput against argon2 alone, and validation latency
//! while logins run.

use super::service::{self, ARGON2_RATE_BIN, Service};
use super::{Plan, goose};
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::process::Command;

const STORM_LOGIN_TARGET: f64 = 0.9;
const STORM_VALIDATE_P99_MS: f64 = 20.0;

fn start(
    plan: &Plan,
    server: &Server,
    profile: &str,
    name: &str,
) -> anyhow::Result<(Psql, Service, std::path::PathBuf)> {
    let (dir, db) = super::stage(plan, server, name)?;
    let service = Service::start(
        &db.url().to_string(),
        &[("TESSERA_POOL_PROFILE", profile.to_owned())],
        &dir.join("server.log"),
    )?;
    Ok((db, service, dir))
}

pub fn storm(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (_db, mut service, dir) = start(plan, server, profile, "storm")?;
    let peaks = goose::run(&plan.goose(
        &service.base_url,
        "loginstorm,pacedvalidator",
        &dir,
        "login storm",
    ))?;
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
