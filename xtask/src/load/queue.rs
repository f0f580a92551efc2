//! `--queue`: queue throughput from claim to completion. Workers (wrk's
//! keep-alive connections) claim a batch through the API and complete every
//! task of it, one request each; swept over batch sizes and worker counts. Beside each batch size, pgbench runs the very claim
//! and complete statements the service sends, with as many clients as the
//! queue's pool has connections. Completions are counted in the database
//! (a fresh count), so neither figure trusts its client. Before the sweep,
//! EXPLAIN (ANALYZE, BUFFERS) of both statements on the 1M-task table.

use super::Plan;
use super::cpu::Meter;
use super::service::{self, QUEUE_SQL_BIN, Service};
use super::timed::Timed;
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The issue's target: end-to-end tasks/s at this share of pgbench's.
const QUEUE_TARGET: f64 = 0.5;
const TASKS: u64 = 1_000_000;
const BATCHES: [u32; 3] = [1, 10, 30];
const WORKERS: [u32; 3] = [4, 16, 64];
const LEASE_SECS: u32 = 300;

/// The claim and complete statements, as the service sends them.
#[derive(serde::Deserialize)]
struct Statements {
    claim: String,
    complete: String,
}

/// One point of the sweep.
struct Point {
    client: String,
    batch: u32,
    workers: u32,
    tasks_per_sec: f64,
    cpu_us_per_task: (f64, f64, f64),
    errors: u64,
}

pub fn run(plan: &Plan, server: &Server, profile: &str) -> anyhow::Result<bool> {
    let (dir, db) = super::stage(plan, server, "queue")?;
    let service = Service::start(
        &db.url().to_string(),
        &[("TESSERA_POOL_PROFILE", profile.to_owned())],
        &dir.join("server.log"),
    )?;
    let (token, user_id) = service::sign_up(&service.base_url, "queue@example.test")?;
    let samples = service::scrape(&service.base_url)?;
    let clients = samples.get(r#"tessera_db_pool_max_connections{pool="queue"}"#) as u32;
    anyhow::ensure!(clients > 0, "the service exported no queue pool size");
    eprintln!("xtask: seeding {TASKS} tasks...");
    db.query(&format!(
        "INSERT INTO tasks (id, title) SELECT gen_random_uuid(), 'q' || g FROM generate_series(1, {TASKS}) AS g;
         VACUUM ANALYZE tasks;"
    ))?;
    let statements = statements()?;
    let explained = explain(&db, &statements, &user_id)?;

    let meter = Meter::new(&db, Some(service.pid()))?;
    let timed = Timed {
        secs: plan.run_time_secs,
        threads: plan.cores,
        meter: &meter,
        dir: &dir,
    };
    let pgbench = service::pgbench_bin(server)?;
    let mut points = Vec::new();
    for batch in BATCHES {
        for workers in WORKERS {
            eprintln!(
                "xtask: queue: {workers} workers claiming {batch} at a time, {} s...",
                timed.secs
            );
            points.push(through_service(
                &timed,
                &db,
                &service.base_url,
                &token,
                batch,
                workers,
            )?);
        }
        eprintln!(
            "xtask: queue: pgbench, {clients} clients claiming {batch} at a time, {} s...",
            timed.secs
        );
        let script = pgbench_script(&dir, &statements, batch)?;
        let sql = Pgbench {
            bin: &pgbench,
            script: &script,
            user_id: &user_id,
            clients,
        };
        points.push(sql.run(&timed, &db, batch)?);
    }
    drop(service);
    // Again with the sweep's history (completed tasks, fresh statistics).
    db.query("ANALYZE tasks")?;
    let explained = format!(
        "-- on {TASKS} claimable tasks, just analyzed:\n{explained}\n\n-- after the sweep, analyzed again:\n{}",
        explain(&db, &statements, &user_id)?
    );
    std::fs::write(dir.join("explain.txt"), &explained)?;

    let (md, ok) = report(plan, profile, clients, &points, &explained)?;
    std::fs::write(dir.join("queue.md"), &md)?;
    println!("\n{md}");
    Ok(ok)
}

/// Every point of the sweep, the best service point per batch against
/// pgbench's, and whether every batch size met the target.
fn report(
    plan: &Plan,
    profile: &str,
    clients: u32,
    points: &[Point],
    explained: &str,
) -> anyhow::Result<(String, bool)> {
    let mut md = format!(
        "# Queue throughput\n\nProfile `{profile}`, {} cores, {TASKS} tasks seeded. A task is done when its completion is committed; counts are fresh reads of the database. Service, driven by wrk ({} threads; `workers` = its connections): a connection claims `batch` tasks through `POST /v1/tasks/claim` when its thread holds none, else completes one with `POST /v1/tasks/{{id}}/complete`. pgbench: per transaction, the service's claim statement, then its complete statement once per claimed task ({clients} clients = the queue pool's size, `-M prepared`).\n\n\
         | client | batch | workers | tasks/s | tasks/s per core | CPU us/task: service / PostgreSQL / client | errors |\n|---|---:|---:|---:|---:|---|---:|\n",
        plan.cores, plan.cores
    );
    for p in points {
        let (s, pg, c) = p.cpu_us_per_task;
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {s:.0} / {pg:.0} / {c:.0} | {} |",
            p.client,
            p.batch,
            p.workers,
            p.tasks_per_sec,
            p.tasks_per_sec / plan.cores as f64,
            p.errors
        )?;
    }
    writeln!(
        md,
        "\n| batch | best service tasks/s (workers) | pgbench tasks/s | ratio |\n|---:|---|---:|---:|"
    )?;
    let mut ok = true;
    for batch in BATCHES {
        let best = points
            .iter()
            .filter(|p| p.batch == batch && p.client == "service")
            .max_by(|a, b| a.tasks_per_sec.total_cmp(&b.tasks_per_sec))
            .context("no service point")?;
        let sql = points
            .iter()
            .find(|p| p.batch == batch && p.client == "pgbench")
            .context("no pgbench point")?;
        let ratio = best.tasks_per_sec / sql.tasks_per_sec;
        ok &= ratio >= QUEUE_TARGET;
        writeln!(
            md,
            "| {batch} | {:.0} ({}) | {:.0} | {ratio:.2} |",
            best.tasks_per_sec, best.workers, sql.tasks_per_sec
        )?;
    }
    let errors: u64 = points.iter().map(|p| p.errors).sum();
    ok &= errors == 0;
    writeln!(
        md,
        "\nTarget: the service at >= {QUEUE_TARGET} of pgbench at every batch size, no errors: {}.\n\nPublished anchors (other hardware, per core where the source gives cores): River ~46k jobs/s on an 8-core laptop (~5.8k per core); graphile-worker ~183k jobs/s (its own benchmark); hardbyte/postgresql-job-queue-benchmarking puts full job queues at 11-14k jobs/s.\n\n## EXPLAIN on {TASKS} tasks\n\n```\n{explained}\n```",
        if ok { "met" } else { "MISSED" }
    )?;
    Ok((md, ok))
}

fn statements() -> anyhow::Result<Statements> {
    let out = Command::new(QUEUE_SQL_BIN)
        .output()
        .context("running tessera-queue-sql")?;
    anyhow::ensure!(out.status.success(), "tessera-queue-sql failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Both statements as prepared statements (as the service runs them),
/// executed under EXPLAIN inside a transaction that is rolled back.
fn explain(db: &Psql, s: &Statements, user_id: &str) -> anyhow::Result<String> {
    let sql = format!(
        "BEGIN;
         PREPARE claim (bigint, uuid, uuid, double precision) AS {};
         PREPARE complete (uuid, uuid, integer) AS {};
         EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE claim(30, '{user_id}', '{user_id}', {LEASE_SECS});
         SELECT id AS held FROM tasks WHERE status = 'assigned' LIMIT 1 \\gset
         EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE complete(:'held', '{user_id}', NULL);
         ROLLBACK;",
        s.claim, s.complete
    );
    db.query(&sql)
}

/// The service driven by wrk (C, LuaJIT): each connection claims a batch,
/// then completes the tasks its thread holds, one request each, so the
/// client costs as little as pgbench's. What is still held when wrk stops
/// is left leased; completions are counted in the database.
fn through_service(
    timed: &Timed<'_>,
    db: &Psql,
    base_url: &str,
    token: &str,
    batch: u32,
    workers: u32,
) -> anyhow::Result<Point> {
    let script = timed.dir.join(format!("claim-complete-{batch}.lua"));
    std::fs::write(&script, wrk_script(token, batch))?;
    let done_before = completed(db)?;
    let ran = timed.wrk(
        workers,
        &script,
        base_url,
        &format!("wrk-{batch}-{workers}"),
    )?;
    let done = completed(db)? - done_before;
    let errors = ran
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let per = |s: f64| s * 1e6 / (done.max(1) as f64);
    Ok(Point {
        client: "service".into(),
        batch,
        workers,
        tasks_per_sec: done as f64 / ran.elapsed_secs,
        cpu_us_per_task: (
            per(ran.cpu.service),
            per(ran.cpu.postgres),
            per(ran.cpu.clients),
        ),
        errors,
    })
}

/// wrk's script: a connection whose thread holds claimed tasks completes
/// one; otherwise it claims a batch. Only claim answers (`"requested"`)
/// are read for ids.
fn wrk_script(token: &str, batch: u32) -> String {
    format!(
        r#"local held = {{}}
local headers = {{ ["Authorization"] = "Bearer {token}", ["Content-Type"] = "application/json" }}
local claim = '{{"count": {batch}}}'
request = function()
  local id = table.remove(held)
  if id then
    return wrk.format("POST", "/v1/tasks/" .. id .. "/complete", headers, "")
  end
  return wrk.format("POST", "/v1/tasks/claim", headers, claim)
end
response = function(status, _, body)
  if status == 200 and body:find('"requested"', 1, true) then
    for id in body:gmatch('"id":"([0-9a-f%-]+)"') do
      table.insert(held, id)
    end
  end
end
"#
    )
}

fn completed(db: &Psql) -> anyhow::Result<u64> {
    Ok(db.number("SELECT count(*) FROM tasks WHERE status = 'completed'")? as u64)
}

/// Per transaction: the claim (its rows folded into two arrays by a
/// wrapping SELECT, since pgbench keeps one row), then the complete
/// statement once per claimed task, each as sent by the service.
fn pgbench_script(dir: &Path, s: &Statements, batch: u32) -> anyhow::Result<std::path::PathBuf> {
    let one_line = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let claim = one_line(
        &s.claim
            .replace("$1", ":batch")
            .replace("$2", ":worker")
            .replace("$3", ":worker")
            .replace("$4", ":lease"),
    );
    let mut script = format!(
        "WITH claimed AS ({claim}) SELECT array_agg(id) AS ids, array_agg(attempt) AS attempts FROM claimed\n\\gset\n"
    );
    for k in 1..=batch {
        let complete = one_line(
            &s.complete
                .replace("$1", &format!("(:ids::uuid[])[{k}]"))
                .replace("$2", ":worker")
                .replace("$3", &format!("(:attempts::int[])[{k}]")),
        );
        writeln!(script, "{complete};")?;
    }
    let path = dir.join(format!("claim-complete-{batch}.pgbench.sql"));
    std::fs::write(&path, script)?;
    Ok(path)
}

/// pgbench running the service's claim and complete statements.
struct Pgbench<'a> {
    bin: &'a Path,
    script: &'a Path,
    user_id: &'a str,
    clients: u32,
}

impl Pgbench<'_> {
    fn run(&self, timed: &Timed<'_>, db: &Psql, batch: u32) -> anyhow::Result<Point> {
        let done_before = completed(db)?;
        let ran = timed.pgbench(
            self.bin,
            self.clients,
            &[
                format!("batch={batch}"),
                format!("worker={}", self.user_id),
                format!("lease={LEASE_SECS}"),
            ],
            self.script,
            &db.url().to_string(),
            &format!("pgbench-{batch}"),
        )?;
        let done = completed(db)? - done_before;
        // What pgbench's threads held when it stopped is finished by nobody: not
        // counted (the fresh count only counts completions).
        let per = |s: f64| s * 1e6 / (done.max(1) as f64);
        Ok(Point {
            client: "pgbench".into(),
            batch,
            workers: self.clients,
            tasks_per_sec: done as f64 / ran.elapsed_secs,
            cpu_us_per_task: (0.0, per(ran.cpu.postgres), per(ran.cpu.clients)),
            errors: 0,
        })
    }
}
