//! Password hashing off the async runtime, on a bounded pool of its own.
//!
//! argon2id is deliberately expensive (~20-50 ms of one core). Run on the
//! async workers it would stall every other request; run on tokio's blocking
//! pool a login storm would take every core, and each blocking thread that
//! ever hashed keeps its 19 MiB buffers in a malloc arena. So hashing runs on
//! `workers` dedicated threads (default: all cores but one, so request
//! handling always has a core), the rest queue, and the queue depth is
//! exported as a metric. The queue is bounded twice: by a capacity (a job
//! that finds it full is refused at once) and by a deadline (a job that has
//! not reached a worker in time is refused and its work skipped), so a flood
//! of logins gets fast 503s instead of a wait that grows with the flood.

use crate::config::{HashParams, HashPoolConfig};
use crate::domain::Password;
use argon2::password_hash::{
    PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Hashing failed for a reason other than a wrong password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HashError {
    /// The queue was at capacity: refused without waiting.
    #[error("the password-hash queue is full")]
    QueueFull,
    /// The login could not be checked within its deadline (no worker took
    /// the job, or the checks ahead of it did not end): refused, work skipped.
    #[error("the password could not be checked within the deadline")]
    DeadlineExceeded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl HashError {
    /// Overload rather than a fault: worth a retry later.
    pub fn is_overload(&self) -> bool {
        matches!(self, HashError::QueueFull | HashError::DeadlineExceeded)
    }
}

fn failed(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

/// Live figures for /metrics.
#[derive(Debug, Default)]
pub struct HashStats {
    /// Hash or verify calls waiting for a worker right now.
    pub queued: AtomicUsize,
    pub completed: AtomicU64,
    pub busy_micros: AtomicU64,
    /// Jobs refused because the queue was full.
    pub rejected_queue_full: AtomicU64,
    /// Jobs refused because no worker took them within the deadline.
    pub rejected_deadline: AtomicU64,
}

/// The bounded argon2id hasher shared by all requests.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    jobs: mpsc::Sender<Job>,
    workers: usize,
    queue_capacity: usize,
    wait_deadline: Duration,
    stats: Arc<HashStats>,
    /// A real hash of a random password with the same parameters: verifying
    /// against it makes an unknown email cost what a known one costs.
    dummy_hash: Arc<str>,
    /// Checks in flight, by [`Checks::key`]: one argon2 run serves every
    /// identical check that arrives while it runs.
    checks: Arc<Checks>,
}

type SharedCheck =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<bool, HashError>>>;

/// Verifications under way, keyed by what they compare. Many logins of one
/// user with the same password at once (tabs, a script, the contract's
/// session-cap scenario) cost one argon2 run per round, not one each, so
/// they fit in the login deadline. The key includes the email, so logins
/// of different emails never share (their timing says nothing of whether
/// the emails exist), and a per-process secret, so no key is a password's
/// plain digest.
struct Checks {
    secret: [u8; 32],
    under_way: Mutex<std::collections::HashMap<[u8; 32], SharedCheck>>,
}

impl Checks {
    fn new() -> Result<Checks, HashError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(failed)?;
        Ok(Checks {
            secret,
            under_way: Mutex::default(),
        })
    }

    fn key(&self, subject: &str, password: &str, stored: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        digest.update(self.secret);
        for part in [subject, stored, password] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        digest.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], SharedCheck>> {
        self.under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a finished check off the list, however its owner ended.
struct CheckOwner<'a> {
    checks: &'a Checks,
    key: [u8; 32],
}

impl Drop for CheckOwner<'_> {
    fn drop(&mut self) {
        self.checks.lock().remove(&self.key);
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(params: HashParams, pool: HashPoolConfig) -> Result<PasswordHasher, HashError> {
        or_fault!(HashQueueUnbounded => PasswordHasher::with(params, crate::faults::unbounded(pool)));
        PasswordHasher::with(params, pool)
    }

    fn with(params: HashParams, pool: HashPoolConfig) -> Result<PasswordHasher, HashError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(failed)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let workers = pool.workers.unwrap_or_else(default_workers).max(1);
        let queue_capacity = pool
            .queue_capacity
            .unwrap_or(workers * HashPoolConfig::QUEUE_PER_WORKER);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(format!("{}", uuid::Uuid::new_v4()).as_bytes(), &salt)
            .map_err(failed)?
            .to_string();
        Ok(PasswordHasher {
            argon2: Arc::new(argon2),
            jobs: spawn_workers(workers)?,
            workers,
            queue_capacity,
            wait_deadline: pool.wait_deadline,
            stats: Arc::default(),
            dummy_hash: dummy_hash.into(),
            checks: Arc::new(Checks::new()?),
        })
    }

    /// The longest a login or registration waits to be checked.
    pub fn wait_deadline(&self) -> Duration {
        self.wait_deadline
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Jobs that may wait for a worker before new ones are refused.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    pub fn stats(&self) -> &HashStats {
        &self.stats
    }

    /// Takes a place in the queue now, or refuses at once when it is full;
    /// the deadline runs from here.
    pub fn reserve(&self) -> Result<HashSlot, HashError> {
        self.reserve_until(tokio::time::Instant::now() + self.wait_deadline)
    }

    /// Takes a place in the queue now, or refuses at once when it is full.
    /// A login reserves before it touches the database, so a flood is shed
    /// before it can crowd the pool; its job must reach a worker before
    /// `deadline` (the login's own, counted from its start).
    pub fn reserve_until(&self, deadline: tokio::time::Instant) -> Result<HashSlot, HashError> {
        let stats = &self.stats;
        if stats.queued.fetch_add(1, Ordering::SeqCst) >= self.queue_capacity {
            stats.queued.fetch_sub(1, Ordering::SeqCst);
            stats.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(HashError::QueueFull);
        }
        Ok(HashSlot {
            hasher: self.clone(),
            deadline,
            queued: true,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for storage.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        self.reserve()?.hash(password).await
    }

    /// Whether `password` matches `stored`; costs one full verification.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, HashError> {
        self.reserve()?.verify(password, stored).await
    }

    /// Spends exactly what a real verification spends, and returns nothing:
    /// for unknown emails and impossible passwords.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        self.reserve()?.verify_dummy(password).await
    }
}

/// A place in the hash queue, held from [`PasswordHasher::reserve`] until a
/// worker takes the job (or the slot is dropped unused).
#[derive(Debug)]
#[must_use = "a reserved slot holds a place in the hash queue"]
pub struct HashSlot {
    hasher: PasswordHasher,
    /// The job must reach a worker before this.
    deadline: tokio::time::Instant,
    /// Still counted in the queue by this slot (not yet handed to a worker).
    queued: bool,
}

impl HashSlot {
    pub async fn hash(self, password: &Password) -> Result<String, HashError> {
        let argon2 = self.hasher.argon2.clone();
        let secret = password.expose().to_owned();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(secret.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(failed)
        })
        .await?
    }

    pub fn verify(
        self,
        password: &str,
        stored: &str,
    ) -> impl Future<Output = Result<bool, HashError>> + Send + 'static {
        let argon2 = self.hasher.argon2.clone();
        let secret = password.to_owned();
        let stored = stored.to_owned();
        // Owns what it needs: a shared check outlives the login that began it.
        async move {
            self.run(move || {
                let parsed = PasswordHash::new(&stored).map_err(failed)?;
                Ok(argon2.verify_password(secret.as_bytes(), &parsed).is_ok())
            })
            .await?
        }
    }

    pub async fn verify_dummy(self, password: &str) -> Result<(), HashError> {
        let dummy = self.hasher.dummy_hash.clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    /// [`HashSlot::verify`] for a login of `subject` (its email): a check
    /// of the same password against the same hash for the same subject
    /// already under way is joined instead of run again (this slot's
    /// place goes back), and answers both.
    pub async fn verify_for(
        self,
        subject: &str,
        password: &str,
        stored: &str,
    ) -> Result<bool, HashError> {
        let checks = self.hasher.checks.clone();
        let key = checks.key(subject, password, stored);
        let (check, _owner) = {
            let mut under_way = checks.lock();
            match under_way.get(&key) {
                Some(check) => {
                    // Joined: this slot's place in the queue goes back now.
                    drop(self);
                    (check.clone(), None)
                }
                None => {
                    let check =
                        futures_util::FutureExt::shared(Box::pin(self.verify(password, stored))
                            as futures_util::future::BoxFuture<'static, _>);
                    under_way.insert(key, check.clone());
                    let owner = CheckOwner {
                        checks: &checks,
                        key,
                    };
                    (check, Some(owner))
                }
            }
        };
        check.await
    }

    /// [`HashSlot::verify_dummy`] for a login of `subject`, shared as
    /// [`HashSlot::verify_for`] shares.
    pub async fn verify_dummy_for(self, subject: &str, password: &str) -> Result<(), HashError> {
        let dummy = self.hasher.dummy_hash.clone();
        self.verify_for(subject, password, &dummy).await.map(|_| ())
    }

    /// Hands `work` to a worker and waits for it, refusing once the
    /// deadline (counted from the reservation) passes before a worker took
    /// it; the caller waits on no lock and holds no connection.
    async fn run<T: Send + 'static>(
        mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let stats = self.hasher.stats.clone();
        let (started_tx, started) = oneshot::channel::<()>();
        let (reply, answer) = oneshot::channel();
        let job_stats = stats.clone();
        let job: Job = Box::new(move || {
            job_stats.queued.fetch_sub(1, Ordering::SeqCst);
            // The caller gave up (deadline) or went away: skip the work.
            if reply.is_closed() || started_tx.send(()).is_err() {
                return;
            }
            let began = Instant::now();
            let out = work();
            job_stats
                .busy_micros
                .fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
            job_stats.completed.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(out);
        });
        if self.hasher.jobs.send(job).is_err() {
            return Err(failed("hashing workers are gone"));
        }
        // From here the job's own decrement accounts for this place.
        self.queued = false;
        let deadline = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(deadline, started).await {
            Ok(Ok(())) => answer.await.map_err(|_| failed("a hashing worker failed")),
            Ok(Err(_)) => Err(failed("a hashing worker failed")),
            Err(_) => {
                stats.rejected_deadline.fetch_add(1, Ordering::Relaxed);
                Err(HashError::DeadlineExceeded)
            }
        }
    }
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        if self.queued {
            self.hasher.stats.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// All cores but one (at least one): hashing never takes the last core.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// Starts `n` named hashing threads sharing one job queue. They exit when the
/// last `PasswordHasher` clone (and so the last sender) is dropped.
fn spawn_workers(n: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..n {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    let next = receiver
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    match next {
                        // A panicking hash fails its own caller (its reply
                        // is dropped), not the worker.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => break,
                    }
                }
            })
            .map_err(|e| failed(format!("starting a hashing thread: {e}")))?;
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::{HashError, PasswordHasher};
    use crate::config::{HashParams, HashPoolConfig};
    use std::sync::atomic::Ordering;

    #[test]
    fn only_a_full_queue_or_a_passed_deadline_is_overload() {
        assert!(HashError::QueueFull.is_overload());
        assert!(HashError::DeadlineExceeded.is_overload());
        assert!(!HashError::Failed("broken".into()).is_overload());
        // A real failure is an internal error, not a 503 to retry.
        assert!(matches!(
            crate::SessionError::from(HashError::Failed("broken".into())),
            crate::SessionError::Hashing(_)
        ));
        assert!(matches!(
            crate::SessionError::from(HashError::QueueFull),
            crate::SessionError::Overloaded(_)
        ));
    }

    fn hasher(workers: usize, capacity: Option<usize>) -> PasswordHasher {
        let pool = HashPoolConfig {
            workers: Some(workers),
            queue_capacity: capacity,
            ..HashPoolConfig::default()
        };
        PasswordHasher::new(HashParams::FAST_INSECURE_FOR_TESTS, pool).unwrap()
    }

    #[test]
    fn the_queue_holds_its_capacity_and_gives_places_back() {
        let h = hasher(3, None);
        assert_eq!(h.workers(), 3);
        assert_eq!(h.queue_capacity(), 3 * HashPoolConfig::QUEUE_PER_WORKER);
        assert!(format!("{h:?}").contains("workers: 3"));
        let h = hasher(1, Some(2));
        let first = h.reserve().unwrap();
        let second = h.reserve().unwrap();
        assert!(matches!(h.reserve(), Err(HashError::QueueFull)));
        assert_eq!(h.stats().rejected_queue_full.load(Ordering::SeqCst), 1);
        assert_eq!(h.stats().queued.load(Ordering::SeqCst), 2);
        // An unused place is given back when dropped.
        drop(first);
        assert_eq!(h.stats().queued.load(Ordering::SeqCst), 1);
        assert!(h.reserve().is_ok());
        drop(second);
    }

    #[tokio::test]
    async fn a_job_that_reaches_no_worker_in_time_is_refused_and_skipped() {
        // One worker, held busy by a job that waits for the test to let it
        // go (no timing: the worker is busy until the test says so); the
        // next job may wait 1 ms.
        let pool = HashPoolConfig {
            workers: Some(1),
            queue_capacity: Some(8),
            wait_deadline: std::time::Duration::from_millis(1),
        };
        let h = PasswordHasher::new(HashParams::FAST_INSECURE_FOR_TESTS, pool).unwrap();
        let (let_go, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Arc::new(std::sync::Mutex::new(held));
        // The holding job itself has only 1 ms to reach the (idle) worker:
        // retry until the worker really runs it (it says so), bounded.
        let mut busy = None;
        for _ in 0..1000 {
            let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
            let held = held.clone();
            let job = tokio::spawn(h.reserve().unwrap().run(move || {
                let _ = started_tx.send(());
                let _ = held.lock().map(|rx| rx.recv());
            }));
            if started.await.is_ok() {
                busy = Some(job);
                break;
            }
        }
        let busy = busy.expect("the worker never took the holding job");
        // Holding attempts that missed their own 1 ms were refused (and
        // counted) too: count from here.
        let refused_before = h.stats().rejected_deadline.load(Ordering::SeqCst);
        let verdict = h.verify_dummy("waits too long").await;
        let_go.send(()).unwrap();
        assert!(
            matches!(verdict, Err(HashError::DeadlineExceeded)),
            "{verdict:?}"
        );
        assert_eq!(
            h.stats().rejected_deadline.load(Ordering::SeqCst) - refused_before,
            1,
            "the refused job is counted once"
        );
        assert!(busy.await.is_ok());
    }

    #[tokio::test]
    async fn identical_checks_under_way_share_one_verification_and_others_do_not() {
        let h = hasher(1, None);
        let password = crate::domain::Password::parse("correct horse battery").unwrap();
        let stored = h.hash(&password).await.unwrap();
        // The one worker is held busy until the test lets go, so every check
        // below is under way at once.
        let (let_go, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let busy = tokio::spawn(h.reserve().unwrap().run(move || {
            let _ = started_tx.send(());
            let _ = held.recv();
        }));
        started.await.unwrap();
        let before = h.stats().completed.load(Ordering::SeqCst);
        let check = |subject: &'static str, password: &'static str| {
            let (slot, stored) = (h.reserve().unwrap(), stored.clone());
            tokio::spawn(async move { slot.verify_for(subject, password, &stored).await })
        };
        let same = [
            check("ada@example.com", "correct horse battery"),
            check("ada@example.com", "correct horse battery"),
            check("ada@example.com", "correct horse battery"),
        ];
        let other_password = check("ada@example.com", "wrong horse battery");
        let other_subject = check("bob@example.com", "correct horse battery");
        // Joined checks gave their places back at once.
        while h.stats().queued.load(Ordering::SeqCst) != 3 {
            tokio::task::yield_now().await;
        }
        let_go.send(()).unwrap();
        for joined in same {
            assert!(joined.await.unwrap().unwrap());
        }
        assert!(!other_password.await.unwrap().unwrap());
        assert!(other_subject.await.unwrap().unwrap());
        busy.await.unwrap().unwrap();
        assert_eq!(
            h.stats().completed.load(Ordering::SeqCst) - before,
            1 + 3,
            "the held job, and one verification per distinct check"
        );
        assert!(h.checks.lock().is_empty(), "finished checks are taken off");
    }

    #[tokio::test]
    async fn a_hash_verifies_and_a_wrong_password_does_not() {
        let h = hasher(1, None);
        let password = crate::domain::Password::parse("correct horse battery").unwrap();
        let stored = h.hash(&password).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            h.verify("correct horse battery", &stored)
                .await
                .unwrap_or(false)
        );
        assert!(
            !h.verify("wrong horse battery", &stored)
                .await
                .unwrap_or(true)
        );
        assert!(h.verify_dummy("anything").await.is_ok());
        assert_eq!(h.stats().queued.load(Ordering::SeqCst), 0);
        assert_eq!(h.stats().completed.load(Ordering::SeqCst), 4);
    }
}
