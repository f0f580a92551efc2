//! Where a run's CPU went: the service, PostgreSQL (the postmaster and
//! every backend, live or exited) and the load client (a child of xtask).
//! All from /proc, so only on Linux, and only for loopback runs.

use crate::psql::Psql;
use anyhow::Context as _;

/// CPU seconds used so far by each party of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub service: f64,
    pub postgres: f64,
    /// Children of xtask that have exited (the load client, once waited for).
    pub clients: f64,
}

impl std::ops::Sub for Reading {
    type Output = Reading;
    fn sub(self, before: Reading) -> Reading {
        Reading {
            service: self.service - before.service,
            postgres: self.postgres - before.postgres,
            clients: self.clients - before.clients,
        }
    }
}

/// Reads the CPU of the service (if any), PostgreSQL and xtask's children.
pub struct Meter {
    postmaster: u32,
    service: Option<u32>,
}

impl Meter {
    /// The postmaster is found as the parent of a backend of `db`.
    pub fn new(db: &Psql, service: Option<u32>) -> anyhow::Result<Meter> {
        let backend: u32 = db
            .query("SELECT pg_backend_pid()")?
            .trim()
            .parse()
            .context("pg_backend_pid")?;
        let postmaster = stat_fields(backend)
            .and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
            .context("PostgreSQL's postmaster is not on this machine (/proc)")?;
        Ok(Meter {
            postmaster,
            service,
        })
    }

    pub fn read(&self) -> Reading {
        Reading {
            service: self.service.and_then(cpu_seconds).unwrap_or(0.0),
            postgres: postgres_seconds(self.postmaster),
            clients: children_seconds(),
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: index 1 is the
/// parent, 11/12 utime/stime, 13/14 the waited-for children's.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn ticks(fields: &[String], at: &[usize]) -> f64 {
    at.iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The postmaster's own and its reaped children's time, plus every live
/// child's: a backend that exits mid-run is counted by its parent.
fn postgres_seconds(postmaster: u32) -> f64 {
    let mut total = stat_fields(postmaster).map_or(0.0, |f| ticks(&f, &[11, 12, 13, 14]));
    let children = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in children {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(fields) = stat_fields(pid)
            && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(postmaster)
        {
            total += ticks(&fields, &[11, 12]);
        }
    }
    total / clock_ticks()
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_fields(pid).map(|f| ticks(&f, &[11, 12]) / clock_ticks())
}

fn children_seconds() -> f64 {
    stat_fields(std::process::id()).map_or(0.0, |f| ticks(&f, &[13, 14])) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}
