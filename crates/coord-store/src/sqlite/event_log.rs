//! [`EventLog`] for [`SqliteLog`]: append (one transaction per batch, on
//! the writer connection), reads and bounds on the reader pool,
//! idempotency records, attachments, snapshots and compaction.

use super::*;

impl EventLog for SqliteLog {
    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.records.is_empty() && batch.attachments.is_empty() && batch.txns.is_empty() {
            return Ok(());
        }
        if self.inline_writes {
            let conn = self
                .inner
                .writer
                .lock()
                .map_err(|_| StoreError::Worker("writer connection poisoned".into()))?;
            return append_counted(&self.inner, &conn, batch);
        }
        let inner = self.inner.clone();
        self.with_writer(move |conn| append_counted(&inner, conn, batch))
            .await
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
                Ok(StoredEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    json: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn bounds(&self) -> Result<(u64, u64), StoreError> {
        self.with_reader(bounds).await
    }

    async fn txn(&self, source: &str, tx_id: &str) -> Result<Option<TxnRecord>, StoreError> {
        let (source, tx_id) = (source.to_string(), tx_id.to_string());
        if self.inline_writes {
            // The writer asks before every write that carries a tx_id: a
            // hop to the pool per line of a batch would cost more than the
            // lookup. Its own connection sees everything committed.
            let conn = self
                .inner
                .writer
                .lock()
                .map_err(|_| StoreError::Worker("writer connection poisoned".into()))?;
            return txn_blocking(&conn, source, tx_id);
        }
        self.with_reader(move |conn| txn_blocking(conn, source, tx_id))
            .await
    }

    async fn attachment(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.with_reader(move |conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM attachments WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn save_snapshot(&self, seq: u64, state: Vec<u8>) -> Result<(), StoreError> {
        let now = time_ms();
        let inner = self.inner.clone();
        self.with_writer(move |conn| {
            let pages = estimate_pages(1, state.len());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO snapshots (seq, taken_ms, state) VALUES (?1, ?2, ?3)",
                params![seq as i64, now, state],
            )?;
            tx.execute("DELETE FROM snapshots WHERE seq < ?1", [seq as i64])?;
            tx.commit()?;
            inner.checkpointer.wrote(conn, pages);
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT seq, state FROM snapshots ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn snapshot_info(&self) -> Result<Option<(u64, i64)>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT seq, taken_ms FROM snapshots ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn compact(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<CompactReport, StoreError> {
        let inner = self.inner.clone();
        self.with_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (oldest, head) = bounds(&tx)?;
            let snap: Option<i64> =
                tx.query_row("SELECT MAX(seq) FROM snapshots", [], |r| r.get(0))?;
            let (Some(snap), false) = (snap, retention.keeps_everything()) else {
                return Ok(CompactReport { deleted: 0, oldest_seq: oldest });
            };
            // Everything at or below `cut` may go: covered by the snapshot,
            // outside the last N, and older than D days.
            let mut cut = snap as u64;
            if let Some(n) = retention.keep_events {
                cut = cut.min(head.saturating_sub(n));
            }
            if let Some(ms) = retention.keep_ms {
                let since = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                let first_recent: Option<i64> = tx.query_row(
                    "SELECT MIN(seq) FROM events WHERE ingress_ms >= ?1",
                    [since],
                    |r| r.get(0),
                )?;
                let bound = first_recent.map(|s| s as u64 - 1).unwrap_or(head);
                cut = cut.min(bound);
            }
            if cut < oldest {
                return Ok(CompactReport { deleted: 0, oldest_seq: oldest });
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?1) ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                [head as i64],
            )?;
            let deleted = tx.execute("DELETE FROM events WHERE seq <= ?1", [cut as i64])?;
            tx.execute("DELETE FROM txns WHERE seq <= ?1", [cut as i64])?;
            let (oldest_seq, _) = bounds(&tx)?;
            tx.commit()?;
            inner.checkpointer.wrote(conn, estimate_pages(deleted, 0));
            Ok(CompactReport { deleted: deleted as u64, oldest_seq })
        })
        .await
    }

    fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    fn size_bytes(&self) -> u64 {
        let mut wal = self.inner.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.inner.path.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

pub(super) fn time_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
