//! Tests of the SQLite log: migrations, appends and their conditions,
//! reads, idempotency records, attachments, snapshots, compaction, files.

use super::*;
use crate::log::{Expectation, Record};

fn rec(seq: u64) -> Record {
    Record {
        seq,
        source: "api".into(),
        tx_id: format!("TX{seq:024}"),
        kind: "x.test".into(),
        ingress_ms: seq as i64 * 1000,
        json: format!("{{\"seq\":{seq}}}"),
    }
}

fn batch(seqs: std::ops::RangeInclusive<u64>) -> Batch {
    Batch {
        records: seqs.map(rec).collect(),
        ..Batch::default()
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteLog {
    SqliteLog::open(&dir.path().join("coord.db"), SyncMode::Normal).expect("open")
}

#[tokio::test]
async fn appends_reads_and_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    assert_eq!(log.bounds().await.expect("bounds"), (1, 0));
    log.append(batch(1..=3)).await.expect("append");
    log.append(batch(4..=5)).await.expect("append");
    let got = log.read(2, 10).await.expect("read");
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(log.bounds().await.expect("bounds"), (1, 5));
    assert_eq!(log.read(0, 2).await.expect("read").len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn checkpoints_run_on_their_thread_and_keep_the_wal_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir).on_caller_thread();
    let body = "x".repeat(1024);
    // About 40 MB of rows through the WAL: without checkpoints it
    // would grow to some 70 MB.
    for start in (1..=36_000u64).step_by(100) {
        let records = (start..start + 100)
            .map(|seq| Record {
                json: format!("{{\"seq\":{seq},\"pad\":\"{body}\"}}"),
                ..rec(seq)
            })
            .collect();
        log.append(Batch {
            records,
            ..Batch::default()
        })
        .await
        .expect("append");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.inner.checkpointer.completed() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        log.inner.checkpointer.completed() > 0,
        "no checkpoint ran on the thread"
    );
    let wal = std::fs::metadata(dir.path().join("coord.db-wal"))
        .expect("wal")
        .len();
    // At most HARD_CAP_PAGES (32 MiB) of WAL however slow the thread
    // is on a loaded machine, and some slack for the estimate.
    assert!(wal < 40 << 20, "the WAL grew to {wal} bytes");
    assert_eq!(log.bounds().await.expect("bounds"), (1, 36_000));
}

#[tokio::test]
async fn appends_on_the_caller_thread_share_the_log_and_its_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let inline = log.on_caller_thread();
    inline.append(batch(1..=2)).await.expect("append");
    log.append(batch(3..=3)).await.expect("append");
    inline.append(batch(4..=4)).await.expect("append");
    assert!(matches!(
        inline.append(batch(4..=4)).await,
        Err(StoreError::SeqGap { expected: 5, .. })
    ));
    let got = log.read(0, 10).await.expect("read");
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(inline.bounds().await.expect("bounds"), (1, 4));
}

#[tokio::test]
async fn a_gap_or_a_reused_seq_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.append(batch(1..=2)).await.expect("append");
    assert!(matches!(
        log.append(batch(4..=4)).await,
        Err(StoreError::SeqGap {
            expected: 3,
            got: 4
        })
    ));
    assert!(matches!(
        log.append(batch(2..=3)).await,
        Err(StoreError::SeqGap { .. })
    ));
    assert_eq!(log.bounds().await.expect("bounds"), (1, 2));
    // A refused batch left no transaction open, and the writer's
    // remembered head is still right: on both write paths, the next
    // batch goes in and a gap is still refused.
    let inline = log.on_caller_thread();
    inline
        .append(batch(3..=3))
        .await
        .expect("append after refusals");
    log.append(batch(4..=5)).await.expect("append on the pool");
    assert!(matches!(
        inline.append(batch(7..=7)).await,
        Err(StoreError::SeqGap {
            expected: 6,
            got: 7
        })
    ));
    inline.append(batch(6..=6)).await.expect("append");
    assert_eq!(log.bounds().await.expect("bounds"), (1, 6));
}

#[tokio::test]
async fn a_store_made_before_version_3_keeps_its_events_and_loses_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coord.db");
    {
        // The schema as released up to version 2, with 5,000 events.
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(&MIGRATIONS[..2].join("\n"))
            .expect("schema v2");
        conn.pragma_update(None, "user_version", 2)
            .expect("version");
        conn.execute_batch("BEGIN").expect("begin");
        for r in batch(1..=5000).records {
            conn.execute(
                "INSERT INTO events (seq, source, tx_id, kind, ingress_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.seq as i64, r.source, r.tx_id, r.kind, r.ingress_ms, r.json],
            )
            .expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    let log = SqliteLog::open(&path, SyncMode::Normal).expect("migrate");
    let wal = std::fs::metadata(dir.path().join("coord.db-wal")).map_or(0, |m| m.len());
    // (Only the log id's row, written after the migration.)
    assert!(
        wal < 3 * 4096,
        "the copied table was left in the WAL: {wal} bytes"
    );
    assert_eq!(log.bounds().await.expect("bounds"), (1, 5000));
    let read = log.read(0, 10_000).await.expect("read");
    let want = batch(1..=5000).records;
    assert_eq!(read.len(), want.len());
    assert!(
        read.iter()
            .zip(&want)
            .all(|(got, want)| got.seq == want.seq && got.json == want.json),
        "an event changed in the copy"
    );
    log.append(batch(5001..=5001))
        .await
        .expect("append after the migration");
    drop(log);
    let conn = Connection::open(&path).expect("reopen");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, MIGRATIONS.len() as i64);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(indexes.is_empty(), "{indexes:?}");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn expectations_guard_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let mut b = batch(1..=1);
    b.expect = vec![Expectation {
        key: "lock/a".into(),
        last_seq: None,
    }];
    b.key_updates = vec![("lock/a".into(), Some(1))];
    log.append(b).await.expect("first take");
    // A second writer that still believes the lock is free loses.
    let mut b = batch(2..=2);
    b.expect = vec![Expectation {
        key: "lock/a".into(),
        last_seq: None,
    }];
    assert!(matches!(
        log.append(b).await,
        Err(StoreError::Conflict { found: Some(1), .. })
    ));
    let mut b = batch(2..=2);
    b.expect = vec![Expectation {
        key: "lock/a".into(),
        last_seq: Some(1),
    }];
    b.key_updates = vec![("lock/a".into(), None)];
    log.append(b).await.expect("release");
}

#[tokio::test]
async fn txns_attachments_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let mut b = batch(1..=1);
    b.txns = vec![TxnRecord {
        source: "api".into(),
        tx_id: "T1".into(),
        seq: 1,
        response: "{\"seq\":1}".into(),
    }];
    b.attachments = vec![AttachmentOp::Put {
        key: "body/a/1".into(),
        value: b"hi".to_vec(),
    }];
    log.append(b).await.expect("append");
    assert_eq!(
        log.txn("api", "T1").await.expect("txn").map(|t| t.seq),
        Some(1)
    );
    assert_eq!(log.txn("other", "T1").await.expect("txn"), None);
    assert_eq!(
        log.attachment("body/a/1").await.expect("att"),
        Some(b"hi".to_vec())
    );
    log.save_snapshot(1, b"state".to_vec()).await.expect("snap");
    assert_eq!(
        log.load_snapshot().await.expect("load"),
        Some((1, b"state".to_vec()))
    );
}

#[tokio::test]
async fn compaction_keeps_the_last_n_and_never_passes_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.append(batch(1..=100)).await.expect("append");
    let keep10 = Retention {
        keep_events: Some(10),
        keep_ms: None,
    };
    // No snapshot yet: nothing may go.
    assert_eq!(log.compact(keep10, 0).await.expect("compact").deleted, 0);
    log.save_snapshot(50, b"s".to_vec()).await.expect("snap");
    let r = log.compact(keep10, 0).await.expect("compact");
    assert_eq!((r.deleted, r.oldest_seq), (50, 51));
    log.save_snapshot(100, b"s".to_vec()).await.expect("snap");
    let r = log.compact(keep10, 0).await.expect("compact");
    assert_eq!((r.deleted, r.oldest_seq), (40, 91));
    assert_eq!(log.bounds().await.expect("bounds"), (91, 100));
    // Day-based: events 91..=100 have ingress 91s..100s.
    let r = log
        .compact(
            Retention {
                keep_events: None,
                keep_ms: Some(5_000),
            },
            100_000,
        )
        .await
        .expect("compact");
    assert_eq!(r.oldest_seq, 95);
}

#[tokio::test]
async fn the_head_survives_compacting_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(&dir);
        log.append(batch(1..=5)).await.expect("append");
        log.save_snapshot(5, b"s".to_vec()).await.expect("snap");
        log.compact(
            Retention {
                keep_events: Some(0),
                keep_ms: None,
            },
            0,
        )
        .await
        .expect("compact");
        assert_eq!(log.bounds().await.expect("bounds"), (6, 5));
    }
    let log = open(&dir);
    assert_eq!(log.bounds().await.expect("bounds"), (6, 5));
    log.append(batch(6..=6)).await.expect("seq continues");
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(&dir);
    let second = SqliteLog::open(&dir.path().join("coord.db"), SyncMode::Full);
    assert!(matches!(second, Err(StoreError::Locked(_))));
    drop(first);
    SqliteLog::open(&dir.path().join("coord.db"), SyncMode::Full).expect("reopen");
}

#[tokio::test]
async fn the_log_id_is_made_once_and_differs_between_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(&dir);
    let id = first.log_id().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    drop(first);
    let again = open(&dir);
    assert_eq!(again.log_id(), id, "reopening keeps the identity");
    let other_dir = tempfile::tempdir().expect("tempdir");
    assert_ne!(open(&other_dir).log_id(), id, "another store, another log");
}
