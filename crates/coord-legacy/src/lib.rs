//! The legacy coord root (`LEGACY_LAYOUT.md`): a directory of JSON files
//! that existing peers keep writing.
//!
//! * [`layout`] — the file formats, read leniently (unknown fields kept as
//!   `extra`; half-written files are "not yet"), and [`layout::scan`];
//! * [`diff`] — two scans → the [`Change`]s between them, in the layout's
//!   fixed order;
//! * [`Feed`] — a cancel-safe stream of changes, by polling or by inotify
//!   (through `notify`, with a settle window, overflow rescans and a
//!   polling fallback);
//! * [`Exporter`] — a view written back out in the layout, atomically,
//!   touching only files it wrote.
//!
//! Both the sentinel's file sources and the daemon's bridge read the root
//! through this crate, so the two cannot disagree about what a change is.
//! It knows nothing of the daemon or the log.
#![deny(missing_docs)]

pub mod diff;
mod export;
mod feed;
pub mod layout;

pub use diff::{diff, Change};
pub use export::{ExportReport, Exporter, Skip};
pub use feed::{Feed, FeedError, Shared, WatcherFactory, DEFAULT_SETTLE};
