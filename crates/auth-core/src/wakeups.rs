//! Wake-ups for long-poll claims. One listening connection per instance
//! (`LISTEN tessera_tasks`, outside the pools) turns each notification the
//! tasks' triggers send into a wake-up of ONE waiting claim (a baton: a
//! woken claim that took all it asked for passes it on, as there may be
//! more), so waiting holds no pooled connection and a burst is drained by a
//! chain of claims instead of a herd of every waiter at once. Waiters also
//! re-check on their own every [`RECHECK`], so a lost notification (listener
//! down, delayed task coming due, lapsed lease) costs a waiter at most that.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, watch};

/// The channel the tasks' triggers notify.
pub const CHANNEL: &str = "tessera_tasks";

/// Longest a waiter goes without trying to claim again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// An instance's wake-ups, its waiter count, and its shutdown signal.
#[derive(Clone, Debug)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    baton: Arc<Notify>,
    stopping: watch::Sender<bool>,
    /// Parked claims: a watch, so a test can await a count instead of polling.
    waiting: watch::Sender<usize>,
    listening: AtomicBool,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            inner: Arc::new(Inner {
                baton: Arc::new(Notify::new()),
                stopping: watch::Sender::new(false),
                waiting: watch::Sender::new(0),
                listening: AtomicBool::new(false),
            }),
        }
    }
}

impl Wakeups {
    /// Wakes one waiting claim (or, when none waits, the next to wait).
    /// If that one is leaving instead, the wake-up passes to another.
    pub fn wake(&self) {
        self.inner.baton.notify_one();
    }

    /// Wakes every claim waiting now (the listener reconnected: what was
    /// notified meanwhile is unknown).
    pub fn wake_all(&self) {
        self.inner.baton.notify_waiters();
    }

    /// Ends every wait at once, for good (the service is shutting down).
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Waiters parked right now (`/metrics`, and tests that must know all
    /// waiters are parked before they create tasks).
    pub fn waiting(&self) -> usize {
        *self.inner.waiting.borrow()
    }

    /// Returns once at least `n` claims are parked (each tried once and
    /// found nothing): the hook tests use to act only after the waiters wait.
    pub async fn until_waiting(&self, n: usize) {
        let mut parked = self.inner.waiting.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = parked.wait_for(|w| *w >= n).await;
    }

    /// Whether the listener holds a live `LISTEN` connection.
    pub fn listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// A subscription: taken BEFORE a claim attempt, so a notification that
    /// arrives while the attempt runs still ends the wait that follows it.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            baton: self.armed(),
            stopping: self.inner.stopping.subscribe(),
            wakeups: self.clone(),
        }
    }

    /// A wake-up registered now: `wake` from here on reaches it.
    fn armed(&self) -> Pin<Box<OwnedNotified>> {
        let mut baton = Box::pin(self.inner.baton.clone().notified_owned());
        baton.as_mut().enable();
        baton
    }

    /// Listens on `url` until `alive` has no owner left, reconnecting with
    /// backoff (250 ms to 5 s) when the connection fails. After each
    /// (re)connect it wakes everyone: what was notified while it was down
    /// is found by the claims that follow.
    pub fn spawn_listener(&self, url: String, alive: std::sync::Weak<()>) {
        let wakeups = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            while alive.upgrade().is_some() && !wakeups.is_stopping() {
                match wakeups.listen(&url, &alive).await {
                    Ok(()) => break,
                    Err(e) => {
                        wakeups.inner.listening.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "task wake-up listener lost its connection; waiters re-check every second meanwhile");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            wakeups.inner.listening.store(false, Ordering::Relaxed);
        });
    }

    /// One connection's life: `Ok` when the service is done with it.
    async fn listen(
        &self,
        url: &str,
        alive: &std::sync::Weak<()>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use tokio_postgres::AsyncMessage;
        let mut config: tokio_postgres::Config = url.parse()?;
        config.application_name("tessera listener");
        let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
        let wakeups = self.clone();
        // The connection delivers notifications only while it is polled.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => wakeups.wake(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        self.inner.listening.store(true, Ordering::Relaxed);
        self.wake_all();
        let mut stopping = self.inner.stopping.subscribe();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(driver);
        loop {
            tokio::select! {
                ended = &mut driver => {
                    return match ended {
                        Ok(Err(e)) => Err(e.into()),
                        Ok(Ok(())) | Err(_) => Err("the server closed the connection".into()),
                    };
                }
                _ = stopping.wait_for(|s| *s) => return Ok(()),
                _ = check.tick() => if alive.upgrade().is_none() { return Ok(()) },
            }
        }
    }
}

/// One claim's view of the wake-ups.
pub struct Subscription {
    baton: Pin<Box<OwnedNotified>>,
    stopping: watch::Receiver<bool>,
    wakeups: Wakeups,
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A notification, or the re-check interval: try to claim again.
    TryAgain,
    /// The service is shutting down: answer with what was claimed.
    Stopping,
}

impl Subscription {
    /// Waits for a wake-up since the last call (or since the
    /// subscription), at most `limit`, counted among the waiters meanwhile;
    /// re-armed before it returns, so the try that follows is covered too.
    pub async fn wait(&mut self, limit: Duration) -> Woken {
        if *self.stopping.borrow() {
            return Woken::Stopping;
        }
        let _counted = Waiting::enter(&self.wakeups);
        let woken = tokio::select! {
            _ = &mut self.baton => Woken::TryAgain,
            _ = tokio::time::sleep(limit) => Woken::TryAgain,
            // The sender lives as long as the Wakeups this holds: no error.
            _ = self.stopping.wait_for(|s| *s) => Woken::Stopping,
        };
        // A wake-up not taken (timer or stop won) is forwarded by the drop.
        self.baton = self.wakeups.armed();
        woken
    }
}

#[cfg(feature = "faults")]
impl Subscription {
    /// The `long_poll_no_recheck` fault: parked (and counted) for `limit`,
    /// deaf to every wake-up but the shutdown.
    pub(crate) async fn sleep_out(&mut self, limit: Duration) {
        let _counted = Waiting::enter(&self.wakeups);
        tokio::select! {
            _ = tokio::time::sleep(limit) => {}
            _ = self.stopping.wait_for(|s| *s) => {}
        }
    }
}

/// Counts a parked waiter for as long as it lives.
struct Waiting<'a>(&'a Wakeups);

impl<'a> Waiting<'a> {
    fn enter(wakeups: &'a Wakeups) -> Waiting<'a> {
        wakeups.inner.waiting.send_modify(|w| *w += 1);
        Waiting(wakeups)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.inner.waiting.send_modify(|w| *w -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::{Wakeups, Woken};
    use std::time::Duration;

    #[tokio::test]
    async fn one_wake_wakes_one_waiter_and_a_second_the_other() {
        let wakeups = Wakeups::default();
        let (mut a, mut b) = (wakeups.subscribe(), wakeups.subscribe());
        wakeups.wake();
        let limit = Duration::from_secs(60);
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                w = a.wait(limit) => ("a", w),
                w = b.wait(limit) => ("b", w),
            }
        })
        .await
        .expect("one is woken");
        assert_eq!(first.1, Woken::TryAgain);
        let other = if first.0 == "a" { &mut b } else { &mut a };
        let still = tokio::time::timeout(Duration::from_millis(100), other.wait(limit)).await;
        assert!(still.is_err(), "the other waiter was woken too");
        wakeups.wake();
        let second = tokio::time::timeout(Duration::from_secs(5), other.wait(limit)).await;
        assert_eq!(second.expect("the second wake reaches it"), Woken::TryAgain);
    }

    #[tokio::test]
    async fn a_wake_during_the_attempt_ends_the_wait_that_follows() {
        let wakeups = Wakeups::default();
        let mut sub = wakeups.subscribe();
        wakeups.wake(); // while the "claim" ran
        let woken = tokio::time::timeout(Duration::from_secs(5), sub.wait(Duration::from_secs(60)))
            .await
            .expect("a pending wake-up ends the wait at once");
        assert_eq!(woken, Woken::TryAgain);
        assert_eq!(wakeups.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_is_counted_while_it_waits_and_stop_ends_it() {
        let wakeups = Wakeups::default();
        let mut sub = wakeups.subscribe();
        let waiter = tokio::spawn(async move { sub.wait(Duration::from_secs(60)).await });
        wakeups.until_waiting(1).await;
        wakeups.stop();
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("stop ends the wait")
            .unwrap();
        assert_eq!(woken, Woken::Stopping);
        assert_eq!(wakeups.waiting(), 0);
        assert_eq!(
            wakeups.subscribe().wait(Duration::from_secs(60)).await,
            Woken::Stopping
        );
    }

    #[tokio::test]
    async fn without_a_wake_up_the_wait_lasts_its_limit() {
        let wakeups = Wakeups::default();
        let mut sub = wakeups.subscribe();
        let started = tokio::time::Instant::now();
        assert_eq!(sub.wait(Duration::from_millis(50)).await, Woken::TryAgain);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
