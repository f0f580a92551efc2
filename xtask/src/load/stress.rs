//! `--stress`: validation latency under stress, each stress against the
//! same run without it. One set of paced validators (each validates every
//! 50-150 ms, like real clients) runs through four phases: quiet; beside a
//! login storm (argon2 saturating its workers); while the retention cleanup
//! purges 1M expired sessions; and with a real PgBouncer (transaction
//! pooling) between the service and PostgreSQL.

use super::service::{self, Service};
use super::{Plan, goose, soak};
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::fmt::Write as _;
use std::path::Path;

/// Validation p99 the stresses must stay under (the storm's target since
/// session 6), and the rows the purge phase seeds.
const P99_LIMIT_MS: f64 = 20.0;
const PURGED_SESSIONS: u64 = 1_000_000;
const VALIDATE: &str = "GET /v1/sessions/current";

struct Phase {
    name: &'static str,
    rps: f64,
    p50: f64,
    p99: f64,
    failures: u64,
    note: String,
}

pub fn run(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (dir, db) = super::stage(plan, server, "stress")?;
    let env = [
        ("TESSERA_POOL_PROFILE", profile.to_owned()),
        // Tried every 2 s: a no-op until the purge phase seeds its rows.
        ("TESSERA_CLEANUP_INTERVAL_SECS", "2".to_owned()),
    ];
    let phases = Phases {
        plan,
        dir: &dir,
        validators: plan.users.div_ceil(2),
    };
    let mut results = {
        let direct = Service::start(&db.url().to_string(), &env, &dir.join("server.log"))?;
        phases.direct(&direct.base_url, &db)?
    };
    {
        let bouncer = crate::pgbouncer::PgBouncer::start(
            &server.url,
            &crate::pgbouncer::Pooling {
                default_pool_size: 20,
                sized: &[],
            },
            &dir.join("pgbouncer"),
        )?;
        let mut env = env.to_vec();
        env.push(("TESSERA_DB_POOLER", "transaction".to_owned()));
        let pooled = Service::start(
            &bouncer.url_for(db.url()).to_string(),
            &env,
            &dir.join("server-pgbouncer.log"),
        )?;
        let mut behind = phases.run(&pooled.base_url, "behind PgBouncer", 1, "pacedvalidator")?;
        behind.note = "transaction pooling, pool_size 20".into();
        results.push(behind);
    }
    let (md, ok) = table(plan, profile, phases.validators, &results)?;
    std::fs::write(dir.join("stress.md"), &md)?;
    println!("\n{md}");
    Ok(ok)
}

/// The phases of one stress run: the same paced validators each time.
struct Phases<'a> {
    plan: &'a Plan,
    dir: &'a Path,
    validators: u32,
}

impl Phases<'_> {
    /// The phases against the service reaching PostgreSQL directly.
    fn direct(&self, host: &str, db: &Psql) -> anyhow::Result<Vec<Phase>> {
        let mut phases = vec![self.run(host, "quiet", 1, "pacedvalidator")?];
        let mut storm = self.run(host, "login storm", 2, "loginstorm,pacedvalidator")?;
        let metrics = service::scrape(host)?;
        storm.note = format!(
            "{:.1} logins/s; {} hashing workers",
            report_of(self.dir, "login storm")?
                .endpoint("POST /v1/sessions")
                .map_or(0.0, |e| e.rps),
            metrics.get("tessera_password_hash_workers")
        );
        phases.push(storm);
        soak::Seed {
            completed_tasks: 0,
            expired_sessions: PURGED_SESSIONS,
        }
        .apply(db)?;
        let before = expired(db)?;
        let mut purge = self.run(host, "retention purge", 1, "pacedvalidator")?;
        let after = expired(db)?;
        purge.note = format!(
            "{} of {before} expired sessions purged during the phase",
            before - after
        );
        phases.push(purge);
        // The first quiet phase also warms the service up (connections,
        // caches, the sign-up burst): this one is the baseline of the ratios.
        phases.push(self.run(host, "quiet, again", 1, "pacedvalidator")?);
        Ok(phases)
    }

    /// One phase: `crowd` times the validators' number of users running `scenarios`.
    fn run(
        &self,
        host: &str,
        name: &'static str,
        crowd: u32,
        scenarios: &str,
    ) -> anyhow::Result<Phase> {
        let phase_dir = self.dir.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&phase_dir)?;
        goose::run(&goose::Run {
            users: self.validators * crowd,
            ..self.plan.goose(host, scenarios, &phase_dir, name)
        })?;
        let report = harness::goose_report::read(&phase_dir.join("report.json"))?;
        let validate = report
            .endpoint(VALIDATE)
            .with_context(|| format!("the {name} phase made no validations"))?;
        Ok(Phase {
            name,
            rps: validate.rps,
            p50: validate.p50_ms,
            p99: validate.p99_ms,
            failures: report.failures,
            note: String::new(),
        })
    }
}

/// The phases side by side against "quiet, again", and whether all met the target.
fn table(
    plan: &Plan,
    profile: &str,
    validators: u32,
    phases: &[Phase],
) -> anyhow::Result<(String, bool)> {
    let quiet = phases[3].p99.max(1.0);
    let mut md = format!(
        "# Validation under stress\n\nProfile `{profile}`, {} cores; {validators} paced validators (every 50-150 ms each) for {} s per phase, after ramp-up; the login storm adds as many users logging in back to back. p99 < {P99_LIMIT_MS} ms in every phase is the target.\n\n| phase | validations/s | p50 ms | p99 ms | p99 vs quiet, again | errors | note |\n|---|---:|---:|---:|---:|---:|---|\n",
        plan.cores, plan.run_time_secs
    );
    let mut ok = true;
    for p in phases {
        ok &= p.p99 < P99_LIMIT_MS && p.failures == 0;
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.1}x | {} | {} |",
            p.name,
            p.rps,
            p.p50,
            p.p99,
            p.p99.max(1.0) / quiet,
            p.failures,
            p.note
        )?;
    }
    writeln!(md, "\nTarget: {}.", if ok { "met" } else { "MISSED" })?;
    Ok((md, ok))
}

fn report_of(dir: &Path, name: &str) -> anyhow::Result<harness::goose_report::Report> {
    harness::goose_report::read(&dir.join(name.replace(' ', "-")).join("report.json"))
}

fn expired(db: &Psql) -> anyhow::Result<i64> {
    db.number("SELECT count(*) FROM sessions WHERE idle_expires_at <= now() OR absolute_expires_at <= now()")
}
