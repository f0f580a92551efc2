//! The pass/fail criteria of a load run, from `config/load-thresholds.toml`.

use crate::checks::Check;
use crate::goose_report::Report;
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
    pub drift: crate::drift::DriftRule,
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
        Thresholds::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Thresholds> {
        let parsed: Thresholds = toml::from_str(text)?;
        anyhow::ensure!(
            parsed.latency.contains_key("default"),
            "a [latency.default] entry is required"
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
    Verdict::at_most(rule, observed, limit)
}

impl Verdict {
    /// `observed` may be at most `limit`.
    pub fn at_most(rule: &str, observed: f64, limit: f64) -> Verdict {
        Verdict {
            rule: rule.to_owned(),
            observed,
            limit,
            ok: observed <= limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goose_report::Endpoint;

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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/load-thresholds.toml");
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
        let violated = [Check::new("no task held twice", false, String::new())];
        let broken = thresholds.judge(&report(5.0), &violated, Some(0.0));
        assert!(
            broken
                .iter()
                .any(|v| !v.ok && v.rule == "correctness violations")
        );
        Ok(())
    }

    #[test]
    fn an_endpoint_takes_its_own_limit_then_its_path_then_the_default() -> anyhow::Result<()> {
        let thresholds = Thresholds::parse(
            r#"
            max_unexpected_errors = 0
            max_correctness_violations = 0
            max_pool_timeouts = 0
            [latency.default]
            p95_ms = 1
            p99_ms = 2
            [latency."/v1/sessions/current"]
            p95_ms = 10
            p99_ms = 20
            [latency."POST /v1/tasks"]
            p95_ms = 30
            p99_ms = 40
            [drift]
            max_p99_ratio = 1.5
            floor_ms = 10
            min_count = 200
            max_rss_growth_mib = 50
            "#,
        )?;
        assert_eq!(
            thresholds.latency_for("GET /v1/sessions/current").p99_ms,
            20.0
        );
        assert_eq!(thresholds.latency_for("POST /v1/tasks").p99_ms, 40.0);
        assert_eq!(thresholds.latency_for("GET /v1/tasks").p99_ms, 2.0);
        Ok(())
    }

    #[test]
    fn a_file_without_a_default_latency_is_refused() {
        let text = "max_unexpected_errors = 0\nmax_correctness_violations = 0\nmax_pool_timeouts = 0\n\
                    [latency.x]\np95_ms = 1\np99_ms = 1\n\
                    [drift]\nmax_p99_ratio = 1.5\nfloor_ms = 10\nmin_count = 200\nmax_rss_growth_mib = 50\n";
        let error = Thresholds::parse(text).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("a [latency.default] entry is required")
        );
    }
}
