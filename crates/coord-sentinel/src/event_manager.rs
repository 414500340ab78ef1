//! [`EventManagerSource`]: follow the daemon's log from a saved cursor.

use crate::error::SourceError;
use crate::ledger::Ledger;
use crate::source::SentinelEventSource;
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use coord_proto::Event;
use std::path::PathBuf;

/// Reads the daemon's events after a cursor that survives restarts.
///
/// The cursor lives in a state file (a [`Ledger`]: `{"cursor":N,
/// "log_id":"…","in_flight":…}`, written atomically). It moves only when
/// the sentinel loop has handed a batch to its sink (the ledger's
/// protocol), so a sentinel killed at any instant neither loses nor
/// repeats an event its sink has. A cursor is a position in one log only:
/// with [`EventManagerSource::with_log_id`] a state file saved from another
/// log is refused, and every poll names the log so a daemon that now
/// serves another log refuses it too (`log_mismatch`) instead of serving
/// seqs that mean something else.
///
/// A poll holds a stream open until the first new event arrives (at most
/// `idle_wait`), so an idle sentinel costs one parked connection, not a
/// request loop, and a new event reaches it as soon as it commits.
///
/// Cancel-safe: the in-memory read position moves only when `poll`
/// returns; a dropped poll leaves it where it was and the daemon serves
/// the same events again.
pub struct EventManagerSource {
    client: Client,
    name: String,
    ledger: Ledger,
    /// Seq of the last event returned by `poll` (ahead of the ledger's
    /// cursor while a batch is being handed).
    cursor: u64,
    /// Kind globs passed to the stream (`lock.*,session.*`).
    kinds: Option<String>,
    max_batch: usize,
    /// How long a poll waits for the first new event.
    idle_wait: std::time::Duration,
}

impl EventManagerSource {
    /// A source reading through `client`, its ledger kept in `state_file`.
    ///
    /// # Errors
    /// [`SourceError::State`] if the state file exists but cannot be read.
    pub fn new(client: Client, state_file: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let ledger = Ledger::open(state_file)?;
        // A batch in flight is already in the ledger: reading resumes
        // after it, and the loop completes it first.
        let cursor = ledger
            .state
            .in_flight
            .as_ref()
            .map_or(ledger.state.cursor, |f| f.cursor);
        Ok(EventManagerSource {
            name: format!("event-manager:{}", client.socket().display()),
            client,
            ledger,
            cursor,
            kinds: None,
            max_batch: 1024,
            idle_wait: std::time::Duration::from_secs(30),
        })
    }

    /// Binds the cursor to the log `log_id` (the daemon's `/v1/status`).
    ///
    /// # Errors
    /// [`SourceError::State`] when the state file was saved from another
    /// log: its seqs mean nothing on this one. The message says how to
    /// re-sync. A state file without a log id (written by an older coord)
    /// is adopted with a warning.
    pub fn with_log_id(mut self, log_id: &str) -> Result<Self, SourceError> {
        match &self.ledger.state.log_id {
            Some(saved) if saved != log_id => {
                return Err(SourceError::State {
                    path: self.ledger.path().display().to_string(),
                    reason: format!(
                        "the cursor (seq {}) was saved from log {saved}, but the daemon serves log {log_id}; \
                         remove the file (or pass another --state-file, or --reset) to read this log from its start",
                        self.ledger.state.cursor
                    ),
                })
            }
            Some(_) => {}
            None if self.ledger.state.cursor > 0 => tracing::warn!(
                path = %self.ledger.path().display(),
                cursor = self.ledger.state.cursor,
                log_id,
                "the cursor file names no log; assuming it belongs to this one"
            ),
            None => {}
        }
        self.ledger.state.log_id = Some(log_id.to_string());
        // Record the binding at once, so even an idle sentinel's file says
        // which log it belongs to.
        self.ledger.save()?;
        Ok(self)
    }

    /// Only kinds matching these globs (`lock.*`).
    pub fn with_kinds(mut self, kinds: &[&str]) -> Self {
        self.kinds = Some(kinds.join(","));
        self
    }

    /// Bounds one poll to `n` events (default 1,024).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How long a poll waits for a new event before answering "nothing
    /// new" (default 30 s; the wait is a held-open stream, not a loop).
    pub fn with_idle_wait(mut self, wait: std::time::Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// The seq of the last event returned.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The seq of the last event whose batch was fully handed (what the
    /// state file says).
    pub fn handled(&self) -> u64 {
        self.ledger.state.cursor
    }
}

impl SentinelEventSource for EventManagerSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        // Follow from the cursor: the first event may take up to
        // `idle_wait` to come; whatever arrives right behind it joins the
        // batch. The stream is dropped when the poll returns.
        let query = EventsQuery {
            since: Some(self.cursor.to_string()),
            kinds: self.kinds.clone(),
            log_id: self.ledger.state.log_id.clone(),
            ..Default::default()
        };
        let mut stream = self.client.events(&query).await?;
        let mut out = Vec::new();
        let mut wait = self.idle_wait;
        while out.len() < self.max_batch {
            let line = match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => break,
                Ok(line) => line?,
            };
            let Some(line) = line else { break };
            match line.item {
                Ok(StreamItem::Event(e)) => out.push(e),
                Ok(StreamItem::Snapshot(_)) => {}
                Err(body) => {
                    return Err(SourceError::Stream {
                        code: body.error.code,
                        message: body.error.message,
                    })
                }
            }
            wait = std::time::Duration::from_millis(2);
        }
        // Commit: no await from here on.
        if let Some(last) = out.last() {
            self.cursor = last.seq;
        }
        Ok(out)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self) -> Option<&mut Ledger> {
        Some(&mut self.ledger)
    }
}
