//! Runs the goose binary as its own process, with a progress bar (its
//! report is read by `harness::goose_report`).

use super::cpu::cpu_seconds;
use super::service::{GOOSE_BIN, Samples, scrape};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
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
