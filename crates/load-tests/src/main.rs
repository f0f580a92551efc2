//! `tessera-load`: goose load scenarios for the HTTP contract.
//!
//! Takes goose's own command line (`--host`, `--users`, `--run-time`,
//! `--scenarios`, `--report-file`, ...). `TESSERA_LOAD_RECORD=<path>` writes
//! what the clients saw for the post-run correctness checks;
//! `TESSERA_LOAD_TIMELINE=<path>` writes latency per time window. Normally started
//! by `cargo xtask load`.

mod acknowledged;
mod client;
mod latency_log;
mod scenarios;

use goose::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut attack = GooseAttack::initialize()?;
    for scenario in scenarios::all()? {
        attack = attack.register_scenario(scenario);
    }
    let attack = attack.set_default(
        GooseDefault::CoordinatedOmissionMitigation,
        GooseCoordinatedOmissionMitigation::Average,
    )?;
    let outcome = attack.execute().await;
    // The record is written even when goose reports failed thresholds: the
    // correctness checks still need it.
    if let Ok(path) = std::env::var("TESSERA_LOAD_RECORD") {
        acknowledged::write(&path)?;
    }
    latency_log::write()?;
    outcome?;
    Ok(())
}
