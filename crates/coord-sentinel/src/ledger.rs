//! [`Ledger`]: what a sentinel has handed to its sink, kept in its state
//! file so that a crash at any instant re-delivers nothing the sink
//! already has and loses nothing it has not.
//!
//! The protocol, per batch the source returns:
//!
//! 1. **begin**: the batch's observations (as the lines the sink will
//!    get), their keys, the cursor the batch ends at, and — for a `jsonl`
//!    sink — the sink file's length are written to the state file
//!    (atomically: a temp file renamed into place);
//! 2. each observation is handed to the sink; for sinks whose content the
//!    sentinel cannot read back (`stdout`, `exec:`) the count handed so far
//!    is recorded after each one;
//! 3. **finish**: the cursor moves to the batch's end and the batch is
//!    dropped from the state file.
//!
//! On start, an unfinished batch is completed first: for a `jsonl` sink
//! the complete lines after the recorded length say exactly how many
//! observations landed (a half-written last line is cut off and written
//! again), so nothing is written twice or skipped; for `stdout` and `exec:`
//! the recorded count says where to go on, and only the one observation
//! that was being handed at the crash can be handed again — marked as a
//! redelivery (`COORD_REDELIVERY=1` for an `exec:` command, which also gets
//! the event's `COORD_EVENT_KEY` to de-duplicate on).
//!
//! Renames are atomic against a process crash (SIGKILL); the state file is
//! not fsynced, so a power loss may replay the last batches.

use crate::error::SourceError;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A batch handed to the sink but not yet finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// The observations, as JSON lines without the newline.
    pub lines: Vec<String>,
    /// Each observation's event key (`source:tx_id`).
    pub keys: Vec<String>,
    /// The cursor once the batch is finished (the seq of its last event,
    /// matching or not).
    pub cursor: u64,
    /// Observations known to be handed (for sinks that cannot be read
    /// back).
    #[serde(default)]
    pub handed: usize,
    /// For a `jsonl` sink: its length in bytes when the batch began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_len: Option<u64>,
    /// For a file source: the scan the batch brings the source to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scan: Option<serde_json::Value>,
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Seq of the last event fully handled.
    pub cursor: u64,
    /// The log the cursor belongs to, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
    /// The batch in flight, if a sentinel stopped in the middle of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// For a file source: the root the scan is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// For a file source: the last scan whose changes were all handed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<serde_json::Value>,
}

/// A state file and what it holds.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// What the file holds.
    pub state: LedgerState,
}

impl Ledger {
    /// Reads the state file at `path`; a missing file is a fresh start.
    ///
    /// # Errors
    /// [`SourceError::State`] when it exists but cannot be read or is not
    /// a state file.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let path = path.into();
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SourceError::State {
                path: path.display().to_string(),
                reason: format!("not a sentinel state file: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerState::default(),
            Err(e) => {
                return Err(SourceError::State {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Ledger { path, state })
    }

    /// A fresh ledger for `path` (nothing read).
    pub fn empty(path: PathBuf) -> Self {
        Ledger {
            path,
            state: LedgerState::default(),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the state atomically (temp file, then rename).
    ///
    /// # Errors
    /// [`SourceError::State`].
    pub fn save(&self) -> Result<(), SourceError> {
        let err = |e: std::io::Error| SourceError::State {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        // The state names sessions and carries cursors: private to its
        // user whatever the umask (a directory made here is 0700, the
        // file 0600).
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let body = serde_json::to_vec(&self.state).map_err(|e| SourceError::State {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        std::io::Write::write_all(&mut f, &body).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    /// Step 1: records a batch before any of it reaches the sink.
    ///
    /// # Errors
    /// [`SourceError::State`].
    pub fn begin(&mut self, batch: InFlight) -> Result<(), SourceError> {
        self.state.in_flight = Some(batch);
        self.save()
    }

    /// Step 2: `n` observations of the batch in flight are handed.
    ///
    /// # Errors
    /// [`SourceError::State`].
    pub fn handed(&mut self, n: usize) -> Result<(), SourceError> {
        if let Some(f) = self.state.in_flight.as_mut() {
            f.handed = n;
        }
        self.save()
    }

    /// Step 3: the batch is done; the cursor moves past it.
    ///
    /// # Errors
    /// [`SourceError::State`].
    pub fn finish(&mut self) -> Result<(), SourceError> {
        if let Some(f) = self.state.in_flight.take() {
            self.state.cursor = self.state.cursor.max(f.cursor);
            if f.next_scan.is_some() {
                self.state.scan = f.next_scan;
            }
        }
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state-dir").join("state");
        let l = Ledger::open(&path).expect("fresh");
        l.save().expect("save");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_batch_survives_a_reopen_until_it_is_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s").join("state");
        let mut l = Ledger::open(&path).expect("fresh");
        assert_eq!(l.state, LedgerState::default());
        l.begin(InFlight {
            lines: vec!["a".into(), "b".into()],
            keys: vec!["api:1".into(), "api:2".into()],
            cursor: 7,
            handed: 0,
            sink_len: Some(10),
            next_scan: None,
        })
        .expect("begin");
        l.handed(1).expect("handed");
        let again = Ledger::open(&path).expect("reopen");
        let f = again.state.in_flight.clone().expect("in flight");
        assert_eq!((f.handed, f.cursor, f.sink_len), (1, 7, Some(10)));
        let mut again = again;
        again.finish().expect("finish");
        let last = Ledger::open(&path).expect("reopen");
        assert_eq!(last.state.cursor, 7);
        assert!(last.state.in_flight.is_none());
    }

    #[test]
    fn a_file_that_is_not_a_state_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            Ledger::open(&path),
            Err(SourceError::State { .. })
        ));
    }
}
