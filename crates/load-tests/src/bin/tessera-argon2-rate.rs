//! How many password verifications per second argon2id alone achieves with
//! the parameters the service started beside it reads (`TESSERA_ARGON2_*`
//! from the same environment, else production's) and a hashing pool of the
//! size given: the yardstick for login
//! throughput under load (`cargo xtask load --storm`).
//!
//! Usage: tessera-argon2-rate <workers> <seconds>

use auth_core::config::{HashParams, HashPoolConfig};
use auth_core::hashing::PasswordHasher;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().as_deref().unwrap_or("2").parse()?;
    let seconds: u64 = args.next().as_deref().unwrap_or("10").parse()?;
    let hasher = PasswordHasher::new(
        same_params_as_the_service()?,
        HashPoolConfig {
            workers: Some(workers),
            ..HashPoolConfig::default()
        },
    )?;
    let password =
        auth_core::domain::Password::parse("load-test password 123").map_err(anyhow::Error::msg)?;
    let stored = hasher.hash(&password).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    // One more caller than workers keeps every worker busy.
    let callers: Vec<_> = (0..=workers)
        .map(|_| {
            let hasher = hasher.clone();
            let stored = stored.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    if hasher.verify("load-test password 123", &stored).await? {
                        done += 1;
                    }
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.2}");
    Ok(())
}

/// The service reads these through its settings (auth-api); this yardstick
/// reads the same variables so the two compare like with like.
fn same_params_as_the_service() -> anyhow::Result<HashParams> {
    let read = |var: &str, default: u32| -> anyhow::Result<u32> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().parse()?),
            _ => Ok(default),
        }
    };
    let d = HashParams::PRODUCTION;
    Ok(HashParams {
        memory_kib: read("TESSERA_ARGON2_M_KIB", d.memory_kib)?,
        iterations: read("TESSERA_ARGON2_T", d.iterations)?,
        parallelism: read("TESSERA_ARGON2_P", d.parallelism)?,
    })
}
