//! Runs the goose binary as its own process, with a progress bar, and reads
//! its JSON report.

use super::service::{GOOSE_BIN, Samples, cpu_seconds, scrape};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One goose run's shape.
pub struct Run<'a> {
    pub host: &'a str,
    pub users: u32,
    pub rate: f64,
    pub run_time_secs: u64,
    pub scenarios: &'a str,
    pub dir: &'a Path,
    pub label: &'a str,
}

/// Peaks seen by scraping /metrics once a second during the run, and the
/// CPU time the load generator itself used (it shares the machine).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Peaks {
    pub pool_waiting: f64,
    pub pool_connections: f64,
    pub hash_queue: f64,
    pub goose_cpu_secs: f64,
}

/// Runs goose to completion (bounded: ramp-up + run time + 120 s), writing
/// `report.html`, `report.json`, `goose.log` and `record.json` into `dir`.
pub fn run(run: &Run<'_>) -> anyhow::Result<Peaks> {
    run_sampled(run, None, &mut |_, _| {})
}

/// [`run`], also handing every scrape of /metrics (about twice a second)
/// to `on_sample` with the time since goose started, and, with
/// `timeline_window_secs`, having the clients write `timeline.json`
/// (latency per window of that many seconds).
pub fn run_sampled(
    run: &Run<'_>,
    timeline_window_secs: Option<u64>,
    on_sample: &mut dyn FnMut(Duration, &Samples),
) -> anyhow::Result<Peaks> {
    let log = File::create(run.dir.join("goose.log"))?;
    let mut command = Command::new(GOOSE_BIN);
    if let Some(window) = timeline_window_secs {
        command
            .env("TESSERA_LOAD_TIMELINE", run.dir.join("timeline.json"))
            .env("TESSERA_LOAD_WINDOW_SECS", window.to_string());
    }
    let mut child = command
        .args(["--host", run.host])
        .args(["--users", &run.users.to_string()])
        .args(["--increase-rate", &run.rate.to_string()])
        .args(["--run-time", &format!("{}s", run.run_time_secs)])
        .args(["--scenarios", run.scenarios])
        .arg("--report-file")
        .arg(run.dir.join("report.html"))
        .arg("--report-file")
        .arg(run.dir.join("report.json"))
        .args(["--timeout", "10"])
        .env("TESSERA_LOAD_RECORD", run.dir.join("record.json"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting tessera-load")?;
    let ramp_secs = (f64::from(run.users) / run.rate).ceil() as u64;
    let expected = ramp_secs + run.run_time_secs + 1;
    let bar = ProgressBar::new(expected);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(run.label.to_owned());
    let started = Instant::now();
    let limit = Duration::from_secs(expected + 120);
    let mut peaks = Peaks::default();
    let status = loop {
        if let Some(cpu) = cpu_seconds(child.id()) {
            peaks.goose_cpu_secs = cpu;
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            child.kill()?;
            child.wait()?;
            bar.abandon_with_message("killed: goose overran its time limit");
            anyhow::bail!("goose did not finish within {} s", limit.as_secs());
        }
        if let Ok(samples) = scrape(run.host) {
            peaks.observe(&samples);
            on_sample(started.elapsed(), &samples);
            bar.set_message(format!(
                "pool {}/{} busy, {} waiting; hash queue {}",
                samples.get("tessera_db_pool_connections")
                    - samples.get("tessera_db_pool_idle_connections"),
                samples.get("tessera_db_pool_max_connections"),
                samples.get("tessera_db_pool_waiting"),
                samples.get("tessera_password_hash_queue_depth"),
            ));
        }
        bar.set_position(started.elapsed().as_secs().min(expected));
        std::thread::sleep(Duration::from_millis(500));
    };
    bar.finish_and_clear();
    // goose exits non-zero only when it could not run; our thresholds are
    // judged afterwards from its report.
    anyhow::ensure!(
        status.success(),
        "tessera-load failed ({status}); see {}",
        run.dir.join("goose.log").display()
    );
    Ok(peaks)
}

impl Peaks {
    fn observe(&mut self, s: &Samples) {
        self.pool_waiting = self.pool_waiting.max(s.get("tessera_db_pool_waiting"));
        self.pool_connections = self
            .pool_connections
            .max(s.get("tessera_db_pool_connections"));
        self.hash_queue = self
            .hash_queue
            .max(s.get("tessera_password_hash_queue_depth"));
    }
}

/// The parts of goose's JSON report the summary uses.
#[derive(Debug, Deserialize)]
struct RawReport {
    raw_metrics: RawMetrics,
    raw_request_metrics: Vec<RequestRow>,
    raw_response_metrics: Vec<ResponseRow>,
    co_response_metrics: Option<Vec<ResponseRow>>,
    errors: Option<Vec<ErrorRow>>,
}

#[derive(Debug, Deserialize)]
struct RawMetrics {
    duration: f64,
}

#[derive(Debug, Deserialize)]
struct RequestRow {
    #[serde(default)]
    method: String,
    name: String,
    number_of_requests: u64,
    number_of_failures: u64,
}

#[derive(Debug, Deserialize)]
struct ResponseRow {
    #[serde(default)]
    method: String,
    name: String,
    percentile_50: f64,
    percentile_95: f64,
    percentile_99: f64,
}

#[derive(Debug, Deserialize)]
struct ErrorRow {
    #[serde(default)]
    method: String,
    name: String,
    error: String,
    occurrences: u64,
}

/// Per request name (goose names them `METHOD /path`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub measured_secs: f64,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub endpoints: Vec<Endpoint>,
    /// Error kind (the tag the client set) -> occurrences.
    pub errors: Vec<(String, u64)>,
}

impl Report {
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// Reads `report.json`. Latency percentiles include goose's coordinated-
/// omission corrections when it made any.
pub fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: RawReport = serde_json::from_str(&text).context("parsing goose's JSON report")?;
    // goose keeps coordinated-omission-corrected percentiles apart, and only
    // for requests that had such events; prefer them where they exist.
    let corrected = raw.co_response_metrics.unwrap_or_default();
    let latency_of = |method: &str, name: &str| {
        corrected
            .iter()
            .chain(raw.raw_response_metrics.iter())
            .find(|l| l.method == method && l.name == name)
    };
    let secs = raw.raw_metrics.duration.max(1.0);
    let mut endpoints = Vec::new();
    let mut total = None;
    for row in &raw.raw_request_metrics {
        let latency = latency_of(&row.method, &row.name);
        let endpoint = Endpoint {
            rps: row.number_of_requests as f64 / secs,
            p50_ms: latency.map_or(0.0, |l| l.percentile_50),
            p95_ms: latency.map_or(0.0, |l| l.percentile_95),
            p99_ms: latency.map_or(0.0, |l| l.percentile_99),
            requests: row.number_of_requests,
            failures: row.number_of_failures,
            name: request_name(&row.method, &row.name),
        };
        if row.name == "Aggregated" {
            total = Some(endpoint);
        } else {
            endpoints.push(endpoint);
        }
    }
    let total = total.context("goose's report has no Aggregated row")?;
    let mut errors: Vec<(String, u64)> = Vec::new();
    for e in raw.errors.unwrap_or_default() {
        let kind = error_kind(&e.error, &request_name(&e.method, &e.name));
        match errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += e.occurrences,
            None => errors.push((kind, e.occurrences)),
        }
    }
    Ok(Report {
        measured_secs: secs,
        requests: total.requests,
        failures: total.failures,
        rps: total.rps,
        p50_ms: total.p50_ms,
        p95_ms: total.p95_ms,
        p99_ms: total.p99_ms,
        endpoints,
        errors,
    })
}

/// "GET /v1/sessions": how the summary and the thresholds name a request.
fn request_name(method: &str, name: &str) -> String {
    if method.is_empty() || name == "Aggregated" {
        name.to_owned()
    } else {
        format!("{method} {name}")
    }
}

/// Groups goose's error strings into kinds: the tag our client set
/// (`5xx 503 for ...`, `timeout`, `wrong body: ...`) or goose's own text.
fn error_kind(error: &str, name: &str) -> String {
    let error = error.trim();
    if let Some(rest) = error.strip_prefix("5xx ") {
        return format!("5xx {}", rest.split_whitespace().next().unwrap_or(""));
    }
    if error.starts_with("unexpected status") || error.starts_with("wrong body") {
        return format!("{} ({name})", error.split(" for ").next().unwrap_or(error));
    }
    error.chars().take(80).collect()
}
