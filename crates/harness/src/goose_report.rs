//! The model of goose's JSON report (`report.json`) the summaries and the
//! thresholds read: totals and per-request figures, with goose's
//! coordinated-omission corrections preferred where it made any, and its
//! error strings grouped into kinds.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Reads `report.json`.
pub fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses goose's JSON report. Latency percentiles include goose's
/// coordinated-omission corrections when it made any.
pub fn parse(text: &str) -> anyhow::Result<Report> {
    let raw: RawReport = serde_json::from_str(text).context("parsing goose's JSON report")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape goose 0.19 writes, cut to two requests.
    const REPORT: &str = r#"{
      "raw_metrics": {"duration": 10},
      "raw_request_metrics": [
        {"method": "GET", "name": "/v1/sessions/current", "number_of_requests": 100, "number_of_failures": 2},
        {"method": "POST", "name": "/v1/tasks/claim", "number_of_requests": 50, "number_of_failures": 0},
        {"method": "", "name": "Aggregated", "number_of_requests": 150, "number_of_failures": 2}
      ],
      "raw_response_metrics": [
        {"method": "GET", "name": "/v1/sessions/current", "percentile_50": 1, "percentile_95": 3, "percentile_99": 5},
        {"method": "POST", "name": "/v1/tasks/claim", "percentile_50": 2, "percentile_95": 4, "percentile_99": 6},
        {"method": "", "name": "Aggregated", "percentile_50": 1, "percentile_95": 4, "percentile_99": 6}
      ],
      "co_response_metrics": [
        {"method": "POST", "name": "/v1/tasks/claim", "percentile_50": 2, "percentile_95": 40, "percentile_99": 60}
      ],
      "errors": [
        {"method": "GET", "name": "/v1/sessions/current", "error": "5xx 503 for GET /v1/sessions/current", "occurrences": 1},
        {"method": "GET", "name": "/v1/sessions/current", "error": "5xx 503 again", "occurrences": 1}
      ]
    }"#;

    #[test]
    fn totals_rates_and_corrected_percentiles_are_read() -> anyhow::Result<()> {
        let report = parse(REPORT)?;
        assert_eq!((report.requests, report.failures), (150, 2));
        assert!((report.rps - 15.0).abs() < 1e-9);
        assert_eq!(report.p99_ms, 6.0);
        let validate = report
            .endpoint("GET /v1/sessions/current")
            .context("validate")?;
        assert_eq!((validate.requests, validate.p99_ms), (100, 5.0));
        assert!((validate.rps - 10.0).abs() < 1e-9);
        let claim = report.endpoint("POST /v1/tasks/claim").context("claim")?;
        assert_eq!(claim.p99_ms, 60.0, "the coordinated-omission figure wins");
        assert_eq!(report.errors, vec![("5xx 503".to_owned(), 2)]);
        Ok(())
    }

    #[test]
    fn a_report_without_its_aggregated_row_is_refused() {
        let text = REPORT.replace("Aggregated", "Other");
        assert!(parse(&text).is_err());
    }
}
