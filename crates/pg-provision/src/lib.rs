//! Finds or starts the PostgreSQL server that tessera's tests, xtask and demo use.
//!
//! One module so that `cargo xtask ...` and a plain `cargo test -p X` agree on
//! where the database comes from:
//! 1. `DATABASE_URL`, when set and reachable, is used as it is;
//! 2. otherwise a private cluster is started with the `initdb`/`pg_ctl` found on
//!    `PATH` or under `/usr/lib/postgresql/*/bin`, on a free loopback port.
//!
//! A throwaway cluster lives in the temp dir and is stopped and deleted when its
//! [`Cluster`] is dropped; a watchdog process deletes it too if the owning
//! process dies without dropping it (panic=abort, ctrl-c, kill). A persistent
//! cluster (for `cargo xtask serve`) keeps its data directory between runs.
//!
//! Only std: this crate is a dependency of xtask, which must build fast.

mod url;

use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use url::DbUrl;

/// Everything that can stop us from having a database.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin: \
         install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`) \
         or set DATABASE_URL to a running server (the private cluster needs Linux)"
    )]
    NoBinaries,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = ProvisionError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let what = what.into();
    move |source| ProvisionError::Io { what, source }
}

/// Where the server comes from; tells callers whether they own it.
#[derive(Debug)]
pub enum Origin {
    /// `DATABASE_URL` pointed at a reachable server.
    Environment,
    /// A private cluster this process started.
    Private,
}

/// A reachable PostgreSQL server and how to reach it as a superuser.
#[derive(Debug)]
pub struct Server {
    /// URL of the server's maintenance database (or of `DATABASE_URL` as given).
    pub url: DbUrl,
    pub origin: Origin,
    /// Present when this process started the server; dropping it stops the server.
    pub cluster: Option<Cluster>,
}

impl Server {
    /// `DATABASE_URL` when set and reachable, else a throwaway private cluster.
    pub fn from_env_or_throwaway() -> Result<Server> {
        if let Some(url) = env_url() {
            if url.is_reachable(Duration::from_secs(2)) {
                return Ok(Server {
                    url,
                    origin: Origin::Environment,
                    cluster: None,
                });
            }
            eprintln!(
                "pg-provision: DATABASE_URL ({}) is not reachable; starting a private cluster instead",
                url.redacted()
            );
        }
        Server::throwaway()
    }

    /// Always a throwaway private cluster, whatever `DATABASE_URL` says: for
    /// callers that must stop and start the server (fault tests).
    pub fn throwaway() -> Result<Server> {
        let cluster = Cluster::start_throwaway()?;
        Ok(Server {
            url: cluster.url(),
            origin: Origin::Private,
            cluster: Some(cluster),
        })
    }

    /// `DATABASE_URL` when set and reachable, else the persistent cluster in `dir`.
    pub fn from_env_or_persistent(dir: &Path) -> Result<Server> {
        if let Some(url) = env_url().filter(|u| u.is_reachable(Duration::from_secs(2))) {
            return Ok(Server {
                url,
                origin: Origin::Environment,
                cluster: None,
            });
        }
        let cluster = Cluster::start_persistent(dir)?;
        Ok(Server {
            url: cluster.url(),
            origin: Origin::Private,
            cluster: Some(cluster),
        })
    }
}

fn env_url() -> Option<DbUrl> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| DbUrl::parse(&s))
}

/// A private cluster started by this process.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    port: u16,
    bins: PathBuf,
    owner: Option<(u32, u32)>,
    throwaway: bool,
    watchdog: Option<Child>,
}

const SUPERUSER: &str = "postgres";

impl Cluster {
    /// A new cluster in the temp dir, deleted when dropped (or when we die).
    pub fn start_throwaway() -> Result<Cluster> {
        let bins = find_bin_dir()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!("tessera-pg-{}-{nanos}", std::process::id()));
        let mut cluster = Cluster {
            root,
            port: 0,
            bins,
            owner: unprivileged_owner()?,
            throwaway: true,
            watchdog: None,
        };
        cluster.prepare_root()?;
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.init(&["--no-sync"])?;
        cluster.append_conf(THROWAWAY_SETTINGS)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// The cluster kept in `dir` (created on first use), started if it is not running.
    pub fn start_persistent(dir: &Path) -> Result<Cluster> {
        let bins = find_bin_dir()?;
        let root = absolute(dir)?;
        let mut cluster = Cluster {
            root,
            port: 0,
            bins,
            owner: unprivileged_owner()?,
            throwaway: false,
            watchdog: None,
        };
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.prepare_root()?;
            cluster.init(&[])?;
            cluster.append_conf(COMMON_SETTINGS)?;
        }
        if let Some(port) = cluster.running_port() {
            cluster.port = port;
            return Ok(cluster);
        }
        let remembered = fs::read_to_string(cluster.root.join("port"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        match remembered {
            Some(port) if port_is_free(port) => cluster.start_on(port)?,
            _ => cluster.start_on_free_port()?,
        }
        fs::write(cluster.root.join("port"), cluster.port.to_string())
            .map_err(io("remembering the port"))?;
        Ok(cluster)
    }

    /// Superuser URL of the `postgres` maintenance database.
    pub fn url(&self) -> DbUrl {
        DbUrl::parse(&format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/postgres",
            self.port
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bins
    }

    /// Stops the server now (the data directory stays unless throwaway).
    pub fn stop(&mut self) -> Result<()> {
        if self.port == 0 {
            return Ok(());
        }
        let out = self
            .pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .map_err(io("running pg_ctl stop"))?;
        self.port = 0;
        if out.status.success() {
            Ok(())
        } else {
            Err(command_failed("pg_ctl stop", &out))
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected), runs
    /// `while_down`, and starts it again on the same port: for fault tests
    /// in which the database disappears under a running service.
    pub fn restart_around<T>(&mut self, while_down: impl FnOnce() -> T) -> Result<T> {
        let port = self.port;
        self.stop()?;
        let out = while_down();
        self.start_on(port)?;
        Ok(out)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn prepare_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(io(format!("creating {}", self.root.display())))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io("setting permissions"))?;
        if let Some((uid, gid)) = self.owner {
            chown(&self.root, Some(uid), Some(gid))
                .map_err(io("handing the cluster dir to the server user"))?;
        }
        Ok(())
    }

    fn as_owner(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        // Our own process group: a ctrl-c aimed at the test run must not take
        // the server down under running tests; Drop or the watchdog stop it.
        cmd.process_group(0).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = self.as_owner(&self.bins.join("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(args);
        cmd
    }

    fn init(&self, extra: &[&str]) -> Result<()> {
        let out = self
            .as_owner(&self.bins.join("initdb"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(extra)
            .output()
            .map_err(io("running initdb"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(command_failed("initdb", &out))
        }
    }

    fn append_conf(&self, settings: &str) -> Result<()> {
        let path = self.data_dir().join("postgresql.conf");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("opening postgresql.conf"))?;
        file.write_all(settings.as_bytes())
            .map_err(io("writing postgresql.conf"))
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last = None;
        // A port found free can be taken before the server binds it; try again.
        for _ in 0..3 {
            let port = free_port()?;
            match self.start_on(port) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ProvisionError::Command {
            what: "pg_ctl start".into(),
            detail: "no attempt".into(),
        }))
    }

    fn start_on(&mut self, port: u16) -> Result<()> {
        let out = self
            .pg_ctl(&["start", "-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .arg("-l")
            .arg(self.log_file())
            .stdout(Stdio::null())
            .output()
            .map_err(io("running pg_ctl start"))?;
        if !out.status.success() {
            let log = fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(ProvisionError::Command {
                what: "pg_ctl start".into(),
                detail: format!(
                    "{}; server log: {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    tail.join(" | ")
                ),
            });
        }
        self.port = port;
        Ok(())
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let status = self.pg_ctl(&["status"]).output().ok()?;
        if !status.status.success() {
            return None;
        }
        // postmaster.pid: line 4 is the port.
        let pid_file = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    /// A detached process that deletes the cluster once our PID is gone, so a
    /// crashed or interrupted run leaves nothing behind.
    fn spawn_watchdog(&self) -> Result<Child> {
        let script = r#"while [ -d "/proc/$1" ]; do sleep 1; done
"$2" -D "$3/data" -m immediate stop >/dev/null 2>&1
rm -rf "$3""#;
        self.as_owner(Path::new("/bin/sh"))
            .args(["-c", script, "pg-provision-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.bins.join("pg_ctl"))
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting the cleanup watchdog"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.throwaway {
            // Persistent clusters are stopped explicitly (xtask serve / db stop).
            return;
        }
        let _ = self
            .pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"])
            .output();
        let _ = fs::remove_dir_all(&self.root);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// Settings for every private cluster: loopback TCP only, room for parallel tests.
const COMMON_SETTINGS: &str = "
# tessera private cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
";

/// Durability is worthless for data deleted at the end of the run; speed is not.
const THROWAWAY_SETTINGS: &str = "
# tessera private cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
";

/// The directory holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file());
    if let Some(dir) = on_path {
        // Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/N/bin)
        // so psql and pgbench from the same version are found next to it.
        let real = fs::canonicalize(dir.join("pg_ctl"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        return Ok(real.unwrap_or(dir));
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(ProvisionError::NoBinaries)
}

/// The user a server started here runs as when we are root (initdb and
/// PgBouncer refuse root): `postgres`, else `nobody`; `None` when not root.
pub fn unprivileged_owner() -> Result<Option<(u32, u32)>> {
    let meta = fs::metadata("/proc/self").map_err(io("reading /proc/self"))?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io("reading /etc/passwd"))?;
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    lookup("postgres")
        .or_else(|| lookup("nobody"))
        .map(Some)
        .ok_or_else(|| ProvisionError::Command {
            what: "choosing an unprivileged user for initdb".into(),
            detail: "running as root and neither `postgres` nor `nobody` exists".into(),
        })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(io("reading the current dir"))?
        .join(dir))
}

fn command_failed(what: &str, out: &std::process::Output) -> ProvisionError {
    ProvisionError::Command {
        what: what.into(),
        detail: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    }
}

/// Whether a TCP connection to `host:port` opens within `timeout`.
fn tcp_reachable(host: &str, port: u16, timeout: Duration) -> bool {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    addrs
        .iter()
        .any(|addr| TcpStream::connect_timeout(addr, timeout).is_ok())
}
