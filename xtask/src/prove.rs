//! `cargo xtask prove`: shows that tier 2 can fail. Builds the service with
//! the test-only `faults` feature once, runs the whole of tier 2 without a
//! fault (all must pass), then each named fault (`TESSERA_FAULT`) against
//! the tests of its row in ARCHITECTURE.md's rule table, and requires at
//! least one failing test per fault and every tier-2 test failing under
//! some fault of a row that names it. A fault no test catches is a hole in
//! the tests, a test no fault breaks proves nothing: either fails this
//! command. `--every-test` runs all of tier 2 under each fault instead (what
//! each fault breaks beyond its row; about ten times as long).

use crate::summary;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use pg_provision::Server;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Reads auth-core's one table of faults as the list of their names.
macro_rules! faults {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Every fault auth-core defines, by the name `TESSERA_FAULT` takes.
        pub const FAULTS: &[&str] = &[$($name),*];
    };
}

include!("../../crates/auth-core/src/faults/table.rs");

/// Fault runs at once (see [`run`]).
const PARALLEL_RUNS: usize = 2;

/// Tier 2's filter: the module of the concurrent tests.
const TIER2: &str = "concurrent::";

/// The tests mostly wait (on each other, on PostgreSQL): four at a time on
/// two cores take 9 s where two take 15.
const TEST_THREADS: &str = "4";

#[derive(clap::Args)]
pub struct Args {
    /// Run all of tier 2 under each fault, not only the tests of its row.
    #[arg(long)]
    every_test: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let architecture =
        std::fs::read_to_string("ARCHITECTURE.md").context("reading ARCHITECTURE.md")?;
    let rules = crate::rules::rules(&architecture)?;
    let server = Server::from_env_or_throwaway().context("provisioning PostgreSQL")?;
    let tests = build_tier2()?;

    let bar = ProgressBar::new(FAULTS.len() as u64 + 1);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("baseline (no fault)");
    let started = Instant::now();
    let logs = PathBuf::from("target/prove-reports")
        .join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&logs)?;
    let (baseline_failed, baseline_passed) =
        run_tier2(&tests, &server, None, &Selection::Whole, &logs)?;
    bar.inc(1);
    // Without a fault every test must pass; nothing after means anything otherwise.
    anyhow::ensure!(
        baseline_failed.is_empty(),
        "tier 2 fails without any fault: {} (output: {})",
        baseline_failed.join(", "),
        logs.join("baseline.log").display()
    );
    bar.set_message(format!("{PARALLEL_RUNS} faults at a time"));
    let filters = FAULTS
        .iter()
        .map(|fault| {
            let row = crate::rules::tests_breaking(&rules, fault);
            anyhow::ensure!(!row.is_empty(), "`{fault}` is in no row of the rule table");
            match args.every_test {
                true => Ok(Selection::Whole),
                false => exact_paths(&row, &baseline_passed).map(Selection::Exact),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows = run_faults(&tests, &server, &filters, &bar, &logs)?;
    bar.finish_and_clear();
    let uncaught = uncaught_in_their_rows(&rules, &rows);
    println!("the output of each run: {}", logs.display());
    report(&rows, &baseline_passed, &uncaught, started)
}

/// Which tier-2 tests a run starts.
enum Selection {
    /// All of tier 2.
    Whole,
    /// These tests, by their full paths (libtest's `--exact`).
    Exact(Vec<String>),
}

/// The full path of each test a row names (by function name), found among
/// tier 2's tests (`passed`, paths under `concurrent::`): exactly one each,
/// so a name never selects a test it does not mean.
fn exact_paths(names: &[&str], passed: &[String]) -> anyhow::Result<Vec<String>> {
    names
        .iter()
        .map(|name| {
            let found: Vec<&String> = passed
                .iter()
                .filter(|path| path.rsplit("::").next() == Some(name))
                .collect();
            match found.as_slice() {
                [path] => Ok(format!("{TIER2}{path}")),
                [] => anyhow::bail!("the rule table names `{name}`, no passing tier-2 test"),
                _ => anyhow::bail!("the rule table's `{name}` names several tests: {found:?}"),
            }
        })
        .collect()
}

/// Every fault's run of the tier-2 tests its `filters` select,
/// [`PARALLEL_RUNS`] at a time (a run mostly waits: on locks it forces, on
/// PostgreSQL; each test has a database of its own): each fault with the
/// tests that failed under it.
fn run_faults(
    tests: &Path,
    server: &Server,
    filters: &[Selection],
    bar: &ProgressBar,
    logs: &Path,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let caught: std::sync::Mutex<Vec<Option<Vec<String>>>> =
        std::sync::Mutex::new(vec![None; FAULTS.len()]);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let runners: Vec<_> = (0..PARALLEL_RUNS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(fault) = FAULTS.get(i) else {
                            return Ok(());
                        };
                        let (failed, _) = run_tier2(tests, server, Some(fault), &filters[i], logs)?;
                        caught
                            .lock()
                            .map_err(|_| anyhow::anyhow!("a runner panicked"))?[i] = Some(failed);
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for runner in runners {
            runner
                .join()
                .map_err(|_| anyhow::anyhow!("a fault runner panicked"))??;
        }
        Ok(())
    })?;
    let caught = caught
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a runner panicked"))?;
    Ok(FAULTS
        .iter()
        .zip(caught)
        .map(|(fault, failed)| (fault.to_string(), failed.unwrap_or_default()))
        .collect())
}

/// The rule table's promise, judged: each test a row names fails under
/// some fault of that row. Returns the "rule: test" pairs where it did not.
fn uncaught_in_their_rows(
    rules: &[crate::rules::Rule],
    caught: &[(String, Vec<String>)],
) -> Vec<String> {
    let failed_under = |fault: &str, test: &str| {
        caught.iter().any(|(f, failed)| {
            f == fault && failed.iter().any(|t| t.rsplit("::").next() == Some(test))
        })
    };
    let mut uncaught = Vec::new();
    for rule in rules {
        for test in rule.tests() {
            if !rule.faults().iter().any(|fault| failed_under(fault, test)) {
                uncaught.push(format!("{}: {test}", rule.name()));
            }
        }
    }
    uncaught
}

/// Prints the table of faults and the tests that caught each.
fn print_table(rows: &[(String, Vec<String>)], baseline_passed: &[String]) {
    println!("\n{:<32} tests that caught it", "fault");
    println!("{}", "-".repeat(100));
    println!(
        "{:<32} {} passed",
        "(none: baseline)",
        baseline_passed.len()
    );
    for (fault, caught) in rows {
        let shown = if caught.is_empty() {
            "NOT CAUGHT".to_string()
        } else {
            caught.join(", ")
        };
        println!("{fault:<32} {shown}");
    }
}

/// The table of faults and the tests that caught each, every direction
/// judged: every fault caught, every tier-2 test failed by some fault, each
/// by a fault of its row (`uncaught` lists the tests that were not).
fn report(
    rows: &[(String, Vec<String>)],
    baseline_passed: &[String],
    uncaught: &[String],
    started: Instant,
) -> anyhow::Result<()> {
    print_table(rows, baseline_passed);
    let survivors: Vec<&str> = rows
        .iter()
        .filter(|(_, c)| c.is_empty())
        .map(|(f, _)| f.as_str())
        .collect();
    let caught = rows.len() - survivors.len();
    // The other direction: a tier-2 test no fault ever breaks proves nothing.
    let never_failed: Vec<&str> = baseline_passed
        .iter()
        .filter(|test| !rows.iter().any(|(_, c)| c.contains(test)))
        .map(String::as_str)
        .collect();
    println!("{}", "-".repeat(100));
    println!(
        "tier-2 tests seen failing under some fault: {} of {}",
        baseline_passed.len() - never_failed.len(),
        baseline_passed.len()
    );
    for test in &never_failed {
        println!("  NEVER FAILED (is it in the row of a fault that breaks it?): {test}");
    }
    println!(
        "rule-table tests not failed by a fault of their row: {}",
        uncaught.len()
    );
    for pair in uncaught {
        println!("  NOT FAILED BY ITS ROW: {pair}");
    }
    println!(
        "prove: {caught} of {} faults caught in {:.1}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    summary::closing_line(
        caught as u64,
        (survivors.len() + never_failed.len() + uncaught.len()) as u64,
    );
    anyhow::ensure!(
        survivors.is_empty(),
        "faults no test caught: {}",
        survivors.join(", ")
    );
    anyhow::ensure!(
        never_failed.is_empty(),
        "tier-2 tests no fault made fail: {}",
        never_failed.join(", ")
    );
    anyhow::ensure!(
        uncaught.is_empty(),
        "rule-table tests no fault of their row made fail: {}",
        uncaught.join("; ")
    );
    Ok(())
}

/// Builds auth-api's integration tests with the faults compiled in, once;
/// returns the test binary. Each fault run then starts it directly: going
/// through `cargo test` would check the whole build again, 38 times.
fn build_tier2() -> anyhow::Result<PathBuf> {
    let built = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "auth-api",
            "--features",
            "faults",
            "--test",
            "it",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the faulty variant")?;
    anyhow::ensure!(
        built.status.success(),
        "building with --features faults failed"
    );
    String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "it")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo named no test binary for auth-api's `it`")
}

/// Runs the tests `selection` selects (optionally under a fault), keeping
/// their output in `logs` (`<fault>.log`, or `baseline.log`); returns
/// (failed tests, passed tests).
fn run_tier2(
    tests: &Path,
    server: &Server,
    fault: Option<&str>,
    selection: &Selection,
    logs: &Path,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut cmd = Command::new(tests);
    match selection {
        Selection::Whole => cmd.arg(TIER2),
        Selection::Exact(paths) => cmd.args(paths).arg("--exact"),
    };
    // Where `cargo test` would run it: the package's directory.
    cmd.current_dir("crates/auth-api")
        .args(["--test-threads", TEST_THREADS])
        .env("DATABASE_URL", server.url.to_string())
        // A fault that hangs must still end: the tests bound their own waits.
        .env("RUST_TEST_TIME_INTEGRATION", "60000,120000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match fault {
        Some(f) => cmd.env("TESSERA_FAULT", f),
        None => cmd.env_remove("TESSERA_FAULT"),
    };
    let mut child = cmd.spawn().context("running tier 2")?;
    // A fault that makes a test hang must not hang this command: past the
    // limit the run is killed (by its PID) and counts as caught by a timeout.
    let pid = child.id();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let finished = finished.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + std::time::Duration::from_secs(180);
            while Instant::now() < deadline {
                if finished.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            let _ = Command::new("kill").arg(pid.to_string()).status();
            true
        })
    };
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut failed, mut passed) = (Vec::new(), Vec::new());
    let mut log = std::fs::File::create(logs.join(format!("{}.log", fault.unwrap_or("baseline"))))?;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        use std::io::Write as _;
        writeln!(log, "{line}")?;
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some(name) = rest.strip_suffix(" ... FAILED") {
                failed.push(name.trim_start_matches("concurrent::").to_string());
            } else if let Some(name) = rest.strip_suffix(" ... ok") {
                passed.push(name.trim_start_matches("concurrent::").to_string());
            }
        }
    }
    let _ = child.wait();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    if watchdog.join().unwrap_or(false) {
        failed.push("(timed out after 180 s)".into());
    }
    Ok((failed, passed))
}
