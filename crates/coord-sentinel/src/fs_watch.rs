//! [`FsWatchSource`]: the same events as [`crate::FsPollSource`], driven by
//! inotify (through `notify`) instead of a timer.
//!
//! Every change notification bumps a generation counter. A poll that finds
//! the counter ahead of what it last scanned waits for the root to settle
//! (no notification for the settle window, at most ten windows), then does
//! a full rescan and diff. So a storm of writes to one file becomes one
//! event with the final content, a rename into place or a replaced inode is
//! just another change, and an overflowed inotify queue (events lost) is
//! answered by the rescan it triggers anyway. If the root cannot be watched
//! at all (the watch limit is reached, inotify is unavailable) the source
//! logs a warning and rescans on an interval instead.

use crate::fs_poll::Scanner;
use crate::source::{SentinelEventSource, SourceError};
use coord_proto::Event;
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Source name of events derived from watched changes.
pub const SOURCE: &str = "fs-watch";

/// Default settle window.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(30);

/// What the notify callback shares with the source.
#[derive(Default)]
pub(crate) struct Shared {
    generation: AtomicU64,
    overflows: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Shared {
    /// Handles one notification from the watcher's thread.
    pub(crate) fn on_event(&self, res: notify::Result<notify::Event>) {
        match res {
            // Our own scans open and read files; those are not changes.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
            Ok(ev) if ev.need_rescan() => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "inotify queue overflowed; changes were lost, rescanning the whole root"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watch error; rescanning"),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

type Factory =
    Box<dyn FnOnce(&Path, Arc<Shared>) -> notify::Result<Box<dyn Watcher + Send>> + Send>;

enum Mode {
    /// Not started yet (the first poll starts watching).
    Idle(Factory),
    Watching(#[allow(dead_code)] Box<dyn Watcher + Send>),
    Polling,
}

/// See the module docs.
pub struct FsWatchSource {
    scanner: Scanner,
    name: String,
    shared: Arc<Shared>,
    seen: u64,
    mode: Mode,
    settle: Duration,
    idle_wait: Duration,
    poll_interval: Duration,
}

fn default_watcher(root: &Path, shared: Arc<Shared>) -> notify::Result<Box<dyn Watcher + Send>> {
    let mut w = notify::recommended_watcher(move |res| shared.on_event(res))?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok(Box::new(w))
}

impl FsWatchSource {
    /// A source for the root at `root`. Watching starts with the first poll.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        FsWatchSource {
            name: format!("{SOURCE}:{}", root.display()),
            scanner: Scanner::new(root, SOURCE),
            shared: Arc::new(Shared::default()),
            seen: 0,
            mode: Mode::Idle(Box::new(default_watcher)),
            settle: DEFAULT_SETTLE,
            idle_wait: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
        }
    }

    /// The quiet time that ends an event storm (default 30 ms).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long a poll waits for a change before answering "nothing new"
    /// (default 30 s; it sleeps on the notification, it does not poll).
    pub fn with_idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// The rescan interval used when watching is impossible (default 2 s).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Bounds one poll to `n` events.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.scanner.max_batch = Some(n.max(1));
        self
    }

    /// Replaces how the watcher is made (tests force failures with it).
    #[cfg(test)]
    fn with_watcher_factory(
        mut self,
        f: impl FnOnce(&Path, Arc<Shared>) -> notify::Result<Box<dyn Watcher + Send>> + Send + 'static,
    ) -> Self {
        self.mode = Mode::Idle(Box::new(f));
        self
    }

    /// True once the source has fallen back to polling.
    pub fn is_polling(&self) -> bool {
        matches!(self.mode, Mode::Polling)
    }

    /// Overflow notifications seen so far.
    pub fn overflows(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    /// Feeds a notification as if the watcher had sent it (tests force an
    /// overflow with it).
    #[cfg(test)]
    fn inject(&self, res: notify::Result<notify::Event>) {
        self.shared.on_event(res);
    }

    fn start(&mut self) {
        if let Mode::Idle(_) = self.mode {
            let Mode::Idle(factory) = std::mem::replace(&mut self.mode, Mode::Polling) else {
                return;
            };
            match factory(&self.scanner.root, self.shared.clone()) {
                Ok(w) => self.mode = Mode::Watching(w),
                Err(e) => tracing::warn!(
                    root = %self.scanner.root.display(),
                    error = %e,
                    interval_ms = self.poll_interval.as_millis() as u64,
                    "cannot watch the coord root; falling back to polling"
                ),
            }
        }
    }
}

/// Waits until the change counter stops moving for one settle window (at
/// most ten windows), and returns the generation the scan covers.
async fn settled(shared: &Shared, settle: Duration) -> u64 {
    let mut last = shared.generation.load(Ordering::Acquire);
    for _ in 0..10 {
        tokio::time::sleep(settle).await;
        let now = shared.generation.load(Ordering::Acquire);
        if now == last {
            break;
        }
        last = now;
    }
    shared.generation.load(Ordering::Acquire)
}

impl SentinelEventSource for FsWatchSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        if self.scanner.has_pending() {
            return Ok(self.scanner.take());
        }
        self.start();
        if !self.scanner.scanned {
            // Watching is set up before the first scan, so nothing that
            // changes in between is missed.
            let g = self.shared.generation.load(Ordering::Acquire);
            self.scanner.rescan().await?;
            self.seen = g;
            return Ok(self.scanner.take());
        }
        if matches!(self.mode, Mode::Polling) {
            tokio::time::sleep(self.poll_interval).await;
            self.scanner.rescan().await?;
            return Ok(self.scanner.take());
        }
        if self.shared.generation.load(Ordering::Acquire) == self.seen {
            // Nothing yet: wait for a notification or give up for now.
            let shared = self.shared.clone();
            let _ = tokio::time::timeout(self.idle_wait, shared.wake.notified()).await;
            if self.shared.generation.load(Ordering::Acquire) == self.seen {
                return Ok(Vec::new());
            }
        }
        let shared = self.shared.clone();
        let g = settled(&shared, self.settle).await;
        self.scanner.rescan().await?;
        // Committed with the scan (no await in between): a dropped poll
        // leaves `seen` behind, so the change is scanned again.
        self.seen = g;
        Ok(self.scanner.take())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn write(root: &Path, rel: &str, json: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, json).expect("write");
    }

    fn session(phase: &str, beat: u32) -> String {
        format!(
            r#"{{"session_id":"s1","role":"w","task":"t","blob":{{}},"phase":"{phase}","pid":1,"started_at":"2026-04-07T21:10:02.000Z","last_heartbeat":"2026-04-07T21:10:{:02}.000Z"}}"#,
            beat % 60
        )
    }

    fn kinds(e: &[Event]) -> Vec<String> {
        e.iter().map(|e| e.kind().to_string()).collect()
    }

    /// Polls until something arrives (or 5 s pass).
    async fn next(src: &mut FsWatchSource) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let e = src.poll().await.expect("poll");
            if !e.is_empty() || Instant::now() > deadline {
                return e;
            }
        }
    }

    #[tokio::test]
    async fn a_storm_of_writes_becomes_one_event_with_the_final_content() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("sessions")).expect("mkdir");
        let mut src = FsWatchSource::new(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.poll().await.expect("poll").is_empty());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        assert_eq!(kinds(&next(&mut src).await), ["session.register"]);
        for i in 1..=100 {
            write(
                dir.path(),
                "sessions/s1.json",
                &session(if i == 100 { "done" } else { "editing" }, i),
            );
        }
        let e = next(&mut src).await;
        assert_eq!(kinds(&e), ["session.heartbeat"], "100 writes, one event");
        match &e[0].payload {
            coord_proto::Payload::SessionHeartbeat(h) => assert_eq!(h.phase, "done"),
            other => panic!("{other:?}"),
        }
        assert!(!src.is_polling());
    }

    #[tokio::test]
    async fn rename_into_place_and_new_directories_are_seen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsWatchSource::new(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.poll().await.expect("poll").is_empty());
        // A lock directory created after the watch started, its record
        // written to a temp name and renamed into place.
        let lock = dir.path().join("locks").join("src%2Fmain.rs");
        std::fs::create_dir_all(&lock).expect("mkdir");
        std::fs::write(
            lock.join(".record.json.tmp"),
            r#"{"resource":"src/main.rs","owner_session":"a"}"#,
        )
        .expect("tmp");
        std::fs::rename(lock.join(".record.json.tmp"), lock.join("record.json")).expect("rename");
        assert_eq!(kinds(&next(&mut src).await), ["lock.acquire"]);
        // Replace the inode (new file renamed over the old one).
        std::fs::write(
            lock.join(".r.tmp"),
            r#"{"resource":"src/main.rs","owner_session":"b"}"#,
        )
        .expect("tmp");
        std::fs::rename(lock.join(".r.tmp"), lock.join("record.json")).expect("rename");
        assert_eq!(
            kinds(&next(&mut src).await),
            ["lock.release", "lock.acquire"]
        );
    }

    #[tokio::test]
    async fn an_overflow_triggers_a_full_rescan() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsWatchSource::new(dir.path())
            // A watcher that reports nothing: only the forced overflow can
            // tell the source that something changed.
            .with_watcher_factory(|_, _| Ok(Box::new(notify::NullWatcher)))
            .with_idle_wait(Duration::from_millis(100));
        assert!(src.poll().await.expect("poll").is_empty());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        write(
            dir.path(),
            "dispatch-orders/o1.json",
            r#"{"order_id":"o1","assignee":"s1","ticket":"T"}"#,
        );
        assert!(
            src.poll().await.expect("poll").is_empty(),
            "a silent watcher sees nothing"
        );
        src.inject(Ok(
            notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
        assert_eq!(
            kinds(&src.poll().await.expect("poll")),
            ["session.register", "dispatch.issue"]
        );
        assert_eq!(src.overflows(), 1);
    }

    #[tokio::test]
    async fn when_watching_is_impossible_it_falls_back_to_polling() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsWatchSource::new(dir.path())
            .with_watcher_factory(|_, _| Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)))
            .with_poll_interval(Duration::from_millis(20));
        assert!(src.poll().await.expect("poll").is_empty());
        assert!(src.is_polling());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        assert_eq!(kinds(&next(&mut src).await), ["session.register"]);
    }

    #[tokio::test]
    async fn a_dropped_poll_loses_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsWatchSource::new(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.poll().await.expect("poll").is_empty());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        // Cancel polls at several points: waiting, settling, scanning.
        for micros in [1, 100, 1_000, 10_000, 35_000] {
            let r = tokio::time::timeout(Duration::from_micros(micros), src.poll()).await;
            if let Ok(done) = r {
                assert_eq!(kinds(&done.expect("poll")), ["session.register"]);
                return;
            }
        }
        assert_eq!(kinds(&next(&mut src).await), ["session.register"]);
    }
}
