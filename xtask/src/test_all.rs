//! `cargo xtask test-all`: provision a throwaway database, check formatting
//! and lints, run each test tier, check the deploy/ rules and dashboard,
//! and end with a summary table.
//!
//! Tiers are selected by test path, never hidden behind an ignore attribute: tier 2 is
//! every test under a `concurrent::` module, tier 1 is everything else, so a
//! plain `cargo test` still runs all of them. Tier 3 is a short goose run of
//! the release build (`xtask load`'s machinery) judged by its thresholds;
//! tier 4 is the short chaos tier (`xtask chaos`' cases with less traffic).

use crate::summary::{self, Counts, Row};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use pg_provision::Server;
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Run only this tier (1: isolated tests, 2: concurrent smoke tier, 3: load, 4: chaos).
    #[arg(long)]
    tier: Option<u8>,
    /// Skip the fmt and clippy steps.
    #[arg(long)]
    no_lint: bool,
}

struct Step {
    name: &'static str,
    tier: Option<u8>,
    args: &'static [&'static str],
}

const STEPS: &[Step] = &[
    Step {
        name: "fmt --check",
        tier: None,
        args: &["fmt", "--all", "--", "--check"],
    },
    Step {
        name: "clippy -D warnings",
        tier: None,
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
    },
    Step {
        name: "tier 1: isolated tests",
        tier: Some(1),
        args: &[
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--skip",
            "concurrent::",
        ],
    },
    Step {
        name: "tier 2: concurrent smoke",
        tier: Some(2),
        args: &[
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "concurrent::",
        ],
    },
];

pub fn run(args: Args) -> anyhow::Result<()> {
    let provisioning = Instant::now();
    let server = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
    eprintln!(
        "xtask: PostgreSQL at {} ({}, {:.1}s)",
        server.url.redacted(),
        match server.origin {
            pg_provision::Origin::Environment => "DATABASE_URL",
            pg_provision::Origin::Private => "private throwaway cluster",
        },
        provisioning.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for step in STEPS {
        let selected = match (args.tier, step.tier) {
            (Some(wanted), Some(tier)) => wanted == tier,
            (Some(_), None) => false,
            (None, None) => !args.no_lint,
            (None, Some(_)) => true,
        };
        if selected {
            rows.push(run_step(step, &server)?);
        }
    }
    if args.tier.is_none() && !args.no_lint {
        rows.push(crate::deploy::step());
    }
    if matches!(args.tier, None | Some(3)) {
        rows.push(tier3(&server));
    }
    drop(server); // stops and deletes a throwaway cluster
    if matches!(args.tier, None | Some(4)) {
        // Its own cluster: one case restarts PostgreSQL.
        rows.push(crate::chaos::short());
    }
    summary::print(&rows);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

/// Tier 3 runs the load tier in-process; a set-up failure is a failed row.
fn tier3(server: &Server) -> Row {
    let started = Instant::now();
    crate::load::tier3(server).unwrap_or_else(|e| {
        println!("FAILED tier 3: {e:#}");
        Row {
            name: "tier 3: load (100 users, 200k finished tasks)".into(),
            tests: None,
            ok: false,
            wall: started.elapsed(),
        }
    })
}

fn run_step(step: &Step, server: &Server) -> anyhow::Result<Row> {
    let started = Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(step.name);
    bar.enable_steady_tick(Duration::from_millis(120));

    let mut child = Command::new(env!("CARGO"))
        .args(step.args)
        .env("DATABASE_URL", server.url.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", step.args.join(" ")))?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut counts = Counts::default();
    let mut saw_results = false;
    let mut stdout_lines = Vec::new();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if let Some(result) = line.strip_prefix("test result: ") {
            saw_results = true;
            let parsed = parse_result(result);
            counts.passed += parsed.passed;
            counts.failed += parsed.failed;
            counts.ignored += parsed.ignored;
        } else if line.starts_with("test ") && (line.ends_with(" ok") || line.ends_with("FAILED")) {
            bar.set_message(line.trim_start_matches("test ").to_string());
        }
        stdout_lines.push(line);
    }
    let status = child.wait()?;
    let stderr_text = stderr_reader.join().unwrap_or_default();
    bar.finish_and_clear();
    // A test tier that ran nothing proves nothing: that is a failure.
    let ran_nothing = step.tier.is_some() && counts.run() == 0;
    if ran_nothing {
        println!("{} ran no tests", step.name);
    }
    let ok = status.success() && !ran_nothing;
    let wall = started.elapsed();
    println!(
        "{} {} ({:.1}s)",
        if ok { "ok    " } else { "FAILED" },
        step.name,
        wall.as_secs_f64()
    );
    if !ok {
        // Show what failed: the tail of the test output and cargo's errors.
        for line in &stdout_lines[stdout_lines.len().saturating_sub(200)..] {
            println!("  | {line}");
        }
        let errors: Vec<&str> = stderr_text
            .lines()
            .filter(|l| !l.trim_start().starts_with("Compiling"))
            .collect();
        for line in &errors[errors.len().saturating_sub(60)..] {
            println!("  ! {line}");
        }
    }
    Ok(Row {
        name: step.name.to_string(),
        tests: saw_results.then_some(counts),
        ok,
        wall,
    })
}

/// Parses `ok. 37 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
/// The totals of every `test result:` line in a cargo test output.
pub fn counts_in(output: &str) -> Counts {
    let mut counts = Counts::default();
    for result in output
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
    {
        let parsed = parse_result(result);
        counts.passed += parsed.passed;
        counts.failed += parsed.failed;
        counts.ignored += parsed.ignored;
    }
    counts
}

fn parse_result(text: &str) -> Counts {
    let mut counts = Counts::default();
    for part in text.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let n: u64 = number
            .trim_start_matches("ok.")
            .trim_start_matches("FAILED.")
            .trim()
            .parse()
            .unwrap_or(0);
        match label {
            "passed" => counts.passed = n,
            "failed" => counts.failed = n,
            "ignored" => counts.ignored = n,
            _ => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn reads_cargo_test_result_lines() {
        let c = parse_result(
            "ok. 37 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 3.69s",
        );
        assert_eq!((c.passed, c.failed, c.ignored), (37, 2, 1));
        let c = parse_result("FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!((c.passed, c.failed), (0, 1));
    }
}
