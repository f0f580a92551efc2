//! `/metrics` in Prometheus text format.
//!
//! Request counts and latencies are recorded as requests finish (see
//! `telemetry::RequestLog`). Pool, hashing and cleanup figures are read when
//! scraped, from bb8's own statistics and the hasher's and the cleanup's
//! counters, so they cannot drift from what really happened.

use auth_core::auth::SessionService;
use auth_core::db::{DbPool, Pools};
use auth_core::hashing::PasswordHasher;
use auth_core::queue::TaskQueue;
use auth_core::retention::Cleanup;
use prometheus::core::{Atomic, GenericCounter};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The service's metrics registry; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    process: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new(
        pools: &Pools,
        hasher: PasswordHasher,
        cleanup: Cleanup,
        sessions: SessionService,
        queue: TaskQueue,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("tessera".into()), None)?;
        let labels = &["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            labels,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        for (class, pool, max_size) in pools.by_class() {
            registry.register(AtScrape::boxed(PoolCollector::new(
                class,
                pool.clone(),
                max_size,
            )?))?;
        }
        registry.register(AtScrape::boxed(HashCollector::new(hasher)?))?;
        registry.register(AtScrape::boxed(CleanupCollector::new(cleanup)?))?;
        registry.register(AtScrape::boxed(SessionCollector::new(sessions)?))?;
        registry.register(AtScrape::boxed(WaitCollector::new(queue)?))?;
        let build = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Always 1: the running build's version and commit",
            ),
            &["version", "commit"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("AUTH_API_GIT_COMMIT")])
            .set(1);
        registry.register(Box::new(build))?;
        // Process figures under their standard names (`process_*`, as
        // dashboards expect them), in a registry without the prefix.
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            process,
            registry,
            requests,
            latency,
        })
    }

    /// Records one answered request. `route` is the route pattern, never the raw path.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&[self.registry.gather(), self.process.gather()].concat())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Mirrors a monotonic total kept elsewhere into a Prometheus counter.
fn mirror<P: Atomic>(counter: &GenericCounter<P>, total: P::T) {
    let current = counter.get();
    if total < current {
        counter.reset();
        counter.inc_by(total);
    } else {
        let mut delta = total;
        delta -= current;
        counter.inc_by(delta);
    }
}

/// Figures read from elsewhere when scraped: refreshed, then collected.
trait Sampled: Send + Sync {
    fn refresh(&self);
    fn parts(&self) -> Vec<&dyn Collector>;
}

/// Serialises scrapes of a [`Sampled`]: mirroring a counter is read-then-add.
struct AtScrape<S> {
    sampled: S,
    scrape: Mutex<()>,
}

impl<S: Sampled> AtScrape<S> {
    fn boxed(sampled: S) -> Box<Self> {
        Box::new(AtScrape {
            sampled,
            scrape: Mutex::new(()),
        })
    }
}

impl<S: Sampled> Collector for AtScrape<S> {
    fn desc(&self) -> Vec<&Desc> {
        self.sampled
            .parts()
            .into_iter()
            .flat_map(|c| c.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _guard = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.sampled.refresh();
        self.sampled
            .parts()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

/// The bb8 pool, read at scrape time.
struct PoolCollector {
    pool: DbPool,
    max: IntGauge,
    connections: IntGauge,
    idle: IntGauge,
    waiting: IntGauge,
    gets: IntCounterVec,
    wait_seconds: Counter,
    created: IntCounter,
    closed: IntCounterVec,
}

impl PoolCollector {
    /// `class`: the bulkhead this pool serves, the `pool` label of its series.
    fn new(class: &str, pool: DbPool, max_size: u32) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("pool", class);
        let max = IntGauge::with_opts(opts("db_pool_max_connections", "Configured pool size"))?;
        max.set(i64::from(max_size));
        Ok(PoolCollector {
            pool,
            max,
            connections: IntGauge::with_opts(opts(
                "db_pool_connections",
                "Connections open (idle or in use)",
            ))?,
            idle: IntGauge::with_opts(opts(
                "db_pool_idle_connections",
                "Connections open and idle",
            ))?,
            waiting: IntGauge::with_opts(opts(
                "db_pool_waiting",
                "Checkouts waiting for a connection right now",
            ))?,
            gets: IntCounterVec::new(
                opts(
                    "db_pool_checkouts_total",
                    "Finished checkouts: direct (a connection was free), waited, timed_out",
                ),
                &["outcome"],
            )?,
            wait_seconds: Counter::with_opts(opts(
                "db_pool_wait_seconds_total",
                "Time checkouts spent waiting for a connection",
            ))?,
            created: IntCounter::with_opts(opts(
                "db_pool_connections_created_total",
                "Connections the pool opened",
            ))?,
            closed: IntCounterVec::new(
                opts(
                    "db_pool_connections_closed_total",
                    "Connections the pool closed, by reason",
                ),
                &["reason"],
            )?,
        })
    }
}

impl Sampled for PoolCollector {
    fn refresh(&self) {
        let state = self.pool.state();
        let stats = &state.statistics;
        self.connections.set(i64::from(state.connections));
        self.idle.set(i64::from(state.idle_connections));
        let finished = stats.get_direct + stats.get_waited + stats.get_timed_out;
        self.waiting
            .set(i64::try_from(stats.get_started.saturating_sub(finished)).unwrap_or(i64::MAX));
        for (outcome, total) in [
            ("direct", stats.get_direct),
            ("waited", stats.get_waited),
            ("timed_out", stats.get_timed_out),
        ] {
            mirror(&self.gets.with_label_values(&[outcome]), total);
        }
        mirror(&self.wait_seconds, stats.get_wait_time.as_secs_f64());
        mirror(&self.created, stats.connections_created);
        for (reason, total) in [
            ("broken", stats.connections_closed_broken),
            ("invalid", stats.connections_closed_invalid),
            ("max_lifetime", stats.connections_closed_max_lifetime),
            ("idle_timeout", stats.connections_closed_idle_timeout),
        ] {
            mirror(&self.closed.with_label_values(&[reason]), total);
        }
    }

    fn parts(&self) -> Vec<&dyn Collector> {
        vec![
            &self.max,
            &self.connections,
            &self.idle,
            &self.waiting,
            &self.gets,
            &self.wait_seconds,
            &self.created,
            &self.closed,
        ]
    }
}

/// The bounded argon2 pool, read at scrape time.
struct HashCollector {
    hasher: PasswordHasher,
    workers: IntGauge,
    capacity: IntGauge,
    queued: IntGauge,
    rejected: IntCounterVec,
    completed: IntCounter,
    busy_seconds: Counter,
}

impl HashCollector {
    fn new(hasher: PasswordHasher) -> prometheus::Result<Self> {
        let workers = IntGauge::new(
            "password_hash_workers",
            "Hashes that may run at once (the hashing pool's size)",
        )?;
        workers.set(i64::try_from(hasher.workers()).unwrap_or(i64::MAX));
        let capacity = IntGauge::new(
            "password_hash_queue_capacity",
            "Hash or verify calls that may wait for a worker before new ones get 503",
        )?;
        capacity.set(i64::try_from(hasher.queue_capacity()).unwrap_or(i64::MAX));
        Ok(HashCollector {
            hasher,
            workers,
            capacity,
            rejected: IntCounterVec::new(
                Opts::new(
                    "password_hash_rejections_total",
                    "Logins and registrations answered 503: queue_full, or deadline (no worker in time)",
                ),
                &["reason"],
            )?,
            queued: IntGauge::new(
                "password_hash_queue_depth",
                "Hash or verify calls waiting for a hashing worker",
            )?,
            completed: IntCounter::new("password_hashes_total", "Hash and verify calls completed")?,
            busy_seconds: Counter::new(
                "password_hash_seconds_total",
                "Time hashing workers spent hashing; divide by password_hashes_total for the mean",
            )?,
        })
    }
}

impl Sampled for HashCollector {
    fn refresh(&self) {
        let stats = self.hasher.stats();
        self.queued
            .set(i64::try_from(stats.queued.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        mirror(&self.completed, stats.completed.load(Ordering::Relaxed));
        for (reason, total) in [
            ("queue_full", &stats.rejected_queue_full),
            ("deadline", &stats.rejected_deadline),
        ] {
            mirror(
                &self.rejected.with_label_values(&[reason]),
                total.load(Ordering::Relaxed),
            );
        }
        mirror(
            &self.busy_seconds,
            stats.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }

    fn parts(&self) -> Vec<&dyn Collector> {
        vec![
            &self.workers,
            &self.capacity,
            &self.queued,
            &self.rejected,
            &self.completed,
            &self.busy_seconds,
        ]
    }
}

/// The retention cleanup, read at scrape time.
struct CleanupCollector {
    cleanup: Cleanup,
    purged: IntCounterVec,
    last_run: IntGauge,
}

impl CleanupCollector {
    fn new(cleanup: Cleanup) -> prometheus::Result<Self> {
        Ok(CleanupCollector {
            cleanup,
            purged: IntCounterVec::new(
                Opts::new(
                    "cleanup_purged_rows_total",
                    "Rows the retention cleanup of this instance deleted, by table",
                ),
                &["table"],
            )?,
            last_run: IntGauge::new(
                "cleanup_last_run_timestamp_seconds",
                "Unix time of this instance's last completed cleanup run (0: none yet)",
            )?,
        })
    }
}

impl Sampled for CleanupCollector {
    fn refresh(&self) {
        let stats = self.cleanup.stats();
        for (table, total) in [
            ("sessions", &stats.sessions),
            ("api_keys", &stats.api_keys),
            ("login_attempts", &stats.login_attempts),
            ("tasks", &stats.tasks),
        ] {
            mirror(
                &self.purged.with_label_values(&[table]),
                total.load(Ordering::Relaxed),
            );
        }
        self.last_run
            .set(stats.last_run_unix.load(Ordering::Relaxed));
    }

    fn parts(&self) -> Vec<&dyn Collector> {
        vec![&self.purged, &self.last_run]
    }
}

/// Long-poll claims, read at scrape time.
struct WaitCollector {
    queue: TaskQueue,
    waiting: IntGauge,
    under_way: IntGauge,
    listening: IntGauge,
    handed_back: IntCounter,
}

impl WaitCollector {
    fn new(queue: TaskQueue) -> prometheus::Result<Self> {
        Ok(WaitCollector {
            queue,
            waiting: IntGauge::new(
                "task_claims_waiting",
                "Long-poll claims parked right now (they hold no pooled connection)",
            )?,
            under_way: IntGauge::new(
                "task_long_polls",
                "Long-poll claims under way (waiting or trying), the number the bounds on waiters count",
            )?,
            listening: IntGauge::new(
                "task_wakeups_listening",
                "1 while the LISTEN connection for long-poll wake-ups is up",
            )?,
            handed_back: IntCounter::new(
                "task_claims_handed_back_total",
                "Tasks claimed for a client that hung up before its answer, released at once",
            )?,
        })
    }
}

impl Sampled for WaitCollector {
    fn refresh(&self) {
        let wakeups = self.queue.wakeups();
        self.waiting.set(wakeups.waiting() as i64);
        self.under_way.set(wakeups.under_way() as i64);
        self.listening.set(i64::from(wakeups.listening()));
        mirror(&self.handed_back, self.queue.handed_back());
    }

    fn parts(&self) -> Vec<&dyn Collector> {
        vec![
            &self.waiting,
            &self.under_way,
            &self.listening,
            &self.handed_back,
        ]
    }
}

/// Rotated-away tokens presented again, and logins waiting in their
/// email's line, read at scrape time.
struct SessionCollector {
    sessions: SessionService,
    reused: IntCounterVec,
    logins_waiting: IntGauge,
}

impl SessionCollector {
    fn new(sessions: SessionService) -> prometheus::Result<Self> {
        Ok(SessionCollector {
            sessions,
            logins_waiting: IntGauge::new(
                "logins_waiting",
                "Logins waiting in their email's line: for their turn, or for a check in flight to end",
            )?,
            reused: IntCounterVec::new(
                Opts::new(
                    "token_reuse_total",
                    "Rotated-away tokens presented again to this instance: within the grace \
                     window (a plain 401) or past it (taken for stolen: the session revoked)",
                ),
                &["window"],
            )?,
        })
    }
}

impl Sampled for SessionCollector {
    fn refresh(&self) {
        self.logins_waiting
            .set(self.sessions.login_limit().waiting() as i64);
        let stats = self.sessions.reuse_stats();
        for (window, total) in [
            ("within_grace", &stats.within_grace),
            ("past_grace", &stats.past_grace),
        ] {
            mirror(
                &self.reused.with_label_values(&[window]),
                total.load(Ordering::Relaxed),
            );
        }
    }

    fn parts(&self) -> Vec<&dyn Collector> {
        vec![&self.reused, &self.logins_waiting]
    }
}
