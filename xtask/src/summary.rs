//! The summary table every long command ends with.

use std::time::Duration;

/// One row: a step (fmt, clippy) or a test tier.
pub struct Row {
    pub name: String,
    pub tests: Option<Counts>,
    pub ok: bool,
    pub wall: Duration,
}

#[derive(Default, Clone, Copy)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    pub fn run(&self) -> u64 {
        self.passed + self.failed
    }
}

pub fn print(rows: &[Row]) {
    println!();
    println!(
        "{:<28} {:>6} {:>7} {:>7} {:>10}  result",
        "step", "run", "passed", "failed", "wall"
    );
    println!("{}", "-".repeat(70));
    for row in rows {
        let (run, passed, failed) = match row.tests {
            Some(c) => (
                c.run().to_string(),
                c.passed.to_string(),
                c.failed.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<28} {:>6} {:>7} {:>7} {:>9.1}s  {}",
            row.name,
            run,
            passed,
            failed,
            row.wall.as_secs_f64(),
            if row.ok { "ok" } else { "FAILED" }
        );
    }
    let total = rows
        .iter()
        .filter_map(|r| r.tests)
        .fold(Counts::default(), |a, c| Counts {
            passed: a.passed + c.passed,
            failed: a.failed + c.failed,
            ignored: a.ignored + c.ignored,
        });
    println!("{}", "-".repeat(70));
    closing_line(total.passed, total.failed);
}

/// The plain closing line CI reads.
pub fn closing_line(passed: u64, failed: u64) {
    println!("{passed} passed, {failed} failed");
}
