//! [`CoarseTimer`]: the timer hyper's HTTP/1 server uses for its
//! header-read timeout, with deadlines rounded up to a grain and kept in
//! one shared table driven by a single tokio sleep.
//!
//! Why: hyper makes a new sleep for every request a connection waits for
//! and drops it once the head is read. With tokio's own timer that is a
//! timer-wheel insertion and removal per request, and — because the
//! runtime only learns its next wake-up when it parks, which a busy daemon
//! rarely does — an `eventfd` write to "unpark" the very thread that is
//! running, plus the spurious epoll event it causes: one extra syscall pair
//! per request (docs/BENCHMARKS.md, "The write path"). Here a sleep costs a
//! table entry under a short lock when it is first polled, and only a
//! deadline earlier than every armed one re-arms the driver.
//!
//! Deadlines are rounded **up** to the grain (a tenth of the timeout, at
//! most 1 s, at least 1 ms), so a timeout fires at most one grain late,
//! never early. Nothing is armed while no connection waits for a request,
//! so an idle daemon still has no wake-ups.
//!
//! It must not be used for timeouts that need better than grain precision.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The table: for each grain tick, the sleeps waiting for it.
#[derive(Default)]
struct Table {
    slots: BTreeMap<u64, HashMap<u64, Waker>>,
    /// The tick the driver sleeps until, if it sleeps on one.
    armed: Option<u64>,
}

struct Shared {
    table: Mutex<Table>,
    epoch: Instant,
    grain: Duration,
    next_id: AtomicU64,
    /// Wakes the driver to re-arm (an earlier deadline) or to end.
    rearm: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding it leaves a consistent table (every
        // mutation is a single map operation).
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick_of(&self, deadline: Instant) -> u64 {
        let since = deadline.saturating_duration_since(self.epoch).as_nanos();
        let grain = self.grain.as_nanos().max(1);
        u64::try_from(since.div_ceil(grain)).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * self.grain.as_nanos();
        self.epoch + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last timer is gone: let the driver end.
        self.rearm.notify_one();
    }
}

/// See the module docs. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct CoarseTimer {
    shared: Arc<Shared>,
}

impl CoarseTimer {
    /// A timer for timeouts of `timeout` (which sets the grain), whose
    /// driver task is spawned on the current tokio runtime and ends when
    /// the last clone of the timer is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(timeout: Duration) -> Self {
        let grain = (timeout / 10).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let rearm = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            table: Mutex::default(),
            epoch: Instant::now(),
            grain,
            next_id: AtomicU64::new(0),
            rearm: rearm.clone(),
        });
        tokio::spawn(drive(Arc::downgrade(&shared), rearm));
        CoarseTimer { shared }
    }
}

/// Sleeps until the earliest armed tick, wakes every sleep that is due,
/// and waits for a re-arm when nothing is armed.
async fn drive(shared: Weak<Shared>, rearm: Arc<Notify>) {
    loop {
        let (deadline, due) = {
            let Some(s) = shared.upgrade() else { return };
            let now = s.tick_of(Instant::now());
            let mut t = s.lock();
            // Ticks whose start has passed are due; `tick_of` rounds up,
            // so a tick `k` is due once `now` (rounded up) is past it.
            let later = t.slots.split_off(&now);
            let due: Vec<Waker> = std::mem::replace(&mut t.slots, later)
                .into_values()
                .flat_map(HashMap::into_values)
                .collect();
            t.armed = t.slots.keys().next().copied();
            (t.armed.map(|k| s.instant_of(k)), due)
        };
        for w in due {
            w.wake();
        }
        match deadline {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = rearm.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => rearm.notified().await,
        }
    }
}

/// One sleep; see [`CoarseTimer`].
struct CoarseSleep {
    shared: Arc<Shared>,
    id: u64,
    tick: u64,
    /// Holds an entry in the table.
    registered: bool,
    /// The waker its entry holds: polled again by the same task, the
    /// sleep needs no lock (a connection's sleep is polled once per read).
    waker: Option<Waker>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let s = &this.shared;
        if Instant::now() >= s.instant_of(this.tick) {
            if this.registered {
                remove(s, this.tick, this.id);
                this.registered = false;
            }
            return Poll::Ready(());
        }
        if this.registered && this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        this.waker = Some(cx.waker().clone());
        let rearm = {
            let mut t = s.lock();
            let slot = t.slots.entry(this.tick).or_default();
            match slot.get_mut(&this.id) {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => w.clone_from(cx.waker()),
                None => {
                    slot.insert(this.id, cx.waker().clone());
                }
            }
            this.registered = true;
            match t.armed {
                Some(k) if k <= this.tick => false,
                _ => {
                    t.armed = Some(this.tick);
                    true
                }
            }
        };
        if rearm {
            s.rearm.notify_one();
        }
        Poll::Pending
    }
}

fn remove(s: &Shared, tick: u64, id: u64) {
    let mut t = s.lock();
    if let Some(slot) = t.slots.get_mut(&tick) {
        slot.remove(&id);
        if slot.is_empty() {
            t.slots.remove(&tick);
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if self.registered {
            remove(&self.shared, self.tick, self.id);
        }
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let s = &self.shared;
        Box::pin(CoarseSleep {
            shared: s.clone(),
            id: s.next_id.fetch_add(1, Ordering::Relaxed),
            tick: s.tick_of(deadline),
            registered: false,
            waker: None,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        let tick = self.shared.tick_of(new_deadline);
        if let Some(s) = sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            let s = s.get_mut();
            if s.tick != tick {
                if s.registered {
                    remove(&s.shared, s.tick, s.id);
                    s.registered = false;
                }
                s.tick = tick;
            }
            return;
        }
        *sleep = self.sleep_until(new_deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn fires_after_the_deadline_never_before_and_at_most_a_grain_late() {
        let timer = CoarseTimer::new(Duration::from_millis(200)); // 20 ms grain
        let t0 = Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(50), "fired early: {took:?}");
        // Generous upper bound: a late wake-up on a loaded machine is
        // fine; firing never is not.
        assert!(took < Duration::from_secs(5), "never fired: {took:?}");
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_nothing_armed_behind() {
        let timer = CoarseTimer::new(Duration::from_secs(10));
        let mut s = timer.sleep(Duration::from_secs(5));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(s.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.shared.lock().slots.len(), 1);
        drop(s);
        assert!(timer.shared.lock().slots.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_deadline_rearms_the_driver() {
        let timer = CoarseTimer::new(Duration::from_millis(100)); // 10 ms grain
        let long = timer.sleep(Duration::from_secs(60));
        let mut cx = Context::from_waker(Waker::noop());
        let mut long = long;
        assert!(long.as_mut().poll(&mut cx).is_pending());
        // Let the driver arm for the long one first.
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        timer.sleep(Duration::from_millis(30)).await;
        assert!(t0.elapsed() < Duration::from_secs(30));
        drop(long);
    }

    #[tokio::test]
    async fn reset_moves_the_deadline() {
        let timer = CoarseTimer::new(Duration::from_millis(100));
        let mut s = timer.sleep(Duration::from_secs(60));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(s.as_mut().poll(&mut cx).is_pending());
        let t0 = Instant::now();
        timer.reset(&mut s, Instant::now() + Duration::from_millis(20));
        s.await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(20) && took < Duration::from_secs(30));
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_sleep_polled_by_another_task_wakes_that_one() {
        let timer = CoarseTimer::new(Duration::from_millis(100)); // 10 ms grain
        let mut s = timer.sleep(Duration::from_millis(30));
        let first = Arc::new(Count(Default::default()));
        let second = Arc::new(Count(Default::default()));
        let w1 = Waker::from(first.clone());
        let w2 = Waker::from(second.clone());
        // The same task twice (the second poll takes no lock), then another.
        assert!(s.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(s.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(s.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        let deadline = Instant::now() + Duration::from_secs(30);
        while second.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the second task was never woken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "the first task was woken"
        );
        assert!(s.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
        assert!(timer.shared.lock().slots.is_empty());
    }
}
