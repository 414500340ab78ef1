//! The sentinel side of coord: where events come from, and what a sentinel
//! does with them.
//!
//! * [`SentinelEventSource`] — the one interface a sentinel reads through:
//!   `poll()` returns every event since the previous successful call and is
//!   cancel-safe; `name()` is stable across restarts.
//! * Sources: [`FsPollSource`] scans a legacy coord root
//!   (`LEGACY_LAYOUT.md`) and diffs it with the previous scan;
//!   [`FsWatchSource`] does the same when inotify says something changed;
//!   [`EventManagerSource`] follows the daemon's log from a cursor kept in a
//!   state file; `InMemorySource` (feature `testing`) is a test double.
//! * [`sentinel`] — [`Observation`]s, [`handle_event`] and the sinks
//!   (`jsonl:PATH`, `stdout`, `exec:CMD`), and the loop that only calls
//!   `poll()` and `handle_event`.
//!
//! Business logic (what an observation says) never touches the file
//! system; only the sources do.
#![deny(missing_docs)]

mod error;
mod event_manager;
mod fs_poll;
mod fs_watch;
pub mod ledger;
#[cfg(feature = "testing")]
mod memory;
pub mod sentinel;
mod source;

pub use error::SourceError;
pub use event_manager::EventManagerSource;
pub use fs_poll::FsPollSource;
pub use fs_watch::FsWatchSource;
#[cfg(feature = "testing")]
pub use memory::{InMemoryHandle, InMemorySource};
pub use sentinel::{handle_event, observe, Observation, Sink, SinkSpec};
pub use source::SentinelEventSource;
