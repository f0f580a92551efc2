//! Wake-ups for long-poll claims. One listening connection per instance
//! (`LISTEN tessera_tasks`, outside the pools) turns each notification the
//! tasks' triggers send into a wake-up of ONE waiting claim (a baton: a
//! woken claim that took all it asked for passes it on, as there may be
//! more), so waiting holds no pooled connection and a burst is drained by a
//! chain of claims instead of a herd of every waiter at once. What no
//! notification announces (listener down, a delayed task coming due, a
//! lapsed lease) is found by the instance's one re-check: every
//! [`RECHECK`] while claims wait, it hands the baton to one of them. So the
//! database work of waiting is one claim per instance per second plus one
//! per arrival, however many wait; and how many may wait is bounded, per
//! credential and per instance ([`Wakeups::admit`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// The channel the tasks' triggers notify (`tasks_notify_claimable`, in
/// the migrations; a test holds the two to one name).
pub const CHANNEL: &str = "tessera_tasks";

/// How often the instance's re-check wakes one waiting claim (the
/// default of `QueuePolicy::recheck`).
pub const RECHECK: Duration = Duration::from_secs(1);

/// How many long-poll claims may be under way at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaiterLimits {
    /// Per credential (a session).
    pub per_credential: usize,
    /// In this instance.
    pub per_instance: usize,
}

impl Default for WaiterLimits {
    fn default() -> Self {
        WaiterLimits {
            per_credential: 100,
            per_instance: 10_000,
        }
    }
}

/// A long-poll claim past a bound: answered at once (`429 too_many_waiters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many long-poll claims under way ({0})")]
pub struct Crowded(pub &'static str);

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
    limits: WaiterLimits,
    /// Long-poll claims under way, in all and by credential.
    admitted: Mutex<Admitted>,
}

#[derive(Debug, Default)]
struct Admitted {
    total: usize,
    by_credential: HashMap<Uuid, usize>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups::new(WaiterLimits::default())
    }
}

impl Wakeups {
    pub fn new(limits: WaiterLimits) -> Wakeups {
        Wakeups {
            inner: Arc::new(Inner {
                baton: Arc::new(Notify::new()),
                stopping: watch::Sender::new(false),
                waiting: watch::Sender::new(0),
                listening: AtomicBool::new(false),
                limits,
                admitted: Mutex::default(),
            }),
        }
    }

    /// A place for one long-poll claim of `credential`, held until it
    /// answers; `Crowded` when the credential or the instance has as many
    /// under way as its bound allows.
    pub fn admit(&self, credential: Uuid) -> Result<WaiterPass, Crowded> {
        let limits = self.limits();
        let mut admitted = self.lock_admitted();
        if admitted.total >= limits.per_instance {
            return Err(Crowded("per instance"));
        }
        let mine = admitted.by_credential.entry(credential).or_default();
        if *mine >= limits.per_credential {
            return Err(Crowded("per credential"));
        }
        *mine += 1;
        admitted.total += 1;
        Ok(WaiterPass {
            wakeups: self.clone(),
            credential,
        })
    }

    fn limits(&self) -> WaiterLimits {
        or_fault!(WaitersUnbounded => WaiterLimits { per_credential: usize::MAX, per_instance: usize::MAX });
        self.inner.limits
    }

    /// Long-poll claims under way in this instance (`/metrics`).
    pub fn under_way(&self) -> usize {
        self.lock_admitted().total
    }

    fn lock_admitted(&self) -> std::sync::MutexGuard<'_, Admitted> {
        self.inner
            .admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instance's one re-check: `every` interval while claims wait, it
    /// wakes one of them, until `alive` has no owner left.
    pub fn spawn_recheck(&self, every: Duration, alive: std::sync::Weak<()>) {
        let wakeups = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while alive.upgrade().is_some() && !wakeups.is_stopping() {
                tick.tick().await;
                if wakeups.waiting() > 0 {
                    wakeups.wake();
                }
            }
        });
    }

    /// Wakes one waiting claim (or, when none waits, the next to wait).
    /// If that one is leaving instead, the wake-up passes to another.
    pub fn wake(&self) {
        self.inner.baton.notify_one();
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

    /// Returns once the number of parked claims (each tried once and found
    /// nothing) satisfies `enough`: the hook tests use to act only after
    /// the waiters wait, or after they left.
    pub async fn until_waiting(&self, enough: impl FnMut(&usize) -> bool) {
        let mut parked = self.inner.waiting.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = parked.wait_for(enough).await;
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
    /// (re)connect it hands the baton to one waiter: what was notified
    /// while it was down is found by that claim and the chain it starts (a
    /// wake-up of every waiter would be a herd of claims as the database
    /// comes back).
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
                            "task wake-up listener lost its connection; the instance re-checks every second meanwhile");
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
        self.wake();
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
    /// A notification, or the instance's re-check: try to claim again.
    TryAgain,
    /// The wait's own limit passed: answer with what was claimed.
    Expired,
    /// The service is shutting down: answer with what was claimed.
    Stopping,
}

impl Subscription {
    /// Waits for a wake-up since the last call (or since the
    /// subscription), at most `limit`, counted among the waiters meanwhile;
    /// re-armed before it returns, so the try that follows is covered too.
    pub async fn wait(&mut self, limit: Duration) -> Woken {
        or_fault!(LongPollRecheckPerWaiter => crate::faults::wait_rechecking_alone(self, limit).await);
        or_fault!(LongPollNoRecheck => crate::faults::wait_deaf(self, limit).await);
        self.wait_at_most(limit).await
    }

    pub(crate) async fn wait_at_most(&mut self, limit: Duration) -> Woken {
        if *self.stopping.borrow() {
            return Woken::Stopping;
        }
        let _counted = Waiting::enter(&self.wakeups);
        let woken = tokio::select! {
            _ = &mut self.baton => Woken::TryAgain,
            _ = tokio::time::sleep(limit) => Woken::Expired,
            // The sender lives as long as the Wakeups this holds: no error.
            _ = self.stopping.wait_for(|s| *s) => Woken::Stopping,
        };
        // A wake-up not taken (timer or stop won) is forwarded by the drop.
        self.baton = self.wakeups.armed();
        woken
    }
}

/// A long-poll claim's place under the bounds, given back when it answers
/// (or is dropped: its client hung up).
#[derive(Debug)]
pub struct WaiterPass {
    wakeups: Wakeups,
    credential: Uuid,
}

impl Drop for WaiterPass {
    fn drop(&mut self) {
        let mut admitted = self.wakeups.lock_admitted();
        admitted.total -= 1;
        if let Some(mine) = admitted.by_credential.get_mut(&self.credential) {
            *mine -= 1;
            if *mine == 0 {
                admitted.by_credential.remove(&self.credential);
            }
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
    /// The listener LISTENs on what the trigger notifies: every
    /// `pg_notify` of the migrations names [`super::CHANNEL`].
    #[test]
    fn the_trigger_notifies_the_channel_the_listener_listens_on() {
        let migration = include_str!("../../../migrations/2026-12-02-000007_queue_v1_1/up.sql");
        let notified: Vec<&str> = migration
            .split("pg_notify('")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .collect();
        assert!(!notified.is_empty(), "no pg_notify in the migration");
        assert!(
            notified.iter().all(|c| *c == super::CHANNEL),
            "{notified:?}"
        );
    }

    use super::{Crowded, WaiterLimits, Wakeups, Woken};
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
        wakeups.until_waiting(|w| *w >= 1).await;
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

    /// The re-check ends with its instance: once the service is gone, and
    /// once it is stopping (its task then holds no `Wakeups` any more).
    #[tokio::test(start_paused = true)]
    async fn the_re_check_ends_when_its_instance_is_gone_or_stopping() {
        for end in ["gone", "stopping"] {
            let wakeups = Wakeups::default();
            let alive = std::sync::Arc::new(());
            wakeups.spawn_recheck(super::RECHECK, std::sync::Arc::downgrade(&alive));
            tokio::time::advance(super::RECHECK).await;
            assert_eq!(std::sync::Arc::strong_count(&wakeups.inner), 2, "running");
            let _kept = match end {
                "gone" => {
                    drop(alive);
                    None
                }
                _ => {
                    wakeups.stop();
                    Some(alive)
                }
            };
            for _ in 0..3 {
                tokio::time::advance(super::RECHECK).await;
                tokio::task::yield_now().await;
            }
            assert_eq!(
                std::sync::Arc::strong_count(&wakeups.inner),
                1,
                "the re-check still runs once its instance is {end}"
            );
        }
    }

    #[tokio::test]
    async fn without_a_wake_up_the_wait_lasts_its_limit() {
        let wakeups = Wakeups::default();
        let mut sub = wakeups.subscribe();
        let started = tokio::time::Instant::now();
        assert_eq!(sub.wait(Duration::from_millis(50)).await, Woken::Expired);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    /// A credential's count goes down by one per place given back, not to
    /// nothing: its other waiters still count against its bound.
    #[test]
    fn a_place_given_back_frees_one_place_of_its_credential() {
        let wakeups = Wakeups::new(WaiterLimits {
            per_credential: 2,
            per_instance: 100,
        });
        let ada = uuid::Uuid::new_v4();
        let first = wakeups.admit(ada).unwrap();
        let second = wakeups.admit(ada).unwrap();
        drop(first);
        let third = wakeups.admit(ada).unwrap();
        assert_eq!(wakeups.admit(ada).unwrap_err(), Crowded("per credential"));
        drop((second, third));
        assert!(wakeups.lock_admitted().by_credential.is_empty());
    }

    #[test]
    fn waiters_are_bounded_per_credential_and_per_instance_and_give_places_back() {
        let wakeups = Wakeups::new(WaiterLimits {
            per_credential: 2,
            per_instance: 3,
        });
        let (ada, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let a1 = wakeups.admit(ada).unwrap();
        let a2 = wakeups.admit(ada).unwrap();
        assert_eq!(wakeups.admit(ada).unwrap_err(), Crowded("per credential"));
        let b1 = wakeups.admit(bob).unwrap();
        assert_eq!(wakeups.under_way(), 3);
        assert_eq!(wakeups.admit(bob).unwrap_err(), Crowded("per instance"));
        drop(a1);
        let b2 = wakeups.admit(bob).unwrap();
        assert_eq!(wakeups.admit(ada).unwrap_err(), Crowded("per instance"));
        drop((a2, b1, b2));
        assert_eq!(wakeups.under_way(), 0);
        assert!(wakeups.lock_admitted().by_credential.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_re_check_wakes_one_waiter_per_interval_and_only_while_some_wait() {
        let wakeups = Wakeups::default();
        let alive = std::sync::Arc::new(());
        wakeups.spawn_recheck(super::RECHECK, std::sync::Arc::downgrade(&alive));
        let (mut a, mut b) = (wakeups.subscribe(), wakeups.subscribe());
        let limit = Duration::from_secs(60);
        // No waiter yet: ticks pass without leaving a wake-up behind, so
        // the first waiter, half an interval past a tick, waits for the next.
        tokio::time::advance(super::RECHECK * 3 + super::RECHECK / 2).await;
        for _ in 0..3 {
            tokio::task::yield_now().await; // the re-check runs its ticks
        }
        let started = tokio::time::Instant::now();
        let first = tokio::select! {
            w = a.wait(limit) => ("a", w),
            w = b.wait(limit) => ("b", w),
        };
        assert_eq!(first.1, Woken::TryAgain, "woken by the next tick");
        assert!(
            started.elapsed() >= super::RECHECK / 4,
            "woken at once ({:?}): a tick with nobody waiting left a wake-up behind",
            started.elapsed()
        );
        let other = if first.0 == "a" { &mut b } else { &mut a };
        let started = tokio::time::Instant::now();
        assert_eq!(other.wait(limit).await, Woken::TryAgain);
        let waited = started.elapsed();
        assert!(
            waited >= super::RECHECK / 2 && waited <= super::RECHECK * 2,
            "one wake-up per interval: the other waited {waited:?}"
        );
    }
}
