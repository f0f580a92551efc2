//! Project automation: `cargo xtask <command>` (see `--help`).
//! Every command runs from the workspace root and provisions PostgreSQL the
//! same way the tests do (pg-provision).

mod bench;
mod chaos;
mod db;
mod deploy;
mod load;
mod model;
mod mutants;
mod pgbouncer;
mod prove;
mod psql;
mod rules;
mod serve;
mod summary;
mod test_all;
mod tidy;
mod tools;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tessera's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// fmt, clippy and every test tier against a throwaway database; ends with a summary table.
    TestAll(test_all::Args),
    /// Runs the service (release build) on a persistent private database and prints a walkthrough.
    Serve(serve::Args),
    /// Runs each deliberate fault against its rule's tier-2 tests; fails unless every fault is caught
    /// and every tier-2 test fails under some fault.
    Prove(prove::Args),
    /// The criterion benchmarks (crates/benches), with a database for the store-level ones.
    Bench(bench::Args),
    /// Load tier: goose against the release build, per pool profile, with reports and thresholds.
    Load(load::Args),
    /// Chaos tier (tier 4): connections killed, PostgreSQL restarted, pool exhausted, SIGTERM under load,
    /// hostile clients and crowds; then schemathesis. (`faults` is its old name, kept as an alias; the
    /// deliberately broken builds are `prove`'s faults.)
    #[command(alias = "faults")]
    Chaos(chaos::Args),
    /// Mutation testing (cargo-mutants) of the rule-bearing code, judged by tiers 1 and 2.
    Mutants(mutants::Args),
    /// The randomized run: seeded histories over two instances, judged by a model of the rules.
    Model(model::Args),
    /// Checks deploy/: promtool over the alert rules and their tests, and the metrics they and the dashboard query.
    CheckDeploy,
    /// Manages the persistent developer database (.tessera/pg).
    Db {
        #[command(subcommand)]
        action: db::Action,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(workspace_root()).context("changing to the workspace root")?;
    match cli.command {
        Command::TestAll(args) => test_all::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Prove(args) => prove::run(args),
        Command::Load(args) => load::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Mutants(args) => mutants::run(args),
        Command::Model(args) => model::run(args),
        Command::Db { action } => db::run(action),
        Command::CheckDeploy => {
            let row = deploy::step();
            summary::print(std::slice::from_ref(&row));
            anyhow::ensure!(row.ok, "deploy checks failed");
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The persistent developer cluster's folder (git-ignored).
pub fn persistent_dir() -> PathBuf {
    PathBuf::from(".tessera/pg")
}
