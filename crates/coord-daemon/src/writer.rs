//! The single writer (DESIGN §5): the only code that changes the state or
//! appends to the log.
//!
//! One task owns the [`State`], the store handle, the timer queue and the
//! pidfd watches. It takes requests from a bounded channel (so callers feel
//! backpressure instead of the daemon buffering without limit), drains as
//! many as are ready into one batch, validates each against the state as
//! the earlier ones left it, appends the whole batch in one transaction
//! (group commit), and only then applies its side effects, answers the
//! callers and publishes the events. Reads of the view are requests too, so
//! they observe exactly the committed prefix of the log.
//!
//! Timers are a sorted set of deadlines; the task sleeps until the earliest
//! one and not at all when there is none, so an idle daemon makes no
//! periodic wake-ups.

use crate::hub::{Hub, Published};
use crate::pidfd;
use coord_core::{apply, keys, validate, Command, Reply, State};
use coord_proto::{ErrorBody, ErrorCode, Event, Payload, Timestamp, WaitCancelReason};
use coord_store::{AttachmentOp, Batch, EventLog, Expectation, Record, Retention, TxnRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use ulid::Ulid;

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Depth of the request queue before callers wait.
const QUEUE: usize = 16_384;

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
}

/// The outcome of a queued wait on a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitNotice {
    /// Granted by the event with this seq.
    Granted(u64),
    /// The wait was cancelled.
    Cancelled(WaitCancelReason),
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
    /// Source time.
    pub ts: Timestamp,
    /// Extras.
    pub extras: Extras,
    /// Where the answer goes (`None` for fire-and-forget internal writes).
    pub reply: Option<oneshot::Sender<Result<Committed, ErrorBody>>>,
}

/// A read of the committed state.
pub type ReadFn = Box<dyn FnOnce(&State) + Send>;

enum Request {
    Write(Box<Write>),
    Read(ReadFn),
}

/// Shared counters for `/v1/status`.
#[derive(Default)]
pub struct Stats {
    /// Events appended since start, by kind.
    pub events_by_kind: Mutex<BTreeMap<String, u64>>,
}

/// Session token hashes, loaded from the store on a miss.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<String, String>>,
}

impl TokenCache {
    /// The cached hash for a session.
    pub fn get(&self, session_id: &str) -> Option<String> {
        self.map.lock().ok()?.get(session_id).cloned()
    }
    /// Caches a hash.
    pub fn put(&self, session_id: &str, hash: String) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(session_id.to_string(), hash);
        }
    }
    fn remove(&self, session_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(session_id);
        }
    }
}

/// Every live session's lease as the writer holds it: renewals are not
/// events, so this, not the view, knows when a lease was last renewed.
/// Written only by the writer task; read by the API.
#[derive(Default)]
pub struct Leases {
    map: Mutex<HashMap<String, coord_proto::view::Lease>>,
}

impl Leases {
    /// The lease of `session_id`, if it is live.
    pub fn get(&self, session_id: &str) -> Option<coord_proto::view::Lease> {
        self.map.lock().ok()?.get(session_id).cloned()
    }
    fn renew(&self, session_id: &str, ttl_ms: u64) {
        let now = Timestamp::now();
        if let Ok(mut m) = self.map.lock() {
            m.insert(
                session_id.to_string(),
                coord_proto::view::Lease {
                    renewed_at: now,
                    expires_at: now.plus_ms(ttl_ms),
                },
            );
        }
    }
    fn remove(&self, session_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(session_id);
        }
    }
}

/// A cheap handle to the writer task.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

fn gone() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "the daemon is shutting down")
}

impl WriterHandle {
    /// Sends a write and waits for its commit.
    ///
    /// # Errors
    /// The rejection, `store_unavailable`, or `shutting_down`.
    pub async fn write(&self, mut w: Write) -> Result<Committed, ErrorBody> {
        let (tx, rx) = oneshot::channel();
        w.reply = Some(tx);
        self.tx
            .send(Request::Write(Box::new(w)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues a write nobody waits for (timers, pidfd, dropped waits).
    pub fn spawn_write(&self, w: Write) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
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
    ) -> Result<T, ErrorBody> {
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
        ts: Timestamp::now(),
        extras: Extras::default(),
        reply: None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerKey {
    Lease {
        session_id: String,
        registered_seq: u64,
    },
    LockTtl {
        resource: String,
        session_id: String,
        acquired_seq: u64,
    },
}

/// Deadlines, earliest first, with an index to move or drop one.
#[derive(Default)]
struct Timers {
    queue: BTreeSet<(Instant, TimerKey)>,
    index: HashMap<TimerKey, Instant>,
}

impl Timers {
    fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.index.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }
    fn clear(&mut self, key: &TimerKey) {
        if let Some(old) = self.index.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }
    fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }
    fn pop_due(&mut self, now: Instant) -> Vec<TimerKey> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.queue.pop_first() {
                self.index.remove(&key);
                due.push(key);
            }
        }
        due
    }
}

/// Writer settings.
pub struct WriterConfig {
    /// Snapshot (and compact) every this many events.
    pub snapshot_every: u64,
    /// What compaction keeps.
    pub retention: Retention,
    /// Where bare lease renewals are noted for the lifecycle manager.
    pub renewals: Arc<crate::lifecycle::Renewals>,
    /// Where every lease's renewal and expiry are kept for the API.
    pub leases: Arc<Leases>,
}

struct Writer<L: EventLog> {
    state: State,
    store: L,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    tokens: Arc<TokenCache>,
    timers: Timers,
    lock_timers: HashMap<(String, String), TimerKey>,
    pid_watches: HashMap<String, AbortHandle>,
    /// A pidfd per watched session (a duplicate of the watch's): asked
    /// whether the process still runs when the lease expires, and used to
    /// signal it then, so a reused pid is never hit.
    pidfds: HashMap<String, OwnedFd>,
    waits: HashMap<(String, String), oneshot::Sender<WaitNotice>>,
    ids: ulid::Generator,
    handle: WriterHandle,
    config: WriterConfig,
    since_snapshot: u64,
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
/// Sending on the returned `oneshot` stops it: it then refuses new
/// requests, commits what is queued, and leaves a snapshot.
pub fn spawn<L: EventLog + Clone>(
    state: State,
    store: L,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    tokens: Arc<TokenCache>,
    config: WriterConfig,
) -> (
    WriterHandle,
    tokio::task::JoinHandle<()>,
    oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = WriterHandle { tx };
    let mut w = Writer {
        state,
        store,
        hub,
        stats,
        tokens,
        timers: Timers::default(),
        lock_timers: HashMap::new(),
        pid_watches: HashMap::new(),
        pidfds: HashMap::new(),
        waits: HashMap::new(),
        ids: ulid::Generator::new(),
        handle: handle.clone(),
        config,
        since_snapshot: 0,
    };
    w.restore_timers_and_watches();
    // No waiter survives a restart: whoever waited got an error when the
    // old daemon died, so the queue is emptied first thing.
    handle.spawn_write(internal(Command::CancelAllWaits));
    let join = tokio::spawn(async move { w.run(rx, stop_rx).await });
    (handle, join, stop_tx)
}

impl<L: EventLog + Clone> Writer<L> {
    async fn run(&mut self, mut rx: mpsc::Receiver<Request>, mut stop: oneshot::Receiver<()>) {
        let mut stopping = false;
        loop {
            let next = self.timers.next();
            let first = tokio::select! {
                _ = &mut stop, if !stopping => {
                    // Refuse new requests; what is queued is still served.
                    stopping = true;
                    rx.close();
                    continue;
                }
                r = rx.recv() => match r {
                    Some(r) => Some(r),
                    None => break,
                },
                _ = sleep_until(next), if next.is_some() => None,
            };
            let mut writes = Vec::new();
            for key in self.timers.pop_due(Instant::now()) {
                let w = self.timer_write(key);
                writes.push(w);
            }
            if let Some(r) = first {
                let mut pending = Some(r);
                while let Some(r) = pending.take().or_else(|| rx.try_recv().ok()) {
                    match r {
                        Request::Write(w) => writes.push(*w),
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
            self.commit(writes).await;
        }
        // The queue is closed and drained: leave a snapshot so the next
        // start folds nothing.
        self.snapshot().await;
        for (_, h) in self.pid_watches.drain() {
            h.abort();
        }
    }

    fn timer_write(&self, key: TimerKey) -> Write {
        internal(match key {
            TimerKey::Lease {
                session_id,
                registered_seq,
            } => Command::ExpireLease {
                process_alive: self.pidfds.get(&session_id).is_some_and(pidfd::is_running),
                session_id,
                registered_seq,
            },
            TimerKey::LockTtl {
                resource,
                session_id,
                acquired_seq,
            } => Command::ExpireLock {
                resource,
                session_id,
                acquired_seq,
            },
        })
    }

    fn next_id(&mut self) -> Ulid {
        self.ids.generate().unwrap_or_else(|_| Ulid::new())
    }

    /// Validates, appends and applies a batch; answers every caller.
    async fn commit(&mut self, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let before = self.state.clone_lite();
        let mut batch = Batch::default();
        let mut events: Vec<Event> = Vec::new();
        let mut expected: HashMap<String, Option<u64>> = HashMap::new();
        let mut answers: Vec<(Write, Result<Committed, ErrorBody>)> = Vec::new();
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
                            .map(|mut c| {
                                c.replayed = true;
                                c
                            })
                            .map_err(|e| {
                                ErrorBody::new(
                                    ErrorCode::Internal,
                                    format!("idempotency record unreadable: {e}"),
                                )
                            });
                        answers.push((w, answer));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        answers.push((w, Err(store_error(&e.to_string()))));
                        continue;
                    }
                }
            }
            let outcome = match validate(&self.state, &w.cmd) {
                Ok(o) => o,
                Err(rej) => {
                    answers.push((w, Err(rej.0)));
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
            for (i, d) in outcome.drafts.into_iter().enumerate() {
                // The first event carries the request's tx_id (the
                // idempotency key); follow-on events get fresh ULIDs, never
                // `tx_id + 1`, which a monotonic source may use next.
                let tx_id = match (i, w.tx_id) {
                    (0, Some(t)) => t,
                    _ => self.next_id(),
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
            };
            if let (Some(client_tx), Some(seq)) = (w.tx_id, committed.seq) {
                batch.txns.push(TxnRecord {
                    source: w.source.clone(),
                    tx_id: client_tx.to_string(),
                    seq,
                    response: serde_json::to_string(&committed).unwrap_or_default(),
                });
            }
            answers.push((w, Ok(committed)));
        }

        let published: Vec<Arc<Published>> = events
            .iter()
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
                Arc::new(Published::new(e.clone(), json))
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

        if let Err(e) = self.store.append(batch).await {
            tracing::error!(error = %e, "append failed; nothing of this batch is committed");
            // The state already holds the batch: go back to the last
            // committed state (rebuilt from the store if the cheap copy is
            // not enough) and tell every caller nothing happened.
            self.state = match before {
                Some(s) => s,
                None => match load_state(&self.store).await {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot reload state after a failed append");
                        self.state.clone()
                    }
                },
            };
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
            return;
        }

        for e in &events {
            self.after_commit(e);
        }
        if let Ok(mut by_kind) = self.stats.events_by_kind.lock() {
            for e in &events {
                *by_kind.entry(e.kind().to_string()).or_default() += 1;
            }
        }
        self.hub.publish(published);
        for (mut w, answer) in answers {
            if let Ok(c) = &answer {
                self.after_answer(&mut w, c);
            }
            if let Some(tx) = w.reply.take() {
                let _ = tx.send(answer);
            }
        }
        self.since_snapshot += events.len() as u64;
        if self.since_snapshot >= self.config.snapshot_every {
            self.snapshot().await;
        }
        if !deferred.is_empty() {
            Box::pin(self.commit(deferred)).await;
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
        let sid = e.session_id.clone().unwrap_or_default();
        match &e.payload {
            Payload::SessionRegister(p) => {
                self.config.leases.renew(&sid, p.ttl_ms);
                self.timers.set(
                    TimerKey::Lease {
                        session_id: sid.clone(),
                        registered_seq: e.seq,
                    },
                    Instant::now() + Duration::from_millis(p.ttl_ms),
                );
            }
            Payload::SessionDereg(d) => {
                if let Some(h) = self.pid_watches.remove(&sid) {
                    h.abort();
                }
                self.config.leases.remove(&sid);
                let fd = self.pidfds.remove(&sid);
                if let (Some(fd), Some(_)) = (fd, &d.signal) {
                    terminate(fd, sid.clone(), d.kill_after_ms.unwrap_or(0));
                }
                self.tokens.remove(&sid);
                let stale: Vec<TimerKey> = self
                    .timers
                    .index
                    .keys()
                    .filter(
                        |k| matches!(k, TimerKey::Lease { session_id, .. } if *session_id == sid),
                    )
                    .cloned()
                    .collect();
                for k in stale {
                    self.timers.clear(&k);
                }
            }
            Payload::LockAcquire(p) => {
                let key = (p.resource.clone(), p.owner_session.clone());
                if let Some(ttl) = p.ttl_ms {
                    let t = TimerKey::LockTtl {
                        resource: p.resource.clone(),
                        session_id: p.owner_session.clone(),
                        acquired_seq: e.seq,
                    };
                    self.timers
                        .set(t.clone(), Instant::now() + Duration::from_millis(ttl));
                    self.lock_timers.insert(key.clone(), t);
                }
                if let Some(tx) = self.waits.remove(&key) {
                    let _ = tx.send(WaitNotice::Granted(e.seq));
                }
            }
            Payload::LockRelease(p) => {
                if let Some(t) = self
                    .lock_timers
                    .remove(&(p.resource.clone(), p.owner_session.clone()))
                {
                    self.timers.clear(&t);
                }
            }
            Payload::LockWaitCancel(p) => {
                if let Some(tx) = self
                    .waits
                    .remove(&(p.resource.clone(), p.owner_session.clone()))
                {
                    let _ = tx.send(WaitNotice::Cancelled(p.reason));
                }
            }
            _ => {}
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
                    self.config.leases.renew(session_id, s.ttl_ms);
                    self.timers.set(
                        TimerKey::Lease {
                            session_id: session_id.clone(),
                            registered_seq: s.registered_seq,
                        },
                        Instant::now() + Duration::from_millis(s.ttl_ms),
                    );
                }
            }
            Command::Acquire {
                session_id,
                resource,
                ..
            } => {
                if matches!(c.reply, Reply::Waiting | Reply::AlreadyWaiting) {
                    if let Some(tx) = w.extras.wait.take() {
                        // A later command of the same batch may already have
                        // granted or cancelled this wait: its event went by
                        // before the wait was registered, so answer from the
                        // state instead of waiting for an event that came.
                        let lock = self.state.view.locks.get(resource);
                        let held = lock.and_then(|l| {
                            l.holders
                                .iter()
                                .find(|h| &h.session_id == session_id)
                                .map(|h| h.acquired_seq)
                        });
                        let waiting = lock
                            .is_some_and(|l| l.waiters.iter().any(|x| &x.session_id == session_id));
                        match (held, waiting) {
                            (Some(seq), _) => {
                                let _ = tx.send(WaitNotice::Granted(seq));
                            }
                            (None, true) => {
                                self.waits
                                    .insert((resource.clone(), session_id.clone()), tx);
                            }
                            (None, false) => {
                                let _ = tx.send(WaitNotice::Cancelled(WaitCancelReason::OwnerGone));
                            }
                        }
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
        let exited = move |exit_code| {
            handle.spawn_write(internal(Command::ProcessExited {
                session_id: sid,
                registered_seq,
                exit_code,
            }))
        };
        let fd = match fd.map(Ok).unwrap_or_else(|| pidfd::open(pid)) {
            Ok(fd) => fd,
            Err(e) => {
                // Gone already (or pidfds unsupported): treat as exited now
                // rather than keep a session nothing will ever end.
                tracing::info!(pid, error = %e, "registered process is not running");
                exited(None);
                return;
            }
        };
        match fd.try_clone() {
            Ok(dup) => {
                self.pidfds.insert(session_id.clone(), dup);
            }
            Err(e) => tracing::warn!(pid, error = %e, "cannot keep a pidfd to signal at expiry"),
        }
        let task = tokio::spawn(async move {
            let code = pidfd::exited(fd, pid).await.ok().flatten();
            exited(code);
        });
        if let Some(old) = self.pid_watches.insert(session_id, task.abort_handle()) {
            old.abort();
        }
    }

    /// After a restart: every lease gets a fresh TTL (renewals are not
    /// logged), lock TTLs resume from their grant time, pids are watched
    /// again.
    fn restore_timers_and_watches(&mut self) {
        let now_wall = Timestamp::now();
        let now = Instant::now();
        let sessions: Vec<_> = self.state.view.sessions.values().cloned().collect();
        for s in sessions {
            self.config.leases.renew(&s.session_id, s.ttl_ms);
            self.timers.set(
                TimerKey::Lease {
                    session_id: s.session_id.clone(),
                    registered_seq: s.registered_seq,
                },
                now + Duration::from_millis(s.ttl_ms),
            );
            if let Some(pid) = s.watched_pid() {
                self.watch_pid(s.session_id.clone(), s.registered_seq, pid, None);
            }
        }
        let holds: Vec<_> = self
            .state
            .view
            .locks
            .values()
            .flat_map(|l| {
                l.holders
                    .iter()
                    .map(move |h| (l.resource.clone(), h.clone()))
            })
            .collect();
        for (resource, h) in holds {
            if let Some(ttl) = h.ttl_ms {
                let left = h.acquired_at.plus_ms(ttl).as_millis() - now_wall.as_millis();
                let t = TimerKey::LockTtl {
                    resource: resource.clone(),
                    session_id: h.session_id.clone(),
                    acquired_seq: h.acquired_seq,
                };
                self.timers
                    .set(t.clone(), now + Duration::from_millis(left.max(0) as u64));
                self.lock_timers.insert((resource, h.session_id), t);
            }
        }
    }

    async fn snapshot(&mut self) {
        self.since_snapshot = 0;
        let bytes = match serde_json::to_vec(&self.state) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode snapshot");
                return;
            }
        };
        if let Err(e) = self.store.save_snapshot(self.state.head, bytes).await {
            tracing::warn!(error = %e, "snapshot failed; the log is kept whole");
            return;
        }
        if !self.config.retention.keeps_everything() {
            match self
                .store
                .compact(self.config.retention, Timestamp::now().as_millis())
                .await
            {
                Ok(r) if r.deleted > 0 => {
                    tracing::info!(deleted = r.deleted, oldest_seq = r.oldest_seq, "compacted")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
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

/// Ends a process that outlived its session's lease (PROTOCOL §6.3):
/// SIGTERM now, SIGKILL after `grace_ms` if it still runs. The pidfd makes
/// both reach this process or none.
fn terminate(fd: OwnedFd, session_id: String, grace_ms: u64) {
    match pidfd::send_signal(&fd, libc::SIGTERM) {
        Ok(()) => tracing::info!(
            session_id,
            grace_ms,
            "lease expired with the process running: sent SIGTERM"
        ),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(e) => {
            tracing::warn!(session_id, error = %e, "cannot signal the process of an expired session")
        }
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(grace_ms)).await;
        if pidfd::is_running(&fd) {
            match pidfd::send_signal(&fd, libc::SIGKILL) {
                Ok(()) => tracing::info!(
                    session_id,
                    "still running after the kill grace: sent SIGKILL"
                ),
                Err(e) => {
                    tracing::warn!(session_id, error = %e, "cannot SIGKILL the process of an expired session")
                }
            }
        }
    });
}

/// The attachment key of a message body.
pub fn body_key(session_id: &str, msg_id: &str) -> String {
    format!("body/{session_id}/{msg_id}")
}

fn store_error(msg: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::StoreUnavailable,
        format!("the store refused the write ({msg}); nothing was appended, retry"),
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
