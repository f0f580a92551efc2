//! Latency figures of one set of requests, by nearest rank.

use serde::{Deserialize, Serialize};

/// Count and percentiles of a set of response times, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub count: usize,
    pub p50_ms: u32,
    pub p95_ms: u32,
    pub p99_ms: u32,
    pub max_ms: u32,
}

impl Figures {
    pub fn of(mut ms: Vec<u32>) -> Figures {
        ms.sort_unstable();
        Figures {
            count: ms.len(),
            p50_ms: nearest_rank(&ms, 0.50),
            p95_ms: nearest_rank(&ms, 0.95),
            p99_ms: nearest_rank(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0),
        }
    }
}

/// The smallest sample with at least `q` of the (sorted) samples at or
/// below it; 0 for no samples.
fn nearest_rank(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::Figures;

    #[test]
    fn percentiles_are_nearest_rank_whatever_the_order() {
        let f = Figures::of((1..=100).rev().collect());
        assert_eq!(
            (f.count, f.p50_ms, f.p95_ms, f.p99_ms, f.max_ms),
            (100, 50, 95, 99, 100)
        );
        let f = Figures::of(vec![3, 1, 2]);
        assert_eq!((f.p50_ms, f.p95_ms, f.max_ms), (2, 3, 3));
        let one = Figures::of(vec![7]);
        assert_eq!((one.p50_ms, one.p99_ms), (7, 7));
        assert_eq!(
            Figures::of(vec![]),
            Figures {
                count: 0,
                p50_ms: 0,
                p95_ms: 0,
                p99_ms: 0,
                max_ms: 0
            }
        );
    }
}
