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
}

impl Index {
    /// Adds a batch read at `stream_seq`. Idempotent: a batch already
    /// known (or one below the head, from a restarted consumer) is skipped.
    fn add(&mut self, stream_seq: u64, d: Decoded) -> bool {
        if stream_seq <= self.last_stream || d.header.last <= self.head {
            self.last_stream = self.last_stream.max(stream_seq);
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

    fn touch(&self) {
        self.inner
            .last_contact_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every
        // update is a few inserts); recover it instead of poisoning reads.
        self.inner
            .index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads the snapshot's records, then reads every message of the
    /// stream once to index it.
    async fn rebuild(&self) -> Result<(), StoreError> {
        if let Some((seq, header, _)) = self.fetch_snapshot().await? {
            if let Ok(mut s) = self.inner.snap_info.lock() {
                *s = Some((seq, header.taken_ms));
            }
            let mut idx = self.index();
            idx.base = seq;
            idx.head = seq;
            for t in header.txns {
                idx.txns.insert(
                    (t.source.clone(), t.tx_id.clone()),
                    TxnRecord {
                        source: t.source,
                        tx_id: t.tx_id,
                        seq: t.seq,
                        response: t.response,
                    },
                );
            }
            for (k, v) in header.attachments {
                idx.attachments.insert(k, v.into_bytes());
            }
        }
        self.sync().await
    }

    /// Reads messages the index lacks, from the one after the last indexed
    /// up to the stream's current last sequence. Batches at or below the
    /// index's head only move the stream cursor; batches older than the
    /// snapshot still enter the seq → stream index for reads.
    /// Whether the stream holds messages past what the index has: the
    /// log follower asks when it has heard nothing for [`FOLLOW_CHECK`].
    /// An unanswered question is not "ahead": the follower waits on.
    async fn stream_is_ahead(&self) -> bool {
        let mut stream = self.inner.stream.clone();
        match stream.info().await {
            Ok(info) => info.state.last_sequence > self.index().last_stream,
            Err(_) => false,
        }
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let mut stream = self.inner.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| nats_err("cannot read the stream's state", e))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        self.inner
            .bytes
            .store(info.state.bytes, std::sync::atomic::Ordering::Relaxed);
        self.touch();
        let mut next = self.index().last_stream.max(first.saturating_sub(1)) + 1;
        if last.saturating_sub(next) > BULK_SYNC {
            // Many messages (a start, a long disconnection): stream them
            // with one consumer instead of one request each.
            self.bulk_sync(next, last).await?;
            next = self.index().last_stream + 1;
        }
        while next <= last {
            match self.inner.stream.get_raw_message(next).await {
                Ok(m) => self.index_synced(next, &m.payload)?,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    let mut idx = self.index();
                    idx.last_stream = idx.last_stream.max(next);
                }
                Err(e) => return Err(nats_err("cannot read the log stream", e)),
            }
            next += 1;
        }
        let head = self.index().head;
        self.inner.head_tx.send_replace(head);
        Ok(())
    }

    /// Indexes one message read by [`sync`](Self::sync): batches older
    /// than the snapshot only enter the seq → stream index (for reads).
    fn index_synced(&self, stream_seq: u64, payload: &[u8]) -> Result<(), StoreError> {
        let d = decode(payload)?;
        let mut idx = self.index();
        if d.header.last <= idx.base {
            idx.batches
                .entry(d.header.first)
                .or_insert((stream_seq, d.header.last, d.header.ms));
            idx.last_stream = idx.last_stream.max(stream_seq);
        } else {
            idx.add(stream_seq, d);
        }
        Ok(())
    }

    /// Reads stream messages `from..=to` through one ordered consumer.
    async fn bulk_sync(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let consumer = self
            .inner
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.inner.client.new_inbox(),
                filter_subject: self.inner.target.subject(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("cannot read the log stream", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| nats_err("cannot read the log stream", e))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .map_err(|_| StoreError::Unavailable("reading the log stream timed out".into()))?;
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(nats_err("cannot read the log stream", e)),
                None => return Err(StoreError::Unavailable("the log stream ended".into())),
            };
            let stream_seq = m
                .info()
                .map_err(|e| nats_err("a log message without its sequence", e))?
                .stream_sequence;
            self.index_synced(stream_seq, &m.payload)?;
            if stream_seq >= to {
                return Ok(());
            }
        }
    }

    /// Follows the stream with an ordered push consumer and indexes what
    /// other daemons append. The consumer is R1: when its node dies it is
    /// gone. This loop re-creates it from the index's own position (so
    /// nothing is skipped; what is indexed already is skipped on arrival)
    /// when the client reports it lost (two missed 5 s heartbeats), when
    /// filling a gap fails, and when an append succeeds again after the
    /// stream had no leader (`follower_kick`), retrying every 500 ms
    /// while the cluster cannot create it.
    fn spawn_follower(&self) {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                let start = log.index().last_stream + 1;
                let consumer = log
                    .inner
                    .stream
                    .create_consumer(consumer::push::OrderedConfig {
                        deliver_subject: log.inner.client.new_inbox(),
                        filter_subject: log.inner.target.subject(),
                        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                            start_sequence: start,
                        },
                        ..Default::default()
                    })
                    .await;
                let mut messages = match consumer {
                    Ok(c) => match c.messages().await {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "log follower cannot subscribe; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "log follower cannot start; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    let m = tokio::select! {
                        m = messages.next() => m,
                        () = log.inner.follower_kick.notified() => {
                            tracing::info!("re-creating the log follower's consumer after the cluster answered again");
                            break;
                        }
                        // Quiet for a while: a consumer whose node died
                        // can stay silent until the client misses two
                        // heartbeats, and its own re-creation backs off
                        // further. Asking the stream how far it goes
                        // tells a quiet log from a dead follower.
                        () = tokio::time::sleep(FOLLOW_CHECK) => {
                            if log.stream_is_ahead().await {
                                tracing::info!("log follower fell behind the stream; catching up and re-creating it");
                                if let Err(e) = log.sync().await {
                                    tracing::warn!(error = %e, "log follower cannot catch up yet");
                                }
                                break;
                            }
                            continue;
                        }
                    };
                    let Some(m) = m else { break };
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            // Its consumer is gone (missed heartbeats: the
                            // node that held it died). The client's own
                            // re-creation backs off to 10 s between tries
                            // while the cluster elects new leaders, which
                            // left this daemon blind to the others' writes
                            // for half a minute; re-create it here, from
                            // the index's exact position, every 500 ms.
                            tracing::info!(error = %e, "log follower lost its consumer; re-creating it");
                            break;
                        }
                    };
                    log.touch();
                    let Ok(info) = m.info() else { continue };
                    let stream_seq = info.stream_sequence;
                    if stream_seq > log.index().last_stream {
                        log.inner.bytes.fetch_add(
                            m.payload.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    if stream_seq <= log.index().last_stream {
                        // This daemon's own append, indexed when its ack
                        // came: nothing to decode.
                        continue;
                    }
                    match decode(&m.payload) {
                        Ok(d) => {
                            let last_stream = log.index().last_stream;
                            if stream_seq > last_stream + 1 && last_stream > 0 {
                                // Messages between were deleted (purge) or
                                // are ours not yet indexed: sync() fills in.
                                if let Err(e) = log.sync().await {
                                    // Never index past a hole, and never
                                    // drop this message either (it may be
                                    // the last for a long time): start
                                    // again from the index's position.
                                    tracing::warn!(error = %e, "log follower cannot sync; re-creating it");
                                    break;
                                }
                            }
                            let added = {
                                let mut idx = log.index();
                                idx.add(stream_seq, d).then_some(idx.head)
                            };
                            if let Some(head) = added {
                                log.inner.head_tx.send_replace(head);
                            }
                        }
                        Err(e) => {
                            tracing::error!(stream_seq, error = %e, "unreadable batch in the log stream")
                        }
                    }
                }
                tracing::debug!("log follower ended; restarting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    async fn fetch_snapshot(&self) -> Result<Option<(u64, SnapshotHeader, Vec<u8>)>, StoreError> {
        let mut obj = match self.inner.snaps.get("snapshot").await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(nats_err("cannot read the snapshot", e)),
        };
        let mut bytes = Vec::new();
        obj.read_to_end(&mut bytes)
            .await
            .map_err(|e| nats_err("cannot read the snapshot", e))?;
        let split = bytes
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
        let header: SnapshotHeader = serde_json::from_slice(&bytes[..split])
            .map_err(|e| StoreError::Invalid(format!("snapshot header unreadable: {e}")))?;
        let state = bytes.get(split + 1..).unwrap_or_default().to_vec();
        Ok(Some((header.seq, header, state)))
    }

    /// Daemon leases: puts `daemon.<id>` (its value, e.g. a JSON blob
    /// naming the host) in the log's KV bucket. Renew it well inside the
    /// lease; others treat a lease not renewed in time as a dead daemon.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put_daemon_lease(
        &self,
        daemon_id: &str,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner
            .kv
            .put(format!("daemon.{daemon_id}"), Bytes::from(value))
            .await
            .map_err(|e| nats_err("cannot renew the daemon lease", e))?;
        self.touch();
        Ok(())
    }

    /// Watches every daemon's lease: yields `(daemon id, Some(value))` on
    /// each renewal and `(daemon id, None)` when a lease is deleted, first
    /// for every lease currently stored.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn daemon_leases(
        &self,
    ) -> Result<impl futures_util::Stream<Item = (String, Option<Vec<u8>>)>, StoreError> {
        let watch = self
            .inner
            .kv
            .watch_with_history("daemon.>")
            .await
            .map_err(|e| nats_err("cannot watch daemon leases", e))?;
        Ok(watch.filter_map(|e| async move {
            let e = e.ok()?;
            let id = e.key.strip_prefix("daemon.")?.to_string();
            Some(match e.operation {
                kv::Operation::Put => (id, Some(e.value.to_vec())),
                _ => (id, None),
            })
        }))
    }

    async fn publish(
        &self,
        header: &Header,
        payload: Vec<u8>,
        expect: u64,
    ) -> Result<u64, StoreError> {
        let mut headers = HeaderMap::new();
        let msg_id = ulid::Ulid::new().to_string();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            expect.to_string().as_str(),
        );
        headers.insert("Coord-Seq", header.first.to_string().as_str());
        headers.insert("Coord-Last", header.last.to_string().as_str());
        let payload = Bytes::from(payload);
        let mut last_err = None;
        for _ in 0..PUBLISH_ATTEMPTS {
            if !self.connected() {
                // Do not hold callers for the ack timeout while the client
                // reconnects: nothing can be made durable now.
                return Err(StoreError::Unavailable(
                    "not connected to any NATS server".into(),
                ));
            }
            let sent = self
                .inner
                .js
                .publish_with_headers(
                    self.inner.target.subject(),
                    headers.clone(),
                    payload.clone(),
                )
                .await;
            let ack = match sent {
                Ok(fut) => fut.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    self.touch();
                    if self
                        .inner
                        .cluster_trouble
                        .swap(false, std::sync::atomic::Ordering::Relaxed)
                    {
                        self.inner.follower_kick.notify_one();
                    }
                    return Ok(ack.sequence);
                }
                Err(e) => match e.kind() {
                    jetstream::context::PublishErrorKind::WrongLastSequence => {
                        self.touch();
                        return Err(StoreError::Conflict {
                            key: "stream".into(),
                            expected: Some(expect),
                            found: None,
                        });
                    }
                    jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        return Err(StoreError::TooLarge(payload.len()));
                    }
                    // The ack may have been lost: re-send with the same
                    // msg id; the server answers a duplicate with the
                    // first ack instead of appending again.
                    jetstream::context::PublishErrorKind::TimedOut
                    | jetstream::context::PublishErrorKind::BrokenPipe => last_err = Some(e),
                    kind => {
                        if kind == jetstream::context::PublishErrorKind::StreamNotFound {
                            // No responders: the stream has no leader now.
                            self.inner
                                .cluster_trouble
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        return Err(nats_err("append refused", e));
                    }
                },
            }
        }
        self.inner
            .cluster_trouble
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Err(nats_err(
            "append not acknowledged",
            last_err.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }
}

impl EventLog for JetStreamLog {
    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        let Some(first) = batch.records.first().map(|r| r.seq) else {
            return Ok(());
        };
        check_contiguous(&batch.records)?;
        let expect = {
            let idx = self.index();
            if first != idx.head + 1 {
                // Someone else appended: the writer must catch up.
                return Err(if first <= idx.head {
                    StoreError::Conflict {
                        key: "stream".into(),
                        expected: Some(first - 1),
                        found: Some(idx.head),
                    }
                } else {
                    StoreError::SeqGap {
                        expected: idx.head + 1,
                        got: first,
                    }
                });
            }
            if idx.head == 0 || idx.head == idx.base && idx.batches.is_empty() {
                idx.last_stream
            } else {
                idx.stream_seq_ending_at(idx.head)
                    .unwrap_or(idx.last_stream)
            }
        };
        let (header, payload) = encode(&batch)?;
        let len = payload.len() as u64;
        match self.publish(&header, payload, expect).await {
            Ok(stream_seq) => {
                self.inner
                    .bytes
                    .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                // What was just encoded, without parsing it back.
                let d = Decoded {
                    events: batch
                        .records
                        .into_iter()
                        .map(|r| StoredEvent {
                            seq: r.seq,
                            json: r.json,
                        })
                        .collect(),
                    header,
                };
                let head = {
                    let mut idx = self.index();
                    idx.add(stream_seq, d);
                    idx.head
                };
                self.inner.head_tx.send_replace(head);
                Ok(())
            }
            Err(e @ StoreError::Conflict { .. }) => {
                // Learn what was appended before answering, so the
                // writer's catch-up finds it.
                self.sync().await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        let mut next = after + 1;
        while out.len() < limit {
            let (cached, stream_seq) = {
                let idx = self.index();
                if next > idx.head {
                    break;
                }
                let Some((first, (stream_seq, _, _))) = idx.batches.range(..=next).next_back()
                else {
                    // Compacted away: continue from the oldest retained.
                    match idx.batches.keys().next() {
                        Some(first) if *first > next => {
                            next = *first;
                            continue;
                        }
                        _ => break,
                    }
                };
                (idx.recent.get(first).cloned(), *stream_seq)
            };
            let decoded = match cached {
                Some(d) => d,
                None => {
                    let m = self
                        .inner
                        .stream
                        .get_raw_message(stream_seq)
                        .await
                        .map_err(|e| nats_err("cannot read the log stream", e))?;
                    Arc::new(decode(&m.payload)?)
                }
            };
            for e in &decoded.events {
                if e.seq >= next && out.len() < limit {
                    out.push(e.clone());
                }
            }
            next = decoded.header.last + 1;
        }
        Ok(out)
    }

    async fn bounds(&self) -> Result<(u64, u64), StoreError> {
        let idx = self.index();
        let oldest = idx
            .batches
            .keys()
            .next()
            .copied()
            .unwrap_or(idx.head + 1)
            .min(idx.head + 1);
        Ok((oldest, idx.head))
    }

    async fn txn(&self, source: &str, tx_id: &str) -> Result<Option<TxnRecord>, StoreError> {
        Ok(self
            .index()
            .txns
            .get(&(source.to_string(), tx_id.to_string()))
            .cloned())
    }

    async fn attachment(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.index().attachments.get(key).cloned())
    }

    async fn save_snapshot(&self, seq: u64, state: Vec<u8>) -> Result<(), StoreError> {
        // Another daemon may have stored a newer one: never go back.
        if let Ok(info) = self.inner.snaps.info("snapshot").await {
            let theirs = info
                .metadata
                .get("seq")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if theirs >= seq {
                return Ok(());
            }
        }
        let header = {
            let idx = self.index();
            SnapshotHeader {
                seq,
                taken_ms: now_ms(),
                txns: idx
                    .txns
                    .values()
                    .filter(|t| t.seq <= seq)
                    .map(|t| Txn {
                        source: t.source.clone(),
                        tx_id: t.tx_id.clone(),
                        seq: t.seq,
                        response: t.response.clone(),
                    })
                    .collect(),
                attachments: idx
                    .attachments
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            }
        };
        let mut bytes =
            serde_json::to_vec(&header).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&state);
        let meta = object_store::ObjectMetadata {
            name: "snapshot".into(),
            metadata: HashMap::from([
                ("seq".to_string(), seq.to_string()),
                ("taken_ms".to_string(), header.taken_ms.to_string()),
            ]),
            ..Default::default()
        };
        self.inner
            .snaps
            .put(meta, &mut bytes.as_slice())
            .await
            .map_err(|e| nats_err("cannot store the snapshot", e))?;
        if let Ok(mut s) = self.inner.snap_info.lock() {
            *s = Some((seq, header.taken_ms));
        }
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .fetch_snapshot()
            .await?
            .map(|(seq, _, state)| (seq, state)))
    }

    async fn snapshot_info(&self) -> Result<Option<(u64, i64)>, StoreError> {
        // The last one seen (opened or saved here): status must answer
        // while the server does not.
        Ok(self.inner.snap_info.lock().ok().and_then(|s| *s))
    }

    async fn compact(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<CompactReport, StoreError> {
        let Some((snap_seq, _)) = self.snapshot_info().await? else {
            return Ok(CompactReport::default());
        };
        // The newest batch that may go: wholly at or below the snapshot,
        // outside both bounds, and never the head batch (the stream's last
        // message is what the next append is conditional on).
        let (cut_stream, deleted, oldest) = {
            let idx = self.index();
            let keep_from_events = retention
                .keep_events
                .map(|n| idx.head.saturating_sub(n) + 1)
                .unwrap_or(u64::MAX);
            let mut cut = None;
            let mut deleted = 0;
            let mut oldest = idx.head + 1;
            for (first, (stream_seq, last, ms)) in &idx.batches {
                let too_new_by_time = retention.keep_ms.is_some_and(|k| *ms > now_ms - k as i64);
                if *last <= snap_seq
                    && *last < keep_from_events
                    && !too_new_by_time
                    && *last < idx.head
                    && retention.keep_events.or(retention.keep_ms).is_some()
                {
                    cut = Some(*stream_seq);
                    deleted += last + 1 - first;
                } else {
                    oldest = *first;
                    break;
                }
            }
            (cut, deleted, oldest)
        };
        let Some(cut) = cut_stream else {
            let (oldest, _) = self.bounds().await?;
            return Ok(CompactReport {
                deleted: 0,
                oldest_seq: oldest,
            });
        };
        self.inner
            .stream
            .purge()
            .sequence(cut + 1)
            .await
            .map_err(|e| nats_err("cannot purge the log stream", e))?;
        let mut idx = self.index();
        idx.batches.retain(|first, _| *first >= oldest);
        idx.txns.retain(|_, t| t.seq >= oldest);
        Ok(CompactReport {
            deleted,
            oldest_seq: oldest,
        })
    }

    fn size_bytes(&self) -> u64 {
        self.inner.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    fn head_watch(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.head_tx.subscribe())
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    fn remote_health(&self) -> Option<(bool, i64)> {
        Some((self.connected(), self.last_contact_ms()))
    }
}

fn check_contiguous(records: &[Record]) -> Result<(), StoreError> {
    for w in records.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(StoreError::SeqGap {
                expected: w[0].seq + 1,
                got: w[1].seq,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            source: "api".into(),
            tx_id: format!("tx{seq}"),
            kind: "x.test".into(),
            ingress_ms: 1,
            json: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[test]
    fn batch_round_trips_through_its_message() {
        let batch = Batch {
            records: vec![rec(5), rec(6)],
            txns: vec![TxnRecord {
                source: "api".into(),
                tx_id: "T".into(),
                seq: 6,
                response: "{}".into(),
            }],
            attachments: vec![
                AttachmentOp::Put {
                    key: "body/a/m".into(),
                    value: b"hi\nthere".to_vec(),
                },
                AttachmentOp::Delete { key: "x".into() },
            ],
            ..Default::default()
        };
        let (_, bytes) = encode(&batch).expect("encode");
        let d = decode(&bytes).expect("decode");
        assert_eq!(d.header.first, 5);
        assert_eq!(d.events.len(), 2);
        assert_eq!(d.events[1].seq, 6);
        assert_eq!(d.events[1].json, "{\"seq\":6}");
        assert_eq!(d.header.put[0].1, "hi\nthere");
        assert_eq!(d.header.delete, vec!["x".to_string()]);
    }

    #[test]
    fn a_batch_whose_lines_disagree_with_its_header_is_refused() {
        let (_, mut bytes) = encode(&Batch {
            records: vec![rec(1), rec(2)],
            ..Default::default()
        })
        .expect("encode");
        bytes.extend_from_slice(b"\n{}");
        assert!(matches!(decode(&bytes), Err(StoreError::Invalid(_))));
        assert!(matches!(decode(b"not json"), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn index_skips_what_it_has_and_finds_stream_sequences() {
        let mut idx = Index::default();
        let d = |first: u64, last: u64| Decoded {
            header: Header {
                first,
                last,
                ms: 0,
                txns: vec![],
                put: vec![],
                delete: vec![],
            },
            events: vec![],
        };
        assert!(idx.add(1, d(1, 3)));
        assert!(idx.add(4, d(4, 4)), "a gap in stream sequences is fine");
        assert!(!idx.add(4, d(4, 4)), "the same message twice is skipped");
        assert!(
            !idx.add(5, d(2, 4)),
            "a batch at or below the head is skipped"
        );
        assert_eq!(idx.head, 4);
        assert_eq!(idx.stream_seq_ending_at(3), Some(1));
        assert_eq!(idx.stream_seq_ending_at(4), Some(4));
        assert_eq!(idx.stream_seq_ending_at(2), None);
    }

    #[test]
    fn urls_and_versions_parse() {
        let t = NatsTarget::parse("nats://a:4222,b:4223/fleet", 3).expect("parse");
        assert_eq!(t.servers, vec!["a:4222", "b:4223"]);
        assert_eq!(t.log, "fleet");
        assert_eq!(t.stream_name(), "COORD_fleet");
        assert!(NatsTarget::parse("nats://a:4222", 1).is_err());
        assert!(NatsTarget::parse("nats://a:4222/bad.name", 1).is_err());
        assert!(NatsTarget::parse("http://a/x", 1).is_err());
        assert!(NatsTarget::parse("nats://a/x", 0).is_err());
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("2.10.0-beta.1"), Some((2, 10, 0)));
        assert!(parse_version("2.9.10").expect("v") < MIN_SERVER);
    }
}
