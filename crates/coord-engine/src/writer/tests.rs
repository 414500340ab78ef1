//! The writer's rollback path: an append that fails leaves the state as the
//! last commit left it, answers every caller `store_unavailable`, and
//! the next commit continues the log without a gap. Both ways back are
//! driven: the cheap copy (a small state) and the reload from the store
//! (a state too large to copy per batch).
//!
//! And the writer's bounds on one commit: a session's end with many locks
//! goes over several commits with other callers' writes between them, and
//! leases that expire together are committed a bounded number at a time.

use crate::hub::Hub;
use crate::tokens::TokenCache;
use crate::writer::*;
use coord_core::{Command, State};
use coord_proto::ErrorCode;
use coord_store::{Batch, EventLog, Retention, TxnRecord};
use coord_store::{CompactReport, SqliteLog, StoreError, StoredEvent, SyncMode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A real SQLite log whose appends fail while `fail` is set.
#[derive(Clone)]
struct FailingLog {
    inner: SqliteLog,
    fail: Arc<AtomicBool>,
}

impl EventLog for FailingLog {
    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Worker("disk full (test double)".into()));
        }
        self.inner.append(batch).await
    }
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read(after, limit).await
    }
    async fn bounds(&self) -> Result<(u64, u64), StoreError> {
        self.inner.bounds().await
    }
    async fn txn(&self, source: &str, tx_id: &str) -> Result<Option<TxnRecord>, StoreError> {
        self.inner.txn(source, tx_id).await
    }
    async fn attachment(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.attachment(key).await
    }
    async fn save_snapshot(&self, seq: u64, state: Vec<u8>) -> Result<(), StoreError> {
        self.inner.save_snapshot(seq, state).await
    }
    async fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.load_snapshot().await
    }
    async fn snapshot_info(&self) -> Result<Option<(u64, i64)>, StoreError> {
        self.inner.snapshot_info().await
    }
    async fn compact(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<CompactReport, StoreError> {
        self.inner.compact(retention, now_ms).await
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn log_id(&self) -> &str {
        self.inner.log_id()
    }
}

fn register(id: &str) -> Command {
    Command::Register {
        session_id: id.into(),
        role: String::new(),
        task: String::new(),
        blob: serde_json::json!({}),
        phase: String::new(),
        pid: None,
        parent_session: None,
        ttl_ms: 60_000,
        probes: Default::default(),
        expiry: Default::default(),
        extra: Default::default(),
    }
}

fn acquire(id: &str, resource: &str) -> Command {
    Command::Acquire {
        session_id: id.into(),
        resource: resource.into(),
        mode: coord_proto::LockMode::Exclusive,
        ttl_ms: None,
        wait: false,
        extra: Default::default(),
    }
}

/// A writer on a SQLite log that fails while the flag is set; the log
/// itself, to read what landed; the directory that holds it.
fn failing_writer() -> (WriterHandle, SqliteLog, Arc<AtomicBool>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let fail = Arc::new(AtomicBool::new(false));
    let store = FailingLog {
        inner: inner.clone(),
        fail: fail.clone(),
    };
    let (writer, _stats) = writer_on(store);
    (writer, inner, fail, dir)
}

async fn rollback_with(sessions_before: usize) {
    let (writer, inner, fail, _dir) = failing_writer();
    for i in 0..sessions_before {
        writer
            .write(internal(register(&format!("s{i}"))))
            .await
            .expect("register");
    }
    writer
        .write(internal(acquire("s0", "r")))
        .await
        .expect("acquire");
    let before = writer.read(|s| s.clone()).await.expect("read");

    fail.store(true, Ordering::SeqCst);
    // Several writers in one batch: every one is told, none lands.
    let (a, b) = tokio::join!(
        writer.write(internal(register("late"))),
        writer.write(internal(Command::Release {
            session_id: "s0".into(),
            resource: "r".into(),
            force: false,
        })),
    );
    for r in [a, b] {
        let e = r.expect_err("the append failed");
        assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e:?}");
    }
    let after = writer.read(|s| s.clone()).await.expect("read");
    assert_eq!(after, before, "the state rolled back to the last commit");

    fail.store(false, Ordering::SeqCst);
    let c = writer
        .write(internal(register("late")))
        .await
        .expect("writes resume");
    assert_eq!(c.seq, Some(before.head + 1), "no gap after the failure");
    let log = inner.read(0, 100_000).await.expect("read log");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "the log is gap-free");
    }
    let folded = load_state(&inner).await.expect("fold");
    let live = writer.read(|s| s.clone()).await.expect("read");
    assert_eq!(
        folded.view, live.view,
        "the live state is the fold of the log"
    );
}

#[tokio::test]
async fn a_failed_append_rolls_back_a_small_state() {
    rollback_with(3).await;
}

#[tokio::test]
async fn a_failed_append_rolls_back_a_large_state_by_reloading() {
    rollback_with(80).await;
}

/// A writer on `store` with snapshots out of the way.
fn writer_on<L: EventLog + Clone>(store: L) -> (WriterHandle, Arc<crate::stats::Counts>) {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let counts = metrics.counts.clone();
    let (writer, _join, _stop) = spawn(
        State::default(),
        store,
        Hub::new(0, 1 << 16),
        Arc::new(TokenCache::default()),
        WriterConfig {
            snapshot_every: 1_000_000,
            retention: Retention::default(),
            renewals: Default::default(),
            leases: Default::default(),
            metrics,
            daemon_id: None,
            role: None,
            forward: None,
        },
    );
    (writer, counts)
}

/// The single-threaded runtime lets both requests reach the writer's
/// queue before it runs: without chunking the unrelated write would be
/// committed after every one of the session's releases.
#[tokio::test(flavor = "current_thread")]
async fn a_write_queued_behind_a_big_session_end_is_not_held_for_all_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let (writer, _stats) = writer_on(store.clone());
    for id in ["big", "other"] {
        writer
            .write(internal(register(id)))
            .await
            .expect("register");
    }
    let n = 3 * coord_proto::CASCADE_CHUNK + 10;
    for i in 0..n {
        writer
            .write(internal(acquire("big", &format!("src/m{i}/**"))))
            .await
            .expect("acquire");
    }
    let (end, unrelated) = tokio::join!(
        writer.write(internal(Command::Dereg {
            session_id: "big".into(),
            reason: coord_proto::DeregReason::Explicit,
            exit_code: None,
        })),
        writer.write(internal(acquire("other", "docs/readme.md"))),
    );
    let end = end.expect("dereg");
    let unrelated = unrelated.expect("unrelated acquire");
    let (end_seq, write_seq) = (end.seq.expect("seq"), unrelated.seq.expect("seq"));
    assert!(
        write_seq < end_seq,
        "the unrelated write ({write_seq}) waited for the whole end ({end_seq})"
    );
    let log = store.read(0, 1_000_000).await.expect("read");
    let releases_before_write = log
        .iter()
        .filter(|e| e.seq < write_seq && e.json.contains("\"lock.release\""))
        .count();
    assert!(
        releases_before_write <= coord_proto::CASCADE_CHUNK,
        "{releases_before_write} releases went ahead of the unrelated write"
    );
    let released = log
        .iter()
        .filter(|e| e.json.contains("\"lock.release\""))
        .count();
    assert_eq!(released, n, "every lock released once");
    // The end's answer is its last event, and the log folds to the view.
    assert_eq!(end_seq, log.last().map(|e| e.seq).unwrap_or(0));
    let folded = load_state(&store).await.expect("fold");
    let live = writer.read(|s| s.clone()).await.expect("read");
    assert_eq!(folded, live);
    assert!(!live.view.sessions.contains_key("big"));
}

/// Time stands still while the sessions register (paused clock; appends
/// on the writer's thread, so nothing idles the runtime), so every lease
/// comes due at the same instant.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn leases_that_expire_together_are_committed_a_bounded_number_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let (writer, stats) = writer_on(store.on_caller_thread());
    let n = 300;
    for i in 0..n {
        let mut cmd = register(&format!("s{i}"));
        if let Command::Register { ttl_ms, .. } = &mut cmd {
            *ttl_ms = coord_proto::MIN_SESSION_TTL_MS;
        }
        writer.write(internal(cmd)).await.expect("register");
    }
    // Wait (without a clock in the assertion) until every lease ran out.
    loop {
        let left = writer.read(|s| s.view.sessions.len()).await.expect("read");
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let max_batch = stats.read().max_batch;
    assert!(max_batch >= 1);
    assert!(
        max_batch <= 128,
        "{max_batch} writes in one commit: expiries were not spread"
    );
}

fn custom(kind: &str, tx_id: Option<ulid::Ulid>) -> Write {
    Write {
        source: API.to_string(),
        tx_id,
        ..internal(Command::Custom {
            kind: kind.into(),
            body: Default::default(),
            session_id: None,
            resource: None,
        })
    }
}

/// The store keeps no index on `(source, tx_id)`: an id the daemon made,
/// sent back by a client as its own, is found through the seq inside it
/// and refused like any reused id, alone, while the other callers' writes
/// committed with it go in (a batch append's lines go in all or none:
/// `coord/tests/it/batch.rs`); an id that only looks like one (its seq names an event with
/// another id) is a new write.
#[tokio::test(flavor = "current_thread")]
async fn a_tx_id_the_daemon_made_is_refused_when_a_client_sends_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let (writer, _stats) = writer_on(store.clone());
    let first = writer.write(custom("x.first", None)).await.expect("write");
    let seq = first.seq.expect("seq");
    let made = {
        let stored = store.read(seq - 1, 1).await.expect("read");
        let e = coord_proto::Event::from_json(&stored[0].json).expect("event");
        assert_eq!(crate::event_ids::seq_of(e.tx_id), Some(seq));
        e.tx_id
    };

    // Three callers' writes reach the queue before the writer runs (one
    // thread): one commit.
    let answers = {
        let (a, b, c) = tokio::join!(
            writer.write(custom("x.innocent", None)),
            writer.write(custom("x.copied", Some(made))),
            writer.write(custom("x.also_innocent", Some(ulid::Ulid::new()))),
        );
        [a, b, c]
    };
    assert!(answers[0].is_ok(), "{:?}", answers[0].as_ref().err());
    match &answers[1] {
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::TxIdReused);
            let body = serde_json::to_value(e.to_body()).expect("json");
            assert_eq!(body["error"]["seq"], seq, "{body}");
        }
        Ok(c) => panic!("a copied id was committed at {:?}", c.seq),
    }
    assert!(answers[2].is_ok(), "{:?}", answers[2].as_ref().err());

    // Its seq names the first event, its random bits differ: a new id.
    let lookalike = ulid::Ulid::from_parts(made.timestamp_ms(), made.random() ^ 1);
    writer
        .write(custom("x.lookalike", Some(lookalike)))
        .await
        .expect("a lookalike id is a new write");

    let log = store.read(0, 100).await.expect("read");
    let kinds: Vec<String> = log
        .iter()
        .map(|e| {
            coord_proto::Event::from_json(&e.json)
                .expect("event")
                .kind()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["x.first", "x.innocent", "x.also_innocent", "x.lookalike"]
    );
    let mut ids: Vec<String> = log
        .iter()
        .map(|e| {
            coord_proto::Event::from_json(&e.json)
                .expect("event")
                .tx_id
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), log.len(), "every (source, tx_id) once");
}

/// A timed-out wait's cancel that the store refuses is kept, and lands
/// first — before the holder's release that would have granted the wait —
/// as soon as the store takes writes again: the caller told "no" is never
/// granted later.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_cancel_lands_before_anything_else_once_the_store_is_back() {
    let (writer, inner, fail, _dir) = failing_writer();
    for id in ["holder", "waiter"] {
        writer
            .write(internal(register(id)))
            .await
            .expect("register");
    }
    writer
        .write(internal(acquire("holder", "R")))
        .await
        .expect("acquire");
    let mut wait = acquire("waiter", "R");
    if let Command::Acquire { wait: w, .. } = &mut wait {
        *w = true;
    }
    let queued = writer.write(internal(wait)).await.expect("wait");
    assert_eq!(queued.reply, coord_core::Reply::Waiting);

    fail.store(true, Ordering::SeqCst);
    let mut cancel = internal(Command::CancelWait {
        resource: "R".into(),
        session_id: "waiter".into(),
        reason: coord_proto::WaitCancelReason::Timeout,
    });
    cancel.extras.must_land = true;
    let e = writer.write(cancel).await.expect_err("the store refuses");
    assert_eq!(e.code(), ErrorCode::StoreUnavailable);

    fail.store(false, Ordering::SeqCst);
    writer
        .write(internal(Command::Release {
            session_id: "holder".into(),
            resource: "R".into(),
            force: false,
        }))
        .await
        .expect("release");
    let kinds: Vec<(String, String)> = inner
        .read(0, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| {
            let e = coord_proto::Event::from_json(&e.json).expect("event");
            let owner = match &e.payload {
                coord_proto::Payload::LockAcquire(p) => p.owner_session.clone(),
                coord_proto::Payload::LockWaitCancel(p) => p.owner_session.clone(),
                _ => String::new(),
            };
            (e.kind().to_string(), owner)
        })
        .collect();
    let at = |kind: &str| kinds.iter().position(|(k, _)| k == kind);
    let cancel = at("lock.wait_cancel").expect("the cancel landed");
    let release = at("lock.release").expect("released");
    assert!(cancel < release, "{kinds:?}");
    assert!(
        !kinds
            .iter()
            .any(|(k, o)| k == "lock.acquire" && o == "waiter"),
        "the waiter told no was granted: {kinds:?}"
    );
}
