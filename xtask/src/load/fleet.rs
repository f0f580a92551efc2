//! One or more `auth-api` processes on one database; with more than one, a
//! real nginx (Debian's package) in front, its config generated under the
//! run's report folder. All shared state lives in PostgreSQL, so the
//! concurrency guarantees must hold across instances: `cross_instance_checks`
//! races requests that alternate between the instances directly.

use super::service::{PASSWORD, Samples, Service, post, sign_up};
use crate::psql::Psql;
use anyhow::Context as _;
use harness::checks::Check;
use harness::contract::LIMITS;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

pub struct Fleet {
    pub services: Vec<Service>,
    nginx: Option<Child>,
    /// Where clients go: nginx, or the only instance.
    pub base_url: String,
}

impl Fleet {
    pub fn start(
        database_url: &str,
        env: &[(&str, String)],
        dir: &Path,
        instances: usize,
    ) -> anyhow::Result<Fleet> {
        let mut services = Vec::new();
        for i in 0..instances.max(1) {
            let log = if instances > 1 {
                dir.join(format!("server-{i}.log"))
            } else {
                dir.join("server.log")
            };
            services.push(Service::start(database_url, env, &log)?);
        }
        if services.len() == 1 {
            let base_url = services[0].base_url.clone();
            return Ok(Fleet {
                services,
                nginx: None,
                base_url,
            });
        }
        let (nginx, base_url) = start_nginx(&services, &dir.join("nginx"))?;
        Ok(Fleet {
            services,
            nginx: Some(nginx),
            base_url,
        })
    }

    /// Every instance's /metrics, summed.
    pub fn scrape(&self) -> anyhow::Result<Samples> {
        let mut total = Samples::default();
        for s in &self.services {
            total.add(&super::service::scrape(&s.base_url)?);
        }
        Ok(total)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        self.services.iter().map(Service::cpu_seconds).sum()
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.services.iter().map(Service::peak_rss_mib).sum()
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        for s in &mut self.services {
            s.stop()?;
        }
        if let Some(mut nginx) = self.nginx.take() {
            // Our own child, by PID: SIGQUIT is nginx's graceful stop.
            let _ = Command::new("kill")
                .args(["-QUIT", &nginx.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while nginx.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nginx.kill();
            let _ = nginx.wait();
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn start_nginx(services: &[Service], dir: &Path) -> anyhow::Result<(Child, String)> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx not found: install it (Debian: apt-get install nginx-light) to run more than one instance")?;
    let dir = std::fs::canonicalize(std::env::current_dir()?)?.join(dir);
    std::fs::create_dir_all(dir.join("temp"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(services, &dir, port))?;
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::service::get(&format!("{base}/readyz")).is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "nginx exited ({status}); see {}",
                dir.join("error.log").display()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nginx did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, base))
}

/// nginx in front of the instances, loopback only, every file under `dir`.
fn nginx_config(services: &[Service], dir: &Path, port: u16) -> String {
    let mut upstreams = String::new();
    for s in services {
        let _ = writeln!(
            upstreams,
            "    server {};",
            s.base_url.trim_start_matches("http://")
        );
    }
    let d = dir.display();
    format!(
        "# Generated by cargo xtask load --instances; loopback only.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/temp/body;
  proxy_temp_path {d}/temp/proxy;
  fastcgi_temp_path {d}/temp/fastcgi;
  uwsgi_temp_path {d}/temp/uwsgi;
  scgi_temp_path {d}/temp/scgi;
  upstream tessera {{
{upstreams}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 2m;
    location / {{
      proxy_pass http://tessera;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      # Never replay a request on the other instance: a POST may have run.
      proxy_next_upstream off;
    }}
  }}
}}
"
    )
}

/// Races that alternate between the instances directly, each result read
/// back afresh. They get their own fleet and database: cheap hashing, so
/// logins reach the database together instead of queueing one by one
/// behind argon2 (production cost would hide a missing lock), and no
/// effect on the load run's own checks.
pub fn cross_instance_checks(
    admin: &Psql,
    database: &str,
    env: &[(&str, String)],
    dir: &Path,
    instances: usize,
) -> anyhow::Result<Vec<Check>> {
    let database = format!("{database}_races");
    let db = admin.fresh(&database)?;
    let mut env = env.to_vec();
    env.extend(super::service::cheap_hashing());
    env.push(("TESSERA_HASH_WORKERS", "4".to_owned()));
    let dir = dir.join("races");
    std::fs::create_dir_all(&dir)?;
    let fleet = Fleet::start(&db.url().to_string(), &env, &dir, instances)?;
    races(&fleet, &db)
}

fn races(fleet: &Fleet, db: &Psql) -> anyhow::Result<Vec<Check>> {
    let urls: Vec<String> = fleet.services.iter().map(|s| s.base_url.clone()).collect();
    let mut checks = vec![refresh_race(&urls)?, shared_login_limit(&urls)?];
    checks.extend(login_bursts(&urls, &fleet.base_url)?);
    checks.push(session_cap(&urls, db)?);
    checks.push(claims(&urls, db)?);
    Ok(checks)
}

/// The `i`th request's instance: round robin.
fn at(urls: &[String], i: usize) -> String {
    urls[i % urls.len()].clone()
}

/// Refresh race: 8 refreshes of one token, alternating instances.
fn refresh_race(urls: &[String]) -> anyhow::Result<Check> {
    let (token, _) = sign_up(&at(urls, 0), "race@fleet.example.com")?;
    let answers = race(8, |i| {
        let (url, token) = (at(urls, i), token.clone());
        move || {
            post(
                &format!("{url}/v1/sessions/current/refresh"),
                Some(&token),
                None,
            )
            .0
        }
    });
    let won = answers.iter().filter(|s| **s == 201).count();
    let lost = answers.iter().filter(|s| **s == 401).count();
    Ok(check(
        "refresh race across instances: one winner",
        won == 1 && lost == 7,
        format!("201: {won}, 401: {lost} of 8"),
    ))
}

/// Rate limit: two wrong passwords past the limit, alternating
/// instances, then the right one.
fn shared_login_limit(urls: &[String]) -> anyhow::Result<Check> {
    let allowed = LIMITS.login_failures as usize;
    sign_up(&at(urls, 0), "limit@fleet.example.com")?;
    let wrong = json!({"email": "limit@fleet.example.com", "password": "not the password"});
    let statuses: Vec<u16> = (0..allowed + 2)
        .map(|i| post(&format!("{}/v1/sessions", at(urls, i)), None, Some(&wrong)).0)
        .collect();
    let right = json!({"email": "limit@fleet.example.com", "password": PASSWORD});
    let then = post(&format!("{}/v1/sessions", at(urls, 1)), None, Some(&right)).0;
    let expected: Vec<u16> = [vec![401; allowed], vec![429; 2]].concat();
    Ok(check(
        "login rate limit shared across instances",
        statuses == expected && then == 429,
        format!("answers {statuses:?}, then the right password: {then}"),
    ))
}

/// Login burst: 40 concurrent wrong passwords for one fresh email, first
/// alternating instances directly, then through nginx: at most the limit checked.
fn login_bursts(urls: &[String], nginx: &str) -> anyhow::Result<Vec<Check>> {
    let allowed = LIMITS.login_failures as usize;
    let mut checks = Vec::new();
    for (via, email) in [
        ("alternating instances", "burst@fleet.example.com"),
        ("through nginx", "burst-nginx@fleet.example.com"),
    ] {
        sign_up(&at(urls, 0), email)?;
        let wrong = json!({"email": email, "password": "not the password"});
        let answers = race(40, |i| {
            let url = if via == "through nginx" {
                nginx.to_owned()
            } else {
                at(urls, i)
            };
            let wrong = wrong.clone();
            move || post(&format!("{url}/v1/sessions"), None, Some(&wrong)).0
        });
        let checked = answers.iter().filter(|s| **s == 401).count();
        let limited = answers.iter().filter(|s| **s == 429).count();
        checks.push(check(
            &format!("login burst {via}: at most {allowed} of 40 checked"),
            checked <= allowed && checked + limited == 40,
            format!("401: {checked}, 429: {limited} of 40"),
        ));
    }
    Ok(checks)
}

/// Session cap: 24 concurrent logins of one user, alternating instances.
fn session_cap(urls: &[String], db: &Psql) -> anyhow::Result<Check> {
    sign_up(&at(urls, 0), "cap@fleet.example.com")?;
    let creds = json!({"email": "cap@fleet.example.com", "password": PASSWORD});
    let logins = race(24, |i| {
        let (url, creds) = (at(urls, i), creds.clone());
        move || post(&format!("{url}/v1/sessions"), None, Some(&creds)).0
    });
    let active = db.number(
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
          WHERE u.email = 'cap@fleet.example.com' AND s.revoked_at IS NULL",
    )?;
    let created = logins.iter().filter(|s| **s == 201).count();
    Ok(check(
        "session cap holds across instances",
        created == 24 && active == i64::from(LIMITS.sessions_per_user),
        format!(
            "{created} of 24 logins answered 201; {active} sessions active (limit {})",
            LIMITS.sessions_per_user
        ),
    ))
}

/// Claims: 60 tasks, 12 claimers of 5 alternating instances.
fn claims(urls: &[String], db: &Psql) -> anyhow::Result<Check> {
    let (worker, _) = sign_up(&at(urls, 0), "claims@fleet.example.com")?;
    let tasks: Vec<Value> = (0..60)
        .map(|i| json!({"title": format!("fleet {i}")}))
        .collect();
    post(
        &format!("{}/v1/tasks", at(urls, 0)),
        Some(&worker),
        Some(&json!({"tasks": tasks})),
    );
    let claims = race(12, |i| {
        let (url, token) = (at(urls, i), worker.clone());
        move || {
            post(
                &format!("{url}/v1/tasks/claim"),
                Some(&token),
                Some(&json!({"count": 5})),
            )
            .1
        }
    });
    let mut ids: Vec<String> = claims
        .iter()
        .flat_map(|body| body["tasks"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    let listed = ids.len();
    ids.sort();
    ids.dedup();
    let assigned = db.number(
        "SELECT count(*) FROM tasks WHERE assigned_to IS NOT NULL AND title LIKE 'fleet %'",
    )?;
    Ok(check(
        "claims across instances: every task once, none lost",
        listed == 60 && ids.len() == 60 && assigned == 60,
        format!(
            "{listed} claimed, {} distinct, {assigned} assigned in the database (60 created)",
            ids.len()
        ),
    ))
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check::new(name, ok, detail)
}

/// Runs `n` jobs on their own threads, released together by a barrier.
fn race<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    n: usize,
    job: impl Fn(usize) -> F,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f) = (barrier.clone(), job(i));
            std::thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}
