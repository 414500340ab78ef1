//! [`JetStreamLog`]: the log on NATS JetStream, shared by many daemons.
//!
//! Layout, for a log named `fleet` (PROTOCOL §12, docs/DISTRIBUTED.md):
//!
//! * stream `COORD_fleet`, subject `coord.fleet.log`, file storage: **one
//!   message per committed batch**. Its payload is NDJSON: a header line
//!   (`first`/`last` seq, idempotency records, attachment changes), then
//!   each event's wire JSON on its own line. One message per batch makes a
//!   commit atomic on every server version (no half-written batch), and
//!   coord's own `seq` travels in the message, so gaps in the stream's
//!   sequence (purges, some restarts) never become gaps in the log;
//! * every append is conditional on the **stream's** last sequence
//!   (`Nats-Expected-Last-Sequence`): a writer whose view is behind is
//!   refused ([`StoreError::Conflict`]) and must catch up and re-validate.
//!   A per-batch `Nats-Msg-Id` lets the daemon re-send a publish whose ack
//!   was lost without appending it twice;
//! * KV bucket `coord_fleet`: `log_id` (created once, shared by every
//!   daemon) and `daemon.<id>` leases (see [`JetStreamLog::daemon_leases`]);
//! * object store `coord_fleet_snap`: the latest snapshot (state, plus the
//!   idempotency records and attachments as of its seq).
//!
//! In memory each daemon keeps an index from coord seq to stream sequence,
//! the idempotency records and attachments (rebuilt at open from the
//! snapshot and the stream), and the last few hundred batches for cheap
//! reads. A live ordered consumer keeps all of it current with what other
//! daemons append and moves [`EventLog::head_watch`].
//!
//! It must not interpret events: it stores lines and the numbers beside
//! them; validation and folding stay in the writer.

mod event_log;
mod follow;
mod leader;
#[cfg(test)]
mod tests;

use crate::log::{
    AttachmentOp, Batch, CompactReport, EventLog, Record, Retention, StoreError, StoredEvent,
    TxnRecord,
};
use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

pub use leader::{Claim, ForwardError};

/// Oldest server coord accepts: 2.10 (stream metadata, reliable
/// expected-last-sequence on R3; 2.9.15–2.9.20 had an R3 bug).
pub const MIN_SERVER: (u64, u64, u64) = (2, 10, 0);

/// More messages than this to catch up on are streamed through one
/// consumer rather than fetched one request each.
const BULK_SYNC: u64 = 64;

/// How long the log follower waits without a message before it asks the
/// stream whether it missed some (2 s): a daemon whose follower's consumer
/// died with its node sees the others' writes again within about this,
/// whatever the client's heartbeat detection and backoff do.
const FOLLOW_CHECK: Duration = Duration::from_secs(2);

/// Batches kept decoded in memory for reads near the head.
const RECENT: usize = 512;

/// How often a publish whose ack did not come is re-sent (same msg id).
const PUBLISH_ATTEMPTS: usize = 3;

/// Where a JetStream log lives and how it is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// Server addresses, `host:port` each.
    pub servers: Vec<String>,
    /// The log's name (`[A-Za-z0-9_-]+`): one stream per name.
    pub log: String,
    /// Replicas of the stream, KV bucket and object store (1 or 3 on a
    /// cluster).
    pub replicas: usize,
}

impl NatsTarget {
    /// Parses `nats://host:port[,host:port…]/log`.
    ///
    /// # Errors
    /// A message naming what is wrong with the URL.
    pub fn parse(url: &str, replicas: usize) -> Result<Self, String> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| format!("store {url:?}: expected nats://host:port[,host:port]/log"))?;
        let (hosts, log) = rest
            .split_once('/')
            .ok_or_else(|| format!("store {url:?}: the log name is missing (…/fleet)"))?;
        if log.is_empty()
            || log.len() > 64
            || !log
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "store {url:?}: log name {log:?} must be 1-64 of [A-Za-z0-9_-]"
            ));
        }
        let servers: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(format!("store {url:?}: no server address"));
        }
        if !(1..=5).contains(&replicas) {
            return Err(format!("replicas {replicas}: must be 1..=5"));
        }
        Ok(NatsTarget {
            servers,
            log: log.to_string(),
            replicas,
        })
    }

    fn stream_name(&self) -> String {
        format!("COORD_{}", self.log)
    }

    fn subject(&self) -> String {
        format!("coord.{}.log", self.log)
    }

    fn bucket(&self) -> String {
        format!("coord_{}", self.log)
    }
}

/// The header line of a batch message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    first: u64,
    last: u64,
    /// ms since the epoch of the batch's last event's ingress.
    ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    txns: Vec<Txn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    put: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    delete: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Txn {
    source: String,
    tx_id: String,
    seq: u64,
    response: String,
}

/// A batch as read back.
#[derive(Debug)]
struct Decoded {
    header: Header,
    events: Vec<StoredEvent>,
}

fn encode(batch: &Batch) -> Result<(Header, Vec<u8>), StoreError> {
    let first = batch.records.first().map(|r| r.seq).unwrap_or(0);
    let last = batch.records.last().map(|r| r.seq).unwrap_or(0);
    let mut header = Header {
        first,
        last,
        ms: batch.records.last().map(|r| r.ingress_ms).unwrap_or(0),
        txns: batch
            .txns
            .iter()
            .map(|t| Txn {
                source: t.source.clone(),
                tx_id: t.tx_id.clone(),
                seq: t.seq,
                response: t.response.clone(),
            })
            .collect(),
        put: Vec::new(),
        delete: Vec::new(),
    };
    for a in &batch.attachments {
        match a {
            AttachmentOp::Put { key, value } => {
                let text = String::from_utf8(value.clone())
                    .map_err(|_| StoreError::Invalid(format!("attachment {key} is not UTF-8")))?;
                header.put.push((key.clone(), text));
            }
            AttachmentOp::Delete { key } => header.delete.push(key.clone()),
        }
    }
    let mut out = serde_json::to_vec(&header).map_err(|e| StoreError::Invalid(e.to_string()))?;
    for r in &batch.records {
        out.push(b'\n');
        out.extend_from_slice(r.json.as_bytes());
    }
    Ok((header, out))
}

fn decode(payload: &[u8]) -> Result<Decoded, StoreError> {
    let mut lines = payload.split(|b| *b == b'\n');
    let head = lines.next().unwrap_or_default();
    let header: Header = serde_json::from_slice(head)
        .map_err(|e| StoreError::Invalid(format!("batch header unreadable: {e}")))?;
    let mut events = Vec::new();
    for (i, line) in lines.enumerate() {
        let json = std::str::from_utf8(line)
            .map_err(|e| StoreError::Invalid(format!("event line is not UTF-8: {e}")))?;
        events.push(StoredEvent {
            seq: header.first + i as u64,
            json: json.to_string(),
        });
    }
    let expected = header.last + 1 - header.first;
    if events.len() as u64 != expected {
        return Err(StoreError::Invalid(format!(
            "batch {}..={} carries {} events",
            header.first,
            header.last,
            events.len()
        )));
    }
    Ok(Decoded { header, events })
}

/// What a daemon knows of the stream.
#[derive(Default)]
struct Index {
    /// first coord seq → (stream sequence, last coord seq, ingress ms).
    batches: BTreeMap<u64, (u64, u64, i64)>,
    /// Stream sequences already indexed (the live consumer and the
    /// writer's own publishes both report them).
    last_stream: u64,
    head: u64,
    /// Head at the snapshot the index was started from (no batches below).
    base: u64,
    txns: HashMap<(String, String), TxnRecord>,
    attachments: HashMap<String, Vec<u8>>,
    recent: BTreeMap<u64, Arc<Decoded>>,
    /// A batch arrived that does not continue the head (the log was
    /// compacted past this index while the daemon slept): the index must
    /// be rebuilt from the snapshot, never read across the hole.
    hole: bool,
}

impl Index {
    /// Adds a batch read at `stream_seq`. Idempotent: a batch already
    /// known (or one below the head, from a restarted consumer) is skipped.
    fn add(&mut self, stream_seq: u64, d: Decoded) -> bool {
        if stream_seq <= self.last_stream || d.header.last <= self.head {
            self.last_stream = self.last_stream.max(stream_seq);
            return false;
        }
        if d.header.first > self.head + 1 {
            self.hole = true;
            return false;
        }
        self.last_stream = stream_seq;
        self.head = d.header.last;
        self.batches
            .insert(d.header.first, (stream_seq, d.header.last, d.header.ms));
        for t in &d.header.txns {
            self.txns.insert(
                (t.source.clone(), t.tx_id.clone()),
                TxnRecord {
                    source: t.source.clone(),
                    tx_id: t.tx_id.clone(),
                    seq: t.seq,
                    response: t.response.clone(),
                },
            );
        }
        for (k, v) in &d.header.put {
            self.attachments.insert(k.clone(), v.clone().into_bytes());
        }
        for k in &d.header.delete {
            self.attachments.remove(k);
        }
        self.recent.insert(d.header.first, Arc::new(d));
        while self.recent.len() > RECENT {
            self.recent.pop_first();
        }
        true
    }

    /// The stream sequence of the batch ending at coord seq `seq`.
    fn stream_seq_ending_at(&self, seq: u64) -> Option<u64> {
        let (_, (stream_seq, last, _)) = self.batches.range(..=seq).next_back()?;
        (*last == seq).then_some(*stream_seq)
    }
}

/// The snapshot envelope's header (the state's bytes follow it).
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    seq: u64,
    taken_ms: i64,
    txns: Vec<Txn>,
    attachments: Vec<(String, String)>,
}

struct Inner {
    target: NatsTarget,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    kv: kv::Store,
    snaps: object_store::ObjectStore,
    log_id: String,
    index: Mutex<Index>,
    head_tx: watch::Sender<u64>,
    /// ms since the epoch of the last answer from the server.
    last_contact_ms: std::sync::atomic::AtomicI64,
    /// The latest snapshot's `(seq, taken ms)` as last seen, so status
    /// answers without the server.
    snap_info: Mutex<Option<(u64, i64)>>,
    /// Bytes of the stream: the server's figure at the last sync, plus
    /// what was indexed since.
    bytes: std::sync::atomic::AtomicU64,
    /// Set when an append found no stream to answer it (a node died, a
    /// leader election): the log follower's consumer may have died with
    /// that node.
    cluster_trouble: std::sync::atomic::AtomicBool,
    /// Tells the log follower to re-create its consumer: sent by the
    /// first append that succeeds after `cluster_trouble`, so the others'
    /// writes show again once the cluster answers, not after the client
    /// has missed two 5 s heartbeats.
    follower_kick: tokio::sync::Notify,
}

/// An [`EventLog`] on a NATS JetStream stream. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

fn nats_err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses `2.10.3-beta` into `(2, 10, 3)`.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// How long opening waits for JetStream to answer (a new cluster elects
/// its leader first).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Creates (or joins) the stream, the KV bucket and the object store.
async fn setup(
    js: &jetstream::Context,
    target: &NatsTarget,
) -> Result<(stream::Stream, kv::Store, object_store::ObjectStore), StoreError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: target.stream_name(),
            subjects: vec![target.subject()],
            storage: stream::StorageType::File,
            num_replicas: target.replicas,
            duplicate_window: Duration::from_secs(120),
            description: Some(format!("coord event log {}", target.log)),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("cannot create the log stream (is JetStream enabled?)", e))?;
    let kv = match js.get_key_value(target.bucket()).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: target.bucket(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: target.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("cannot create the KV bucket", e))?,
    };
    let snap_bucket = format!("{}_snap", target.bucket());
    let snaps = match js.get_object_store(&snap_bucket).await {
        Ok(s) => s,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: snap_bucket,
                storage: stream::StorageType::File,
                num_replicas: target.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("cannot create the snapshot store", e))?,
    };
    Ok((stream, kv, snaps))
}

impl JetStreamLog {
    /// Connects, checks the server, creates (or joins) the stream, the KV
    /// bucket and the object store, and rebuilds the index from the latest
    /// snapshot and the stream. `name` names the connection (the daemon id).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no server answers, or the server is
    /// older than [`MIN_SERVER`] or has no JetStream.
    pub async fn open(target: NatsTarget, name: &str) -> Result<Self, StoreError> {
        let addrs = target.servers.join(",");
        let servers = target
            .servers
            .iter()
            .map(|s| format!("nats://{s}").parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("server address in {addrs}: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("coord-daemon {name}"))
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| nats_err(&format!("cannot connect to {addrs}"), e))?;
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= MIN_SERVER => {}
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "NATS server {addrs} is version {}; coord needs {}.{}.{} or newer",
                    info.version, MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2
                )))
            }
        }
        let js = jetstream::new(client.clone());
        // A cluster that has just started elects its JetStream leader for
        // a few seconds: keep asking, within a bound.
        let deadline = std::time::Instant::now() + SETUP_PATIENCE;
        let (stream, kv, snaps) = loop {
            match setup(&js, &target).await {
                Ok(parts) => break parts,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let fresh = ulid::Ulid::new().to_string();
        let log_id = match kv.create("log_id", Bytes::from(fresh.clone())).await {
            Ok(_) => fresh,
            Err(_) => {
                let v = kv
                    .get("log_id")
                    .await
                    .map_err(|e| nats_err("cannot read log_id", e))?
                    .ok_or_else(|| StoreError::Unavailable("log_id vanished".into()))?;
                String::from_utf8_lossy(&v).into_owned()
            }
        };
        let (head_tx, _) = watch::channel(0);
        let log = JetStreamLog {
            inner: Arc::new(Inner {
                target,
                client,
                js,
                stream,
                kv,
                snaps,
                log_id,
                index: Mutex::new(Index::default()),
                head_tx,
                last_contact_ms: std::sync::atomic::AtomicI64::new(now_ms()),
                snap_info: Mutex::new(None),
                bytes: std::sync::atomic::AtomicU64::new(0),
                cluster_trouble: std::sync::atomic::AtomicBool::new(false),
                follower_kick: tokio::sync::Notify::new(),
            }),
        };
        log.rebuild().await?;
        log.spawn_follower();
        Ok(log)
    }

    /// The target this log was opened on.
    pub fn target(&self) -> &NatsTarget {
        &self.inner.target
    }

    /// True while the client is connected to a server.
    pub fn connected(&self) -> bool {
        matches!(
            self.inner.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// ms since the epoch of the last answer from the server (an ack, a
    /// message of the live consumer).
    pub fn last_contact_ms(&self) -> i64 {
        self.inner
            .last_contact_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
