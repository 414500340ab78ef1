//! [`Feed`]: the changes of a legacy root, as they happen.
//!
//! A feed keeps the last scan and the changes not yet handed out. In
//! polling mode every `next()` rescans. In watching mode every inotify
//! notification bumps a generation counter; a `next()` that finds the
//! counter ahead of what it last scanned waits for the root to settle (no
//! notification for one settle window, at most ten windows), then rescans
//! and diffs. So a storm of writes to one file becomes one change with the
//! final content, a rename into place or a replaced inode is just another
//! change, and an overflowed inotify queue is answered by the full rescan
//! it triggers. If the root cannot be watched (the watch limit is reached,
//! inotify is unavailable) the feed logs a warning and rescans on an
//! interval instead.
//!
//! Cancel safety: the only awaits are the settle/idle waits and the scan on
//! the blocking pool; the scan's result, and the generation it covers, are
//! committed after the last await. A dropped `next()` changes nothing.

use crate::diff::{diff, Change};
use crate::layout::{self, Root};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default settle window of a watching feed.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(30);

/// Why a feed could not deliver. Nothing was consumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The blocking scan task died.
    #[error("scan task failed: {0}")]
    Worker(String),
}

/// What the notify callback shares with the feed.
pub struct Shared {
    generation: AtomicU64,
    overflows: AtomicU64,
    /// When the last notification came, in ns since `epoch`.
    last_ns: AtomicU64,
    epoch: std::time::Instant,
    wake: tokio::sync::Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            generation: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Shared {
    /// Handles one notification (on the watcher's thread).
    pub fn on_event(&self, res: notify::Result<notify::Event>) {
        match res {
            // Scans open and read files; those are not changes.
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
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(now, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// Makes the watcher of a watching feed.
pub type WatcherFactory =
    Box<dyn FnOnce(&Path, Arc<Shared>) -> notify::Result<Box<dyn Watcher + Send>> + Send>;

enum Mode {
    Poll,
    /// Watching not started yet (the first `next()` starts it).
    WatchPending(WatcherFactory),
    Watching(#[allow(dead_code)] Box<dyn Watcher + Send>),
    /// Watching was impossible: rescan every `poll_interval`.
    Fallback,
}

fn default_watcher(root: &Path, shared: Arc<Shared>) -> notify::Result<Box<dyn Watcher + Send>> {
    let mut w = notify::recommended_watcher(move |res| shared.on_event(res))?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok(Box::new(w))
}

/// See the module docs.
pub struct Feed {
    root: PathBuf,
    known: Root,
    pending: VecDeque<Change>,
    max_batch: Option<usize>,
    scanned: bool,
    mode: Mode,
    shared: Arc<Shared>,
    seen: u64,
    /// Files the last scan skipped as malformed.
    skipped: u64,
    settle: Duration,
    idle_wait: Duration,
    poll_interval: Duration,
}

impl Feed {
    fn with_mode(root: PathBuf, mode: Mode) -> Self {
        Feed {
            root,
            known: Root::default(),
            pending: VecDeque::new(),
            max_batch: None,
            scanned: false,
            mode,
            shared: Arc::new(Shared::default()),
            seen: 0,
            skipped: 0,
            settle: DEFAULT_SETTLE,
            idle_wait: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
        }
    }

    /// A feed that rescans on every `next()` (the caller paces it).
    pub fn polling(root: impl Into<PathBuf>) -> Self {
        Feed::with_mode(root.into(), Mode::Poll)
    }

    /// A feed driven by inotify; watching starts with the first `next()`.
    pub fn watching(root: impl Into<PathBuf>) -> Self {
        Feed::with_mode(root.into(), Mode::WatchPending(Box::new(default_watcher)))
    }

    /// Starts from `known` instead of an empty root: the first `next()`
    /// reports only what differs from it (a restarted bridge seeds what
    /// the log already says).
    pub fn with_known(mut self, known: Root) -> Self {
        self.known = known;
        self
    }

    /// The last scan (what the next diff starts from).
    pub fn known(&self) -> &Root {
        &self.known
    }

    /// Files the last scan skipped as malformed (half-written, or naming
    /// another id than their file name).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// True while changes of the last scan wait to be handed out (a
    /// `max_batch` split them).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The quiet time that ends an event storm (watching; default 30 ms).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long `next()` waits for a change before answering "nothing
    /// new" (watching; default 30 s — it sleeps on the notification).
    pub fn with_idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// The rescan interval when watching is impossible (default 2 s).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Bounds one `next()` to `n` changes.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = Some(n.max(1));
        self
    }

    /// Replaces how the watcher is made (tests force failures with it).
    pub fn with_watcher_factory(mut self, f: WatcherFactory) -> Self {
        if !matches!(self.mode, Mode::Poll) {
            self.mode = Mode::WatchPending(f);
        }
        self
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True once a watching feed has fallen back to polling.
    pub fn is_fallback(&self) -> bool {
        matches!(self.mode, Mode::Fallback)
    }

    /// Overflow notifications seen so far.
    pub fn overflows(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    /// Feeds a notification as if the watcher had sent it (tests force an
    /// overflow with it).
    pub fn inject(&self, res: notify::Result<notify::Event>) {
        self.shared.on_event(res);
    }

    fn take(&mut self) -> Vec<Change> {
        let n = self.max_batch.unwrap_or(usize::MAX).min(self.pending.len());
        self.pending.drain(..n).collect()
    }

    fn start(&mut self) {
        if !matches!(self.mode, Mode::WatchPending(_)) {
            return;
        }
        let Mode::WatchPending(factory) = std::mem::replace(&mut self.mode, Mode::Fallback) else {
            return;
        };
        match factory(&self.root, self.shared.clone()) {
            Ok(w) => self.mode = Mode::Watching(w),
            Err(e) => tracing::warn!(
                root = %self.root.display(),
                error = %e,
                interval_ms = self.poll_interval.as_millis() as u64,
                "cannot watch the coord root; falling back to polling"
            ),
        }
    }

    /// Scans and queues the difference; commits after its only await.
    async fn rescan(&mut self, covers: u64) -> Result<(), FeedError> {
        let root = self.root.clone();
        let prev = self.known.clone();
        let (next, changes, skipped) = tokio::task::spawn_blocking(move || {
            let (next, skipped) = layout::scan_counted(&root, &prev);
            let changes = diff(&prev, &next);
            (next, changes, skipped)
        })
        .await
        .map_err(|e| FeedError::Worker(e.to_string()))?;
        self.known = next;
        self.skipped = skipped;
        self.scanned = true;
        self.seen = covers;
        self.pending.extend(changes);
        Ok(())
    }

    /// The changes since the previous call (at most `max_batch`); empty
    /// means nothing new. Polling: rescans now. Watching: waits for a
    /// change (at most `idle_wait`), lets it settle, rescans.
    ///
    /// # Errors
    /// [`FeedError`]; nothing is consumed.
    pub async fn next(&mut self) -> Result<Vec<Change>, FeedError> {
        if !self.pending.is_empty() {
            return Ok(self.take());
        }
        self.start();
        let generation = || self.shared.generation.load(Ordering::Acquire);
        match self.mode {
            Mode::Poll => {
                self.rescan(0).await?;
                return Ok(self.take());
            }
            Mode::Fallback if self.scanned => {
                tokio::time::sleep(self.poll_interval).await;
                self.rescan(0).await?;
                return Ok(self.take());
            }
            _ => {}
        }
        if !self.scanned {
            // Watching starts before the first scan, so nothing that
            // changes in between is missed.
            let g = generation();
            self.rescan(g).await?;
            return Ok(self.take());
        }
        if generation() == self.seen {
            let shared = self.shared.clone();
            let _ = tokio::time::timeout(self.idle_wait, shared.wake.notified()).await;
            if self.shared.generation.load(Ordering::Acquire) == self.seen {
                return Ok(Vec::new());
            }
        }
        let shared = self.shared.clone();
        let g = settled(&shared, self.settle).await;
        self.rescan(g).await?;
        Ok(self.take())
    }
}

/// Waits until one settle window has passed since the last notification
/// (at most ten windows in all, so a constant storm still gets scanned),
/// and returns the generation the scan covers.
async fn settled(shared: &Shared, settle: Duration) -> u64 {
    let started = std::time::Instant::now();
    loop {
        let last = Duration::from_nanos(shared.last_ns.load(Ordering::Acquire));
        let quiet_at = last + settle;
        let now = shared.epoch.elapsed();
        if now >= quiet_at || started.elapsed() >= settle * 10 {
            break;
        }
        tokio::time::sleep(quiet_at - now).await;
    }
    shared.generation.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::Payload;
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

    fn kinds(e: &[Change]) -> Vec<String> {
        e.iter()
            .map(|c| c.draft.payload.kind().to_string())
            .collect()
    }

    /// Polls until something arrives (or 5 s pass).
    async fn next(src: &mut Feed) -> Vec<Change> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let e = src.next().await.expect("next");
            if !e.is_empty() || Instant::now() > deadline {
                return e;
            }
        }
    }

    #[tokio::test]
    async fn a_storm_of_writes_becomes_one_event_with_the_final_content() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("sessions")).expect("mkdir");
        let mut src = Feed::watching(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.next().await.expect("next").is_empty());
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
        match &e[0].draft.payload {
            Payload::SessionHeartbeat(h) => assert_eq!(h.phase, "done"),
            other => panic!("{other:?}"),
        }
        assert!(!src.is_fallback());
    }

    #[tokio::test]
    async fn rename_into_place_and_new_directories_are_seen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = Feed::watching(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.next().await.expect("next").is_empty());
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
        let mut src = Feed::watching(dir.path())
            // A watcher that reports nothing: only the forced overflow can
            // tell the source that something changed.
            .with_watcher_factory(Box::new(|_, _| Ok(Box::new(notify::NullWatcher))))
            .with_idle_wait(Duration::from_millis(100));
        assert!(src.next().await.expect("next").is_empty());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        write(
            dir.path(),
            "dispatch-orders/o1.json",
            r#"{"order_id":"o1","assignee":"s1","ticket":"T"}"#,
        );
        assert!(
            src.next().await.expect("next").is_empty(),
            "a silent watcher sees nothing"
        );
        src.inject(Ok(
            notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
        assert_eq!(
            kinds(&src.next().await.expect("next")),
            ["session.register", "dispatch.issue"]
        );
        assert_eq!(src.overflows(), 1);
    }

    #[tokio::test]
    async fn when_watching_is_impossible_it_falls_back_to_polling() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = Feed::watching(dir.path())
            .with_watcher_factory(Box::new(|_, _| {
                Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
            }))
            .with_poll_interval(Duration::from_millis(20));
        assert!(src.next().await.expect("next").is_empty());
        assert!(src.is_fallback());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        assert_eq!(kinds(&next(&mut src).await), ["session.register"]);
    }

    #[tokio::test]
    async fn a_dropped_poll_loses_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = Feed::watching(dir.path()).with_idle_wait(Duration::from_millis(200));
        assert!(src.next().await.expect("next").is_empty());
        write(dir.path(), "sessions/s1.json", &session("planning", 0));
        // Cancel polls at several points: waiting, settling, scanning.
        for micros in [1, 100, 1_000, 10_000, 35_000] {
            let r = tokio::time::timeout(Duration::from_micros(micros), src.next()).await;
            if let Ok(done) = r {
                assert_eq!(kinds(&done.expect("next")), ["session.register"]);
                return;
            }
        }
        assert_eq!(kinds(&next(&mut src).await), ["session.register"]);
    }
}
