//! Per-profile results, the side-by-side `summary.md` / `summary.json`, and
//! the recommendation.

use super::goose::Peaks;
use harness::checks::Check;
use harness::goose_report::Report;
use harness::thresholds::{Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What the pool and the hasher did during the run (deltas of /metrics).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PoolFigures {
    pub checkouts: f64,
    pub waited: f64,
    pub timed_out: f64,
    pub wait_secs: f64,
    pub connections_created: f64,
    pub hashes: f64,
    pub hash_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileResult {
    pub profile: String,
    pub description: String,
    pub max_size: Option<u32>,
    pub users: u32,
    pub report: Report,
    pub pool: Option<PoolFigures>,
    #[serde(default)]
    pub peak_pool_waiting: f64,
    #[serde(default)]
    pub peak_hash_queue: f64,
    pub server_cpu_secs: Option<f64>,
    #[serde(default)]
    pub server_peak_rss_mib: Option<f64>,
    pub checks: Vec<Check>,
    pub verdicts: Vec<Verdict>,
    pub pass: bool,
    /// (table, heap MiB, index MiB) at the end of the run.
    #[serde(default)]
    pub table_sizes: Vec<(String, f64, f64)>,
    /// Drift and the figures over time, for `--soak` runs.
    #[serde(skip_deserializing)]
    pub soak: Option<super::soak::SoakResult>,
}

impl ProfileResult {
    /// goose's report and the checks judged against the thresholds; the
    /// caller names the run and adds what it measured of the server.
    pub fn judged(
        thresholds: &Thresholds,
        report: Report,
        checks: Vec<Check>,
        pool: Option<PoolFigures>,
        peaks: Peaks,
    ) -> ProfileResult {
        let verdicts = thresholds.judge(&report, &checks, pool.map(|p| p.timed_out));
        let pass = verdicts.iter().all(|v| v.ok) && checks.iter().all(|c| c.ok);
        ProfileResult {
            profile: String::new(),
            description: String::new(),
            max_size: None,
            users: 0,
            report,
            pool,
            peak_pool_waiting: peaks.pool_waiting,
            peak_hash_queue: peaks.hash_queue,
            server_cpu_secs: None,
            server_peak_rss_mib: None,
            checks,
            verdicts,
            pass,
            table_sizes: Vec::new(),
            soak: None,
        }
    }

    pub fn failed_rules(&self) -> Vec<String> {
        let mut failed: Vec<String> = self
            .verdicts
            .iter()
            .filter(|v| !v.ok)
            .map(|v| format!("{}: {:.1} > {}", v.rule, v.observed, v.limit))
            .collect();
        failed.extend(
            self.checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail)),
        );
        failed
    }
}

/// The profile to run: the highest throughput among those that passed.
pub fn recommend(results: &[ProfileResult]) -> Option<(String, String)> {
    let mut passed: Vec<&ProfileResult> = results.iter().filter(|r| r.pass).collect();
    passed.sort_by(|a, b| b.report.rps.total_cmp(&a.report.rps));
    let best = passed.first()?;
    let mut reason = format!(
        "highest throughput ({:.0} req/s) of the profiles with zero unexpected errors, zero correctness violations and every latency threshold met",
        best.report.rps
    );
    if let Some(next) = passed.get(1) {
        let _ = write!(
            reason,
            "; next best: {} at {:.0} req/s ({:+.1}%)",
            next.profile,
            next.report.rps,
            (next.report.rps / best.report.rps - 1.0) * 100.0
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.profile.as_str())
        .collect();
    if !failed.is_empty() {
        let _ = write!(reason, "; failed thresholds: {}", failed.join(", "));
    }
    Some((best.profile.clone(), reason))
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The comparison table (markdown; also printed to the console).
pub fn table(results: &[ProfileResult], cores: usize) -> String {
    let mut md = String::new();
    md.push_str("| profile | pool max | req/s | p50 ms | p95 ms | p99 ms | validate p99 ms | claim p99 ms | errors | checkouts waited | pool timeouts | wait s | peak waiting | server CPU s (% of cores) | server peak RSS MiB | violations | result |\n");
    md.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let cpu = r.server_cpu_secs.map(|cpu| {
            format!(
                "{cpu:.1} ({:.0}%)",
                100.0 * cpu / (r.report.measured_secs * cores as f64)
            )
        });
        let validate = r
            .report
            .endpoint("GET /v1/sessions/current")
            .map(|e| e.p99_ms);
        let claim = r.report.endpoint("POST /v1/tasks/claim").map(|e| e.p99_ms);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.profile,
            r.max_size.map_or_else(|| "-".into(), |m| m.to_string()),
            r.report.rps,
            r.report.p50_ms,
            r.report.p95_ms,
            r.report.p99_ms,
            opt(validate, 0),
            opt(claim, 0),
            r.report.failures,
            opt(r.pool.map(|p| p.waited), 0),
            opt(r.pool.map(|p| p.timed_out), 0),
            opt(r.pool.map(|p| p.wait_secs), 2),
            r.peak_pool_waiting,
            cpu.unwrap_or_else(|| "-".into()),
            opt(r.server_peak_rss_mib, 0),
            r.checks.iter().filter(|c| !c.ok).count(),
            if r.pass { "pass" } else { "FAIL" },
        );
    }
    md
}

/// The full `summary.md`.
pub fn markdown(results: &[ProfileResult], header: &str, cores: usize) -> String {
    let mut md = format!(
        "# Load run\n\n{header}\n\n![latency and throughput](summary.svg)\n\n## Profiles\n\n"
    );
    md.push_str(&table(results, cores));
    match recommend(results) {
        Some((profile, reason)) => {
            let _ = writeln!(md, "\n**Recommendation: `{profile}`**: {reason}.");
        }
        None => md.push_str("\n**No recommendation**: no profile met every threshold.\n"),
    }
    latency_section(&mut md, results);
    findings_section(&mut md, results);
    md
}

/// Every request's percentiles, one column per profile.
fn latency_section(md: &mut String, results: &[ProfileResult]) {
    md.push_str("\n## Latency per request (p50 / p95 / p99 ms)\n\n| request |");
    for r in results {
        let _ = write!(md, " {} |", r.profile);
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(results.len()));
    md.push('\n');
    let mut names: Vec<&str> = results
        .iter()
        .flat_map(|r| r.report.endpoints.iter().map(|e| e.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let _ = write!(md, "| {name} |");
        for r in results {
            match r.report.endpoint(name) {
                Some(e) => {
                    let _ = write!(
                        md,
                        " {:.0} / {:.0} / {:.0} ({:.0}/s) |",
                        e.p50_ms, e.p95_ms, e.p99_ms, e.rps
                    );
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
}

/// Per profile: goose's errors, the pool and the hasher, the checks and
/// the thresholds missed.
fn findings_section(md: &mut String, results: &[ProfileResult]) {
    md.push_str("\n## Errors, checks and thresholds\n");
    for r in results {
        let _ = writeln!(md, "\n### {}: {}\n", r.profile, r.description);
        if r.report.errors.is_empty() {
            md.push_str("- errors: none\n");
        }
        for (kind, n) in &r.report.errors {
            let _ = writeln!(md, "- error `{kind}`: {n}");
        }
        if let Some(pool) = r.pool {
            let _ = writeln!(
                md,
                "- pool: {:.0} checkouts, {:.0} waited ({:.2} s in all), {:.0} timed out, {:.0} connections opened; peak {} waiting",
                pool.checkouts,
                pool.waited,
                pool.wait_secs,
                pool.timed_out,
                pool.connections_created,
                r.peak_pool_waiting
            );
            if pool.hashes > 0.0 {
                let _ = writeln!(
                    md,
                    "- password hashing: {:.0} hashes, {:.1} ms mean, peak queue {}",
                    pool.hashes,
                    1000.0 * pool.hash_secs / pool.hashes,
                    r.peak_hash_queue
                );
            }
        }
        for c in &r.checks {
            let _ = writeln!(
                md,
                "- [{}] {}: {}",
                if c.ok { "x" } else { " " },
                c.name,
                c.detail
            );
        }
        let failed: Vec<&Verdict> = r.verdicts.iter().filter(|v| !v.ok).collect();
        if failed.is_empty() {
            let _ = writeln!(md, "- thresholds: all {} met", r.verdicts.len());
        }
        for v in failed {
            let _ = writeln!(
                md,
                "- threshold FAILED: {} = {:.1} (limit {})",
                v.rule, v.observed, v.limit
            );
        }
    }
}
