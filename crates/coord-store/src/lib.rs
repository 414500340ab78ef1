//! The event log behind coord: the [`EventLog`] trait and [`SqliteLog`].
//!
//! A log is an append-only sequence of events, each stored as its wire JSON
//! with a gap-free `seq`, plus what must commit atomically with them:
//!
//! * **per-key expectations** ([`Batch::expect`]): "the last event on
//!   `lock/src/main.rs` is seq 40". This is how a conditional write is
//!   expressed, never as SQL, so a NATS JetStream log can implement it with
//!   its expected-last-subject-sequence header;
//! * **idempotency records** ([`TxnRecord`]): the first answer to a
//!   `(source, tx_id)`, so a retried write appends nothing;
//! * **attachments**: small blobs keyed by name (message bodies, token
//!   hashes) that live and die with the events that mention them;
//! * **snapshots** of the folded state, so a restart folds only a tail and
//!   retention can drop old events.
//!
//! Two backends: [`SqliteLog`] (embedded, one daemon; blocking SQLite work
//! moved onto tokio's blocking pool) and [`JetStreamLog`] (NATS JetStream,
//! any number of daemons appending conditionally to one stream).
//!
//! This crate stores bytes; it never interprets payloads (it does not depend
//! on coord-core) and never decides what is valid.
#![deny(missing_docs)]

mod checkpoint;
mod log;
mod nats;
mod path;
mod sqlite;

pub use log::{
    AttachmentOp, Batch, CompactReport, EventLog, Expectation, Record, Retention, StoreError,
    StoredEvent, SyncMode, TxnRecord,
};
pub use nats::{Claim, ForwardError, JetStreamLog, NatsTarget, MIN_SERVER as MIN_NATS_SERVER};
pub use path::resolve_store_path;
pub use sqlite::{SqliteLog, StoreReader, StoredRow};
