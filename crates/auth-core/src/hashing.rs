//! Password hashing off the async runtime, on a bounded pool.
//!
//! argon2id is deliberately expensive (~20-50 ms of one core). Run on the
//! async workers it would stall every other request; run unbounded on the
//! blocking pool a login storm would take every core. So at most `workers`
//! hashes run at once (default: the number of cores) and the rest queue, and
//! the queue depth is exported as a metric.

use crate::config::HashParams;
use crate::domain::Password;
use argon2::password_hash::{
    PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

/// Hashing failed for a reason other than a wrong password.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Live figures for /metrics.
#[derive(Debug, Default)]
pub struct HashStats {
    /// Hash or verify calls waiting for a worker right now.
    pub queued: AtomicUsize,
    pub completed: AtomicU64,
    pub busy_micros: AtomicU64,
}

/// The bounded argon2id hasher shared by all requests.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    workers: usize,
    stats: Arc<HashStats>,
    /// A real hash of a random password with the same parameters: verifying
    /// against it makes an unknown email cost what a known one costs.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// `workers`: how many hashes may run at once (`None`: one per core).
    pub fn new(params: HashParams, workers: Option<usize>) -> Result<PasswordHasher, HashError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let workers = workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(format!("{}", uuid::Uuid::new_v4()).as_bytes(), &salt)
            .map_err(|e| HashError(e.to_string()))?
            .to_string();
        Ok(PasswordHasher {
            argon2: Arc::new(argon2),
            permits: Arc::new(Semaphore::new(workers)),
            workers,
            stats: Arc::default(),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn stats(&self) -> &HashStats {
        &self.stats
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for storage.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        let secret = password.expose().to_owned();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(secret.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored`; costs one full verification.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, HashError> {
        let argon2 = self.argon2.clone();
        let secret = password.to_owned();
        let stored = stored.to_owned();
        self.run(move || {
            let parsed = PasswordHash::new(&stored).map_err(|e| HashError(e.to_string()))?;
            Ok(argon2.verify_password(secret.as_bytes(), &parsed).is_ok())
        })
        .await?
    }

    /// Spends exactly what a real verification spends, and returns nothing:
    /// for unknown emails and impossible passwords.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        let dummy = self.dummy_hash.clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let waiting = QueuedGuard::enter(&self.stats.queued);
        let permit = self.permits.clone().acquire_owned().await;
        drop(waiting);
        let permit = permit.map_err(|_| HashError("hasher closed".into()))?;
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = work();
            stats
                .busy_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            stats.completed.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError(e.to_string()))
    }
}

/// Counts a caller as queued until it gets a worker or gives up (a dropped
/// request future must not leave the gauge high).
struct QueuedGuard<'a>(&'a AtomicUsize);

impl<'a> QueuedGuard<'a> {
    fn enter(gauge: &'a AtomicUsize) -> QueuedGuard<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        QueuedGuard(gauge)
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
