//! `--ceiling`: the service's validate throughput against the database's
//! own, each measured with a client as cheap as the other's. wrk (C,
//! keep-alive, the tokens of 1,000 sessions drawn at random, as pgbench
//! draws its own) drives `GET /v1/sessions/current`; pgbench runs the very
//! statement a validation sends. Three rounds, each the service then
//! pgbench back to back; the median ratio is judged. goose's figure (the
//! project's own load client, far heavier) is reported beside it, and every
//! run's CPU is split between the service, PostgreSQL and the client.

use super::cpu::{Meter, Reading};
use super::service::{self, Service, VALIDATE_SQL_BIN};
use super::timed::Timed;
use super::{Plan, goose};
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The target: validations through HTTP at this share of pgbench.
const CEILING_TARGET: f64 = 0.7;
const ROUNDS: usize = 3;
/// wrk's connections: enough to keep every pooled connection busy.
const WRK_CONNECTIONS: u32 = 64;
/// Sessions pgbench picks from (their token hashes it can compute).
const PGBENCH_TOKENS: u32 = 1000;

/// One measured run of a client.
#[derive(Debug, Clone, Copy)]
struct Measured {
    per_sec: f64,
    requests: f64,
    cpu: Reading,
    p99_ms: Option<f64>,
}

impl Measured {
    /// CPU microseconds per request, by party.
    fn us_per_request(&self) -> (f64, f64, f64) {
        let per = |secs: f64| secs * 1e6 / self.requests.max(1.0);
        (
            per(self.cpu.service),
            per(self.cpu.postgres),
            per(self.cpu.clients),
        )
    }
}

pub fn run(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (dir, db) = super::stage(plan, server, "ceiling")?;
    let mut service = Service::start(
        &db.url().to_string(),
        &[("TESSERA_POOL_PROFILE", profile.to_owned())],
        &dir.join("server.log"),
    )?;
    service::sign_up(&service.base_url, "ceiling@example.test")?;
    let clients = super::pool_size(&service::scrape(&service.base_url)?, 1)
        .context("the service exported no pool size")?;
    seed_pgbench_sessions(&db)?;
    let tokens = seed_wrk_sessions(&db)?;
    let wrk_script = dir.join("validate.lua");
    std::fs::write(&wrk_script, validate_script(&tokens))?;
    let script = pgbench_script(&dir)?;
    let pgbench = service::pgbench_bin(server)?;
    let meter = Meter::new(&db, Some(service.pid()))?;
    let pgbench_meter = Meter::new(&db, None)?;
    let secs = plan.run_time_secs;
    let http_timed = Timed {
        secs,
        threads: plan.cores,
        meter: &meter,
        dir: &dir,
    };
    let sql_timed = Timed {
        meter: &pgbench_meter,
        ..http_timed
    };
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("xtask: ceiling round {round}/{ROUNDS}: wrk {secs} s, then pgbench {secs} s...");
        let http = through_service(&http_timed, &service.base_url, &wrk_script, round)?;
        let sql = through_pgbench(&sql_timed, &pgbench, &db, &script, clients, round)?;
        rounds.push((http, sql));
    }
    let goose = through_goose(plan, &service, &meter, &dir)?;
    service.stop()?;
    let (md, ok) = report(plan, profile, clients, &rounds, &goose)?;
    std::fs::write(dir.join("ceiling.md"), &md)?;
    println!("\n{md}");
    Ok(ok)
}

/// goose's validations: its figure and CPU, beside wrk's.
struct GooseRun {
    report: harness::goose_report::Report,
    cpu: Reading,
    peaks: goose::Peaks,
}

fn through_goose(
    plan: &Plan,
    service: &Service,
    meter: &Meter,
    dir: &Path,
) -> anyhow::Result<GooseRun> {
    eprintln!(
        "xtask: the same validations with goose ({} users, {} s)...",
        plan.users, plan.run_time_secs
    );
    let goose_dir = dir.join("goose");
    std::fs::create_dir_all(&goose_dir)?;
    let before = meter.read();
    let peaks =
        goose::run(&plan.goose(&service.base_url, "validator", &goose_dir, "ceiling: goose"))?;
    let cpu = meter.read() - before;
    let report = harness::goose_report::read(&goose_dir.join("report.json"))?;
    anyhow::ensure!(
        report.failures == 0,
        "the goose run had {} errors",
        report.failures
    );
    Ok(GooseRun { report, cpu, peaks })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The rounds side by side, goose beside them, and whether the median met the target.
fn report(
    plan: &Plan,
    profile: &str,
    clients: u32,
    rounds: &[(Measured, Measured)],
    goose: &GooseRun,
) -> anyhow::Result<(String, bool)> {
    let secs = plan.run_time_secs;
    let median_ratio = median(rounds.iter().map(|(h, s)| h.per_sec / s.per_sec).collect());
    let median_pgbench = median(rounds.iter().map(|(_, s)| s.per_sec).collect());
    let ok = median_ratio >= CEILING_TARGET;
    let mut md = format!(
        "# Ceiling\n\nProfile `{profile}`, {} cores. Each round: wrk ({WRK_CONNECTIONS} connections, {} threads, each request a token of 1,000 sessions drawn at random; pgbench draws from 1,000 others) on `GET /v1/sessions/current` for {secs} s, then pgbench ({clients} clients = the pool's size, {} threads, `-M prepared`) running the statement a validation sends for {secs} s.\n\n\
         | round | service validations/s (wrk) | p99 ms | pgbench statements/s | ratio | CPU us/request: service / PostgreSQL / wrk | CPU us/statement: PostgreSQL / pgbench |\n|---|---:|---:|---:|---:|---|---|\n",
        plan.cores, plan.cores, plan.cores
    );
    for (i, (http, sql)) in rounds.iter().enumerate() {
        let (s, p, c) = http.us_per_request();
        let (_, sp, sc) = sql.us_per_request();
        writeln!(
            md,
            "| {} | {:.0} | {} | {:.0} | {:.2} | {s:.0} / {p:.0} / {c:.0} | {sp:.0} / {sc:.0} |",
            i + 1,
            http.per_sec,
            http.p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
            sql.per_sec,
            http.per_sec / sql.per_sec
        )?;
    }
    let validate = goose
        .report
        .endpoint("GET /v1/sessions/current")
        .context("the goose run made no validations")?;
    let goose_per = |secs: f64| secs * 1e6 / (validate.rps * plan.run_time_secs as f64).max(1.0);
    writeln!(
        md,
        "\n**Median ratio {median_ratio:.2}** (target >= {CEILING_TARGET}: {}).\n\n\
         goose, {} validator users for {secs} s: {:.0} validations/s (p99 {:.0} ms), {:.2} of the median pgbench figure; CPU us/request: service {:.0}, PostgreSQL {:.0}, goose {:.0} (goose's own reading: {:.1} s).",
        if ok { "met" } else { "MISSED" },
        plan.users,
        validate.rps,
        validate.p99_ms,
        validate.rps / median_pgbench,
        goose_per(goose.cpu.service),
        goose_per(goose.cpu.postgres),
        goose_per(goose.peaks.goose_cpu_secs),
        goose.peaks.goose_cpu_secs,
    )?;
    Ok((md, ok))
}

/// Sessions whose token hash pgbench can compute: sha256(int4send(n)).
fn seed_pgbench_sessions(db: &Psql) -> anyhow::Result<()> {
    db.query(&format!(
        "INSERT INTO sessions (id, user_id, token_hash, idle_expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), (SELECT id FROM users WHERE email = 'ceiling@example.test'),
                sha256(int4send(g)), now() + interval '1 hour', now() + interval '1 hour'
         FROM generate_series(1, {PGBENCH_TOKENS}) AS g;
         ANALYZE sessions;"
    ))
    .map(|_| ())
}

/// As many sessions again for wrk, whose tokens it must send: token n is
/// the base64url text of sha256(int4send(n)), its stored hash the SHA-256 of
/// those bytes, as the service computes it. Returns the tokens.
fn seed_wrk_sessions(db: &Psql) -> anyhow::Result<Vec<String>> {
    let (first, last) = (PGBENCH_TOKENS + 1, 2 * PGBENCH_TOKENS);
    db.query(&format!(
        "INSERT INTO sessions (id, user_id, token_hash, idle_expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), (SELECT id FROM users WHERE email = 'ceiling@example.test'),
                sha256(sha256(int4send(g))), now() + interval '1 hour', now() + interval '1 hour'
         FROM generate_series({first}, {last}) AS g;
         ANALYZE sessions;"
    ))?;
    let text = db.query(&format!(
        "SELECT rtrim(translate(encode(sha256(int4send(g)), 'base64'), '+/', '-_'), '=')
         FROM generate_series({first}, {last}) AS g"
    ))?;
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    anyhow::ensure!(
        tokens.len() == PGBENCH_TOKENS as usize && tokens.iter().all(|t| t.len() == 43),
        "could not derive the wrk sessions' tokens"
    );
    Ok(tokens)
}

/// wrk's script: every request validates one of `tokens`, drawn at random,
/// as pgbench draws its sessions.
fn validate_script(tokens: &[String]) -> String {
    let list: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "local tokens = {{ {} }}\n\
         request = function()\n\
         \x20 local t = tokens[math.random(#tokens)]\n\
         \x20 return wrk.format(\"GET\", nil, {{ [\"Authorization\"] = \"Bearer \" .. t }})\n\
         end\n",
        list.join(", ")
    )
}

fn pgbench_script(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let script = Command::new(VALIDATE_SQL_BIN)
        .output()
        .context("running tessera-validate-sql")?;
    anyhow::ensure!(script.status.success(), "tessera-validate-sql failed");
    let path = dir.join("validate.pgbench.sql");
    std::fs::write(&path, &script.stdout)?;
    Ok(path)
}

fn through_service(
    timed: &Timed<'_>,
    base_url: &str,
    script: &Path,
    round: usize,
) -> anyhow::Result<Measured> {
    let name = format!("wrk-{round}");
    let ran = timed.wrk(
        WRK_CONNECTIONS,
        script,
        &format!("{base_url}/v1/sessions/current"),
        &name,
    )?;
    let text = &ran.text;
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors (see {name}.txt):\n{text}"
    );
    let per_sec = field(text, "Requests/sec:").context("no Requests/sec in wrk's output")?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no request count in wrk's output")?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()));
    Ok(Measured {
        per_sec,
        requests,
        cpu: ran.cpu,
        p99_ms,
    })
}

fn through_pgbench(
    timed: &Timed<'_>,
    pgbench: &Path,
    db: &Psql,
    script: &Path,
    clients: u32,
    round: usize,
) -> anyhow::Result<Measured> {
    let ran = timed.pgbench(
        pgbench,
        clients,
        &[format!("tokens={PGBENCH_TOKENS}")],
        script,
        &db.url().to_string(),
        &format!("pgbench-{round}"),
    )?;
    let per_sec = ran
        .text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .context("no tps line in pgbench's output")?;
    let requests = field(&ran.text, "number of transactions actually processed:")
        .context("no transaction count in pgbench's output")?;
    Ok(Measured {
        per_sec,
        requests,
        cpu: ran.cpu,
        p99_ms: None,
    })
}

/// The number after `label` on the first line that has it.
fn field(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split_once(label))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
}

/// wrk's "1.23ms", "456.00us", "1.05s" in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

#[cfg(test)]
mod tests {
    use super::{duration_ms, field};

    #[test]
    fn reads_wrk_and_pgbench_figures() {
        let wrk = "  64 threads\n  123456 requests in 10.00s, 20.00MB read\nRequests/sec:  12345.67\n     99%    3.21ms\n";
        assert_eq!(field(wrk, "Requests/sec:"), Some(12345.67));
        assert_eq!(duration_ms("3.21ms"), Some(3.21));
        assert_eq!(duration_ms("450.00us"), Some(0.45));
        assert_eq!(duration_ms("1.50s"), Some(1500.0));
        assert_eq!(duration_ms("12"), None);
        let pgbench = "number of transactions actually processed: 98765/98765\n";
        assert_eq!(
            field(pgbench, "number of transactions actually processed:"),
            Some(98765.0)
        );
    }
}
