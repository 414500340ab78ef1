//! [`EventManagerSource`]: follow the daemon's log from a saved cursor.

use crate::source::{SentinelEventSource, SourceError};
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use coord_proto::Event;
use std::path::{Path, PathBuf};

/// Reads the daemon's events after a cursor that survives restarts.
///
/// The cursor lives in a state file (`{"cursor":N,"log_id":"…"}`, written
/// atomically). A cursor is a position in one log only: with
/// [`EventManagerSource::with_log_id`] a state file saved from another log
/// is refused, and every poll names the log so a daemon that now serves
/// another log refuses it too (`log_mismatch`) instead of serving seqs
/// that mean something else.
/// It is saved at the start of the *next* poll, when the caller has shown
/// it handled the previous batch by asking again; so a sentinel that
/// crashes re-reads at most its last batch, and one that restarts cleanly
/// resumes exactly where it stopped. A new state file starts from the
/// beginning of the retained log.
///
/// A poll holds a stream open until the first new event arrives (at most
/// `idle_wait`), so an idle sentinel costs one parked connection, not a
/// request loop, and a new event reaches it as soon as it commits.
///
/// Cancel-safe: the in-memory cursor moves only when `poll` returns; a
/// dropped poll leaves it where it was and the daemon serves the same
/// events again.
pub struct EventManagerSource {
    client: Client,
    name: String,
    state_file: PathBuf,
    /// Seq of the last event returned.
    cursor: u64,
    /// Seq last written to the state file.
    saved: u64,
    /// The log the cursor belongs to, once known.
    log_id: Option<String>,
    /// Kind globs passed to the stream (`lock.*,session.*`).
    kinds: Option<String>,
    max_batch: usize,
    /// How long a poll waits for the first new event.
    idle_wait: std::time::Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    cursor: u64,
    /// Absent in files written before logs had identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_id: Option<String>,
}

impl EventManagerSource {
    /// A source reading through `client`, its cursor kept in `state_file`.
    ///
    /// # Errors
    /// [`SourceError::State`] if the state file exists but cannot be read.
    pub fn new(client: Client, state_file: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let state_file = state_file.into();
        let saved = match std::fs::read(&state_file) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|e| SourceError::State {
                    path: state_file.display().to_string(),
                    reason: format!("not a cursor file: {e}"),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                cursor: 0,
                log_id: None,
            },
            Err(e) => {
                return Err(SourceError::State {
                    path: state_file.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(EventManagerSource {
            name: format!("event-manager:{}", client.socket().display()),
            client,
            state_file,
            cursor: saved.cursor,
            saved: saved.cursor,
            log_id: saved.log_id,
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
        match &self.log_id {
            Some(saved) if saved != log_id => {
                return Err(SourceError::State {
                    path: self.state_file.display().to_string(),
                    reason: format!(
                        "the cursor (seq {}) was saved from log {saved}, but the daemon serves log {log_id}; \
                         remove the file (or pass another --state-file) to read this log from its start",
                        self.cursor
                    ),
                })
            }
            Some(_) => {}
            None if self.cursor > 0 => tracing::warn!(
                path = %self.state_file.display(),
                cursor = self.cursor,
                log_id,
                "the cursor file names no log; assuming it belongs to this one"
            ),
            None => {}
        }
        self.log_id = Some(log_id.to_string());
        // Record the binding at once, so even an idle sentinel's file says
        // which log it belongs to.
        self.saved = u64::MAX;
        self.save()?;
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

    /// Writes the cursor to the state file now (e.g. at shutdown, after the
    /// last batch was handled).
    ///
    /// # Errors
    /// [`SourceError::State`].
    pub fn save(&mut self) -> Result<(), SourceError> {
        if self.saved != self.cursor {
            save(&self.state_file, self.cursor, self.log_id.as_deref())?;
            self.saved = self.cursor;
        }
        Ok(())
    }
}

fn save(path: &Path, cursor: u64, log_id: Option<&str>) -> Result<(), SourceError> {
    let err = |e: std::io::Error| SourceError::State {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_string(&State {
        cursor,
        log_id: log_id.map(str::to_string),
    })
    .map_err(|e| SourceError::State {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, body + "\n").map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl SentinelEventSource for EventManagerSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        // The caller asking again acknowledges the previous batch.
        self.save()?;
        // Follow from the cursor: the first event may take up to
        // `idle_wait` to come; whatever arrives right behind it joins the
        // batch. The stream is dropped when the poll returns.
        let query = EventsQuery {
            since: Some(self.cursor.to_string()),
            kinds: self.kinds.clone(),
            log_id: self.log_id.clone(),
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
}
