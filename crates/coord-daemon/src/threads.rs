//! The daemon's I/O threads: where each accepted connection is served.
//!
//! The daemon runs on one current-thread runtime (the *main* thread): the
//! accept loop, the writer, timers and the background tasks. On a machine
//! with few cores, a request that hops between threads (connection task on
//! one worker, writer on another, and back) pays more in wake-ups (futex,
//! eventfd, the other thread's `epoll_wait`) than in its own work, so by
//! default every connection is served on the main thread too
//! (docs/BENCHMARKS.md, "one thread").
//!
//! With `io_threads` > 1, each new connection goes to the thread serving
//! the fewest (the main thread on a tie), among the main thread and
//! `io_threads - 1` extra threads, each running a current-thread runtime
//! of its own. Each connection is registered with the epoll set of the
//! thread that serves it, so its reads and writes never cross threads;
//! only its requests to the writer and the hub's wake-ups do. This spreads
//! a fan-out to many thousands of subscribers over the cores, at the cost
//! of a cross-thread hop each way for every request from a connection off
//! the main thread.
//!
//! Must not: run the writer or anything that changes state; the extra
//! threads only serve connections.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The extra I/O threads, and how many connections each thread (the main
/// one first) is serving.
pub(crate) struct IoThreads {
    extra: Vec<IoThread>,
    /// Live connections per thread; index 0 is the main thread.
    live: Vec<Arc<AtomicUsize>>,
}

struct IoThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// Counts a connection on its thread while it lives.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoThreads {
    /// Starts `total - 1` extra threads (none for `total` ≤ 1).
    ///
    /// # Errors
    /// When a thread or its runtime cannot be started (out of threads or
    /// descriptors).
    pub(crate) fn start(total: usize) -> std::io::Result<IoThreads> {
        let mut extra = Vec::new();
        for i in 1..total.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("coord-io-{i}"))
                .spawn(move || {
                    // Runs the connections spawned onto it until told to
                    // stop; then dropping the runtime ends what is left.
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            extra.push(IoThread {
                handle,
                stop: Some(stop),
                join: Some(join),
            });
        }
        let live = (0..=extra.len())
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        Ok(IoThreads { extra, live })
    }

    /// Threads serving connections, the main one included.
    pub(crate) fn count(&self) -> usize {
        self.extra.len() + 1
    }

    /// Spawns a connection's task into `set`, on the thread serving the
    /// fewest connections (the main thread on a tie: a lone client's
    /// requests then reach the writer without crossing threads). The task
    /// must register its socket itself (inside `fut`), so it is registered
    /// with the epoll set of the thread that polls it.
    pub(crate) fn spawn<F>(&mut self, set: &mut JoinSet<()>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let slot = self
            .live
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (n.load(Ordering::Relaxed), *i))
            .map_or(0, |(i, _)| i);
        let live = self.live[slot].clone();
        live.fetch_add(1, Ordering::Relaxed);
        let fut = async move {
            let _live = Live(live);
            fut.await
        };
        match slot.checked_sub(1).and_then(|i| self.extra.get(i)) {
            Some(t) => {
                set.spawn_on(fut, &t.handle);
            }
            None => {
                set.spawn(fut);
            }
        }
    }

    /// Live connections on each thread, the main one first.
    #[cfg(test)]
    pub(crate) fn live(&self) -> Vec<usize> {
        self.live
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops the extra threads and waits for them. Call once every
    /// connection has ended (or been aborted).
    pub(crate) async fn stop(mut self) {
        for t in &mut self.extra {
            if let Some(s) = t.stop.take() {
                let _ = s.send(());
            }
        }
        let joins: Vec<JoinHandle<()>> = self
            .extra
            .iter_mut()
            .filter_map(|t| t.join.take())
            .collect();
        if joins.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for j in joins {
                let _ = j.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Connections that stay open until `release` fires, each noting the
    /// thread it ran on.
    fn open(
        threads: &mut IoThreads,
        set: &mut JoinSet<()>,
        n: usize,
        names: &Arc<Mutex<Vec<String>>>,
        release: &tokio::sync::watch::Receiver<bool>,
    ) {
        for _ in 0..n {
            let names = names.clone();
            let mut release = release.clone();
            threads.spawn(set, async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                names.lock().expect("lock").push(name);
                let _ = release.wait_for(|r| *r).await;
            });
        }
    }

    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_the_threads_stop() {
        let mut threads = IoThreads::start(3).expect("threads");
        assert_eq!(threads.count(), 3);
        let names = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut set = JoinSet::new();
        open(&mut threads, &mut set, 6, &names, &released);
        // Every thread takes two: the counts rise as each is dealt.
        assert_eq!(threads.live(), vec![2, 2, 2]);
        // Let the spawned tasks run and note their threads.
        while names.lock().expect("lock").len() < 6 {
            tokio::task::yield_now().await;
        }
        let mut seen = names.lock().expect("lock").clone();
        seen.sort();
        assert_eq!(
            seen.iter().filter(|n| *n == "coord-io-1").count(),
            2,
            "{seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|n| *n == "coord-io-2").count(),
            2,
            "{seen:?}"
        );
        release.send_replace(true);
        while set.join_next().await.is_some() {}
        assert_eq!(threads.live(), vec![0, 0, 0]);
        threads.stop().await;
    }

    #[tokio::test]
    async fn a_lone_connection_stays_on_the_main_thread() {
        let mut threads = IoThreads::start(2).expect("threads");
        let mut set = JoinSet::new();
        let here = std::thread::current().id();
        for _ in 0..3 {
            // One at a time: each finds every thread idle.
            let (tx, rx) = oneshot::channel();
            threads.spawn(&mut set, async move {
                let _ = tx.send(std::thread::current().id());
            });
            assert_eq!(rx.await.expect("ran"), here);
            while set.join_next().await.is_some() {}
        }
        threads.stop().await;
    }

    #[tokio::test]
    async fn one_thread_means_no_extra_thread() {
        let mut threads = IoThreads::start(1).expect("threads");
        assert_eq!(threads.count(), 1);
        let names = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut set = JoinSet::new();
        open(&mut threads, &mut set, 3, &names, &released);
        assert_eq!(threads.live(), vec![3]);
        release.send_replace(true);
        while set.join_next().await.is_some() {}
        threads.stop().await;
    }
}
