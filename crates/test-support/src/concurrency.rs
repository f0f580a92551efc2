//! The concurrency kit: start participants together, record what each did,
//! and check the history against a fresh read of the database.

use std::sync::Arc;
use tokio::sync::Barrier;

/// Runs `n` participants as separate tasks, releases them at the same instant
/// through a barrier (no sleeps), and returns every participant's result in
/// participant order. Each participant should use its own connection/client.
pub async fn run_together<T, F, Fut>(n: usize, participant: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = participant(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        match handle.await {
            Ok(v) => results.push(v),
            Err(e) => panic!("participant failed: {e}"),
        }
    }
    results
}
