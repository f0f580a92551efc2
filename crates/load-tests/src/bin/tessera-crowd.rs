//! `tessera-crowd`: crowds against a running service, for the chaos tier's
//! crowd cases (`cargo xtask chaos --case login-crowd ...`). Each scenario
//! sends its crowd over loopback, bounded in count and time, and prints one
//! JSON object of what it saw on stdout, its last line; before it, lines
//! `{"event": "..."}` mark the moments the caller measures the database's
//! work between (through a counting proxy in front of it).

use clap::Parser;
use harness::latency::Figures;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Barrier;

#[derive(Parser)]
enum Scenario {
    /// `n` logins of one email released together (the email is registered
    /// first); with `--wrong`, each with a wrong password of its own.
    Logins {
        #[arg(long)]
        base: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        wrong: bool,
    },
    /// An email is made limited, then `n` logins of it with the right
    /// password arrive together while another user validates.
    Locked {
        #[arg(long)]
        base: String,
        #[arg(long)]
        n: usize,
        /// The service's login limit.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// `n` long polls wait `wait_ms` on an empty queue while a worker
    /// heartbeats a task it holds and another user validates, both paced.
    Waiters {
        #[arg(long)]
        base: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        wait_ms: u64,
        /// The service's bound on long polls per session.
        #[arg(long, default_value_t = 100)]
        per_credential: usize,
    },
    /// `n` long polls whose clients hang up while they wait; then `n`
    /// tasks are created.
    Hangups {
        #[arg(long)]
        base: String,
        #[arg(long)]
        n: usize,
    },
    /// `n` creates at once, each `size` bytes padded with an unknown member.
    Padded {
        #[arg(long)]
        base: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        size: usize,
        /// Where they are sent (default `/v1/tasks`); a route that never
        /// reads its body gives the cost of the bytes alone.
        #[arg(long, default_value = "/v1/tasks")]
        path: String,
    },
}

const PASSWORD: &str = "crowd password 1";

/// Long polls opened at a time, a wave every [`WAVE_EVERY`]: a listen
/// backlog is finite, and two shared cores set up connections at their pace.
const WAVE: usize = 100;
const WAVE_EVERY: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = match Scenario::parse() {
        Scenario::Logins {
            base,
            email,
            n,
            wrong,
        } => logins(&base, &email, n, wrong).await?,
        Scenario::Locked { base, n, limit } => locked(&base, n, limit).await?,
        Scenario::Waiters {
            base,
            n,
            wait_ms,
            per_credential,
        } => waiters(&base, n, wait_ms, per_credential).await?,
        Scenario::Hangups { base, n } => hangups(&base, n).await?,
        Scenario::Padded {
            base,
            n,
            size,
            path,
        } => padded(&base, n, size, &path).await?,
    };
    println!("{out}");
    Ok(())
}

/// A client whose every request opens a connection of its own (a crowd's
/// members are strangers to each other).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("building the HTTP client: {e}"))
}

/// A client that keeps its connection, as a working user's does (the
/// validator, the worker's heartbeats).
fn steady_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("building the HTTP client: {e}"))
}

async fn post(c: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = c.post(url).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// One login: its status, its problem code (if any), how long it took.
async fn log_in(c: &reqwest::Client, url: String, body: Value) -> (u16, String, Duration) {
    let sent = Instant::now();
    let (status, body) = post(c, url, None, body).await;
    let code = body["code"].as_str().unwrap_or("").to_owned();
    (status, code, sent.elapsed())
}

/// Registers `email` (if new) and logs in; the session's token.
async fn sign_up(base: &str, email: &str) -> anyhow::Result<String> {
    let c = client();
    let creds = json!({"email": email, "password": PASSWORD});
    post(&c, format!("{base}/v1/users"), None, creds.clone()).await;
    let (status, body) = post(&c, format!("{base}/v1/sessions"), None, creds).await;
    anyhow::ensure!(status == 201, "logging in {email}: {status} {body}");
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token for {email}"))
}

fn tally<K: ToString>(keys: impl Iterator<Item = K>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for k in keys {
        *out.entry(k.to_string()).or_default() += 1;
    }
    out
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// `n` tasks sent together behind a barrier, each its own request.
async fn together<T, F, Fut>(n: usize, each: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = each(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| panic!("a crowd member failed: {e}")),
        );
    }
    out
}

async fn logins(base: &str, email: &str, n: usize, wrong: bool) -> anyhow::Result<Value> {
    sign_up(base, email).await?;
    let c = client();
    let started = Instant::now();
    let answers = together(n, |i| {
        let (c, url) = (c.clone(), format!("{base}/v1/sessions"));
        let password = if wrong {
            format!("wrong password {i}")
        } else {
            PASSWORD.to_owned()
        };
        let body = json!({"email": email, "password": password});
        async move { log_in(&c, url, body).await }
    })
    .await;
    Ok(json!({
        "n": n,
        "statuses": tally(answers.iter().map(|a| a.0)),
        "codes": tally(answers.iter().filter(|a| !a.1.is_empty()).map(|a| a.1.clone())),
        "latency": Figures::of(answers.iter().map(|a| ms(a.2)).collect()),
        "wall_ms": ms(started.elapsed()),
    }))
}

/// Marks a moment the caller measures from or to.
fn event(name: &str) {
    use std::io::Write as _;
    println!("{}", json!({ "event": name }));
    let _ = std::io::stdout().flush();
}

/// A paced loop of one request kind until `until`; each latency in ms and
/// the statuses seen.
async fn paced<F, Fut>(every: Duration, until: Instant, mut send: F) -> (Vec<u32>, Vec<u16>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u16>,
{
    let (mut latency, mut statuses) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(every);
    while Instant::now() < until {
        tick.tick().await;
        let sent = Instant::now();
        statuses.push(send().await);
        latency.push(ms(sent.elapsed()));
    }
    (latency, statuses)
}

async fn validate(c: &reqwest::Client, base: &str, token: &str) -> u16 {
    match c
        .get(format!("{base}/v1/sessions/current"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(res) => res.status().as_u16(),
        Err(_) => 0,
    }
}

async fn locked(base: &str, n: usize, limit: usize) -> anyhow::Result<Value> {
    let email = "locked@example.com";
    sign_up(base, email).await?;
    let validator = sign_up(base, "validator@example.com").await?;
    let c = client();
    let url = format!("{base}/v1/sessions");
    for i in 0..=limit {
        let body = json!({"email": email, "password": format!("guess {i}")});
        post(&c, url.clone(), None, body).await;
    }
    // Validations on a thread and runtime of their own (the crowd's
    // connections do not delay them on this side), from shortly before the
    // crowd to shortly after it.
    let crowd_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let validations = {
        let (base, over) = (base.to_owned(), crowd_over.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("a runtime for the validations: {e}"));
            rt.block_on(async move {
                let c = steady_client();
                let (mut latency, mut statuses) = (Vec::new(), Vec::new());
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut after: Option<Instant> = None;
                while after.is_none_or(|t| t.elapsed() < Duration::from_millis(300)) {
                    tick.tick().await;
                    let sent = Instant::now();
                    statuses.push(validate(&c, &base, &validator).await);
                    latency.push(ms(sent.elapsed()));
                    if after.is_none() && over.load(std::sync::atomic::Ordering::SeqCst) {
                        after = Some(Instant::now());
                    }
                }
                (latency, statuses)
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    event("crowd_start");
    let crowd_started = Instant::now();
    let answers = together(n, |_| {
        let (c, url) = (c.clone(), url.clone());
        let body = json!({"email": email, "password": PASSWORD});
        async move { log_in(&c, url, body).await }
    })
    .await;
    let wall = crowd_started.elapsed();
    event("crowd_end");
    crowd_over.store(true, std::sync::atomic::Ordering::SeqCst);
    let (v_latency, v_statuses) = validations
        .join()
        .map_err(|_| anyhow::anyhow!("the validations panicked"))?;
    Ok(json!({
        "n": n,
        "statuses": tally(answers.iter().map(|a| a.0)),
        "limited": answers.iter().filter(|a| a.0 == 429 && a.1 == "too_many_attempts").count(),
        "latency": Figures::of(answers.iter().map(|a| ms(a.2)).collect()),
        "wall_ms": ms(wall),
        "validations": Figures::of(v_latency),
        "validation_statuses": tally(v_statuses.iter().copied()),
    }))
}

/// The service's `/metrics` value of `name` (summed over labels).
async fn metric(c: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(res) = c.get(format!("{base}/metrics")).send().await else {
        return f64::NAN;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (at most `limit`) until `/metrics` says `name` satisfies `ok`.
async fn until_metric(
    c: &reqwest::Client,
    base: &str,
    name: &str,
    limit: Duration,
    ok: impl Fn(f64) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok(metric(c, base, name).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn waiters(
    base: &str,
    n: usize,
    wait_ms: u64,
    per_credential: usize,
) -> anyhow::Result<Value> {
    let c = client();
    // Enough sessions for the bound per credential, each user's own.
    let mut tokens = Vec::new();
    for i in 0..n.div_ceil(per_credential.max(1)) {
        tokens.push(sign_up(base, &format!("waiter{i}@example.com")).await?);
    }
    // A worker holding one task (claimed before anyone waits), to heartbeat.
    let worker = sign_up(base, "worker@example.com").await?;
    let validator = sign_up(base, "validator@example.com").await?;
    let (status, created) = post(
        &c,
        format!("{base}/v1/tasks"),
        Some(&worker),
        json!({"tasks": [{"title": "held"}]}),
    )
    .await;
    anyhow::ensure!(status == 201, "creating the held task: {status} {created}");
    let (status, claimed) = post(
        &c,
        format!("{base}/v1/tasks/claim"),
        Some(&worker),
        json!({"count": 1}),
    )
    .await;
    anyhow::ensure!(
        claimed["claimed"] == 1,
        "claiming the held task: {status} {claimed}"
    );
    let held = claimed["tasks"][0]["id"].as_str().unwrap_or("").to_owned();

    // A warm service: its pools hold connections, as under any load (a
    // cold pool opens them during the first wave, and those waits start late).
    together(20, |i| {
        let (c, url) = (c.clone(), format!("{base}/v1/tasks/claim"));
        let token = tokens[i % tokens.len()].clone();
        async move { post(&c, url, Some(&token), json!({"count": 1})).await }
    })
    .await;
    // The crowd, opened in waves.
    let ramp_started = Instant::now();
    let mut waits = Vec::with_capacity(n);
    for (i, chunk) in (0..n).collect::<Vec<_>>().chunks(WAVE).enumerate() {
        if i > 0 {
            tokio::time::sleep(WAVE_EVERY).await;
        }
        for &w in chunk {
            let (c, url) = (c.clone(), format!("{base}/v1/tasks/claim"));
            let token = tokens[w % tokens.len()].clone();
            waits.push(tokio::spawn(async move {
                let sent = Instant::now();
                let (status, body) = post(
                    &c,
                    url,
                    Some(&token),
                    json!({"count": 1, "wait_ms": wait_ms}),
                )
                .await;
                (status, body["claimed"].as_i64(), sent.elapsed(), sent)
            }));
        }
    }
    let parked = until_metric(
        &c,
        base,
        "tessera_task_claims_waiting",
        Duration::from_secs(30),
        |w| w >= n as f64,
    )
    .await;
    let ramp = ramp_started.elapsed();
    event("window_start");
    let window_started = Instant::now();
    // The window ends before the first wait does.
    let first_end = ramp_started + Duration::from_millis(wait_ms);
    let window_end = first_end - Duration::from_millis(300);
    let steady = steady_client();
    let heartbeats = {
        let (c, base, worker, held) = (
            steady.clone(),
            base.to_owned(),
            worker.clone(),
            held.clone(),
        );
        tokio::spawn(async move {
            paced(Duration::from_millis(50), window_end, || {
                let c = c.clone();
                let url = format!("{base}/v1/tasks/{held}/heartbeat");
                let worker = worker.clone();
                async move {
                    match c.post(url).bearer_auth(worker).send().await {
                        Ok(res) => res.status().as_u16(),
                        Err(_) => 0,
                    }
                }
            })
            .await
        })
    };
    let validations = {
        let (c, base) = (steady.clone(), base.to_owned());
        tokio::spawn(async move {
            paced(Duration::from_millis(50), window_end, || {
                validate(&c, &base, &validator)
            })
            .await
        })
    };
    let (hb_latency, hb_statuses) = heartbeats.await?;
    let (v_latency, v_statuses) = validations.await?;
    let window = window_started.elapsed();
    event("window_end");
    let mut ends = Vec::with_capacity(n);
    for w in waits {
        ends.push(w.await?);
    }
    let lateness: Vec<u32> = ends
        .iter()
        .map(|e| ms(e.2.saturating_sub(Duration::from_millis(wait_ms))))
        .collect();
    let early = ends
        .iter()
        .filter(|e| e.2 < Duration::from_millis(wait_ms))
        .count();
    Ok(json!({
        "n": n,
        "sessions": tokens.len(),
        "all_parked": parked,
        "ramp_ms": ms(ramp),
        "statuses": tally(ends.iter().map(|e| e.0)),
        "claimed_none": ends.iter().filter(|e| e.1 == Some(0)).count(),
        "wait_end_lateness": Figures::of(lateness),
        "ended_early": early,
        "window_ms": ms(window),
        // Round trips of the side traffic among the measured ones: a
        // validation is one, a heartbeat two (its session check, its write).
        "side_round_trips": v_statuses.iter().filter(|s| **s == 200).count()
            + 2 * hb_statuses.iter().filter(|s| **s == 200).count(),
        "heartbeats": Figures::of(hb_latency),
        "heartbeat_statuses": tally(hb_statuses.iter().copied()),
        "validations": Figures::of(v_latency),
        "validation_statuses": tally(v_statuses.iter().copied()),
    }))
}

async fn hangups(base: &str, n: usize) -> anyhow::Result<Value> {
    let c = client();
    let token = sign_up(base, "hangup@example.com").await?;
    let host = base.trim_start_matches("http://").to_owned();
    let body = json!({"count": 1, "wait_ms": 20000}).to_string();
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(&host).await?;
        let request = format!(
            "POST /v1/tasks/claim HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await?;
        streams.push(s);
    }
    let parked = until_metric(
        &c,
        base,
        "tessera_task_claims_waiting",
        Duration::from_secs(10),
        |w| w >= n as f64,
    )
    .await;
    // They hang up.
    let hung_up = Instant::now();
    drop(streams);
    let dropped = until_metric(
        &c,
        base,
        "tessera_task_long_polls",
        Duration::from_secs(5),
        |w| w == 0.0,
    )
    .await;
    let noticed = hung_up.elapsed();
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"title": format!("after {i}")}))
        .collect();
    let (status, created) = post(
        &c,
        format!("{base}/v1/tasks"),
        Some(&token),
        json!({"tasks": tasks}),
    )
    .await;
    anyhow::ensure!(status == 201, "creating tasks: {status} {created}");
    let created_at = Instant::now();
    // Claimable: unassigned with no attempt spent, read through the API.
    let mut claimable = 0;
    let mut checked_after = Duration::ZERO;
    while created_at.elapsed() < Duration::from_secs(1) {
        let listed: Value = c
            .get(format!("{base}/v1/tasks?status=unassigned&limit=1000"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        claimable = listed["tasks"]
            .as_array()
            .map_or(0, |t| t.iter().filter(|t| t["attempt"] == 0).count());
        checked_after = created_at.elapsed();
        if claimable == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a waiter that was never dropped time to take them, then look again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let assigned = c
        .get(format!("{base}/v1/tasks?status=assigned&limit=1000"))
        .bearer_auth(&token)
        .send()
        .await?
        .json::<Value>()
        .await?["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    Ok(json!({
        "n": n,
        "all_parked": parked,
        "dropped_by_the_service": dropped,
        "noticed_ms": ms(noticed),
        "claimable_within_1s": claimable,
        "checked_after_ms": ms(checked_after),
        "assigned_after": assigned,
    }))
}

async fn padded(base: &str, n: usize, size: usize, path: &str) -> anyhow::Result<Value> {
    let token = sign_up(base, "padded@example.com").await?;
    let mut body = String::from(r#"{"tasks":[{"title":"x"}],"pad":[0"#);
    // As large as `size` allows, with the closing "]}".
    while body.len() + ",0]}".len() <= size {
        body.push_str(",0");
    }
    body.push_str("]}");
    let body = Arc::new(body);
    let c = client();
    let started = Instant::now();
    let answers = together(n, |_| {
        let (c, url, token, body) = (
            c.clone(),
            format!("{base}{path}"),
            token.clone(),
            body.clone(),
        );
        async move {
            let sent = Instant::now();
            let res = c
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.as_bytes().to_vec())
                .send()
                .await;
            let status = match res {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let _ = res.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            (status, sent.elapsed())
        }
    })
    .await;
    Ok(json!({
        "n": n,
        "size": body.len(),
        "statuses": tally(answers.iter().map(|a| a.0)),
        "latency": Figures::of(answers.iter().map(|a| ms(a.1)).collect()),
        "wall_ms": ms(started.elapsed()),
    }))
}
