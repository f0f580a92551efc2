//! `cargo xtask model`: the randomized run (crates/model) over many seeds,
//! release build, against DATABASE_URL or a throwaway cluster. A failing
//! seed is shrunk and written to `target/model/` for `--replay`.

use anyhow::Context as _;
use pg_provision::Server;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// How many seeds.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed (the others follow); by default from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Rounds per seed.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Reports a failing seed as it failed, unshrunk (sweeps under faults).
    #[arg(long)]
    no_shrink: bool,
    /// Replays a history a failed run wrote.
    #[arg(long)]
    replay: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "model",
        "--bin",
        "tessera-model",
        "--",
    ])
    .env("DATABASE_URL", server.url.to_string());
    match &args.replay {
        Some(path) => {
            cmd.args(["--replay", path]);
        }
        None => {
            cmd.args(["--seeds", &args.seeds.to_string()])
                .args(["--rounds", &args.rounds.to_string()]);
            if let Some(seed) = args.seed {
                cmd.args(["--seed", &seed.to_string()]);
            }
            if args.no_shrink {
                cmd.arg("--no-shrink");
            }
        }
    }
    let status = cmd.status().context("running tessera-model")?;
    drop(server);
    anyhow::ensure!(status.success(), "the randomized run failed");
    Ok(())
}
