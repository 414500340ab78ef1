//! [`FsWatchSource`]: the same events as [`crate::FsPollSource`], driven by
//! inotify instead of a timer (see `coord_legacy::Feed` for the settle
//! window, storm coalescing, overflow rescans and the polling fallback,
//! and for their tests).

use crate::fs_poll::Stamper;
use crate::source::{SentinelEventSource, SourceError};
use coord_legacy::Feed;
use coord_proto::Event;
use std::path::PathBuf;
use std::time::Duration;

/// Source name of events derived from watched changes.
pub const SOURCE: &str = "fs-watch";

/// See the module docs. Cancel-safe like the feed it wraps.
pub struct FsWatchSource {
    feed: Feed,
    stamper: Stamper,
    name: String,
}

impl FsWatchSource {
    /// A source for the root at `root`. Watching starts with the first poll.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        FsWatchSource {
            name: format!("{SOURCE}:{}", root.display()),
            feed: Feed::watching(root),
            stamper: Stamper::new(SOURCE),
        }
    }

    /// The quiet time that ends an event storm (default 30 ms).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.feed = self.feed.with_settle(settle);
        self
    }

    /// How long a poll waits for a change before answering "nothing new"
    /// (default 30 s; it sleeps on the notification, it does not poll).
    pub fn with_idle_wait(mut self, wait: Duration) -> Self {
        self.feed = self.feed.with_idle_wait(wait);
        self
    }

    /// The rescan interval used when watching is impossible (default 2 s).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.feed = self.feed.with_poll_interval(interval);
        self
    }

    /// Bounds one poll to `n` events.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.feed = self.feed.with_max_batch(n);
        self
    }

    /// True once the source has fallen back to polling.
    pub fn is_polling(&self) -> bool {
        self.feed.is_fallback()
    }
}

impl SentinelEventSource for FsWatchSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        let changes = self
            .feed
            .next()
            .await
            .map_err(|e| SourceError::Worker(e.to_string()))?;
        Ok(self.stamper.stamp(changes))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
