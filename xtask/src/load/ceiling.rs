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
    let dir = plan.out_dir.join("ceiling");
    std::fs::create_dir_all(&dir)?;
    let admin = Psql::new(server, server.url.clone());
    admin.recreate_database("tessera_ceiling")?;
    let db = admin.on("tessera_ceiling");
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
    let wrk = wrk_binary()?;
    let meter = Meter::new(&db, Some(service.pid()))?;
    let pgbench_meter = Meter::new(&db, None)?;
    let secs = plan.run_time_secs;

    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("xtask: ceiling round {round}/{ROUNDS}: wrk {secs} s, then pgbench {secs} s...");
        let http = run_wrk(
            &wrk,
            &service.base_url,
            &wrk_script,
            secs,
            plan.cores,
            &meter,
            &dir,
            round,
        )?;
        let sql = run_pgbench(
            server,
            &db,
            &script,
            clients,
            plan.cores,
            secs,
            &pgbench_meter,
            &dir,
            round,
        )?;
        rounds.push((http, sql));
    }
    eprintln!(
        "xtask: the same validations with goose ({} users, {secs} s)...",
        plan.users
    );
    let goose_dir = dir.join("goose");
    std::fs::create_dir_all(&goose_dir)?;
    let before = meter.read();
    let peaks = goose::run(&goose::Run {
        host: &service.base_url,
        users: plan.users,
        rate: plan.rate,
        run_time_secs: secs,
        scenarios: "validator",
        dir: &goose_dir,
        label: "ceiling: goose",
    })?;
    let goose_cpu = meter.read() - before;
    service.stop()?;
    let report = harness::goose_report::read(&goose_dir.join("report.json"))?;
    let validate = report
        .endpoint("GET /v1/sessions/current")
        .context("the goose run made no validations")?;
    anyhow::ensure!(
        report.failures == 0,
        "the goose run had {} errors",
        report.failures
    );

    let mut ratios: Vec<f64> = rounds.iter().map(|(h, s)| h.per_sec / s.per_sec).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let mut pgbench_rates: Vec<f64> = rounds.iter().map(|(_, s)| s.per_sec).collect();
    pgbench_rates.sort_by(f64::total_cmp);
    let median_pgbench = pgbench_rates[pgbench_rates.len() / 2];
    let ok = median >= CEILING_TARGET;

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
    let goose_per = |secs: f64| secs * 1e6 / (validate.rps * plan.run_time_secs as f64).max(1.0);
    writeln!(
        md,
        "\n**Median ratio {median:.2}** (target >= {CEILING_TARGET}: {}).\n\n\
         goose, {} validator users for {secs} s: {:.0} validations/s (p99 {:.0} ms), {:.2} of the median pgbench figure; CPU us/request: service {:.0}, PostgreSQL {:.0}, goose {:.0} (goose's own reading: {:.1} s).",
        if ok { "met" } else { "MISSED" },
        plan.users,
        validate.rps,
        validate.p99_ms,
        validate.rps / median_pgbench,
        goose_per(goose_cpu.service),
        goose_per(goose_cpu.postgres),
        goose_per(peaks.goose_cpu_secs),
        peaks.goose_cpu_secs,
    )?;
    std::fs::write(dir.join("ceiling.md"), &md)?;
    println!("\n{md}");
    Ok(ok)
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

/// wrk from PATH, else Debian's package unpacked under target/tools.
pub fn wrk_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(found) = which("wrk") {
        return Ok(found);
    }
    crate::tools::debian(
        "wrk",
        &["wrk", "libluajit2-5.1-2", "libluajit2-5.1-common"],
        "usr/bin/wrk",
    )
}

/// Where the unpacked wrk finds LuaJIT.
pub fn wrk_libs() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::path::absolute(crate::tools::tool_dir("wrk"))?.join("usr/lib/x86_64-linux-gnu"))
}

fn which(name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .context("not on PATH")
}

#[allow(clippy::too_many_arguments)]
fn run_wrk(
    wrk: &Path,
    base_url: &str,
    script: &Path,
    secs: u64,
    threads: usize,
    meter: &Meter,
    dir: &Path,
    round: usize,
) -> anyhow::Result<Measured> {
    let libs = wrk_libs()?;
    let before = meter.read();
    let out = Command::new(wrk)
        .env("LD_LIBRARY_PATH", libs)
        .args(["--latency", "-t", &threads.to_string()])
        .args([
            "-c",
            &WRK_CONNECTIONS.to_string(),
            "-d",
            &format!("{secs}s"),
        ])
        .arg("-s")
        .arg(script)
        .arg(format!("{base_url}/v1/sessions/current"))
        .output()
        .context("running wrk")?;
    let cpu = meter.read() - before;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join(format!("wrk-{round}.txt")), &text)?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors (see wrk-{round}.txt):\n{text}"
    );
    let per_sec = field(&text, "Requests/sec:").context("no Requests/sec in wrk's output")?;
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
        cpu,
        p99_ms,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_pgbench(
    server: &Server,
    db: &Psql,
    script: &Path,
    clients: u32,
    threads: usize,
    secs: u64,
    meter: &Meter,
    dir: &Path,
    round: usize,
) -> anyhow::Result<Measured> {
    let pgbench = service::pgbench_bin(server)?;
    let before = meter.read();
    let out = Command::new(pgbench)
        .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
        .args(["-j", &threads.to_string(), "-T", &secs.to_string()])
        .args(["-D", &format!("tokens={PGBENCH_TOKENS}"), "-f"])
        .arg(script)
        .arg(db.url().to_string())
        .output()
        .context("running pgbench")?;
    let cpu = meter.read() - before;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join(format!("pgbench-{round}.txt")), &text)?;
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_sec = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .context("no tps line in pgbench's output")?;
    let requests = field(&text, "number of transactions actually processed:")
        .context("no transaction count in pgbench's output")?;
    Ok(Measured {
        per_sec,
        requests,
        cpu,
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
