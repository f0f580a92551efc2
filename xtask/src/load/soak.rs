//! `cargo xtask load --soak DURATION`: the mixed load held for a long time,
//! sampled as it runs, and judged on drift as well as on the absolute
//! thresholds: the last minute's p99 per request against the first minute's
//! (after ramp-up), and the server's RSS growth (`[drift]` in
//! config/load-thresholds.toml). `--seed-tasks` / `--seed-sessions` start
//! from a pre-filled database, as a long-lived installation would be.

use super::service::{Samples, Service};
use crate::psql::Psql;
use harness::drift::DriftRule;
use harness::thresholds::Verdict;
use harness::timeline::Timeline;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Server figures are sampled this often; table sizes every `SIZES_EVERY`.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SIZES_EVERY: Duration = Duration::from_secs(30);
/// The clients' latency windows.
pub const WINDOW_SECS: u64 = 5;
/// The tables whose growth a soak reports.
const TABLES: [&str; 5] = [
    "tasks",
    "task_count_deltas",
    "sessions",
    "users",
    "login_attempts",
];

/// Rows to put in the database before the load starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seed {
    pub completed_tasks: u64,
    pub expired_sessions: u64,
}

impl Seed {
    pub fn is_empty(&self) -> bool {
        self.completed_tasks == 0 && self.expired_sessions == 0
    }

    /// Fills the (migrated) database: completed tasks (attempt 0, so the
    /// claims check counts only the run's assignments), and expired sessions
    /// spread over users of their own (100 each) with unusable passwords.
    /// Then ANALYZE, as autovacuum would have on a real installation, and a
    /// CHECKPOINT: the seed's writes are flushed now, not by a checkpoint
    /// that lands inside the measured run and stalls its commits (a clean
    /// clone's tier 3 once measured one such stall of ~150 ms as the p99
    /// of every request sent ten times a second).
    pub fn apply(&self, db: &Psql) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.completed_tasks > 0 {
            db.query(&format!(
                "INSERT INTO tasks (id, title, status, completed_at, finished_at, created_at)
                 SELECT gen_random_uuid(), 'seeded ' || i, 'completed',
                        now() - interval '1 day', now() - interval '1 day', now() - interval '2 days'
                 FROM generate_series(1, {}) AS i",
                self.completed_tasks
            ))?;
        }
        if self.expired_sessions > 0 {
            let users = self.expired_sessions.div_ceil(100);
            db.query(&format!(
                "INSERT INTO users (id, email, password_hash)
                 SELECT gen_random_uuid(), 'seeded' || i || '@seed.example', '!'
                 FROM generate_series(1, {users}) AS i;
                 INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at,
                                       idle_expires_at, absolute_expires_at)
                 SELECT gen_random_uuid(), u.id, sha256(('seeded ' || g)::bytea),
                        now() - interval '40 days', now() - interval '40 days',
                        now() - interval '39 days', now() - interval '10 days'
                 FROM generate_series(0, {} - 1) AS g
                 JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k
                       FROM users WHERE email LIKE 'seeded%@seed.example') AS u
                   ON u.k = g % {users}",
                self.expired_sessions
            ))?;
        }
        db.query("VACUUM ANALYZE")?;
        // A role without the right to checkpoint runs without it.
        if let Err(e) = db.query("CHECKPOINT") {
            eprintln!("  (no CHECKPOINT after seeding: {e:#})");
        }
        println!(
            "  seeded {} completed tasks and {} expired sessions in {:.0} s",
            self.completed_tasks,
            self.expired_sessions,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// One sample of the server while the load runs.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t_secs: f64,
    pub pool_waiting: f64,
    /// Checkouts that waited, and the seconds they waited, since the last point.
    pub waited: f64,
    pub wait_secs: f64,
    pub hash_queue: f64,
    pub rss_mib: f64,
    /// (table, heap MiB, index MiB), every `SIZES_EVERY`.
    pub sizes: Vec<(String, f64, f64)>,
}

/// Turns the scrapes the goose runner hands over into [`Point`]s.
pub struct Sampler<'a> {
    services: &'a [Service],
    db: &'a Psql,
    next: Duration,
    next_sizes: Duration,
    previous: Option<Samples>,
    pub points: Vec<Point>,
}

impl<'a> Sampler<'a> {
    pub fn new(services: &'a [Service], db: &'a Psql) -> Sampler<'a> {
        Sampler {
            services,
            db,
            next: Duration::ZERO,
            next_sizes: Duration::ZERO,
            previous: None,
            points: Vec::new(),
        }
    }

    pub fn observe(&mut self, elapsed: Duration, samples: &Samples) {
        if elapsed < self.next {
            return;
        }
        self.next = elapsed + SAMPLE_EVERY;
        let since =
            |key: &str| samples.get(key) - self.previous.as_ref().map_or(0.0, |p| p.get(key));
        let sizes = if elapsed >= self.next_sizes {
            self.next_sizes = elapsed + SIZES_EVERY;
            table_sizes(self.db).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.points.push(Point {
            t_secs: elapsed.as_secs_f64(),
            pool_waiting: samples.get("tessera_db_pool_waiting"),
            waited: since("tessera_db_pool_checkouts_total{outcome=\"waited\"}"),
            wait_secs: since("tessera_db_pool_wait_seconds_total"),
            hash_queue: samples.get("tessera_password_hash_queue_depth"),
            rss_mib: self.services.iter().filter_map(Service::rss_mib).sum(),
            sizes,
        });
        self.previous = Some(samples.clone());
    }
}

/// Heap and index size of each of [`TABLES`], in MiB.
pub fn table_sizes(db: &Psql) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let list = TABLES.map(|t| format!("'{t}'")).join(", ");
    let text = db.query(&format!(
        "SELECT relname || '|' || pg_table_size(oid) || '|' || pg_indexes_size(oid)
         FROM pg_class WHERE relkind = 'r' AND relname IN ({list}) ORDER BY relname"
    ))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split('|');
            let name = parts.next()?.to_owned();
            let heap: f64 = parts.next()?.parse().ok()?;
            let index: f64 = parts.next()?.parse().ok()?;
            Some((name, heap / 1048576.0, index / 1048576.0))
        })
        .collect())
}

/// The drift of one request between the first and the last minute.
#[derive(Debug, Clone, Serialize)]
pub struct RequestDrift {
    pub name: String,
    pub first: harness::latency::Figures,
    pub last: harness::latency::Figures,
    pub ratio: Option<f64>,
    pub ok: bool,
}

/// What a soak adds to a run's result.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub first_minute: (u64, u64),
    pub last_minute: (u64, u64),
    pub requests: Vec<RequestDrift>,
    pub rss_first_mib: f64,
    pub rss_last_mib: f64,
    pub points: Vec<Point>,
    pub final_sizes: Vec<(String, f64, f64)>,
}

impl SoakResult {
    /// Judges drift: the minute after ramp-up against the run's last minute.
    pub fn judge(
        rule: &DriftRule,
        timeline: &Timeline,
        points: Vec<Point>,
        ramp_secs: u64,
        run_secs: u64,
        final_sizes: Vec<(String, f64, f64)>,
    ) -> (SoakResult, Vec<Verdict>) {
        let first = (ramp_secs, ramp_secs + 60);
        let end = ramp_secs + run_secs;
        let last = (end.saturating_sub(60).max(first.1), end);
        let mut verdicts = Vec::new();
        let requests: Vec<RequestDrift> = timeline
            .names()
            .into_iter()
            .map(|name| {
                let a = timeline.span(Some(&name), first.0, first.1);
                let b = timeline.span(Some(&name), last.0, last.1);
                let drift = rule.judge(a, b);
                if let Some(ratio) = drift.ratio {
                    verdicts.push(Verdict {
                        rule: format!("drift p99 {name} (last / first minute)"),
                        observed: ratio,
                        limit: rule.max_p99_ratio,
                        ok: drift.ok,
                    });
                }
                RequestDrift {
                    name,
                    first: a,
                    last: b,
                    ratio: drift.ratio,
                    ok: drift.ok,
                }
            })
            .collect();
        let rss_in = |from: u64, to: u64| {
            let in_span: Vec<f64> = points
                .iter()
                .filter(|p| (from as f64..to as f64).contains(&p.t_secs))
                .map(|p| p.rss_mib)
                .collect();
            in_span.iter().sum::<f64>() / in_span.len().max(1) as f64
        };
        let (rss_first_mib, rss_last_mib) = (rss_in(first.0, first.1), rss_in(last.0, last.1 + 10));
        verdicts.push(Verdict {
            rule: "drift server RSS (MiB, last minus first minute)".into(),
            observed: rss_last_mib - rss_first_mib,
            limit: rule.max_rss_growth_mib,
            ok: rss_last_mib - rss_first_mib <= rule.max_rss_growth_mib,
        });
        (
            SoakResult {
                first_minute: first,
                last_minute: last,
                requests,
                rss_first_mib,
                rss_last_mib,
                points,
                final_sizes,
            },
            verdicts,
        )
    }

    /// A markdown table of the drift, for summary.md and the terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "| request | first minute ({}-{} s): n / p99 | last minute ({}-{} s): n / p99 | ratio | |\n| --- | ---: | ---: | ---: | --- |\n",
            self.first_minute.0, self.first_minute.1, self.last_minute.0, self.last_minute.1
        );
        for r in &self.requests {
            out.push_str(&format!(
                "| {} | {} / {} ms | {} / {} ms | {} | {} |\n",
                r.name,
                r.first.count,
                r.first.p99_ms,
                r.last.count,
                r.last.p99_ms,
                r.ratio.map_or("not judged".into(), |x| format!("{x:.2}")),
                if r.ok { "ok" } else { "FAIL" }
            ));
        }
        out.push_str(&format!(
            "\nserver RSS: {:.1} MiB in the first minute, {:.1} MiB in the last\n\ntables at the end (heap / indexes, MiB): {}\n",
            self.rss_first_mib,
            self.rss_last_mib,
            self.final_sizes
                .iter()
                .map(|(t, h, i)| format!("{t} {h:.1} / {i:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out
    }
}

/// Reads the clients' `timeline.json`.
pub fn read_timeline(path: &Path) -> anyhow::Result<Timeline> {
    use anyhow::Context as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).context("parsing timeline.json")
}
