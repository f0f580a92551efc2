//! Latency over time, for soak runs: every request's response time (ms) by
//! time window and request name, kept only when `TESSERA_LOAD_TIMELINE=<path>`
//! is set and written there at the end (windows of `TESSERA_LOAD_WINDOW_SECS`,
//! default 5). The samples themselves are written, sorted, so any span of the
//! run (the first and last minute of a soak) gets exact percentiles. Goose's
//! report has only whole-run figures; its request log would also carry every
//! bearer token.

use harness::timeline::{Timeline, Window};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};

type Samples = BTreeMap<u64, BTreeMap<String, Vec<u32>>>;

fn global() -> &'static Mutex<Samples> {
    static SAMPLES: OnceLock<Mutex<Samples>> = OnceLock::new();
    SAMPLES.get_or_init(Mutex::default)
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TESSERA_LOAD_TIMELINE").is_some())
}

fn window_secs() -> u64 {
    static SECS: OnceLock<u64> = OnceLock::new();
    *SECS.get_or_init(|| {
        std::env::var("TESSERA_LOAD_WINDOW_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(5)
    })
}

/// One answered request: `elapsed_ms` since the run started, `name` as the
/// reports name it (`GET /v1/sessions/current`).
pub fn observe(elapsed_ms: u64, name: &str, response_ms: u64) {
    if !enabled() {
        return;
    }
    let window = elapsed_ms / (window_secs() * 1000);
    let ms = u32::try_from(response_ms).unwrap_or(u32::MAX);
    let mut samples = global().lock().unwrap_or_else(PoisonError::into_inner);
    samples
        .entry(window)
        .or_default()
        .entry(name.to_owned())
        .or_default()
        .push(ms);
}

/// Writes the timeline to `TESSERA_LOAD_TIMELINE`, if set.
pub fn write() -> anyhow::Result<()> {
    let Ok(path) = std::env::var("TESSERA_LOAD_TIMELINE") else {
        return Ok(());
    };
    let samples = std::mem::take(&mut *global().lock().unwrap_or_else(PoisonError::into_inner));
    let timeline = Timeline {
        window_secs: window_secs(),
        windows: samples
            .into_iter()
            .map(|(window, mut requests)| {
                requests.values_mut().for_each(|ms| ms.sort_unstable());
                Window {
                    start_secs: window * window_secs(),
                    requests,
                }
            })
            .collect(),
    };
    std::fs::write(path, serde_json::to_vec(&timeline)?)?;
    Ok(())
}
