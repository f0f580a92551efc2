//! The `deploy` step of test-all: `promtool check rules` and `promtool test
//! rules` over deploy/prometheus, and the metric names the rules and the
//! Grafana dashboard query checked against those the service documents
//! (docs/api.md). promtool comes from `PATH`, else from Debian's
//! `prometheus` package, extracted under `target/tools/` (no root needed).

use crate::summary::{Counts, Row};
use anyhow::Context as _;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/tessera.json";

pub fn step() -> Row {
    let started = Instant::now();
    let (tests, ok) = match run() {
        Ok(passed) => (
            Some(Counts {
                passed,
                failed: 0,
                ignored: 0,
            }),
            true,
        ),
        Err(e) => {
            println!("FAILED deploy: {e:#}");
            (None, false)
        }
    };
    Row {
        name: "deploy: alert rules, dashboard".into(),
        tests,
        ok,
        wall: started.elapsed(),
    }
}

/// Runs the checks; returns how many passed.
fn run() -> anyhow::Result<u64> {
    let promtool = promtool()?;
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = Command::new(&promtool)
            .args(args)
            .output()
            .with_context(|| format!("running {}", promtool.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let documented = documented_metrics(&std::fs::read_to_string("docs/api.md")?);
    let queried = queried_metrics(&std::fs::read_to_string(RULES)?)
        .into_iter()
        .chain(queried_metrics(&std::fs::read_to_string(DASHBOARD)?));
    let unknown: Vec<String> = queried.filter(|m| !documented.contains(m)).collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "queried but not served (docs/api.md): {unknown:?}"
    );
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(DASHBOARD)?)
        .context("the dashboard is not JSON")?;
    Ok(4)
}

fn promtool() -> anyhow::Result<PathBuf> {
    if let Ok(out) = Command::new("promtool").arg("--version").output()
        && out.status.success()
    {
        return Ok(PathBuf::from("promtool"));
    }
    crate::tools::debian("prometheus", &["prometheus"], "usr/bin/promtool")
}

/// Metric names in docs/api.md's table: `tessera_` + each backticked
/// name (a `*` row stands for its prefix), and the `process_*` ones as written.
fn documented_metrics(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for quoted in doc.split('`').skip(1).step_by(2) {
        let name = quoted.split('{').next().unwrap_or(quoted);
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '*')
            || !name.contains('_')
        {
            continue;
        }
        if name.starts_with("process_") {
            out.insert(name.to_owned());
        } else {
            out.insert(format!("tessera_{name}"));
        }
    }
    out
}

/// The metric names a rules file or dashboard queries: `tessera_*` and
/// `process_*` words (histogram series mapped to their family).
fn queried_metrics(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tessera_") || w.starts_with("process_"))
        .map(|w| {
            w.strip_suffix("_bucket")
                .filter(|_| w.contains("_seconds"))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_rules_and_the_dashboard_query_is_one_the_service_documents() {
        let documented = documented_metrics(&std::fs::read_to_string("../docs/api.md").unwrap());
        assert!(documented.contains("tessera_http_requests_total"));
        assert!(documented.contains("process_resident_memory_bytes"));
        for file in [RULES, DASHBOARD] {
            let text = std::fs::read_to_string(std::path::Path::new("..").join(file)).unwrap();
            let queried = queried_metrics(&text);
            assert!(queried.len() >= 3, "{file}: {queried:?}");
            let unknown: Vec<&String> = queried.difference(&documented).collect();
            assert!(unknown.is_empty(), "{file} queries {unknown:?}");
        }
        // A misspelt metric is caught.
        let typo = queried_metrics("rate(tessera_http_request_total[5m])");
        assert!(!typo.is_subset(&documented));
    }
}
