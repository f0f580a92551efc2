//! `cargo xtask bench`: the criterion benchmarks, with a database for the
//! store-level ones (DATABASE_URL, or a throwaway cluster).

use anyhow::Context as _;
use pg_provision::Server;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Passed to criterion: only benchmarks whose name contains this.
    filter: Option<String>,
    /// Criterion's quick mode (fewer samples; for a smoke run).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["bench", "-p", "benches", "--benches", "--"])
        .env("DATABASE_URL", server.url.to_string());
    if let Some(filter) = &args.filter {
        cmd.arg(filter);
    }
    if args.quick {
        cmd.arg("--quick");
    }
    let status = cmd.status().context("running cargo bench")?;
    drop(server);
    anyhow::ensure!(status.success(), "cargo bench failed");
    println!("criterion reports: target/criterion/report/index.html");
    Ok(())
}
