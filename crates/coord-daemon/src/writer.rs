//! The single writer (DESIGN §5): the only code that changes the state or
//! appends to the log.
//!
//! One task owns the [`State`], the store handle, the timer queue and the
//! pidfd watches. It takes requests from a bounded channel (so callers feel
//! backpressure instead of the daemon buffering without limit), yields to
//! the connection tasks ready on its thread so their writes join (up to
//! `MAX_YIELDS` times while writes keep arriving), drains as many as are
//! ready into one batch, validates each against the state as
//! the earlier ones left it, appends the whole batch in one transaction
//! (group commit), and only then applies its side effects, answers the
//! callers and publishes the events. Reads of the view are requests too, so
//! they observe exactly the committed prefix of the log.
//!
//! Timers are a sorted set of deadlines; the task sleeps until the earliest
//! one and not at all when there is none, so an idle daemon makes no
//! periodic wake-ups.

use crate::hub::{Hub, Published};
use crate::metrics::{CodeLabel, EventLabels, ProbeLabel};
use crate::pidwatch::PidWatches;
pub use crate::stats::Stats;
use crate::timers::{Leases, Renewals, Timers};
use crate::tokens::TokenCache;
use crate::waits::{WaitNotice, Waits};
use coord_core::{apply, keys, validate, Command, Reply, State};
use coord_proto::{ErrorBody, ErrorCode, Event, Payload, Timestamp};
use coord_store::{AttachmentOp, Batch, EventLog, Expectation, Record, Retention, TxnRecord};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Most yields before a commit while writes keep arriving.
const MAX_YIELDS: usize = 3;
/// A write that finds the writer idle for this long, after a commit that
/// carried one write, commits without the group-commit yield: no group is
/// forming, and the yield would only add a trip through the runtime (an
/// `epoll_wait` and a pass over its queues) to a lone client's answer.
/// Both conditions, because a writer preempted for this long under heavy
/// load also finds itself "idle" with connections ready to be read.
const LONE_WRITE_GAP: std::time::Duration = std::time::Duration::from_micros(250);
/// Depth of the request queue before callers wait.
const QUEUE: usize = 16_384;
/// Most lease and lock-TTL expiries committed in one transaction: when
/// thousands come due at once they go over several commits, so a caller's
/// write waits for one of them, not for all (each may end a session).
const EXPIRIES_PER_COMMIT: usize = 128;

/// Source name of events the daemon makes itself (timers, pidfd, start).
pub const LIFECYCLE: &str = "lifecycle";

/// Source name of writes that came through the HTTP API.
pub const API: &str = coord_proto::SOURCE_API;

/// Source name of reports forwarded by a child daemon (`--parent-socket`).
pub const PEER: &str = "peer";

/// What a committed write answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// Seq of the first event appended, if any.
    pub first_seq: Option<u64>,
    /// Seq of the last event appended, if any.
    pub seq: Option<u64>,
    /// What the state machine answered.
    pub reply: Reply,
    /// The answer comes from an earlier identical write.
    #[serde(skip)]
    pub replayed: bool,
    /// The digest of the request that made it (kept in its idempotency
    /// record, which a later write with the same `tx_id` must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Extras a write carries besides its command.
#[derive(Default)]
pub struct Extras {
    /// SHA-256 (hex) of the session token, for a register.
    pub token_hash: Option<String>,
    /// A pidfd opened by the handler, for a register with a pid.
    pub pidfd: Option<OwnedFd>,
    /// The message body, for a deliver.
    pub body: Option<String>,
    /// Where to send the grant or cancel of a queued acquire.
    pub wait: Option<oneshot::Sender<WaitNotice>>,
}

/// A write request.
pub struct Write {
    /// The command.
    pub cmd: Command,
    /// `api`, `lifecycle`, …
    pub source: String,
    /// The client's idempotency key.
    pub tx_id: Option<Ulid>,
    /// What the key is bound to: the request's digest
    /// (`crate::http::Digest`); `None` binds it to nothing (internal
    /// writes, requests without a `tx_id`).
    pub digest: Option<String>,
    /// Source time.
    pub ts: Timestamp,
    /// Extras.
    pub extras: Extras,
    /// Where the answer goes (`None` for fire-and-forget internal writes).
    pub reply: Option<Replier>,
}

/// Where a write's answer goes.
pub type Replier = oneshot::Sender<Result<Committed, WriteError>>;

/// A read of the committed state.
pub type ReadFn = Box<dyn FnOnce(&State) + Send>;

enum Request {
    Write(Box<Write>),
    /// Writes committed in one append, all or none (a batch append).
    Group(Vec<Write>),
    Read(ReadFn),
}

/// A cheap handle to the writer task.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
    /// The runtime the writer runs on, where [`WriterHandle::spawn_write`]
    /// queues its sends: a connection thread may be gone before they are.
    rt: tokio::runtime::Handle,
}

/// Why a write (or a read of the state) was not done. Converted to the
/// wire's `ErrorBody` only at the HTTP edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The state machine refused the command (its code and details).
    #[error(transparent)]
    Rejected(#[from] coord_core::Rejection),
    /// The store refused the append: nothing of the batch was committed.
    #[error("the store refused the write ({0}); nothing was appended, retry")]
    StoreUnavailable(String),
    /// The writer stopped (the daemon is shutting down).
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// A bug (an idempotency record that does not decode).
    #[error("{0}")]
    Internal(String),
    /// Another write of its all-or-nothing group (a batch append) was
    /// refused, so this one was not appended either. The group's caller
    /// answers with the refused write's own error.
    #[error("another line of the batch was refused; nothing was appended")]
    GroupRefused,
}

impl WriteError {
    /// The protocol error code (PROTOCOL §3).
    pub fn code(&self) -> ErrorCode {
        match self {
            WriteError::Rejected(r) => r.code().unwrap_or(ErrorCode::Internal),
            WriteError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            WriteError::ShuttingDown => ErrorCode::ShuttingDown,
            WriteError::Internal(_) => ErrorCode::Internal,
            WriteError::GroupRefused => ErrorCode::InvalidField,
        }
    }

    /// The wire form, `{"error":{"code","message",…}}`.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            WriteError::Rejected(r) => r.0.clone(),
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}

fn gone() -> WriteError {
    WriteError::ShuttingDown
}

impl WriterHandle {
    /// Sends a write and waits for its commit.
    ///
    /// # Errors
    /// The rejection, `store_unavailable`, or `shutting_down`.
    pub async fn write(&self, mut w: Write) -> Result<Committed, WriteError> {
        let (tx, rx) = oneshot::channel();
        w.reply = Some(tx);
        self.tx
            .send(Request::Write(Box::new(w)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Sends writes that must commit in one append (all or none), and
    /// waits for each one's answer, in order.
    ///
    /// # Errors
    /// `shutting_down` when the writer is gone; each write's own answer
    /// otherwise.
    pub async fn write_group(
        &self,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Committed, WriteError>>, WriteError> {
        let mut rxs = Vec::with_capacity(writes.len());
        let writes: Vec<Write> = writes
            .into_iter()
            .map(|mut w| {
                let (tx, rx) = oneshot::channel();
                w.reply = Some(tx);
                rxs.push(rx);
                w
            })
            .collect();
        self.tx
            .send(Request::Group(writes))
            .await
            .map_err(|_| gone())?;
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            out.push(rx.await.map_err(|_| gone())?);
        }
        Ok(out)
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a write nobody waits for (timers, pidfd, dropped waits).
    pub fn spawn_write(&self, w: Write) {
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            let _ = tx.send(Request::Write(Box::new(w))).await;
        });
    }

    /// Runs `f` on the committed state and returns its result.
    ///
    /// # Errors
    /// `shutting_down` when the writer is gone.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Read(Box::new(move |s| {
                let _ = tx.send(f(s));
            })))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

/// A write from the daemon itself.
pub fn internal(cmd: Command) -> Write {
    Write {
        cmd,
        source: LIFECYCLE.to_string(),
        tx_id: None,
        digest: None,
        ts: Timestamp::now(),
        extras: Extras::default(),
        reply: None,
    }
}

/// Writer settings.
pub struct WriterConfig {
    /// Snapshot (and compact) once this many events lie past the log's
    /// latest snapshot (counted across restarts).
    pub snapshot_every: u64,
    /// What compaction keeps.
    pub retention: Retention,
    /// Where bare lease renewals are noted for the lifecycle manager.
    pub renewals: Arc<Renewals>,
    /// Where every lease's renewal and expiry are kept for the API.
    pub leases: Arc<Leases>,
    /// What the writer counts for `/v1/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This daemon's id on a log shared by many daemons (NATS JetStream):
    /// stamped on the sessions it registers, which are the only ones whose
    /// leases and waits it keeps. `None` on a log this daemon alone writes.
    pub daemon_id: Option<String>,
}

struct Writer<L: EventLog> {
    state: State,
    store: L,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    tokens: Arc<TokenCache>,
    timers: Timers,
    pids: PidWatches,
    waits: Waits,
    ids: ulid::Generator,
    handle: WriterHandle,
    config: WriterConfig,
    since_snapshot: u64,
    /// The store's head, when other daemons append to it too.
    store_head: Option<tokio::sync::watch::Receiver<u64>>,
    /// Commands committed in part (`Reply::Unfinished`: a session's end
    /// with many locks), run again in the next batch, after what other
    /// callers queued meanwhile.
    unfinished: Vec<Write>,
    /// The snapshot being encoded and saved, if one is.
    snapshotting: Option<tokio::task::JoinHandle<()>>,
    /// `coord_events_total`'s series by kind, then source, once seen: the
    /// family's own lookup builds two `String` labels and takes a lock
    /// per call. Grows as the family does, one entry per series.
    event_counters: HashMap<String, HashMap<String, Counter>>,
}

/// Most times one batch is re-validated after other daemons appended
/// first, before its callers get `store_unavailable`.
const MAX_CONFLICT_RETRIES: usize = 32;

/// What an attempt to commit a batch came to.
enum Attempt {
    /// Committed or answered.
    Done,
    /// Another writer appended first: catch up, then try these again.
    Conflict(Vec<Write>),
    /// The batch is larger than the store takes in one append.
    TooLarge(Vec<Write>),
}

/// Loads the state (latest snapshot plus the log's tail).
///
/// # Errors
/// Store errors and undecodable events or snapshots, as text.
pub async fn load_state<L: EventLog>(store: &L) -> Result<State, String> {
    let mut state = match store.load_snapshot().await.map_err(|e| e.to_string())? {
        Some((seq, bytes)) => {
            let s: State = serde_json::from_slice(&bytes)
                .map_err(|e| format!("snapshot at seq {seq} is unreadable: {e}"))?;
            s
        }
        None => State::default(),
    };
    loop {
        let batch = store
            .read(state.head, 4096)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        for stored in batch {
            let e = Event::from_json(&stored.json)
                .map_err(|err| format!("event {} is unreadable: {err}", stored.seq))?;
            if e.seq != state.head + 1 {
                return Err(format!(
                    "log has a gap: expected seq {}, found {} (was it compacted past the snapshot?)",
                    state.head + 1,
                    e.seq
                ));
            }
            apply(&mut state, &e);
        }
    }
    let (_, head) = store.bounds().await.map_err(|e| e.to_string())?;
    if head > state.head {
        return Err(format!(
            "log head {head} is past the folded state {}",
            state.head
        ));
    }
    // Compaction can leave an empty log whose head is past the snapshot's
    // seq only if the snapshot was lost; keep numbering from the log's head.
    state.head = state.head.max(head);
    Ok(state)
}

/// Starts the writer task on a loaded state. Returns its handle and a
/// join handle that ends once every handle is dropped and the queue is
/// drained.
///
/// Cancelling the returned token stops it: it then refuses new
/// requests, commits what is queued, and leaves a snapshot.
pub fn spawn<L: EventLog + Clone>(
    state: State,
    store: L,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    tokens: Arc<TokenCache>,
    config: WriterConfig,
) -> (WriterHandle, tokio::task::JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = WriterHandle {
        tx,
        rt: tokio::runtime::Handle::current(),
    };
    let daemon_id = config.daemon_id.clone();
    let store_head = store.head_watch();
    let mut w = Writer {
        state,
        store,
        hub,
        stats,
        tokens,
        timers: Timers::new(config.leases.clone(), config.daemon_id.clone()),
        pids: PidWatches::default(),
        waits: Waits::default(),
        ids: ulid::Generator::new(),
        handle: handle.clone(),
        config,
        since_snapshot: 0,
        store_head,
        unfinished: Vec::new(),
        snapshotting: None,
        event_counters: HashMap::new(),
    };
    w.restore_timers_and_watches();
    // No waiter survives a restart: whoever waited got an error when the
    // old daemon died, so the queue is emptied first thing.
    handle.spawn_write(internal(Command::CancelAllWaits { daemon: daemon_id }));
    let stopped = stop.clone();
    let join = tokio::spawn(async move { w.run(rx, stopped).await });
    (handle, join, stop)
}

impl<L: EventLog + Clone> Writer<L> {
    async fn run(&mut self, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
        self.measure_snapshot_distance().await;
        let mut stopping = false;
        // When the last commit ended and how many writes it carried.
        let mut last_commit = Instant::now();
        let mut last_carried = 0;
        loop {
            let next = self.timers.next();
            let first = tokio::select! {
                _ = stop.cancelled(), if !stopping => {
                    // Refuse new requests; what is queued is still served.
                    stopping = true;
                    rx.close();
                    continue;
                }
                r = rx.recv() => match r {
                    Some(r) => Some(r),
                    // Closed and drained; a session's end still underway
                    // finishes first.
                    None if self.unfinished.is_empty() => break,
                    None => None,
                },
                _ = crate::deadline::sleep_until(next), if next.is_some() => None,
                _ = std::future::ready(()), if !self.unfinished.is_empty() => None,
                _ = store_moved(&mut self.store_head) => {
                    self.catch_up().await;
                    continue;
                }
            };
            let pids = &self.pids;
            let now = Instant::now();
            let lone = last_carried <= 1 && now.duration_since(last_commit) >= LONE_WRITE_GAP;
            let mut writes: Vec<Write> = self
                .timers
                .due(now, EXPIRIES_PER_COMMIT, |sid| pids.is_running(sid))
                .into_iter()
                .map(internal)
                .collect();
            writes.append(&mut self.unfinished);
            let first = match first {
                // Going on with a command done in parts (a session ending
                // with thousands of locks) or with expiries: let the
                // connection tasks ready on this thread run first, so a
                // write that arrived meanwhile joins this commit instead
                // of waiting for every part. On the one-thread daemon
                // nothing else would read it until the writer awaits.
                None if !writes.is_empty() => {
                    tokio::task::yield_now().await;
                    rx.try_recv().ok()
                }
                f => f,
            };
            if let Some(r) = first {
                // Group commit needs a group: let the connection tasks that
                // are ready on this thread run first and queue their
                // writes, so one commit carries them all instead of each
                // paying for a transaction of its own. Not for a write that
                // found the writer idle (`LONE_WRITE_GAP`).
                if matches!(r, Request::Write(_) | Request::Group(_))
                    && !(lone && writes.is_empty())
                {
                    tokio::task::yield_now().await;
                }
                let mut pending = Some(r);
                let mut yields = 1;
                loop {
                    let Some(r) = pending.take().or_else(|| rx.try_recv().ok()) else {
                        // Others joined the first write: more may be on
                        // their way. Yield again, a few times at most, and
                        // stop as soon as a yield brings nothing.
                        if yields < MAX_YIELDS && writes.len() > 1 && writes.len() < MAX_BATCH {
                            yields += 1;
                            tokio::task::yield_now().await;
                            match rx.try_recv() {
                                Ok(r) => {
                                    pending = Some(r);
                                    continue;
                                }
                                Err(_) => break,
                            }
                        }
                        break;
                    };
                    match r {
                        Request::Write(w) => writes.push(*w),
                        // All or nothing: what queued before it commits
                        // first, then the group alone, never split.
                        Request::Group(ws) => {
                            self.commit(std::mem::take(&mut writes)).await;
                            self.commit_group(ws).await;
                        }
                        // A read must see every write queued before it, so
                        // the batch so far is committed first.
                        Request::Read(f) => {
                            self.commit(std::mem::take(&mut writes)).await;
                            f(&self.state);
                        }
                    }
                    if writes.len() >= MAX_BATCH {
                        break;
                    }
                }
            }
            last_carried = writes.len();
            self.commit(writes).await;
            last_commit = Instant::now();
        }
        // The queue is closed and drained: leave a snapshot so the next
        // start folds nothing. Not when the store is out of reach (a NATS
        // log whose servers are gone): the snapshot could only wait out
        // the client's timeouts (25 s measured) and hold the exit, and the
        // log is whole without it.
        if let Some((false, _)) = self.store.remote_health() {
            tracing::warn!("the store is unreachable: no snapshot at shutdown");
        } else {
            self.snapshot().await;
        }
        self.pids.abort_all();
    }

    /// Folds what other daemons appended (the store's head moved past the
    /// state's): each event is applied, followed by timers and waits, and
    /// published, exactly as if this writer had committed it.
    async fn catch_up(&mut self) {
        loop {
            let stored = match self.store.read(self.state.head, 1024).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read what other daemons appended");
                    return;
                }
            };
            if stored.is_empty() {
                return;
            }
            let mut published = Vec::with_capacity(stored.len());
            for s in stored {
                let e = match Event::from_json(&s.json) {
                    Ok(e) if e.seq == self.state.head + 1 => e,
                    Ok(e) => {
                        tracing::error!(
                            expected = self.state.head + 1,
                            found = e.seq,
                            "the shared log skipped a seq"
                        );
                        return;
                    }
                    Err(err) => {
                        tracing::error!(seq = s.seq, error = %err, "unreadable event in the shared log");
                        return;
                    }
                };
                apply(&mut self.state, &e);
                self.after_commit(&e);
                if let Ok(mut by_kind) = self.stats.events_by_kind.lock() {
                    *by_kind.entry(e.kind().to_string()).or_default() += 1;
                }
                self.since_snapshot += 1;
                published.push(Arc::new(Published::new(e, s.json)));
            }
            self.publish(published);
        }
    }

    /// Hands committed events to the hub. Every publish of the writer (a
    /// commit, a catch-up, a roll-back's replay) goes through here.
    fn publish(&self, events: impl IntoIterator<Item = Arc<Published>>) {
        self.hub.publish(events);
    }

    /// Goes back to the last committed state after a refused append: the
    /// cheap copy when there is one, else the state rebuilt from the store
    /// (which may be ahead of the old head: the events in between are then
    /// followed and published here, as a catch-up would).
    async fn roll_back(&mut self, before: Option<State>) {
        if let Some(s) = before {
            self.state = s;
            return;
        }
        let old_head = self.state.head.saturating_sub(0);
        match load_state(&self.store).await {
            Ok(s) => {
                let committed_head = self.hub.head();
                self.state = s;
                if self.state.head > committed_head {
                    if let Ok(stored) = self
                        .store
                        .read(committed_head, (self.state.head - committed_head) as usize)
                        .await
                    {
                        let mut published = Vec::new();
                        for s in stored {
                            if let Ok(e) = Event::from_json(&s.json) {
                                self.after_commit(&e);
                                published.push(Arc::new(Published::new(e, s.json)));
                            }
                        }
                        self.publish(published);
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, head = old_head, "cannot reload state after a failed append");
            }
        }
    }

    /// The `tx_id` of an event the daemon names itself: its seq inside,
    /// the time from the monotonic generator (`crate::event_ids`).
    fn next_id(&mut self, seq: u64) -> Ulid {
        let fresh = self.ids.generate().unwrap_or_else(|_| Ulid::new());
        crate::event_ids::for_event(seq, fresh)
    }

    /// The seq of the event that already carries `tx_id` from `source`,
    /// when the client sent back an id the daemon made (no idempotency
    /// record has it; the id names its event, `crate::event_ids`).
    ///
    /// # Errors
    /// The store could not be read: the write cannot be checked.
    async fn made_here(&self, source: &str, tx_id: Ulid) -> Result<Option<u64>, WriteError> {
        let Some(seq) = crate::event_ids::seq_of(tx_id) else {
            return Ok(None);
        };
        if seq > self.state.head {
            return Ok(None);
        }
        match self.hub.read_after(&self.store, seq - 1, seq).await {
            Ok(found) => Ok(found
                .first()
                .filter(|p| {
                    p.event.seq == seq && p.event.tx_id == tx_id && p.event.source == source
                })
                .map(|p| p.event.seq)),
            // Compacted away: no retained event carries it.
            Err(crate::hub::HubError::Compacted { .. }) => Ok(None),
            Err(crate::hub::HubError::Store(e)) => Err(store_error(&format!(
                "cannot check the tx_id against the log: {e}"
            ))),
        }
    }

    /// Validates, appends and applies a batch; answers every caller. On a
    /// log shared with other daemons, an append refused because another
    /// daemon appended first is retried after catching up, so callers see
    /// one answer, never the conflict.
    async fn commit(&mut self, writes: Vec<Write>) {
        self.commit_as(writes, false).await;
    }

    /// [`commit`](Self::commit) for a group that is appended all or none
    /// (a batch append): one refused write refuses them all, and a group
    /// too large for one append is refused, not split.
    async fn commit_group(&mut self, writes: Vec<Write>) {
        self.commit_as(writes, true).await;
    }

    async fn commit_as(&mut self, mut writes: Vec<Write>, atomic: bool) {
        if self.store_head.is_some() {
            // Start from the newest view the store knows: fewer conflicts.
            self.catch_up().await;
        }
        for _ in 0..MAX_CONFLICT_RETRIES {
            match self.try_commit(writes, false, atomic).await {
                Attempt::Done => return,
                Attempt::Conflict(again) => {
                    self.config.metrics.conflicts.inc();
                    self.catch_up().await;
                    writes = again;
                }
                Attempt::TooLarge(again) if again.len() > 1 && !atomic => {
                    // Each request's events are atomic by themselves: commit
                    // them one by one.
                    for w in again {
                        Box::pin(self.commit(vec![w])).await;
                    }
                    return;
                }
                Attempt::TooLarge(again) => {
                    let _ = self.try_commit(again, true, atomic).await;
                    return;
                }
            }
        }
        // Contention did not let this batch in: answer, do not spin.
        let _ = self.try_commit(writes, true, atomic).await;
    }

    /// One attempt at a batch. `last`: a refused append is answered with
    /// `store_unavailable` instead of being handed back for a retry.
    async fn try_commit(&mut self, writes: Vec<Write>, last: bool, atomic: bool) -> Attempt {
        if writes.is_empty() {
            return Attempt::Done;
        }
        let before = self.state.clone_lite();
        let mut batch = Batch::default();
        batch.records.reserve(writes.len());
        let mut events: Vec<Event> = Vec::with_capacity(writes.len());
        let mut expected: HashMap<String, Option<u64>> = HashMap::new();
        let mut answers: Vec<(Write, Result<Committed, WriteError>)> =
            Vec::with_capacity(writes.len());
        let mut seen: HashSet<(String, Ulid)> = HashSet::new();
        let mut deferred: Vec<Write> = Vec::new();
        let ingress = Timestamp::now();

        for w in writes {
            if let Some(tx_id) = w.tx_id {
                if !seen.insert((w.source.clone(), tx_id)) {
                    // The same write twice in one batch: answer the second
                    // from the first's record once it is committed.
                    deferred.push(w);
                    continue;
                }
                match self.store.txn(&w.source, &tx_id.to_string()).await {
                    Ok(Some(rec)) => {
                        let answer = serde_json::from_str::<Committed>(&rec.response)
                            .map_err(|e| {
                                WriteError::Internal(format!("idempotency record unreadable: {e}"))
                            })
                            .and_then(|mut c| match (&c.digest, &w.digest) {
                                (Some(first), Some(now)) if first != now => {
                                    Err(tx_id_reused(&tx_id, rec.seq))
                                }
                                _ => {
                                    c.replayed = true;
                                    Ok(c)
                                }
                            });
                        answers.push((w, answer));
                        continue;
                    }
                    Ok(None) => match self.made_here(&w.source, tx_id).await {
                        Ok(None) => {}
                        Ok(Some(seq)) => {
                            answers.push((w, Err(tx_id_reused(&tx_id, seq))));
                            continue;
                        }
                        Err(e) => {
                            answers.push((w, Err(e)));
                            continue;
                        }
                    },
                    Err(e) => {
                        answers.push((w, Err(store_error(&e.to_string()))));
                        continue;
                    }
                }
            }
            let outcome = match validate(&self.state, &w.cmd) {
                Ok(mut o) => {
                    if let Some(id) = &self.config.daemon_id {
                        for d in &mut o.drafts {
                            if let Payload::SessionRegister(p) = &mut d.payload {
                                p.daemon = Some(id.clone());
                            }
                        }
                    }
                    o
                }
                Err(rej) => {
                    answers.push((w, Err(WriteError::Rejected(rej))));
                    continue;
                }
            };
            for d in &outcome.drafts {
                for k in keys(d) {
                    expected
                        .entry(k.clone())
                        .or_insert_with(|| self.state.key_heads.get(&k).copied());
                }
            }
            let first_seq = (!outcome.drafts.is_empty()).then_some(self.state.head + 1);
            let bodies = outcome.bodies;
            // The part of an unfinished command carries no tx_id: the
            // client's goes on the first event of the part that finishes it.
            let finished = outcome.reply != Reply::Unfinished;
            for (i, d) in outcome.drafts.into_iter().enumerate() {
                // The first event carries the request's tx_id (the
                // idempotency key); follow-on events get ids made here,
                // never `tx_id + 1`, which a monotonic source may use next.
                let tx_id = match (i, w.tx_id) {
                    (0, Some(t)) if finished => t,
                    _ => self.next_id(self.state.head + 1),
                };
                self.attachments_for(
                    &d.payload,
                    d.session_id.as_deref(),
                    &w,
                    bodies.get(&i),
                    &mut batch,
                );
                let event = Event {
                    seq: self.state.head + 1,
                    tx_id,
                    ts: w.ts,
                    ingress_ts: ingress,
                    source: w.source.clone(),
                    session_id: d.session_id,
                    resource: d.resource,
                    payload: d.payload,
                };
                apply(&mut self.state, &event);
                events.push(event);
            }
            let committed = Committed {
                first_seq,
                seq: first_seq.map(|_| self.state.head),
                reply: outcome.reply,
                replayed: false,
                digest: w.digest.clone(),
            };
            if let (Some(client_tx), Some(seq), true) = (w.tx_id, committed.seq, finished) {
                batch.txns.push(TxnRecord {
                    source: w.source.clone(),
                    tx_id: client_tx.to_string(),
                    seq,
                    response: serde_json::to_string(&committed).unwrap_or_default(),
                });
            }
            answers.push((w, Ok(committed)));
        }

        if atomic && answers.iter().any(|(_, a)| a.is_err()) {
            // One refused write refuses its group (PROTOCOL §9.2): nothing
            // is appended, the state goes back, and each write that was
            // not refused itself is told why it was not appended.
            self.roll_back(before).await;
            for (_, a) in &answers {
                if let Err(e) = a {
                    self.config
                        .metrics
                        .refused
                        .get_or_create(&CodeLabel {
                            code: e.code().as_str().into(),
                        })
                        .inc();
                }
            }
            for (w, a) in answers {
                if let Some(tx) = w.reply {
                    let _ = tx.send(a.and(Err(WriteError::GroupRefused)));
                }
            }
            for w in deferred {
                if let Some(tx) = w.reply {
                    let _ = tx.send(Err(WriteError::GroupRefused));
                }
            }
            return Attempt::Done;
        }

        // The events move into what the hub shares (no copy of an event);
        // the JSON is made once and copied once, into the store's record.
        let published: Vec<Arc<Published>> = events
            .into_iter()
            .map(|e| {
                let json = e.to_json();
                batch.records.push(Record {
                    seq: e.seq,
                    source: e.source.clone(),
                    tx_id: e.tx_id.to_string(),
                    kind: e.kind().to_string(),
                    ingress_ms: e.ingress_ts.as_millis(),
                    json: json.clone(),
                });
                Arc::new(Published::new(e, json))
            })
            .collect();
        batch.key_updates = expected
            .keys()
            .map(|k| (k.clone(), self.state.key_heads.get(k).copied()))
            .collect();
        batch.expect = expected
            .into_iter()
            .map(|(key, last_seq)| Expectation { key, last_seq })
            .collect();

        let started = std::time::Instant::now();
        let appended = self.store.append(batch).await;
        let commit_us = started.elapsed().as_micros() as u64;
        self.config
            .metrics
            .commit_seconds
            .observe(commit_us as f64 / 1e6);
        if let Err(e) = appended {
            let retry = match &e {
                coord_store::StoreError::Conflict { .. }
                | coord_store::StoreError::SeqGap { .. }
                    if !last =>
                {
                    Some(false)
                }
                coord_store::StoreError::TooLarge(_) if !last => Some(true),
                _ => None,
            };
            if let Some(too_large) = retry {
                self.roll_back(before).await;
                let mut again: Vec<Write> = answers.into_iter().map(|(w, _)| w).collect();
                again.extend(deferred);
                tracing::debug!(error = %e, writes = again.len(), "append refused; retrying");
                return if too_large {
                    Attempt::TooLarge(again)
                } else {
                    Attempt::Conflict(again)
                };
            }
            self.config
                .metrics
                .refused
                .get_or_create(&CodeLabel {
                    code: ErrorCode::StoreUnavailable.as_str().into(),
                })
                .inc_by((answers.len() + deferred.len()) as u64);
            tracing::error!(error = %e, "append failed; nothing of this batch is committed");
            // The state already holds the batch: go back to the last
            // committed state (rebuilt from the store if the cheap copy is
            // not enough) and tell every caller nothing happened.
            self.roll_back(before).await;
            let msg = e.to_string();
            for (w, _) in answers {
                if let Some(tx) = w.reply {
                    let _ = tx.send(Err(store_error(&msg)));
                }
            }
            for w in deferred {
                if let Some(tx) = w.reply {
                    let _ = tx.send(Err(store_error(&msg)));
                }
            }
            return Attempt::Done;
        }

        for p in &published {
            self.after_commit(&p.event);
        }
        let appended_events = published.len() as u64;
        // Subscribers first: their lines leave before the bookkeeping
        // below, which only the answers must wait for (a caller that
        // reads /v1/status after its answer sees its commit counted).
        self.publish(published.iter().cloned());
        self.count(&published, &answers);
        if let Ok(mut b) = self.stats.batches.lock() {
            let now = std::time::Instant::now();
            b.commits += 1;
            b.writes += answers.len() as u64;
            b.max_batch = b.max_batch.max(answers.len() as u64);
            for (_, a) in &answers {
                if let Err(e) = a {
                    *b.refused.entry(e.code().as_str().to_string()).or_default() += 1;
                }
            }
            b.recent.push_back((now, commit_us));
            while b
                .recent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > std::time::Duration::from_secs(60))
                || b.recent.len() > 100_000
            {
                b.recent.pop_front();
            }
        }
        if let Ok(mut by_kind) = self.stats.events_by_kind.lock() {
            let mut per: HashMap<&str, u64> = HashMap::new();
            for p in &published {
                *per.entry(p.event.kind()).or_default() += 1;
            }
            for (kind, n) in per {
                match by_kind.get_mut(kind) {
                    Some(c) => *c += n,
                    None => {
                        by_kind.insert(kind.to_string(), n);
                    }
                }
            }
        }
        for (mut w, answer) in answers {
            if matches!(&answer, Ok(c) if c.reply == Reply::Unfinished) {
                self.unfinished.push(w);
                continue;
            }
            if let Ok(c) = &answer {
                self.after_answer(&mut w, c);
            }
            if let Some(tx) = w.reply.take() {
                let _ = tx.send(answer);
            }
        }
        self.since_snapshot += appended_events;
        if self.since_snapshot >= self.config.snapshot_every {
            self.snapshot_in_background();
        }
        if !deferred.is_empty() {
            Box::pin(self.commit(deferred)).await;
        }
        Attempt::Done
    }

    /// `coord_events_total`'s series for (`kind`, `source`), from
    /// `cache` or, the first time, from the family (then kept).
    fn event_counter<'c>(
        cache: &'c mut HashMap<String, HashMap<String, Counter>>,
        m: &crate::metrics::Metrics,
        (kind, source): (&str, &str),
    ) -> &'c Counter {
        if !cache.get(kind).is_some_and(|s| s.contains_key(source)) {
            let c = m
                .events
                .get_or_create(&EventLabels {
                    kind: kind.to_string(),
                    source: source.to_string(),
                })
                .clone();
            cache
                .entry(kind.to_string())
                .or_default()
                .insert(source.to_string(), c);
        }
        &cache[kind][source]
    }

    /// Feeds the metrics of one committed batch.
    fn count(
        &mut self,
        events: &[Arc<Published>],
        answers: &[(Write, Result<Committed, WriteError>)],
    ) {
        let m = &self.config.metrics;
        m.commits.inc();
        m.batch_size.observe(answers.len() as f64);
        // One counter lookup per run of events of the same kind and
        // source (a batch append is one run), not per event.
        let mut run: Option<((&str, &str), u64)> = None;
        for p in events {
            let e = &p.event;
            let key = (e.kind(), e.source.as_str());
            match &mut run {
                Some((k, n)) if *k == key => *n += 1,
                _ => {
                    if let Some((k, n)) = run.replace((key, 1)) {
                        Self::event_counter(&mut self.event_counters, m, k).inc_by(n);
                    }
                }
            }
            if let Payload::SessionProbeError(p) = &e.payload {
                m.probe_errors
                    .get_or_create(&ProbeLabel {
                        probe: p.probe.clone(),
                    })
                    .inc();
            }
        }
        if let Some((k, n)) = run {
            Self::event_counter(&mut self.event_counters, m, k).inc_by(n);
        }
        for (w, a) in answers {
            if w.source.starts_with("fs-") {
                m.bridge_changes.inc();
            }
            if let Err(e) = a {
                m.refused
                    .get_or_create(&CodeLabel {
                        code: e.code().as_str().into(),
                    })
                    .inc();
            }
        }
    }

    /// Blobs that commit with an event: token hashes and message bodies.
    fn attachments_for(
        &self,
        payload: &Payload,
        session_id: Option<&str>,
        w: &Write,
        body: Option<&String>,
        batch: &mut Batch,
    ) {
        match payload {
            Payload::SessionRegister(_) => {
                if let (Some(sid), Some(hash)) = (session_id, &w.extras.token_hash) {
                    batch.attachments.push(AttachmentOp::Put {
                        key: format!("token/{sid}"),
                        value: hash.as_bytes().to_vec(),
                    });
                }
            }
            Payload::SessionDereg(_) => {
                if let Some(sid) = session_id {
                    batch.attachments.push(AttachmentOp::Delete {
                        key: format!("token/{sid}"),
                    });
                    for m in self.state.view.inboxes.get(sid).into_iter().flatten() {
                        batch.attachments.push(AttachmentOp::Delete {
                            key: body_key(sid, &m.msg_id),
                        });
                    }
                }
            }
            Payload::InboxDeliver(p) => batch.attachments.push(AttachmentOp::Put {
                key: body_key(&p.to_session, &p.msg_id),
                value: body
                    .or(w.extras.body.as_ref())
                    .cloned()
                    .unwrap_or_default()
                    .into_bytes(),
            }),
            Payload::InboxAck(p) => batch.attachments.push(AttachmentOp::Delete {
                key: body_key(&p.to_session, &p.msg_id),
            }),
            _ => {}
        }
    }

    /// Timers, watches and notifications that follow a committed event.
    fn after_commit(&mut self, e: &Event) {
        self.timers.on_event(e);
        self.waits.on_event(e);
        if let Payload::SessionDereg(d) = &e.payload {
            let sid = e.session_id.as_deref().unwrap_or_default();
            self.tokens.remove(sid);
            self.pids.end(
                sid,
                d.signal.as_ref().map(|_| d.kill_after_ms.unwrap_or(0)),
                d.group_kill_after_ms,
            );
        }
    }

    /// Effects that need the request itself: lease renewal, pid watches,
    /// token caching, queued-wait registration.
    fn after_answer(&mut self, w: &mut Write, c: &Committed) {
        match &w.cmd {
            Command::Register { session_id, .. } => {
                if let Some(seq) = c.first_seq {
                    if let Some(hash) = w.extras.token_hash.take() {
                        self.tokens.put(session_id, hash);
                    }
                    let watched = self
                        .state
                        .view
                        .sessions
                        .get(session_id)
                        .and_then(|s| s.watched_pid());
                    if let Some(pid) = watched {
                        let fd = w.extras.pidfd.take();
                        self.watch_pid(session_id.clone(), seq, pid, fd);
                    }
                }
            }
            Command::Heartbeat { session_id, .. } => {
                self.config.renewals.note(session_id);
                if let Some(s) = self.state.view.sessions.get(session_id) {
                    // Only the daemon a session registered with keeps its
                    // lease (PROTOCOL §12).
                    if s.daemon == self.config.daemon_id {
                        self.timers.renew(session_id, s.registered_seq, s.ttl_ms);
                    }
                }
            }
            Command::Acquire {
                session_id,
                resource,
                ..
            } => {
                if matches!(c.reply, Reply::Waiting | Reply::AlreadyWaiting) {
                    if let Some(tx) = w.extras.wait.take() {
                        self.waits.register(&self.state, resource, session_id, tx);
                    }
                }
            }
            _ => {}
        }
    }

    fn watch_pid(
        &mut self,
        session_id: String,
        registered_seq: u64,
        pid: u32,
        fd: Option<OwnedFd>,
    ) {
        let handle = self.handle.clone();
        let sid = session_id.clone();
        self.pids.watch(&session_id, pid, fd, move |exit_code| {
            handle.spawn_write(internal(Command::ProcessExited {
                session_id: sid,
                registered_seq,
                exit_code,
            }))
        });
    }

    /// After a restart: leases and lock TTLs are set again, pids are
    /// watched again.
    fn restore_timers_and_watches(&mut self) {
        self.timers.restore(&self.state);
        let watched: Vec<(String, u64, u32)> = self
            .state
            .view
            .sessions
            .values()
            .filter(|s| s.daemon == self.config.daemon_id)
            .filter_map(|s| {
                s.watched_pid()
                    .map(|pid| (s.session_id.clone(), s.registered_seq, pid))
            })
            .collect();
        for (sid, seq, pid) in watched {
            self.watch_pid(sid, seq, pid, None);
        }
    }

    /// Counts the events since the log's latest snapshot, not since this
    /// start: a daemon killed every few thousand events would otherwise
    /// never reach `snapshot_every` and fold a longer tail at every start.
    /// Snapshots at once when that distance is already due.
    async fn measure_snapshot_distance(&mut self) {
        let at = match self.store.snapshot_info().await {
            Ok(info) => info.map_or(0, |(seq, _)| seq),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the latest snapshot's seq; counting from this start");
                self.state.head
            }
        };
        self.since_snapshot = self.state.head.saturating_sub(at);
        if self.since_snapshot >= self.config.snapshot_every {
            tracing::info!(
                events = self.since_snapshot,
                "the log's tail past its latest snapshot is due a snapshot"
            );
            self.snapshot().await;
        }
    }

    /// Takes a snapshot and waits for it (at start and at shutdown, when
    /// nobody is waiting on the writer), after any still being written.
    async fn snapshot(&mut self) {
        if let Some(running) = self.snapshotting.take() {
            let _ = running.await;
        }
        self.since_snapshot = 0;
        save_snapshot(
            self.store.clone(),
            self.state.clone(),
            self.config.retention,
            self.stats.clone(),
        )
        .await;
    }

    /// Takes a snapshot while the writer goes on committing: the state is
    /// copied here, encoded and saved (then the log compacted) by a task
    /// of its own, so a large view does not hold every caller up for its
    /// encoding. One at a time: while one runs, the next waits for the
    /// following commit.
    fn snapshot_in_background(&mut self) {
        if self.snapshotting.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.since_snapshot = 0;
        self.snapshotting = Some(tokio::spawn(save_snapshot(
            self.store.clone(),
            self.state.clone(),
            self.config.retention,
            self.stats.clone(),
        )));
    }
}

/// Encodes `state` (on the blocking pool), saves it as the log's snapshot
/// and compacts the log by `retention`. Failures are logged: the log stays
/// whole and the next snapshot tries again.
async fn save_snapshot<L: EventLog>(
    store: L,
    state: State,
    retention: Retention,
    stats: Arc<Stats>,
) {
    let head = state.head;
    let bytes = match tokio::task::spawn_blocking(move || serde_json::to_vec(&state)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot encode snapshot");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "snapshot encoder stopped");
            return;
        }
    };
    if let Err(e) = store.save_snapshot(head, bytes).await {
        tracing::warn!(error = %e, "snapshot failed; the log is kept whole");
        return;
    }
    if retention.keeps_everything() {
        return;
    }
    match store.compact(retention, Timestamp::now().as_millis()).await {
        Ok(r) => {
            if r.deleted > 0 {
                tracing::info!(deleted = r.deleted, oldest_seq = r.oldest_seq, "compacted");
            }
            if let Ok(mut b) = stats.batches.lock() {
                b.last_compaction = Some(coord_proto::api::CompactionStatus {
                    at: Timestamp::now(),
                    deleted: r.deleted,
                    oldest_seq: r.oldest_seq,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "compaction failed"),
    }
}

trait CloneLite {
    fn clone_lite(&self) -> Option<State>;
}

impl CloneLite for State {
    /// A copy to roll back to if the append fails, when the state is small
    /// enough that copying it per batch costs less than a reload would.
    fn clone_lite(&self) -> Option<State> {
        let size = self.view.sessions.len()
            + self.view.locks.len()
            + self.view.orders.len()
            + self.view.inboxes.len();
        (size <= 64).then(|| self.clone())
    }
}

/// Resolves when the shared store's head moves; never without one.
async fn store_moved(head: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match head {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *head = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The attachment key of a message body.
pub fn body_key(session_id: &str, msg_id: &str) -> String {
    format!("body/{session_id}/{msg_id}")
}

/// A `tx_id` already used by a different request (PROTOCOL §7).
fn tx_id_reused(tx_id: &Ulid, seq: u64) -> WriteError {
    WriteError::Rejected(coord_core::Rejection(
        ErrorBody::new(
            ErrorCode::TxIdReused,
            format!(
                "tx_id {tx_id} was used by a different request (committed at seq {seq}); \
                 a retry must repeat the same endpoint and body, a new request needs a new tx_id"
            ),
        )
        .with("tx_id", tx_id.to_string())
        .with("seq", seq),
    ))
}

fn store_error(msg: &str) -> WriteError {
    WriteError::StoreUnavailable(msg.to_string())
}
