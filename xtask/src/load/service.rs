//! Starts and stops the release `auth-api` for a load run, and reads its
//! /metrics and CPU time. Only the process started here is ever signalled.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = "target/release/auth-api";
pub const GOOSE_BIN: &str = "target/release/tessera-load";
pub const ARGON2_RATE_BIN: &str = "target/release/tessera-argon2-rate";
pub const VALIDATE_SQL_BIN: &str = "target/release/tessera-validate-sql";
pub const QUEUE_SQL_BIN: &str = "target/release/tessera-queue-sql";
pub const CROWD_BIN: &str = "target/release/tessera-crowd";
/// The service with the test-only deliberate faults (a debug build, kept
/// apart: a plain `cargo test` would overwrite `target/debug/auth-api`).
pub const FAULTY_SERVER_BIN: &str = "target/faults/auth-api";

/// Environment for a service whose test is about the database, not argon2:
/// the cheapest hashing the service accepts.
pub fn cheap_hashing() -> Vec<(&'static str, String)> {
    vec![
        ("TESSERA_ARGON2_M_KIB", "256".to_owned()),
        ("TESSERA_ARGON2_T", "1".to_owned()),
    ]
}

/// Builds the service and the load binaries with optimisations; with
/// `faults`, the service carries the test-only deliberate faults.
pub fn build_release(faults: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "auth-api",
        "-p",
        "load-tests",
    ]);
    if faults {
        cmd.args(["--features", "auth-api/faults"]);
    }
    let status = cmd.status().context("running cargo build --release")?;
    anyhow::ensure!(status.success(), "cargo build --release failed");
    Ok(())
}

/// Builds the service with the deliberate faults (debug: only counter-proofs
/// run it) and keeps it at [`FAULTY_SERVER_BIN`].
pub fn build_faulty() -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "auth-api",
            "--features",
            "auth-api/faults",
        ])
        .status()
        .context("running cargo build --features auth-api/faults")?;
    anyhow::ensure!(
        status.success(),
        "cargo build --features auth-api/faults failed"
    );
    std::fs::create_dir_all("target/faults")?;
    std::fs::copy("target/debug/auth-api", FAULTY_SERVER_BIN)
        .context("keeping the faulty build")?;
    Ok(())
}

/// A running auth-api we started.
pub struct Service {
    child: Child,
    pub base_url: String,
}

impl Service {
    /// Starts auth-api on a free loopback port with the contract's limits
    /// (the ones the checks judge by) and `env`, logging to `log`, and waits
    /// (at most 60 s) until /readyz answers 200.
    pub fn start(database_url: &str, env: &[(&str, String)], log: &Path) -> anyhow::Result<Self> {
        let mut service = Service::spawn(database_url, env, log)?;
        service.wait_ready(Duration::from_secs(60), log)?;
        Ok(service)
    }

    /// [`Service::start`] of the faulty build under deliberate fault
    /// `fault` (`TESSERA_FAULT`): a counter-proof's service.
    pub fn start_faulty(
        fault: &str,
        database_url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut env = env.to_vec();
        env.push(("TESSERA_FAULT", fault.to_owned()));
        let mut service = Service::spawn_bin(FAULTY_SERVER_BIN, database_url, &env, log)?;
        service.wait_ready(Duration::from_secs(60), log)?;
        Ok(service)
    }

    /// [`Service::start`] without the wait: the process runs, perhaps not
    /// ready yet.
    pub fn spawn(database_url: &str, env: &[(&str, String)], log: &Path) -> anyhow::Result<Self> {
        Service::spawn_bin(SERVER_BIN, database_url, env, log)
    }

    fn spawn_bin(
        bin: &str,
        database_url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.env("DATABASE_URL", database_url)
            .env("TESSERA_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env("TESSERA_SHUTDOWN_GRACE_SECS", "10")
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, value) in harness::contract::LIMITS.env() {
            cmd.env(key, value);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().context("starting auth-api")?;
        Ok(Service {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits until /readyz answers 200 (stopping the process if it does not
    /// within `limit`); returns how long that took.
    pub fn wait_ready(&mut self, limit: Duration, log: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if get(&format!("{}/readyz", self.base_url)).is_ok() {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "auth-api exited during start-up ({status}); see {}",
                    log.display()
                );
            }
            if started.elapsed() > limit {
                self.stop()?;
                anyhow::bail!(
                    "auth-api was not ready within {} s; see {}",
                    limit.as_secs(),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 20 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        self.terminate();
        if self.wait_for_exit(Duration::from_secs(20))?.is_none() {
            self.child.kill()?;
            self.child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM to this process (only ever the one we started).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// The exit status, if the process exits within `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The service's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.memory_mib("VmHWM")
    }

    /// The service's resident memory now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.memory_mib("VmRSS")
    }

    fn memory_mib(&self, field: &str) -> Option<f64> {
        memory_mib(self.pid(), field)
    }

    /// CPU seconds (user + system) the service has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        super::cpu::cpu_seconds(self.pid())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A GET that must answer 2xx; returns the body.
pub fn get(url: &str) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call()?;
    Ok(response.body_mut().read_to_string()?)
}

/// pgbench from the cluster we started, else from the PostgreSQL binaries.
pub fn pgbench_bin(server: &pg_provision::Server) -> anyhow::Result<std::path::PathBuf> {
    Ok(match &server.cluster {
        Some(cluster) => cluster.bin_dir().join("pgbench"),
        None => pg_provision::find_bin_dir()?.join("pgbench"),
    })
}

/// The password every user the load tier signs up has.
pub const PASSWORD: &str = "load tier password 1";

/// Registers `email` (with [`PASSWORD`]) and logs in: its token and user id.
pub fn sign_up(base_url: &str, email: &str) -> anyhow::Result<(String, String)> {
    let creds = serde_json::json!({"email": email, "password": PASSWORD});
    let (registered, problem) = post(&format!("{base_url}/v1/users"), None, Some(&creds));
    anyhow::ensure!(
        registered == 201,
        "registering {email} answered {registered}: {problem}"
    );
    let (status, answer) = post(&format!("{base_url}/v1/sessions"), None, Some(&creds));
    anyhow::ensure!(
        status == 201,
        "the login of {email} answered {status}: {answer}"
    );
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the login answer has no {name}"))
    };
    Ok((field("token")?, field("user_id")?))
}

/// POSTs `body` (JSON, or nothing) to `url` with an optional bearer token:
/// the status (0 when no answer came) and the JSON answer (null if none).
pub fn post(
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = harness::traffic::agent(Duration::from_secs(30)).post(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.content_type("application/json").send(b.to_string()),
        None => req.send_empty(),
    };
    match result {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Sums every sample of each metric name (labels folded in) plus each
/// labelled sample under `name{labels}`.
pub fn scrape(base_url: &str) -> anyhow::Result<Samples> {
    Ok(Samples::parse(&get(&format!("{base_url}/metrics"))?))
}

#[derive(Debug, Default, Clone)]
pub struct Samples(BTreeMap<String, f64>);

impl Samples {
    pub fn parse(text: &str) -> Samples {
        let mut map = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            *map.entry(name.to_owned()).or_insert(0.0) += value;
            if name != series {
                map.insert(series.to_owned(), value);
                // With several labels, each one alone is also a key: the sum
                // over the others (`checkouts{outcome="waited"}` over pools).
                let labels = &series[name.len()..];
                let pairs: Vec<&str> = labels
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .split(',')
                    .collect();
                if pairs.len() > 1 {
                    for pair in pairs {
                        *map.entry(format!("{name}{{{pair}}}")).or_insert(0.0) += value;
                    }
                }
            }
        }
        Samples(map)
    }

    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// Adds every sample of `other` (several instances' /metrics).
    pub fn add(&mut self, other: &Samples) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0.0) += v;
        }
    }

    /// Every labelled sample whose series starts with `prefix`.
    pub fn series<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn sums_labelled_samples_and_keeps_each() {
        let s = Samples::parse(
            "# HELP x\nx_total{outcome=\"direct\"} 3\nx_total{outcome=\"waited\"} 4\ny 2.5\n\
             p{outcome=\"waited\",pool=\"a\"} 1\np{outcome=\"waited\",pool=\"b\"} 2\n",
        );
        assert_eq!(s.get("x_total"), 7.0);
        assert_eq!(s.get("x_total{outcome=\"waited\"}"), 4.0);
        assert_eq!(s.get("y"), 2.5);
        assert_eq!(s.get("missing"), 0.0);
        // One label of several: the sum over the others.
        assert_eq!(s.get("p{outcome=\"waited\"}"), 3.0);
        assert_eq!(s.get("p{pool=\"b\"}"), 2.0);
        assert_eq!(s.get("p{outcome=\"waited\",pool=\"a\"}"), 1.0);
        assert_eq!(s.get("p"), 3.0);
    }
}
