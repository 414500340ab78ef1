//! The backend-neutral contract: [`EventLog`] and the types it moves.

use std::future::Future;

/// One event ready to append: its wire JSON and what indexes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its seq; a batch must continue the log without a gap.
    pub seq: u64,
    /// Who produced it.
    pub source: String,
    /// The source's ULID; `(source, tx_id)` is unique in the log.
    pub tx_id: String,
    /// `tx_kind`, kept as a column for inspection.
    pub kind: String,
    /// `ingress_ts` in ms since the epoch, for day-based retention.
    pub ingress_ms: i64,
    /// The event as one line of JSON.
    pub json: String,
}

/// An event read back: its seq and wire JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its seq.
    pub seq: u64,
    /// The event as one line of JSON.
    pub json: String,
}

/// A condition on a consistency key, checked atomically with the append.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// `session/<id>`, `lock/<resource>`, `order/<id>`.
    pub key: String,
    /// The seq of the key's last event, or `None` for "no live object".
    pub last_seq: Option<u64>,
}

/// The first answer to a write, kept so a retry gets it again.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRecord {
    /// Source of the write.
    pub source: String,
    /// Its tx_id.
    pub tx_id: String,
    /// Seq of its last event.
    pub seq: u64,
    /// The answer as JSON.
    pub response: String,
}

/// A change to a small blob stored beside the log.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentOp {
    /// Store `value` under `key` (replacing any).
    Put {
        /// Name, e.g. `body/<session>/<msg_id>`.
        key: String,
        /// Bytes.
        value: Vec<u8>,
    },
    /// Forget `key` (absent is fine).
    Delete {
        /// Name.
        key: String,
    },
}

/// Everything one commit writes. Either all of it is durable or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Events, in seq order, continuing the log.
    pub records: Vec<Record>,
    /// Conditions that must hold before the append.
    pub expect: Vec<Expectation>,
    /// New last seq per key after the append (`None`: the object is gone).
    pub key_updates: Vec<(String, Option<u64>)>,
    /// Idempotency records.
    pub txns: Vec<TxnRecord>,
    /// Blob changes.
    pub attachments: Vec<AttachmentOp>,
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// WAL with `synchronous=NORMAL`: a commit survives the process being
    /// killed; the last commits may be lost if the machine loses power.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it is answered.
    Full,
}

impl SyncMode {
    /// `normal` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Normal => "normal",
            SyncMode::Full => "full",
        }
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(SyncMode::Normal),
            "full" => Ok(SyncMode::Full),
            other => Err(format!("sync mode {other:?}: expected normal or full")),
        }
    }
}

/// What to keep when compacting. An event is dropped only when every
/// configured bound lets it go, and never above the latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at least the last N events.
    pub keep_events: Option<u64>,
    /// Keep at least the events of the last D days, in ms.
    pub keep_ms: Option<u64>,
}

impl Retention {
    /// True when nothing is ever dropped.
    pub fn keeps_everything(&self) -> bool {
        self.keep_events.is_none() && self.keep_ms.is_none()
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    /// Events deleted.
    pub deleted: u64,
    /// Oldest retained seq afterwards.
    pub oldest_seq: u64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite said no (disk full, I/O error, corruption …).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening or locking a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process has the store open.
    #[error("store {0} is in use by another coord daemon (its lock file is held)")]
    Locked(String),
    /// The store's directory can be written by other users, who could
    /// replace or hold its files: refused.
    #[error("store directory {dir} has mode {mode:o}: other users can write to it (chmod 700 it, or pick another --store)")]
    InsecureDir {
        /// The directory.
        dir: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The store was written by a newer coord.
    #[error("store schema version {found} is newer than this coord understands ({known})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
    /// A batch does not continue the log.
    #[error("batch starts at seq {got}, the log expects {expected}")]
    SeqGap {
        /// Next seq of the log.
        expected: u64,
        /// First seq of the batch.
        got: u64,
    },
    /// An expectation failed: someone else wrote the key.
    #[error("expectation on {key} failed: expected {expected:?}, found {found:?}")]
    Conflict {
        /// The key.
        key: String,
        /// What the batch expected.
        expected: Option<u64>,
        /// What the log has.
        found: Option<u64>,
    },
    /// The blocking task running the call died.
    #[error("store worker failed: {0}")]
    Worker(String),
    /// The remote store (NATS JetStream) did not answer or refused for a
    /// reason that is not the writer's: nothing was appended.
    #[error("{0}")]
    Unavailable(String),
    /// Bytes in the store do not decode (a foreign or damaged message).
    #[error("unreadable store data: {0}")]
    Invalid(String),
    /// One batch is larger than the store takes in one message (bytes).
    #[error("batch of {0} bytes exceeds the server's max_payload")]
    TooLarge(usize),
}

/// A durable, totally ordered event log.
///
/// Implementations must make [`append`](EventLog::append) atomic (the whole
/// batch or nothing) and durable when it returns `Ok` (to the degree the
/// [`SyncMode`] promises), and must let reads run while a write is in
/// flight. Seq numbers are chosen by the single writer and checked here.
pub trait EventLog: Send + Sync + 'static {
    /// Appends a batch after checking its expectations.
    ///
    /// # Errors
    /// [`StoreError::SeqGap`] or [`StoreError::Conflict`] when the log moved
    /// under the writer; any I/O error. On error nothing was written.
    fn append(&self, batch: Batch) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` events with seq > `after`, in order.
    ///
    /// # Errors
    /// I/O errors.
    fn read(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// `(oldest retained seq, head seq)`; an empty log answers `(head+1, head)`.
    ///
    /// # Errors
    /// I/O errors.
    fn bounds(&self) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send;

    /// The first answer recorded for `(source, tx_id)`.
    ///
    /// # Errors
    /// I/O errors.
    fn txn(
        &self,
        source: &str,
        tx_id: &str,
    ) -> impl Future<Output = Result<Option<TxnRecord>, StoreError>> + Send;

    /// An attachment's bytes.
    ///
    /// # Errors
    /// I/O errors.
    fn attachment(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Stores a snapshot of the folded state after `seq` (replacing older).
    ///
    /// # Errors
    /// I/O errors.
    fn save_snapshot(
        &self,
        seq: u64,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot, `(seq, bytes)`.
    ///
    /// # Errors
    /// I/O errors.
    fn load_snapshot(
        &self,
    ) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>, StoreError>> + Send;

    /// The latest snapshot's seq and when it was taken (ms since the
    /// epoch), without its bytes.
    ///
    /// # Errors
    /// I/O errors.
    fn snapshot_info(&self) -> impl Future<Output = Result<Option<(u64, i64)>, StoreError>> + Send;

    /// Drops events the retention lets go (never above the latest
    /// snapshot), with their idempotency records. `now_ms` is the wall
    /// clock, passed in for day-based retention.
    ///
    /// # Errors
    /// I/O errors.
    fn compact(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> impl Future<Output = Result<CompactReport, StoreError>> + Send;

    /// Bytes the store takes on disk.
    fn size_bytes(&self) -> u64;

    /// The log's identity: a ULID made when the store was created and
    /// never changed. Two stores never share one, so a cursor saved
    /// against one log is recognised as foreign on another.
    fn log_id(&self) -> &str;

    /// The log's head as the store knows it, when other processes can
    /// append to it (NATS JetStream: other daemons). The writer watches it
    /// to fold what others appended. `None` (the default) for a store only
    /// this process writes.
    fn head_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Asks a shared store to read what other processes appended now,
    /// rather than when its live follower delivers it (which may be
    /// re-creating itself after a node died). A no-op, the default, for a
    /// store only this process writes.
    fn refresh(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// `sqlite` or `nats` (for `/v1/status`).
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// For a remote store: whether it is connected now, and when it last
    /// answered (ms since the epoch). `None` for a local store.
    fn remote_health(&self) -> Option<(bool, i64)> {
        None
    }
}
