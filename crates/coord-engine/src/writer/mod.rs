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

mod commit;
mod effects;
mod forward;
mod must_land;
mod snapshot;
#[cfg(test)]
mod tests;

pub use forward::{
    queue_forwarded, Forward, ForwardFailure, ForwardReply, ForwardRequest, ForwardedWrite, Role,
    WireError, FORWARD_TIMEOUT_MS, FORWARD_VERSION,
};
pub use snapshot::load_state;

use crate::hub::{Hub, Published};
use crate::metrics::ProbeLabel;
use crate::pidwatch::PidWatches;
use crate::timers::{Leases, Renewals, Timers};
use crate::tokens::TokenCache;
use crate::waits::{WaitNotice, Waits};
use coord_core::{apply, keys, validate, Command, Reply, State};
use coord_proto::{ErrorBody, ErrorCode, Event, Payload, Timestamp};
use coord_store::{AttachmentOp, Batch, EventLog, Expectation, Record, Retention, TxnRecord};
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
    /// The answer comes from an earlier identical write. Kept between
    /// daemons (a forwarded write's answer), never in a record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
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
    /// The message body, for a deliver; an approval's tool input (JSON),
    /// for a request.
    pub body: Option<String>,
    /// Where to send the grant or cancel of a queued acquire.
    pub wait: Option<oneshot::Sender<WaitNotice>>,
    /// Undoes something a caller was told failed (a timed-out wait's
    /// cancel): when the store refuses it, the writer keeps it and commits
    /// it first, before any other write, as soon as the log takes writes
    /// again — so nothing acts later for a caller who was told no.
    pub must_land: bool,
    /// The daemon a forwarded write came from (`None`: this one). Its
    /// register is stamped with it, and its request-bound effects (waits,
    /// pid watches, renewals) stay with it.
    pub origin: Option<String>,
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
    /// (the shell's request digest); `None` binds it to nothing (internal
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

    /// Queues a write nobody waits for (timers, pidfd, dropped waits):
    /// at once when the queue has room, so it keeps its place before any
    /// write sent after this call (a process exit read from its pidfd
    /// stays ahead of a later probe's view of the same exit); through a
    /// task that waits for room when it is full.
    pub fn spawn_write(&self, w: Write) {
        match self.tx.try_send(Request::Write(Box::new(w))) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(r)) => {
                let tx = self.tx.clone();
                self.rt.spawn(async move {
                    let _ = tx.send(r).await;
                });
            }
        }
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
    /// This daemon's role in its log's election (shared log only).
    pub role: Option<tokio::sync::watch::Receiver<Role>>,
    /// How batches reach the leader while this daemon follows.
    pub forward: Option<Arc<dyn Forward>>,
}

struct Writer<L: EventLog> {
    state: State,
    store: L,
    hub: Arc<Hub>,
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
    /// Commit here, not at the leader, until then: a forward got no reply.
    suspect_until: Option<Instant>,
    /// Writes with [`Extras::must_land`] the store refused, oldest first.
    must_land: Vec<Write>,
    /// Batches sent to the leader and not answered yet, oldest first.
    in_flight: futures_util::stream::FuturesOrdered<forward::Flight>,
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
        suspect_until: None,
        must_land: Vec::new(),
        in_flight: Default::default(),
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
                _ = tokio::time::sleep(must_land::RETRY), if !self.must_land.is_empty() => None,
                Some(flight) = futures_util::StreamExt::next(&mut self.in_flight), if !self.in_flight.is_empty() => {
                    match flight {
                        Ok((w, atomic, r)) => self.landed(w, atomic, r).await,
                        Err(e) => tracing::error!(error = %e, "a forwarded batch's task failed"),
                    }
                    continue;
                }
                _ = store_moved(&mut self.store_head) => {
                    self.catch_up().await;
                    continue;
                }
            };
            let pids = &self.pids;
            let now = Instant::now();
            let lone = last_carried <= 1 && now.duration_since(last_commit) >= LONE_WRITE_GAP;
            // Writes that must land go first, in their order, ahead of
            // anything that could act on what they undo.
            let mut writes: Vec<Write> = std::mem::take(&mut self.must_land);
            writes.extend(
                self.timers
                    .due(now, EXPIRIES_PER_COMMIT, |sid| pids.is_running(sid))
                    .into_iter()
                    .map(internal),
            );
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
                        // the batch so far is committed first. Batches
                        // still at the leader are not waited for: their
                        // callers have no answer yet, so a read may come
                        // before them, and must not hang on a paused
                        // leader.
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
        self.land_all().await;
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
                    Ok(e) if e.seq > self.state.head + 1 && !published.is_empty() => {
                        // Publish what continues the head first.
                        self.publish(std::mem::take(&mut published));
                        self.reload_past_compaction(e.seq).await;
                        return;
                    }
                    Ok(e) if e.seq > self.state.head + 1 => {
                        self.reload_past_compaction(e.seq).await;
                        return;
                    }
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
                // Not counted: another daemon appended it, and counts it
                // (summed over the daemons of a log, each event once).
                self.since_snapshot += 1;
                published.push(Arc::new(Published::new(e, s.json)));
            }
            self.publish(published);
        }
    }

    /// The store holds nothing between this writer's head and `found`:
    /// other daemons compacted the log while this one slept. The state is
    /// loaded again from the snapshot and the tail (never folded across
    /// the hole), the hub jumps to its head, timers and waits follow the
    /// new state. Without this a follower that missed a compaction could
    /// never catch up again.
    async fn reload_past_compaction(&mut self, found: u64) {
        let old = self.state.head;
        match load_state(&self.store).await {
            Ok(s) if s.head >= found => {
                tracing::warn!(
                    from = old,
                    to = s.head,
                    "the log was compacted past this daemon's view; reloaded from the snapshot"
                );
                self.state = s;
                self.hub.jump(self.state.head);
                self.timers.restore(&self.state);
                self.waits.recheck(&self.state);
                self.since_snapshot = 0;
            }
            Ok(s) => tracing::warn!(
                head = old,
                found,
                snapshot_head = s.head,
                "the shared log skipped a seq and its snapshot does not cover it yet"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot reload past a compaction yet"),
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

/// The attachment key of an approval's full tool input.
pub fn approval_key(approval_id: &str) -> String {
    format!("approval/{approval_id}")
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
