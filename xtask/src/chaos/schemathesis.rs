//! Schemathesis (from PyPI, in a venv under target/) against the running
//! service and its own /openapi.json: every check, zero failures expected.
//! The service's /metrics confirm independently that no 5xx was served.

use super::findings::{CaseReport, check};
use crate::load::service::{self, Service};
use crate::psql::Psql;
use anyhow::Context as _;
use pg_provision::Server;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pinned: a new release may add checks; upgrading is a deliberate change.
const VERSION: &str = "4.32.5";
const CONFIG_DIR: &str = "config/schemathesis";
const RUN_LIMIT: Duration = Duration::from_secs(900);

pub fn run(server: &Server, max_examples: u32, dir: &Path) -> anyhow::Result<CaseReport> {
    let bin = install()?;
    let admin = Psql::new(server, server.url.clone());
    let db = admin.fresh("tessera_fault_schemathesis")?;
    let mut env = service::cheap_hashing();
    // The hook logs in before every case; keep its sessions.
    env.push(("TESSERA_MAX_SESSIONS_PER_USER", "100000".to_owned()));
    // Generated claims may ask for any wait up to 30 s on an empty queue;
    // the service's cap keeps each to 50 ms (the rules are tier 1's).
    env.push(("TESSERA_TASK_MAX_WAIT_MS", "50".to_owned()));
    let mut service = Service::start(
        &db.url().to_string(),
        &env,
        &dir.join("schemathesis.server.log"),
    )?;
    let log_path = dir.join("schemathesis.log");
    let status = run_schemathesis(&bin, &service.base_url, max_examples, dir, &log_path)?;
    let served = service::scrape(&service.base_url)?;
    service.stop()?;

    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let generated = summary_number(&output, "generated");
    let statuses = served_statuses(&served);
    let server_errors: usize = statuses
        .iter()
        .filter(|(s, _)| s.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    let summary = output
        .lines()
        .rev()
        .find(|l| l.contains("generated"))
        .unwrap_or("no summary")
        .trim()
        .to_owned();
    let checks = vec![
        check(
            "schemathesis reports no failures",
            status.is_some_and(|s| s.success()) && generated.is_some_and(|n| n > 0),
            format!(
                "{summary} ({}; {})",
                match status {
                    Some(s) => format!("exit {}", s.code().unwrap_or(-1)),
                    None => "killed at the time limit".into(),
                },
                log_path.display()
            ),
        ),
        check(
            "no 5xx served (the service's own /metrics)",
            server_errors == 0,
            format!(
                "{server_errors} answers with a 5xx status{}",
                server_error_causes(&served, &dir.join("schemathesis.server.log"))
            ),
        ),
    ];
    Ok(CaseReport {
        name: "schemathesis".into(),
        requests: statuses.values().sum(),
        statuses,
        recovery: None,
        lost: 0,
        checks,
        timeline: Default::default(),
        marks: Vec::new(),
    })
}

/// Runs schemathesis against the service's own document until it ends or
/// [`RUN_LIMIT`]; its exit status, `None` when it had to be killed.
fn run_schemathesis(
    bin: &Path,
    base_url: &str,
    max_examples: u32,
    dir: &Path,
    log_path: &Path,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let log = std::fs::File::create(log_path)?;
    let config = std::fs::canonicalize(CONFIG_DIR)?;
    let mut child = Command::new(bin)
        .arg("--config-file")
        .arg(config.join("schemathesis.toml"))
        .args(["run", &format!("{base_url}/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            &max_examples.to_string(),
        ])
        .args(["--report", "junit", "--report-dir"])
        .arg(dir)
        .env("TESSERA_ST_BASE_URL", base_url)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &config)
        .env("NO_COLOR", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .context("starting schemathesis")?;
    let started = Instant::now();
    Ok(loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    })
}

/// A venv with the pinned schemathesis under target/, made once.
fn install() -> anyhow::Result<PathBuf> {
    let venv = PathBuf::from("target/chaos/venv");
    let bin = venv.join("bin/schemathesis");
    let version_ok = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(VERSION));
    if version_ok {
        return Ok(bin);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|_| anyhow::anyhow!("python3 not found: install Python 3 with venv (Debian: python3-venv) to run the schemathesis case"))?;
    anyhow::ensure!(
        made.success(),
        "python3 -m venv failed (Debian: install python3-venv)"
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={VERSION}"))
        .status()
        .context("running pip")?;
    anyhow::ensure!(
        pip.success(),
        "pip install schemathesis=={VERSION} failed (is PyPI reachable?)"
    );
    Ok(bin)
}

/// `1775 generated, 1775 passed, 22 skipped` -> 1775 for "generated".
fn summary_number(output: &str, word: &str) -> Option<u64> {
    let line = output.lines().rev().find(|l| l.contains(word))?;
    line.split(',')
        .find(|part| part.contains(word))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a series counts requests of the run: not the scrapes of
/// /metrics, nor the start's polls of /readyz (503 until migrated).
fn counted(series: &str) -> bool {
    // Whole series only: `Samples` also keeps each label's sum over the
    // others (`{status="503"}`, `{route="/v1/users"}`), which would count
    // answers twice and the start's readiness probes too.
    series.contains("route=\"")
        && series.contains("status=\"")
        && !series.contains("route=\"/metrics\"")
        && !series.contains("route=\"/readyz\"")
}

/// Requests the service answered, by status, excluding its own scrapes.
fn served_statuses(samples: &service::Samples) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (series, value) in samples.series("tessera_http_requests_total{") {
        if !counted(series) {
            continue;
        }
        if let Some(status) = series
            .split("status=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            *out.entry(status.to_owned()).or_insert(0) += value as usize;
        }
    }
    out
}

/// Where the 5xx answers went and why, when there were any: the routes
/// (from /metrics) and the service's own warnings (its log).
fn server_error_causes(samples: &service::Samples, log: &Path) -> String {
    let routes: Vec<String> = samples
        .series("tessera_http_requests_total{")
        .filter(|(series, _)| series.contains("status=\"5") && counted(series))
        .map(|(series, n)| format!("{n} x {series}"))
        .collect();
    if routes.is_empty() {
        return String::new();
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(5)
        .collect();
    format!(
        ": {}; the service said: {}",
        routes.join(", "),
        warnings.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::summary_number;

    #[test]
    fn reads_the_generated_count() {
        let out = "Test cases:\n  1775 generated, 1770 passed, 5 skipped\n";
        assert_eq!(summary_number(out, "generated"), Some(1775));
        assert_eq!(summary_number("nothing", "generated"), None);
    }
}
