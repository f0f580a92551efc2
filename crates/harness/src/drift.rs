//! The drift rule of a soak run: a request's p99 over the last minute may be
//! at most `max_p99_ratio` times its p99 over the first minute (after
//! ramp-up). Both are raised to `floor_ms` first, so a 2 -> 4 ms move is not
//! "twice as slow", and a request with fewer than `min_count` samples in
//! either minute is not judged (its p99 is one or two samples).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftRule {
    pub max_p99_ratio: f64,
    pub floor_ms: u32,
    pub min_count: usize,
    /// Server RSS growth allowed from the first to the last minute.
    pub max_rss_growth_mib: f64,
}

/// One request's drift: its p99 at the start and the end, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub first_p99_ms: u32,
    pub last_p99_ms: u32,
    /// `None`: too few samples to judge.
    pub ratio: Option<f64>,
    pub ok: bool,
}

impl DriftRule {
    pub fn judge(&self, first: crate::latency::Figures, last: crate::latency::Figures) -> Drift {
        let judged = first.count >= self.min_count && last.count >= self.min_count;
        let ratio = judged.then(|| {
            f64::from(last.p99_ms.max(self.floor_ms)) / f64::from(first.p99_ms.max(self.floor_ms))
        });
        Drift {
            first_p99_ms: first.p99_ms,
            last_p99_ms: last.p99_ms,
            ratio,
            ok: ratio.is_none_or(|r| r <= self.max_p99_ratio),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DriftRule;
    use crate::latency::Figures;

    const RULE: DriftRule = DriftRule {
        max_p99_ratio: 1.5,
        floor_ms: 10,
        min_count: 100,
        max_rss_growth_mib: 50.0,
    };

    fn p99(ms: u32, count: usize) -> Figures {
        Figures {
            count,
            p50_ms: ms,
            p95_ms: ms,
            p99_ms: ms,
            max_ms: ms,
        }
    }

    #[test]
    fn a_p99_that_grew_past_the_ratio_fails() {
        let d = RULE.judge(p99(20, 500), p99(31, 500));
        assert_eq!(d.ratio, Some(1.55));
        assert!(!d.ok);
        assert!(
            RULE.judge(p99(20, 500), p99(30, 500)).ok,
            "exactly 1.5 passes"
        );
    }

    #[test]
    fn small_latencies_are_raised_to_the_floor_first() {
        let d = RULE.judge(p99(2, 500), p99(9, 500));
        assert_eq!(d.ratio, Some(1.0));
        assert!(d.ok);
        assert!(!RULE.judge(p99(2, 500), p99(16, 500)).ok);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let d = RULE.judge(p99(5, 99), p99(500, 1000));
        assert_eq!(d.ratio, None);
        assert!(d.ok);
    }
}
