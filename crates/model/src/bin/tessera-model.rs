//! `tessera-model`: the randomized run as a command (`cargo xtask model`
//! provisions the database and calls it). Runs seeds one after another,
//! a line per seed, and a summary table; a failing seed is shrunk, printed
//! and written to `target/model/` for `--replay`.

use clap::Parser;
use model::history::History;
use model::rules::Settings;
use model::runner::{self, Replay};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Randomized histories against two instances, judged by a model of the rules")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed (the others follow it); by default from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Rounds per seed.
    #[arg(long, default_value_t = 60)]
    rounds: usize,
    /// Reports a failing seed as it failed, without shrinking it (a sweep
    /// under many faults).
    #[arg(long)]
    no_shrink: bool,
    /// Replays a history written by a failed run instead.
    #[arg(long)]
    replay: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.replay {
        let history: History = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        println!("{}", model::listing(&history));
        let mut replay = Replay(history.rounds.into_iter().collect());
        return match runner::run(history.seed, Settings::RUN, &mut replay).await {
            Ok(outcome) => {
                println!("the replay passed ({} steps)", outcome.steps);
                Ok(())
            }
            Err(failure) => {
                println!("{}", model::describe(&failure, None));
                anyhow::bail!("the replay failed")
            }
        };
    }
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let mut rows = Vec::new();
    for seed in first..first + args.seeds {
        let started = Instant::now();
        let shrink = match args.no_shrink {
            true => model::Shrink::No,
            false => model::Shrink::Yes,
        };
        match model::check(seed, args.rounds, shrink).await {
            Ok(outcome) => {
                let took = started.elapsed().as_secs_f64();
                println!(
                    "ok     seed {seed}: {} rounds, {} steps, clock moved {:.0} s, {took:.1}s",
                    outcome.rounds,
                    outcome.steps,
                    outcome.moved_ms as f64 / 1000.0
                );
                let answers: Vec<String> = outcome
                    .answers
                    .iter()
                    .map(|(k, n)| format!("{k} x{n}"))
                    .collect();
                println!("       answers: {}", answers.join(", "));
                rows.push((seed, outcome.steps, took, true));
            }
            Err(failure) => {
                std::fs::create_dir_all("target/model")?;
                let path = format!("target/model/failure-{seed}.json");
                std::fs::write(&path, serde_json::to_string_pretty(&failure.history)?)?;
                println!(
                    "FAILED seed {seed}\n{}",
                    model::describe(&failure, Some(&path))
                );
                rows.push((
                    seed,
                    failure.history.steps(),
                    started.elapsed().as_secs_f64(),
                    false,
                ));
            }
        }
    }
    println!("\n{:>22}  {:>6}  {:>8}  result", "seed", "steps", "wall");
    for (seed, steps, took, ok) in &rows {
        println!(
            "{seed:>22}  {steps:>6}  {took:>7.1}s  {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    let failed = rows.iter().filter(|r| !r.3).count();
    let steps: usize = rows.iter().map(|r| r.1).sum();
    let wall: f64 = rows.iter().map(|r| r.2).sum();
    println!(
        "{} seeds, {steps} steps, {:.1}s per seed, {failed} failed",
        rows.len(),
        wall / rows.len().max(1) as f64
    );
    anyhow::ensure!(failed == 0, "{failed} seeds failed");
    Ok(())
}
