//! Connection threads: extra one-thread runtimes that serve client
//! connections beside the daemon's main thread, which keeps the writer,
//! the hub, the timers and the accept loop (and serves its share of the
//! connections too).
//!
//! Why not tokio's work-stealing pool: a request that crosses threads pays
//! a wake-up per hop, and on a 2-core machine the hops cost more than the
//! work (docs/BENCHMARKS.md, "The write path"). Here a connection lives on
//! one thread for its whole life, and the two things that must cross —
//! the writer's answers and the hub's "the head moved" — cross **once per
//! commit per thread**, not once per request or per subscriber:
//!
//! * [`Replier`] carries a write's answer home. Sent from the writer's
//!   thread to a connection thread, it is queued on that thread's relay,
//!   and only the first answer of a commit wakes the relay task, which
//!   then completes every queued answer with local (free) wake-ups.
//! * [`local_head`] gives subscribers on a connection thread a head watch
//!   of their own thread, fed by one relay task per thread from the hub's.
//!   The relay follows the hub only while the thread has a subscriber: a
//!   thread serving only writes is not woken by every commit.
//!
//! Everything else a handler shares with the main thread (the writer's
//! queue, waits, reads of the state) works across threads as before, only
//! at the price of a wake-up.
//!
//! It must not decide anything about requests: it only moves connections,
//! answers and head positions between threads.

use crate::writer::{Committed, WriteError};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Connections the main thread takes before any goes to a connection
/// thread; see [`ConnThreads::pick`].
pub const MAIN_FIRST: usize = 4;

/// A write's answer.
type Answer = Result<Committed, WriteError>;

/// Answers waiting to be completed on a connection thread.
#[derive(Default)]
struct Relay {
    queued: Mutex<Vec<(oneshot::Sender<Answer>, Answer)>>,
    wake: Notify,
}

impl Relay {
    fn push(&self, tx: oneshot::Sender<Answer>, answer: Answer) {
        // A poisoned lock (a completion panicked) still holds a usable Vec.
        let first = {
            let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            q.push((tx, answer));
            q.len() == 1
        };
        // Only the first answer since the relay last drained wakes it: the
        // rest of the commit's answers ride along.
        if first {
            self.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            let batch = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()));
            for (tx, answer) in batch {
                let _ = tx.send(answer);
            }
        }
    }
}

thread_local! {
    /// The relay of the connection thread this is, if it is one.
    static HOME: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
    /// This thread's copy of a hub's head watch.
    static HEAD: RefCell<Option<LocalHead>> = const { RefCell::new(None) };
}

/// A connection thread's copy of a hub's head watch.
struct LocalHead {
    /// The hub's address.
    hub_addr: usize,
    /// The copy, which the relay task keeps current while it has
    /// receivers.
    local: watch::Sender<u64>,
    /// The hub's own watch, read to bring the copy up to date when the
    /// first subscriber arrives.
    hub: watch::Receiver<u64>,
    /// Wakes the relay task when a subscriber arrives.
    wanted: Arc<Notify>,
}

/// Where a write's answer goes: a oneshot, and the connection thread its
/// receiver lives on (none: the main thread, or a multi-thread runtime).
pub struct Replier {
    tx: oneshot::Sender<Answer>,
    home: Option<Arc<Relay>>,
}

impl Replier {
    /// A replier for a receiver awaited on the calling thread.
    pub fn here(tx: oneshot::Sender<Answer>) -> Self {
        Replier {
            tx,
            home: HOME.with(|h| h.borrow().clone()),
        }
    }

    /// Sends the answer: directly on the receiver's own thread, through
    /// its thread's relay from any other.
    ///
    /// # Errors
    /// The answer back when the receiver is already gone (direct sends
    /// only; a relayed answer to a gone receiver is dropped there).
    pub fn send(self, answer: Answer) -> Result<(), Answer> {
        match self.home {
            Some(relay)
                if !HOME.with(|h| h.borrow().as_ref().is_some_and(|r| Arc::ptr_eq(r, &relay))) =>
            {
                relay.push(self.tx, answer);
                Ok(())
            }
            _ => self.tx.send(answer),
        }
    }
}

/// A head watch for `hub_addr`'s subscribers on the calling thread: the
/// thread's own copy on a connection thread (so one commit wakes the
/// thread once, not once per subscriber), else `None` (use the hub's).
pub(crate) fn local_head(hub_addr: usize) -> Option<watch::Receiver<u64>> {
    HEAD.with(|h| {
        let h = h.borrow();
        let head = h.as_ref().filter(|l| l.hub_addr == hub_addr)?;
        // The relay does not follow the hub while no one here watches, so
        // the copy may be behind: catch it up before handing it out.
        let current = *head.hub.borrow();
        head.local.send_if_modified(|v| {
            let behind = *v < current;
            if behind {
                *v = current;
            }
            behind
        });
        let rx = head.local.subscribe();
        head.wanted.notify_one();
        Some(rx)
    })
}

/// Keeps a connection thread's head copy current while it has receivers,
/// and sleeps (registered nowhere on the hub's side, so a commit costs the
/// thread nothing) while it has none. Ends when the hub does, which ends
/// the copy's receivers too.
async fn follow_head(
    mut hub: watch::Receiver<u64>,
    local: watch::Sender<u64>,
    wanted: Arc<Notify>,
) {
    loop {
        if local.receiver_count() == 0 {
            // A stored permit from an earlier subscriber only costs one
            // more turn of the loop.
            wanted.notified().await;
            continue;
        }
        tokio::select! {
            changed = hub.changed() => {
                if changed.is_err() {
                    break;
                }
                local.send_replace(*hub.borrow_and_update());
            }
            _ = local.closed() => {}
        }
    }
    HEAD.with(|h| h.borrow_mut().take());
}

/// One connection thread.
struct Thread {
    handle: tokio::runtime::Handle,
    join: Option<std::thread::JoinHandle<()>>,
}

/// The connection threads of a daemon; see the module docs. Dropping it
/// stops the threads and joins them; the caller first ends the
/// connections on them (they are in its `JoinSet`).
pub struct ConnThreads {
    threads: Vec<Thread>,
    /// Open connections per thread: the main one first, then each
    /// connection thread.
    open: Arc<[AtomicUsize]>,
    stop: CancellationToken,
}

impl ConnThreads {
    /// One counter of open connections per thread for `n` connection
    /// threads (the main one first): what [`ConnThreads::start`] places by
    /// and `/v1/status` reports.
    pub fn counters(n: usize) -> Arc<[AtomicUsize]> {
        (0..=n).map(|_| AtomicUsize::new(0)).collect()
    }

    /// Starts `n` connection threads (0: the main thread serves every
    /// connection) whose subscribers follow `head` (the hub's watch;
    /// `hub_addr` names the hub), counting open connections in `open`
    /// (from [`ConnThreads::counters`] for the same `n`).
    ///
    /// # Errors
    /// When a thread or its runtime cannot be started.
    pub fn start(
        n: usize,
        hub_addr: usize,
        head: watch::Receiver<u64>,
        open: Arc<[AtomicUsize]>,
    ) -> std::io::Result<ConnThreads> {
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let stop = stop.clone();
            let mut head = head.clone();
            let join = std::thread::Builder::new()
                .name(format!("coord-conn-{}", i + 1))
                .spawn(move || {
                    let relay = Arc::new(Relay::default());
                    HOME.with(|h| *h.borrow_mut() = Some(relay.clone()));
                    let (local, _) = watch::channel(*head.borrow_and_update());
                    let wanted = Arc::new(Notify::new());
                    HEAD.with(|h| {
                        *h.borrow_mut() = Some(LocalHead {
                            hub_addr,
                            local: local.clone(),
                            hub: head.clone(),
                            wanted: wanted.clone(),
                        })
                    });
                    rt.block_on(async move {
                        tokio::spawn(relay.run(stop.clone()));
                        tokio::spawn(follow_head(head, local, wanted));
                        stop.cancelled().await;
                    });
                    HOME.with(|h| h.borrow_mut().take());
                    HEAD.with(|h| h.borrow_mut().take());
                })?;
            threads.push(Thread {
                handle,
                join: Some(join),
            });
        }
        Ok(ConnThreads {
            open,
            threads,
            stop,
        })
    }

    /// Where the next connection goes: the main thread while it serves
    /// fewer than [`MAIN_FIRST`] connections, else the thread (the main
    /// one included) serving the fewest, the main thread on a tie. So a
    /// few clients are served where the writer runs, without a hop each
    /// way (on an idle machine a cross-thread wake-up costs tens of µs of
    /// latency), and many share the cores. `None` in the placement is the
    /// main thread. The placement's guard counts the connection until
    /// dropped.
    pub fn pick(&self) -> Placement {
        let i = if self.open[0].load(Ordering::Relaxed) < MAIN_FIRST {
            0
        } else {
            (0..self.open.len())
                .min_by_key(|&i| (self.open[i].load(Ordering::Relaxed), i))
                .unwrap_or(0)
        };
        self.open[i].fetch_add(1, Ordering::Relaxed);
        Placement {
            handle: i
                .checked_sub(1)
                .and_then(|t| self.threads.get(t))
                .map(|t| t.handle.clone()),
            guard: OpenGuard {
                open: self.open.clone(),
                i,
            },
        }
    }
}

/// Where a connection is served; see [`ConnThreads::pick`].
pub struct Placement {
    /// The connection thread's runtime, or `None` for the main thread.
    pub handle: Option<tokio::runtime::Handle>,
    /// Counts the connection as open on that thread while held.
    pub guard: OpenGuard,
}

/// Counts one open connection on a thread; see [`ConnThreads::pick`].
pub struct OpenGuard {
    open: Arc<[AtomicUsize]>,
    i: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open[self.i].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for ConnThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &mut self.threads {
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits for `rx` from the main thread; the value is checked by the
    /// caller.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_reach_a_connection_thread_through_its_relay_in_order() {
        let (head_tx, head_rx) = watch::channel(0u64);
        let threads = ConnThreads::start(1, 1, head_rx, ConnThreads::counters(1)).expect("start");
        // The main thread takes the first MAIN_FIRST connections, the
        // connection thread the next.
        let main: Vec<Placement> = (0..MAIN_FIRST).map(|_| threads.pick()).collect();
        assert!(main.iter().all(|p| p.handle.is_none()));
        let placed = threads.pick();
        let handle = placed.handle.clone().expect("a connection thread");
        // Receivers made on the connection thread, as a handler's are.
        let (repliers_tx, repliers_rx) = std::sync::mpsc::channel();
        let got = handle.spawn(async move {
            let mut rxs = Vec::new();
            for _ in 0..3 {
                let (tx, rx) = oneshot::channel();
                let r = Replier::here(tx);
                assert!(r.home.is_some(), "made on a connection thread");
                repliers_tx.send(r).expect("send");
                rxs.push(rx);
            }
            let mut seqs = Vec::new();
            for rx in rxs {
                seqs.push(rx.await.expect("answered").expect("ok").seq);
            }
            seqs
        });
        let repliers: Vec<Replier> = within(async {
            let mut v = Vec::new();
            while v.len() < 3 {
                match repliers_rx.try_recv() {
                    Ok(r) => v.push(r),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            v
        })
        .await;
        for (i, r) in repliers.into_iter().enumerate() {
            let answer = Committed {
                first_seq: Some(i as u64 + 1),
                seq: Some(i as u64 + 1),
                reply: coord_core::Reply::Done,
                replayed: false,
                digest: None,
            };
            assert!(r.send(Ok(answer)).is_ok(), "queued on the relay");
        }
        let seqs = within(got).await.expect("join");
        assert_eq!(seqs, vec![Some(1), Some(2), Some(3)]);
        drop(head_tx);
        drop((main, placed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_thread_follows_the_hub_head_and_ends_with_it() {
        let (head_tx, head_rx) = watch::channel(5u64);
        let threads = ConnThreads::start(1, 7, head_rx, ConnThreads::counters(1)).expect("start");
        let _main: Vec<Placement> = (0..MAIN_FIRST).map(|_| threads.pick()).collect();
        let placed = threads.pick();
        let handle = placed.handle.clone().expect("a connection thread");
        let (ready_tx, ready_rx) = oneshot::channel();
        let seen = handle.spawn(async move {
            // Another hub's address gets no local copy.
            assert!(local_head(8).is_none());
            let mut rx = local_head(7).expect("a local copy on a connection thread");
            let _ = ready_tx.send(());
            let mut seen = vec![*rx.borrow_and_update()];
            while rx.changed().await.is_ok() {
                seen.push(*rx.borrow_and_update());
            }
            seen
        });
        within(ready_rx).await.expect("ready");
        head_tx.send_replace(9);
        // The relay forwards the latest value; wait until it has.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(head_tx);
        let seen = within(seen).await.expect("join");
        assert_eq!(seen.first(), Some(&5));
        assert_eq!(seen.last(), Some(&9), "{seen:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_arriving_after_the_head_moved_unwatched_starts_at_the_head() {
        let (head_tx, head_rx) = watch::channel(1u64);
        let threads = ConnThreads::start(1, 7, head_rx, ConnThreads::counters(1)).expect("start");
        let _main: Vec<Placement> = (0..MAIN_FIRST).map(|_| threads.pick()).collect();
        let handle = threads.pick().handle.clone().expect("a connection thread");
        // A first subscriber comes and goes; the relay then stops
        // following the hub.
        let first = handle.spawn(async {
            let rx = local_head(7).expect("a local copy");
            let v = *rx.borrow();
            drop(rx);
            v
        });
        assert_eq!(within(first).await.expect("join"), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The head moves while no one on the thread watches.
        head_tx.send_replace(4);
        head_tx.send_replace(6);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (ready_tx, ready_rx) = oneshot::channel();
        let second = handle.spawn(async move {
            let mut rx = local_head(7).expect("a local copy");
            let start = *rx.borrow_and_update();
            let _ = ready_tx.send(());
            let mut last = start;
            while last < 8 {
                if rx.changed().await.is_err() {
                    break;
                }
                last = *rx.borrow_and_update();
            }
            (start, last)
        });
        within(ready_rx).await.expect("ready");
        head_tx.send_replace(8);
        let (start, last) = within(second).await.expect("join");
        assert_eq!(start, 6, "caught up with the hub, not the stale copy");
        assert_eq!(last, 8, "and follows it again");
    }

    #[test]
    fn placement_fills_the_main_thread_first_then_the_fewest_open() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_tx, rx) = watch::channel(0u64);
            let threads = ConnThreads::start(2, 1, rx, ConnThreads::counters(2)).expect("start");
            let first: Vec<Placement> = (0..MAIN_FIRST).map(|_| threads.pick()).collect();
            assert!(first.iter().all(|p| p.handle.is_none()), "main first");
            let b = threads.pick(); // thread 1
            let c = threads.pick(); // thread 2
            assert_eq!((b.guard.i, c.guard.i), (1, 2));
            drop(b);
            let d = threads.pick(); // thread 1 again: the fewest open
            assert_eq!(d.guard.i, 1);
            drop(first);
            // The main thread is below MAIN_FIRST again.
            let e = threads.pick();
            assert!(e.handle.is_none());
            drop((c, d, e));
            assert!(threads.open.iter().all(|n| n.load(Ordering::Relaxed) == 0));
        });
    }
}
