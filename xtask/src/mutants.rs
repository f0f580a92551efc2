//! `cargo xtask mutants`: cargo-mutants over the rule-bearing code (the
//! globs in `.cargo/mutants.toml`), judged by tiers 1 and 2 of auth-core and
//! auth-api against one shared PostgreSQL. A missed mutant is a rule no test
//! pins down. Too slow for CI on 2 cores; `--shard k/n` splits it across runs.

use crate::summary;
use anyhow::Context as _;
use pg_provision::Server;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Run only shard k of n (`k/n`, k from 0), as cargo-mutants takes it.
    #[arg(long)]
    shard: Option<String>,
    /// Only list the mutants, do not test them.
    #[arg(long)]
    list: bool,
    /// Extra arguments for cargo-mutants (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

/// The cargo-mutants release this command is written against.
const CARGO_MUTANTS: &str = "27.1.0";

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_installed()?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["mutants", "--no-shuffle", "--output", "target/mutants"])
        // Tiers 1 and 2 of both crates judge every mutant, wherever it is
        // (the config file's test_package is not applied by this release).
        .args(["--test-package", "auth-core", "--test-package", "auth-api"])
        // A fixed limit: the baseline's own timing is too short a guide.
        .args(["--timeout", "180"]);
    if args.list {
        cmd.arg("--list");
    }
    if let Some(shard) = &args.shard {
        cmd.args(["--shard", shard]);
    }
    cmd.args(&args.extra);
    let server = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
    // Property tests at a few cases each: the mutants are judged by the
    // rules' tests, not by a search for rare inputs.
    cmd.env("DATABASE_URL", server.url.to_string())
        .env("PROPTEST_CASES", "32");
    let status = cmd.status().context("running cargo mutants")?;
    if args.list {
        anyhow::ensure!(status.success(), "cargo mutants --list failed");
        return Ok(());
    }
    let outcome = Outcome::read("target/mutants/mutants.out")?;
    outcome.print();
    summary::closing_line(outcome.caught, outcome.missed);
    // A failing unmutated tree judges nothing: that is no pass.
    anyhow::ensure!(
        outcome.caught + outcome.missed + outcome.unviable + outcome.timeout > 0,
        "no mutant was judged: the unmutated tree failed its tests (see target/mutants/mutants.out/log/baseline.log)"
    );
    anyhow::ensure!(
        outcome.missed == 0,
        "{} mutants survived: each is a test still owed (see target/mutants/mutants.out/missed.txt)",
        outcome.missed
    );
    Ok(())
}

fn ensure_installed() -> anyhow::Result<()> {
    let installed = Command::new(env!("CARGO"))
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("installing cargo-mutants {CARGO_MUTANTS} from crates.io (once)");
    let status = Command::new(env!("CARGO"))
        .args([
            "install",
            "--locked",
            "cargo-mutants",
            "--version",
            CARGO_MUTANTS,
        ])
        .status()
        .context("cargo install cargo-mutants")?;
    anyhow::ensure!(status.success(), "installing cargo-mutants failed");
    Ok(())
}

/// What cargo-mutants wrote: one mutant per line in each file.
struct Outcome {
    caught: u64,
    missed: u64,
    unviable: u64,
    timeout: u64,
    missed_list: Vec<String>,
}

impl Outcome {
    fn read(dir: &str) -> anyhow::Result<Outcome> {
        let lines = |name: &str| -> Vec<String> {
            std::fs::read_to_string(format!("{dir}/{name}"))
                .map(|text| text.lines().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        anyhow::ensure!(
            std::path::Path::new(dir).join("outcomes.json").is_file(),
            "cargo mutants wrote no {dir}/outcomes.json"
        );
        let missed_list = lines("missed.txt");
        Ok(Outcome {
            caught: lines("caught.txt").len() as u64,
            missed: missed_list.len() as u64,
            unviable: lines("unviable.txt").len() as u64,
            timeout: lines("timeout.txt").len() as u64,
            missed_list,
        })
    }

    fn print(&self) {
        println!("\n{:<10} {:>6}", "outcome", "mutants");
        println!("{}", "-".repeat(18));
        for (name, n) in [
            ("caught", self.caught),
            ("missed", self.missed),
            ("unviable", self.unviable),
            ("timeout", self.timeout),
        ] {
            println!("{name:<10} {n:>6}");
        }
        for m in &self.missed_list {
            println!("  MISSED {m}");
        }
    }
}
