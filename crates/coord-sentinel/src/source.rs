//! The source interface (DESIGN §6).

use crate::error::SourceError;
use coord_proto::Event;
use std::future::Future;

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
