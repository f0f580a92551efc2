//! The clients' latency samples over a run, by window: what `tessera-load`
//! writes to `timeline.json` and `xtask load --soak` reads back.

use crate::latency::Figures;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub window_secs: u64,
    pub windows: Vec<Window>,
}

/// Response times (ms) of the requests that started in one window, by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    pub start_secs: u64,
    pub requests: BTreeMap<String, Vec<u32>>,
}

impl Timeline {
    /// Every request name seen.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .windows
            .iter()
            .flat_map(|w| w.requests.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Figures of `name` (every request when `None`) over the windows that
    /// start in `[from_secs, to_secs)`.
    pub fn span(&self, name: Option<&str>, from_secs: u64, to_secs: u64) -> Figures {
        let ms: Vec<u32> = self
            .windows
            .iter()
            .filter(|w| (from_secs..to_secs).contains(&w.start_secs))
            .flat_map(|w| {
                w.requests
                    .iter()
                    .filter(|(n, _)| name.is_none_or(|wanted| wanted == n.as_str()))
                    .flat_map(|(_, ms)| ms.iter().copied())
            })
            .collect();
        Figures::of(ms)
    }

    /// Requests per second in each window, with the window's start.
    pub fn throughput(&self) -> Vec<(u64, f64)> {
        self.windows
            .iter()
            .map(|w| {
                let n: usize = w.requests.values().map(Vec::len).sum();
                (w.start_secs, n as f64 / self.window_secs.max(1) as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Timeline, Window};

    fn timeline() -> Timeline {
        let window = |start_secs, a: Vec<u32>, b: Vec<u32>| Window {
            start_secs,
            requests: [("GET /a".to_owned(), a), ("GET /b".to_owned(), b)].into(),
        };
        Timeline {
            window_secs: 5,
            windows: vec![
                window(0, vec![1, 2], vec![10]),
                window(5, vec![3], vec![20, 30]),
                window(10, vec![100], vec![]),
            ],
        }
    }

    #[test]
    fn a_span_pools_the_samples_of_its_windows() {
        let t = timeline();
        let a = t.span(Some("GET /a"), 0, 10);
        assert_eq!((a.count, a.p50_ms, a.max_ms), (3, 2, 3));
        let all = t.span(None, 5, 15);
        assert_eq!((all.count, all.max_ms), (4, 100));
        assert_eq!(t.span(Some("GET /c"), 0, 15).count, 0);
        assert_eq!(t.names(), ["GET /a", "GET /b"]);
        assert_eq!(t.throughput(), [(0, 0.6), (5, 0.6), (10, 0.2)]);
    }
}
