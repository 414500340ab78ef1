//! The source interface (DESIGN §6).

use coord_proto::Event;
use std::future::Future;

/// Why a poll failed. A failed poll changes nothing: the next one returns
/// what this one would have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file system refused a read (other than a file vanishing, which is
    /// a change, not an error).
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon could not be reached or refused.
    #[error("daemon: {0}")]
    Daemon(#[from] coord_client::ClientError),
    /// The daemon ended the stream with an error (e.g. `compacted`).
    #[error("daemon stream: {code}: {message}")]
    Stream {
        /// The protocol error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A background task died.
    #[error("worker: {0}")]
    Worker(String),
}

/// Where a sentinel's events come from.
///
/// **Cancel safety is required**: dropping a `poll` future at any await
/// point loses nothing — the next call returns the events the dropped one
/// would have. Implementations commit their cursor only when a call
/// returns. Each source's tests prove it.
pub trait SentinelEventSource: Send {
    /// Every event since the previous successful call, oldest first; an
    /// empty vector means nothing new. At most the source's `max_batch`
    /// events, if one is set; the rest come with the next call.
    ///
    /// # Errors
    /// [`SourceError`]; nothing is consumed by a failed call.
    fn poll(&mut self) -> impl Future<Output = Result<Vec<Event>, SourceError>> + Send;

    /// A name that stays the same across restarts (`fs-poll:<root>`,
    /// `event-manager:<socket>`), for logs and state files.
    fn name(&self) -> &str;

    /// The source's delivery ledger, when it keeps one: the sentinel loop
    /// then hands each batch to the sink under the ledger's protocol
    /// (exactly once into a `jsonl` sink across crashes). `None`: the
    /// source keeps no durable position.
    fn ledger(&mut self) -> Option<&mut crate::ledger::Ledger> {
        None
    }

    /// Where the source stands after the last `poll`, when it must be kept
    /// with a batch: a file source's last scan (`None` while a scan's
    /// changes are still being handed out in several batches, or for a
    /// source whose position is its cursor).
    fn position(&self) -> Option<serde_json::Value> {
        None
    }
}
