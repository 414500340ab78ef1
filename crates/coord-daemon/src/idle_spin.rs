//! Spin before sleep: after a serving thread wrote to a client, it keeps
//! polling its epoll set without blocking for a short window
//! (`coord daemon --spin`, default [`DEFAULT_WINDOW`]) before it sleeps in
//! `epoll_wait`.
//!
//! Why: a client that waits on its answer sends its next request a few
//! tens of µs after it got the answer. By then the daemon's thread has
//! parked, and on a virtual machine whose idle vCPU halts (no guest
//! halt-polling, the kind this project is measured on) the request lands
//! on a halted vCPU: waking it goes through the hypervisor, and that
//! wake-up was the largest single share of a write's round trip. A thread
//! still polling takes the request at once. Go's scheduler (NATS) does
//! the same: a thread that runs out of work polls the network for a while
//! before it sleeps. Measured with peerbench, one writer: ack p50 125–172
//! → 73–127 µs (docs/BENCHMARKS.md, "Spin before sleep").
//!
//! When: only under light load, while the writer's last commit carried at
//! most [`LIGHT_BATCH`] writes (a few clients, each waiting on its
//! answer). Under many writers the thread seldom runs dry, group commit
//! already shares each wake-up among the batch, and a spinning thread
//! would take CPU that clients on the same machine need (16 writers lost
//! ~10 % of their throughput with an ungated spin).
//!
//! On a NATS log the writer's thread also spins while it waits for an
//! append's ack ([`appending`], up to [`REMOTE_APPEND_WINDOW`]), with one
//! writer at a time only: ack p50 on that backend 266–351 → 206–244 µs.
//!
//! Only while it pays: a window in which the writer committed nothing
//! (the next request came later than the window: a client writing at
//! 1k events/s, say) is a miss. After [`MISSES_BEFORE_BACKOFF`] misses in
//! a row a thread stops spinning and only every [`PROBE_EVERY`]th write
//! still opens a window, as a probe; the first window with a commit in it
//! turns the spin back on. Like the kernel's adaptive halt-polling: a
//! spin that never catches the next request only takes, on two cores,
//! the CPU that the subscriber it just wrote to needs (peerbench deliver
//! p50 at 1k events/s: 170–232 µs without the spin, 239–274 with it).
//!
//! Idle stays idle: the window opens only after a write to a client and
//! closes [`DEFAULT_WINDOW`] later; a daemon nobody talks to never spins.
//! A write made while the window is open moves its end.
//!
//! It must not block the thread: each turn of the spin is a
//! [`tokio::task::yield_now`], after which the current-thread runtime
//! polls epoll without blocking and runs whatever became ready before the
//! spin's next turn. Only current-thread runtimes spin (the daemon's
//! threads); elsewhere [`wrote`] does nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The window when `--spin` is not given: 50 µs, above the round trip
/// of a client that answers at once (measured 30–40 µs from the daemon's
/// write to the next request), below what a 20 µs window missed.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(50);

/// How long a thread spins while it waits for a remote append's ack
/// ([`appending`]): above a JetStream publish's round trip on one machine
/// (120–300 µs measured).
pub const REMOTE_APPEND_WINDOW: Duration = Duration::from_micros(500);

/// Most writes in the writer's last commit for which threads still spin.
pub const LIGHT_BATCH: usize = 2;

/// Most writes in the writer's last commit for which the writer's thread
/// spins through a remote append: one writer at a time. With two, the
/// spin through each round trip took CPU the NATS server beside it
/// needed (16-writer throughput 3–20 % lower over four runs), with one it did not.
pub const LIGHT_BATCH_REMOTE: usize = 1;

/// Windows in a row with no commit in them after which a thread stops
/// spinning (but for probes).
pub const MISSES_BEFORE_BACKOFF: u32 = 4;

/// While a thread has stopped spinning, one write in this many still
/// opens a window, to find out whether spinning pays again.
pub const PROBE_EVERY: u32 = 8;

/// Commits so far (the writer's, all threads'): a window that saw this
/// move caught work.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// The window in µs for every thread of this process; 0: no spin.
static WINDOW_US: AtomicU64 = AtomicU64::new(0);

/// Writes in the writer's last commit.
static LAST_BATCH: AtomicUsize = AtomicUsize::new(0);

/// Sets the window for every serving thread of this process (`--spin`);
/// zero turns the spin off.
pub fn set_window(window: Duration) {
    WINDOW_US.store(
        u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// The writer reports each commit's number of writes: the load that
/// decides whether threads spin.
pub fn committed(writes: usize) {
    LAST_BATCH.store(writes, Ordering::Relaxed);
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

/// One thread's spin: its state lives in the thread, because the spin
/// polls that thread's epoll set and nothing else.
struct Spin {
    /// A write came since the spin last looked: the window starts anew.
    rearm: Cell<bool>,
    /// The window, in µs, as of the last write.
    window_us: Cell<u64>,
    /// The spin task, when it waits for a write.
    waker: Cell<Option<Waker>>,
    /// The spin task exists on this thread's runtime.
    spawned: Cell<bool>,
    /// The spin task is inside a window now.
    active: Cell<bool>,
    /// Windows in a row that ended with no commit in them.
    misses: Cell<u32>,
    /// Writes that would open a window (the probe counts them).
    opens: Cell<u32>,
    /// Turns the spin took (for tests).
    turns: Cell<u64>,
}

thread_local! {
    static SPIN: Spin = const {
        Spin {
            rearm: Cell::new(false),
            window_us: Cell::new(0),
            waker: Cell::new(None),
            spawned: Cell::new(false),
            active: Cell::new(false),
            misses: Cell::new(0),
            opens: Cell::new(0),
            turns: Cell::new(0),
        }
    };
}

/// Whether to spin: a window is set and the writer's last commit carried
/// at most `most` writes ([`LIGHT_BATCH`] after an answer,
/// [`LIGHT_BATCH_REMOTE`] through an append).
fn should_spin(window_us: u64, last_batch: usize, most: usize) -> bool {
    window_us > 0 && last_batch <= most
}

/// Called after each write to a client (an answer, events to a
/// subscriber): opens the window, or moves its end. Costs two relaxed
/// loads and a thread-local store; the first call on a thread starts its
/// spin task.
pub fn wrote() {
    let window_us = WINDOW_US.load(Ordering::Relaxed);
    if should_spin(window_us, LAST_BATCH.load(Ordering::Relaxed), LIGHT_BATCH) {
        open(window_us);
    }
}

/// Called by the writer as it starts an append to a remote store (a NATS
/// log): the thread would park until the server's ack, a round trip
/// longer than the window after an answer. With one writer at a time
/// ([`LIGHT_BATCH_REMOTE`]), and when a window is set at all, the thread
/// spins through up to
/// [`REMOTE_APPEND_WINDOW`] of it; the answer written after the ack
/// opens the usual window.
pub fn appending() {
    let window_us = WINDOW_US.load(Ordering::Relaxed);
    if should_spin(
        window_us,
        LAST_BATCH.load(Ordering::Relaxed),
        LIGHT_BATCH_REMOTE,
    ) {
        let remote = u64::try_from(REMOTE_APPEND_WINDOW.as_micros()).unwrap_or(u64::MAX);
        open(window_us.max(remote));
    }
}

/// Whether a write that would open a window skips it: the last
/// `misses` windows caught no commit (at least [`MISSES_BEFORE_BACKOFF`]),
/// and this is not a [`PROBE_EVERY`]th such write (`opens`: the
/// thread's writes that would open a window, this one included).
fn backed_off(misses: u32, opens: u32) -> bool {
    misses >= MISSES_BEFORE_BACKOFF && !opens.is_multiple_of(PROBE_EVERY)
}

/// Opens this thread's window of `window_us` µs (see [`wrote`]), or
/// moves the end of the open one.
fn open(window_us: u64) {
    SPIN.with(|s| {
        if !s.active.get() && !s.rearm.get() {
            let opens = s.opens.get().wrapping_add(1);
            s.opens.set(opens);
            if backed_off(s.misses.get(), opens) {
                return;
            }
        }
        s.window_us.set(window_us);
        if s.rearm.replace(true) {
            return;
        }
        if let Some(w) = s.waker.take() {
            w.wake();
        } else if !s.spawned.get() {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
                s.spawned.set(true);
                rt.spawn(spin());
            }
        }
    });
}

/// The spin task of one thread: waits for a write, then yields to the
/// runtime until a window with no write in it has passed.
async fn spin() {
    loop {
        std::future::poll_fn(|cx| {
            SPIN.with(|s| {
                if s.rearm.get() {
                    Poll::Ready(())
                } else {
                    s.waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
        })
        .await;
        let mut until = Instant::now();
        let commits = COMMITS.load(Ordering::Relaxed);
        SPIN.with(|s| s.active.set(true));
        loop {
            let window = SPIN.with(|s| {
                s.turns.set(s.turns.get() + 1);
                s.rearm.replace(false).then(|| s.window_us.get())
            });
            if let Some(us) = window {
                until = Instant::now() + Duration::from_micros(us);
            }
            if Instant::now() >= until {
                break;
            }
            tokio::task::yield_now().await;
        }
        let caught = COMMITS.load(Ordering::Relaxed) != commits;
        SPIN.with(|s| {
            s.active.set(false);
            s.misses.set(if caught {
                0
            } else {
                s.misses.get().saturating_add(1)
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns() -> u64 {
        SPIN.with(|s| s.turns.get())
    }

    /// While the window is open the thread keeps turning (the spin runs
    /// while the test task sleeps on a timer); after it, the thread
    /// sleeps until the next write. Nothing here depends on the machine's
    /// speed but the spin ending within seconds of a 20 ms window.
    #[test]
    fn a_write_keeps_the_thread_polling_for_the_window_then_it_sleeps() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert_eq!(turns(), 0);
            open(20_000);
            // The test task sleeps: only the spin can turn the runtime.
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(SPIN.with(|s| s.spawned.get()), "no spin task started");
            assert!(
                turns() > 1,
                "the thread did not spin while the window was open"
            );
            // The window closes and the spin waits for the next write.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut before = turns();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = turns();
                if now == before {
                    break;
                }
                before = now;
                assert!(Instant::now() < deadline, "the spin never ended");
            }
            // Asleep: nothing turns across another 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(turns(), before, "the spin went on with no write");
            // The next write wakes it again.
            open(20_000);
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(turns() > before, "a second write did not spin");
        });
    }

    #[test]
    fn after_enough_misses_only_probes_open_a_window() {
        for opens in 1..=3 * PROBE_EVERY {
            assert!(!backed_off(0, opens));
            assert!(!backed_off(MISSES_BEFORE_BACKOFF - 1, opens));
            assert_eq!(
                backed_off(MISSES_BEFORE_BACKOFF, opens),
                !opens.is_multiple_of(PROBE_EVERY),
                "write {opens}"
            );
        }
    }

    /// Windows with no commit in them turn the spin off but for probes;
    /// a probe window with a commit in it turns it back on. (The commit
    /// count is the process's: other tests' writers may commit meanwhile,
    /// which only ever looks like a caught window, so each step waits for
    /// its state instead of counting windows; which writes probe is
    /// [`backed_off`]'s, tested above.)
    #[test]
    fn a_thread_stops_spinning_when_it_catches_nothing_and_resumes_when_it_does() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // One write and its window (100 ms), with a commit in it or
            // none, then sleep until it has ended. Whether it opened a
            // window. The commit comes once the spin has taken its first
            // turn of this window (the runtime alternates the two tasks),
            // so it falls inside the window unless the thread stalls for
            // 100 ms.
            async fn window(commit: bool) -> bool {
                let before = turns();
                open(100_000);
                if commit {
                    let deadline = Instant::now() + Duration::from_millis(50);
                    while turns() == before && Instant::now() < deadline {
                        tokio::task::yield_now().await;
                    }
                    committed(1);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                turns() > before
            }
            let misses = || SPIN.with(|s| s.misses.get());
            let deadline = Instant::now() + Duration::from_secs(120);
            while misses() < MISSES_BEFORE_BACKOFF {
                assert!(window(false).await, "a window did not open");
                assert!(Instant::now() < deadline, "windows never counted as misses");
            }
            // Backed off: a write opens no window (but for the probes).
            while window(false).await {
                assert!(Instant::now() < deadline, "the spin never backed off");
            }
            // A probe catches a commit: spinning again.
            let mut writes = 0;
            while misses() > 0 {
                window(true).await;
                writes += 1;
                assert!(writes <= PROBE_EVERY, "no probe in {PROBE_EVERY} writes");
            }
            assert!(window(false).await, "the spin did not resume");
        });
    }

    #[test]
    fn only_light_load_with_a_window_spins() {
        assert!(should_spin(50, 0, LIGHT_BATCH));
        assert!(should_spin(50, LIGHT_BATCH, LIGHT_BATCH));
        assert!(!should_spin(50, LIGHT_BATCH + 1, LIGHT_BATCH));
        assert!(!should_spin(0, 1, LIGHT_BATCH));
        assert!(should_spin(50, 1, LIGHT_BATCH_REMOTE));
        assert!(!should_spin(50, LIGHT_BATCH_REMOTE + 1, LIGHT_BATCH_REMOTE));
        assert!(!should_spin(0, 0, LIGHT_BATCH_REMOTE));
    }

    #[test]
    fn a_thread_outside_a_runtime_or_on_a_pool_does_not_spin() {
        open(1_000);
        assert!(!SPIN.with(|s| s.spawned.get()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::spawn(async {
                open(1_000);
                assert!(!SPIN.with(|s| s.spawned.get()));
            })
            .await
            .expect("task");
        });
    }
}
