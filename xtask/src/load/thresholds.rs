//! The pass/fail criteria of a load run, from `config/load-thresholds.toml`.

use super::checks::Check;
use super::goose::Report;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct Thresholds {
    pub max_unexpected_errors: u64,
    pub max_correctness_violations: u64,
    pub max_pool_timeouts: u64,
    pub latency: BTreeMap<String, Latency>,
    /// How much a soak run may drift (`cargo xtask load --soak`).
    pub drift: harness::drift::DriftRule,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Latency {
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// One judged rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub rule: String,
    pub observed: f64,
    pub limit: f64,
    pub ok: bool,
}

impl Thresholds {
    pub fn load(path: &Path) -> anyhow::Result<Thresholds> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed: Thresholds =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            parsed.latency.contains_key("default"),
            "{} needs a [latency.default] entry",
            path.display()
        );
        Ok(parsed)
    }

    fn latency_for(&self, endpoint: &str) -> Latency {
        // goose names requests "METHOD /path"; entries may use either form.
        let path = endpoint.split_once(' ').map_or(endpoint, |(_, p)| p);
        self.latency
            .get(endpoint)
            .or_else(|| self.latency.get(path))
            .or_else(|| self.latency.get("default"))
            .copied()
            .unwrap_or(Latency {
                p95_ms: f64::INFINITY,
                p99_ms: f64::INFINITY,
            })
    }

    /// Judges a run. `pool_timeouts` is None when /metrics was not readable.
    pub fn judge(
        &self,
        report: &Report,
        checks: &[Check],
        pool_timeouts: Option<f64>,
    ) -> Vec<Verdict> {
        let mut verdicts = vec![
            verdict(
                "unexpected errors",
                report.failures as f64,
                self.max_unexpected_errors as f64,
            ),
            verdict(
                "correctness violations",
                checks.iter().filter(|c| !c.ok).count() as f64,
                self.max_correctness_violations as f64,
            ),
        ];
        if let Some(timeouts) = pool_timeouts {
            verdicts.push(verdict(
                "pool checkout timeouts",
                timeouts,
                self.max_pool_timeouts as f64,
            ));
        }
        for endpoint in &report.endpoints {
            let limit = self.latency_for(&endpoint.name);
            verdicts.push(verdict(
                &format!("p95 {}", endpoint.name),
                endpoint.p95_ms,
                limit.p95_ms,
            ));
            verdicts.push(verdict(
                &format!("p99 {}", endpoint.name),
                endpoint.p99_ms,
                limit.p99_ms,
            ));
        }
        verdicts
    }
}

fn verdict(rule: &str, observed: f64, limit: f64) -> Verdict {
    Verdict {
        rule: rule.to_owned(),
        observed,
        limit,
        ok: observed <= limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::goose::Endpoint;

    fn report(p99: f64) -> Report {
        Report {
            measured_secs: 10.0,
            requests: 10,
            failures: 0,
            rps: 1.0,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: p99,
            endpoints: vec![Endpoint {
                name: "GET /v1/sessions/current".into(),
                requests: 10,
                failures: 0,
                rps: 1.0,
                p50_ms: 1.0,
                p95_ms: 1.0,
                p99_ms: p99,
            }],
            errors: vec![],
        }
    }

    #[test]
    fn the_checked_in_file_judges_a_slow_validation_as_failed() -> anyhow::Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/load-thresholds.toml");
        let thresholds = Thresholds::load(&root)?;
        let fast = thresholds.judge(&report(5.0), &[], Some(0.0));
        assert!(fast.iter().all(|v| v.ok), "{fast:?}");
        let slow = thresholds.judge(&report(5_000.0), &[], Some(0.0));
        assert!(
            slow.iter()
                .any(|v| !v.ok && v.rule == "p99 GET /v1/sessions/current")
        );
        let timeouts = thresholds.judge(&report(5.0), &[], Some(3.0));
        assert!(
            timeouts
                .iter()
                .any(|v| !v.ok && v.rule == "pool checkout timeouts")
        );
        Ok(())
    }
}
