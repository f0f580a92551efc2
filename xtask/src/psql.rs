//! Runs SQL through PostgreSQL's own `psql`, so xtask needs no database driver.

use anyhow::Context as _;
use pg_provision::{DbUrl, Server};
use std::path::PathBuf;
use std::process::Command;

/// `psql` pointed at one database.
pub struct Psql {
    bin: PathBuf,
    url: DbUrl,
}

impl Psql {
    /// The cluster's own psql when we started it, else the one the PostgreSQL
    /// binaries provide (or `psql` from PATH).
    pub fn new(server: &Server, url: DbUrl) -> Psql {
        let bin = match &server.cluster {
            Some(cluster) => cluster.bin_dir().join("psql"),
            None => pg_provision::find_bin_dir()
                .map(|dir| dir.join("psql"))
                .unwrap_or_else(|_| PathBuf::from("psql")),
        };
        Psql { bin, url }
    }

    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The same psql on another database of the same server.
    pub fn on(&self, database: &str) -> Psql {
        Psql {
            bin: self.bin.clone(),
            url: self.url.with_database(database),
        }
    }

    /// Runs `sql` and returns its unaligned, tuples-only output, trimmed.
    /// The SQL goes through stdin, so statements of any length (large id
    /// lists) work; several statements run one after the other.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = self.spawn(true)?;
        child
            .stdin
            .take()
            .context("psql stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql failed on `{}`: {}",
            sql.lines().next().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A single integer answer (`SELECT count(*) ...`).
    pub fn number(&self, sql: &str) -> anyhow::Result<i64> {
        let text = self.query(sql)?;
        text.parse().with_context(|| {
            let first = sql.lines().next().unwrap_or_default();
            format!("expected a number from `{first}`, got `{text}`")
        })
    }

    /// Creates `name` if it is missing.
    pub fn ensure_database(&self, name: &str) -> anyhow::Result<()> {
        let exists = self.query(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ))?;
        if exists != "1" {
            self.query(&format!("CREATE DATABASE \"{name}\""))?;
        }
        Ok(())
    }

    /// Runs `sql` inside a transaction that stays open (its locks held)
    /// until the returned handle is released or dropped.
    pub fn hold(&self, sql: &str) -> anyhow::Result<OpenTransaction> {
        use std::io::Write as _;
        let mut child = self.spawn(false)?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        writeln!(stdin, "BEGIN;\n{sql};")?;
        stdin.flush()?;
        Ok(OpenTransaction {
            child,
            stdin: Some(stdin),
        })
    }

    /// psql reading SQL from its stdin; its output captured or discarded.
    fn spawn(&self, capture: bool) -> anyhow::Result<std::process::Child> {
        use std::process::Stdio;
        let out = || {
            if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        Command::new(&self.bin)
            .args(["-XqtA", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .arg(self.url.to_string())
            .stdin(Stdio::piped())
            .stdout(out())
            .stderr(out())
            .spawn()
            .with_context(|| format!("running {}", self.bin.display()))
    }

    /// Drops `name` (disconnecting its sessions) and creates it empty.
    pub fn recreate_database(&self, name: &str) -> anyhow::Result<()> {
        self.query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
        self.query(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// A new empty database `name` (dropped first if it exists), and psql on it.
    pub fn fresh(&self, name: &str) -> anyhow::Result<Psql> {
        self.recreate_database(name)?;
        Ok(self.on(name))
    }
}

/// A transaction a `psql` process keeps open; see [`Psql::hold`].
pub struct OpenTransaction {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl OpenTransaction {
    /// Commits and waits for psql to exit.
    pub fn release(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The post-run checks' queries (tens of thousands of ids: fed through stdin).
impl harness::checks::Counter for Psql {
    fn count(&self, sql: &str) -> anyhow::Result<i64> {
        self.number(sql)
    }
}
