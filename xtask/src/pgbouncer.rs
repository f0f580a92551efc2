//! A real PgBouncer (Debian's package) in transaction pooling mode in front
//! of a PostgreSQL server, its configuration generated under `target/`, run
//! as our own child process and stopped by its PID.

use anyhow::Context as _;
use pg_provision::DbUrl;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PgBouncer.
pub struct PgBouncer {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// How PgBouncer pools: the default size, and databases with their own.
pub struct Pooling<'a> {
    pub default_pool_size: u32,
    pub sized: &'a [(&'a str, u32)],
}

impl PgBouncer {
    /// Starts PgBouncer in front of the server `server` points at, with
    /// `pool_mode = transaction` and `server_round_robin` (each transaction
    /// takes the next server session in turn: what a client assumes about
    /// its session shows up at once). Any database name is passed through.
    pub fn start(server: &DbUrl, pooling: &Pooling<'_>, dir: &Path) -> anyhow::Result<PgBouncer> {
        let bin = binary()?;
        std::fs::create_dir_all(dir)?;
        let dir = std::path::absolute(dir)?;
        let (host, port) = server.host_port();
        let user = server.user().unwrap_or("postgres");
        let listen = free_port()?;
        let mut databases = String::new();
        for (name, size) in pooling.sized {
            databases += &format!("{name} = host={host} port={port} pool_size={size}\n");
        }
        databases += &format!("* = host={host} port={port}\n");
        let users = dir.join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n"))?;
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{databases}\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\n\
                 pool_mode = transaction\nserver_round_robin = 1\n\
                 default_pool_size = {default}\nmax_client_conn = 2000\n\
                 ignore_startup_parameters = extra_float_digits\n",
                users = users.display(),
                default = pooling.default_pool_size,
            ),
        )?;
        let log = dir.join("pgbouncer.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&bin);
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("LD_LIBRARY_PATH", library_path());
        // PgBouncer refuses to run as root.
        if let Some((uid, gid)) = pg_provision::unprivileged_owner()? {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut bouncer = PgBouncer {
            child,
            port: listen,
            log,
        };
        bouncer.wait_listening()?;
        Ok(bouncer)
    }

    /// `url` with PgBouncer in the way.
    pub fn url_for(&self, url: &DbUrl) -> DbUrl {
        url.with_host_port("127.0.0.1", self.port)
    }

    /// `host:port`, as `TESSERA_TEST_PGBOUNCER` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("pgbouncer exited ({status}); see {}", self.log.display());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10 s; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Our own child, by PID: SIGINT is PgBouncer's safe shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PgBouncer from PATH or /usr/sbin, else Debian's package unpacked under
/// target/tools (with the c-ares library it needs).
fn binary() -> anyhow::Result<PathBuf> {
    for candidate in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    crate::tools::debian(
        "pgbouncer",
        &["pgbouncer", "libc-ares2"],
        "usr/sbin/pgbouncer",
    )
}

fn library_path() -> String {
    let unpacked = std::path::absolute(crate::tools::tool_dir("pgbouncer"))
        .unwrap_or_default()
        .join("usr/lib/x86_64-linux-gnu");
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(existing) if !existing.is_empty() => format!("{}:{existing}", unpacked.display()),
        _ => unpacked.display().to_string(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
