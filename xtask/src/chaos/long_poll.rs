//! `long-poll`: 50 waiters park on an empty queue with `wait_ms` 10000
//! (3000 in test-all's short tier 4),
//! then 500 tasks arrive in 5 bursts. Every task must be claimed exactly
//! once (a fresh read of the database and a tally of every answer), each
//! waiter must end with a wait that timed out empty, and the median time
//! from create to claim (the database's own `created_at` and
//! `assigned_at`) must be well under the waiters' one-second re-check:
//! wake-ups came from LISTEN/NOTIFY. The same run without the listener
//! (a transaction pooler setting with no listen URL) shows that check can
//! fail: its waiters find the bursts only by their re-check.

use super::findings::{CaseReport, Timeline, check};
use crate::load::service::{Service, cheap_hashing, scrape};
use crate::psql::Psql;
use harness::checks::Check;
use harness::traffic::{agent, fresh_token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const NAME: &str = "long-poll";
const WAITERS: usize = 50;
const BURSTS: usize = 5;
const PER_BURST: usize = 100;
/// The queue pool: far smaller than the number of waiters.
const POOL: u32 = 10;
/// What a notified wake-up must beat: half the re-check period.
const WOKEN_WITHIN_MS: f64 = 200.0;

/// One run's figures.
struct Run {
    answers: BTreeMap<String, usize>,
    claimed: Vec<String>,
    /// Waiters whose last answer was an empty, timed-out wait.
    ended_empty: usize,
    stored: i64,
    once: i64,
    median_ms: f64,
    p95_ms: f64,
    peak_waiting: f64,
    peak_parked: f64,
    requests: usize,
}

pub fn run(admin: &Psql, dir: &std::path::Path, wait: Duration) -> anyhow::Result<CaseReport> {
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let woken = one_run(admin, dir, "long_poll", wait_ms, &[])?;
    let unwoken = one_run(
        admin,
        dir,
        "long_poll_no_listener",
        wait_ms,
        &[("TESSERA_DB_POOLER", "transaction".to_owned())],
    )?;
    let distinct: std::collections::BTreeSet<&String> = woken.claimed.iter().collect();
    let total = BURSTS * PER_BURST;
    let checks: Vec<Check> = vec![
        check(
            "every answer a 200",
            woken.answers.keys().all(|s| s == "200"),
            format!("{:?}", woken.answers),
        ),
        check(
            "all 500 claimed exactly once (answers and a fresh read)",
            woken.claimed.len() == total
                && distinct.len() == total
                && woken.stored == total as i64
                && woken.once == total as i64,
            format!(
                "{} claims reported, {} distinct; {} stored, {} assigned with attempt 1",
                woken.claimed.len(),
                distinct.len(),
                woken.stored,
                woken.once
            ),
        ),
        check(
            "every waiter ended with a wait that timed out empty",
            woken.ended_empty == WAITERS,
            format!("{} of {WAITERS}", woken.ended_empty),
        ),
        check(
            "median create-to-claim under 200 ms (woken by NOTIFY, not the 1 s re-check)",
            woken.median_ms < WOKEN_WITHIN_MS,
            format!(
                "median {:.1} ms, p95 {:.1} ms; queue pool {POOL}, peak db_pool_waiting {}, peak waiters parked {}",
                woken.median_ms, woken.p95_ms, woken.peak_waiting, woken.peak_parked
            ),
        ),
        check(
            "without the listener the same median is not under 200 ms (the check can fail)",
            unwoken.median_ms >= WOKEN_WITHIN_MS && unwoken.once == total as i64,
            format!(
                "median {:.1} ms, p95 {:.1} ms, {} claimed once",
                unwoken.median_ms, unwoken.p95_ms, unwoken.once
            ),
        ),
    ];
    Ok(CaseReport {
        name: NAME.to_owned(),
        requests: woken.requests + unwoken.requests,
        statuses: woken.answers,
        recovery: None,
        lost: 0,
        checks,
        timeline: Timeline::default(),
        marks: Vec::new(),
    })
}

fn one_run(
    admin: &Psql,
    dir: &std::path::Path,
    database: &str,
    wait_ms: u64,
    extra_env: &[(&str, String)],
) -> anyhow::Result<Run> {
    let db = admin.fresh(database)?;
    let mut env = cheap_hashing();
    env.push(("TESSERA_POOL_MAX_SIZE", POOL.to_string()));
    env.extend(extra_env.iter().cloned());
    let service = Service::start(
        &db.url().to_string(),
        &env,
        &dir.join(format!("{database}.server.log")),
    )?;
    let base = service.base_url.clone();
    let producer = fresh_token(&base, "producer")?;
    let tokens = (0..WAITERS)
        .map(|i| fresh_token(&base, &format!("waiter{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = sample_peaks(&base, &sampling);
    let waiters: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let base = base.clone();
            std::thread::spawn(move || wait_for_work(&base, &token, wait_ms))
        })
        .collect();
    send_bursts(&base, &producer)?;
    let mut run = Run {
        answers: BTreeMap::new(),
        claimed: Vec::new(),
        ended_empty: 0,
        stored: 0,
        once: 0,
        median_ms: 0.0,
        p95_ms: 0.0,
        peak_waiting: 0.0,
        peak_parked: 0.0,
        requests: BURSTS,
    };
    for waiter in waiters {
        let seen = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("a waiter panicked"))?;
        run.requests += seen.statuses.len();
        for status in &seen.statuses {
            *run.answers.entry(status.to_string()).or_default() += 1;
        }
        run.claimed.extend(seen.claimed);
        run.ended_empty += usize::from(seen.ended_empty);
    }
    sampling.store(false, Ordering::SeqCst);
    (run.peak_waiting, run.peak_parked) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    drop(service);
    read_back(&db, &mut run)?;
    Ok(run)
}

/// Samples the queue pool's waiting checkouts and the parked claims while
/// `sampling` holds; their peaks.
fn sample_peaks(base: &str, sampling: &Arc<AtomicBool>) -> std::thread::JoinHandle<(f64, f64)> {
    let (base, sampling) = (base.to_owned(), sampling.clone());
    std::thread::spawn(move || {
        let (mut waiting, mut parked) = (0.0_f64, 0.0_f64);
        while sampling.load(Ordering::SeqCst) {
            if let Ok(s) = scrape(&base) {
                waiting = waiting.max(s.get(r#"tessera_db_pool_waiting{pool="queue"}"#));
                parked = parked.max(s.get("tessera_task_claims_waiting"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (waiting, parked)
    })
}

/// [`BURSTS`] creates of [`PER_BURST`] tasks, each once every waiter is parked.
fn send_bursts(base: &str, producer: &str) -> anyhow::Result<()> {
    for burst in 0..BURSTS {
        parked(base, WAITERS)?;
        let tasks: Vec<Value> = (0..PER_BURST)
            .map(|i| json!({"title": format!("burst {burst} task {i}")}))
            .collect();
        let status = agent(Duration::from_secs(30))
            .post(&format!("{base}/v1/tasks"))
            .header("Authorization", format!("Bearer {producer}"))
            .content_type("application/json")
            .send(json!({ "tasks": tasks }).to_string())?
            .status()
            .as_u16();
        anyhow::ensure!(status == 201, "burst {burst}: create answered {status}");
    }
    Ok(())
}

/// What the database holds after the run: every task stored, claimed once,
/// and how long each waited between its creation and its claim.
fn read_back(db: &Psql, run: &mut Run) -> anyhow::Result<()> {
    run.stored = db.number("SELECT count(*) FROM tasks")?;
    run.once = db.number("SELECT count(*) FROM tasks WHERE status = 'assigned' AND attempt = 1")?;
    let latency = |q: f64| {
        db.query(&format!(
            "SELECT round((percentile_cont({q}) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM assigned_at - created_at)) * 1000)::numeric, 1) FROM tasks"
        ))
        .map(|s| s.trim().parse::<f64>().unwrap_or(f64::NAN))
    };
    run.median_ms = latency(0.5)?;
    run.p95_ms = latency(0.95)?;
    Ok(())
}

/// What one waiter saw.
struct Seen {
    statuses: Vec<u16>,
    claimed: Vec<String>,
    ended_empty: bool,
}

/// Claims with `wait_ms` until a wait ends empty (bounded: 500 tasks).
fn wait_for_work(base: &str, token: &str, wait_ms: u64) -> Seen {
    let agent = agent(Duration::from_millis(wait_ms + 20_000));
    let mut seen = Seen {
        statuses: Vec::new(),
        claimed: Vec::new(),
        ended_empty: false,
    };
    for _ in 0..(BURSTS * PER_BURST + 1) {
        let answer = agent
            .post(&format!("{base}/v1/tasks/claim"))
            .header("Authorization", format!("Bearer {token}"))
            .content_type("application/json")
            .send(json!({"count": 5, "wait_ms": wait_ms}).to_string());
        let Ok(mut answer) = answer else {
            seen.statuses.push(0);
            return seen;
        };
        seen.statuses.push(answer.status().as_u16());
        let body: Value = answer
            .body_mut()
            .read_to_string()
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let ids: Vec<String> = body["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            seen.ended_empty = body["claimed"] == 0;
            return seen;
        }
        seen.claimed.extend(ids);
    }
    seen
}

/// Returns once `n` claims are parked (each found the queue empty).
fn parked(base: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parked = scrape(base)?.get("tessera_task_claims_waiting");
        if parked >= n as f64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {parked} of {n} claims parked within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
