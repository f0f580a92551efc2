//! One timed run of a C client (wrk against the service, pgbench against
//! PostgreSQL), the shape `--ceiling` and `--queue` share: a fixed length
//! and thread count, the CPU of every party metered around it, the
//! client's output kept beside the report, and a failure stated with the
//! client's own words.

use super::cpu::{Meter, Reading};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What every timed run of one measurement shares.
pub struct Timed<'a> {
    pub secs: u64,
    pub threads: usize,
    pub meter: &'a Meter,
    /// Where each run's output is written (`<name>.txt`).
    pub dir: &'a Path,
}

/// What a run printed, what it cost, how long it took.
pub struct Ran {
    pub text: String,
    pub cpu: Reading,
    pub elapsed_secs: f64,
}

impl Timed<'_> {
    /// wrk: `connections` keep-alive connections running `script` against `url`.
    pub fn wrk(
        &self,
        connections: u32,
        script: &Path,
        url: &str,
        name: &str,
    ) -> anyhow::Result<Ran> {
        let mut wrk = Command::new(wrk_binary()?);
        wrk.env("LD_LIBRARY_PATH", wrk_libs()?)
            .args(["--latency", "-t", &self.threads.to_string()])
            .args([
                "-c",
                &connections.to_string(),
                "-d",
                &format!("{}s", self.secs),
            ])
            .arg("-s")
            .arg(script)
            .arg(url);
        self.run(wrk, "wrk", name)
    }

    /// pgbench: `clients` prepared-statement clients running `script` on
    /// `db_url`, with `-D` variables `defines`.
    pub fn pgbench(
        &self,
        bin: &Path,
        clients: u32,
        defines: &[String],
        script: &Path,
        db_url: &str,
        name: &str,
    ) -> anyhow::Result<Ran> {
        let mut pgbench = Command::new(bin);
        pgbench
            .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
            .args([
                "-j",
                &self.threads.to_string(),
                "-T",
                &self.secs.to_string(),
            ]);
        for define in defines {
            pgbench.args(["-D", define]);
        }
        pgbench.arg("-f").arg(script).arg(db_url);
        self.run(pgbench, "pgbench", name)
    }

    fn run(&self, mut command: Command, client: &str, name: &str) -> anyhow::Result<Ran> {
        let before = self.meter.read();
        let started = Instant::now();
        let out = command
            .output()
            .with_context(|| format!("running {client}"))?;
        let elapsed_secs = started.elapsed().as_secs_f64();
        let cpu = self.meter.read() - before;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        std::fs::write(
            self.dir.join(format!("{name}.txt")),
            format!("{text}\nCPU used {cpu:?}\n"),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "{client} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Ran {
            text,
            cpu,
            elapsed_secs,
        })
    }
}

/// wrk from PATH, else Debian's package unpacked under target/tools.
pub fn wrk_binary() -> anyhow::Result<PathBuf> {
    if let Ok(found) = which("wrk") {
        return Ok(found);
    }
    crate::tools::debian(
        "wrk",
        &["wrk", "libluajit2-5.1-2", "libluajit2-5.1-common"],
        "usr/bin/wrk",
    )
}

/// Where the unpacked wrk finds LuaJIT.
pub fn wrk_libs() -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(crate::tools::tool_dir("wrk"))?.join("usr/lib/x86_64-linux-gnu"))
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .context("not on PATH")
}
