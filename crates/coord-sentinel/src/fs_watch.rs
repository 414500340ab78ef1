//! [`FsWatchSource`]: the same events as [`crate::FsPollSource`], driven by
//! inotify instead of a timer (see `coord_legacy::Feed` for the settle
//! window, storm coalescing, overflow rescans and the polling fallback,
//! and for their tests).

use crate::error::SourceError;
use crate::fs_poll::FeedSource;
use crate::source::SentinelEventSource;
use coord_legacy::Feed;
use coord_proto::Event;
use std::path::PathBuf;
use std::time::Duration;

/// Source name of events derived from watched changes.
pub const SOURCE: &str = "fs-watch";

/// See the module docs. Cancel-safe like the feed it wraps.
pub struct FsWatchSource(FeedSource);

impl FsWatchSource {
    /// A source for the root at `root`. Watching starts with the first poll.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsWatchSource(FeedSource::new(Feed::watching(root), SOURCE))
    }

    fn map(self, f: impl FnOnce(Feed) -> Feed) -> Self {
        let FsWatchSource(inner) = self;
        FsWatchSource(inner.map_feed(f))
    }

    /// The quiet time that ends an event storm (default 30 ms).
    pub fn with_settle(self, settle: Duration) -> Self {
        self.map(|f| f.with_settle(settle))
    }

    /// How long a poll waits for a change before answering "nothing new"
    /// (default 30 s; it sleeps on the notification, it does not poll).
    pub fn with_idle_wait(self, wait: Duration) -> Self {
        self.map(|f| f.with_idle_wait(wait))
    }

    /// The rescan interval used when watching is impossible (default 2 s).
    pub fn with_poll_interval(self, interval: Duration) -> Self {
        self.map(|f| f.with_poll_interval(interval))
    }

    /// Bounds one poll to `n` events.
    pub fn with_max_batch(self, n: usize) -> Self {
        self.map(|f| f.with_max_batch(n))
    }

    /// Keeps the last handed scan in `state_file` (one per root); see
    /// [`crate::FsPollSource::with_state_file`].
    pub fn with_state_file(self, state_file: impl Into<PathBuf>) -> Self {
        FsWatchSource(self.0.with_state_file(state_file.into()))
    }

    /// True once watching proved impossible and the source polls instead.
    pub fn is_polling(&self) -> bool {
        self.0.feed.is_fallback()
    }
}

impl SentinelEventSource for FsWatchSource {
    fn poll(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Vec<Event>, SourceError>> + Send {
        self.0.poll()
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    fn ledger(&mut self) -> Option<&mut crate::ledger::Ledger> {
        self.0.ledger()
    }

    fn position(&self) -> Option<serde_json::Value> {
        self.0.position()
    }
}
