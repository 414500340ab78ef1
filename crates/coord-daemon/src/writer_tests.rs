//! The writer's rollback path: an append that fails leaves the state as the
//! last commit left it, answers every caller `store_unavailable`, and
//! the next commit continues the log without a gap. Both ways back are
//! driven: the cheap copy (a small state) and the reload from the store
//! (a state too large to copy per batch).

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

async fn rollback_with(sessions_before: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let fail = Arc::new(AtomicBool::new(false));
    let store = FailingLog {
        inner: inner.clone(),
        fail: fail.clone(),
    };
    let hub = Hub::new(0, 1024);
    let (writer, _join, _stop) = spawn(
        State::default(),
        store,
        hub,
        Arc::new(Stats::default()),
        Arc::new(TokenCache::default()),
        WriterConfig {
            snapshot_every: 1_000_000,
            retention: Retention::default(),
            renewals: Default::default(),
            leases: Default::default(),
            metrics: Default::default(),
            daemon_id: None,
        },
    );
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
