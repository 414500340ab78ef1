//! [`EventLog`] for [`JetStreamLog`]: append, reads, bounds, idempotency
//! records, attachments, snapshots and compaction on the stream.

use super::*;

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
                let found = idx.batches.range(..=next).next_back();
                if let Some((_, (_, last, _))) = found.filter(|(_, (_, last, _))| *last < next) {
                    // A hole in the index below the head (batches the
                    // stream no longer has): go on from the next batch it
                    // holds. Reading the batch ending at `last` again and
                    // again is how a daemon that slept through a
                    // compaction once spun at 100 % CPU here.
                    match idx.batches.range(next..).next() {
                        Some((first, _)) => {
                            tracing::debug!(
                                after = last,
                                first,
                                "skipping a hole in the log index"
                            );
                            next = *first;
                            continue;
                        }
                        None => break,
                    }
                }
                let Some((first, (stream_seq, _, _))) = found else {
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

    async fn refresh(&self) {
        let before = self.index().head;
        match tokio::time::timeout(REFRESH_PATIENCE, self.sync()).await {
            Ok(Ok(())) => {
                if self.index().head > before {
                    // The live follower missed these: it is likely dead
                    // with its node, so start it again now.
                    self.inner.follower_kick.notify_one();
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot refresh the log index"),
            Err(_) => tracing::debug!("refreshing the log index timed out"),
        }
    }

    fn remote_health(&self) -> Option<(bool, i64)> {
        Some((self.connected(), self.last_contact_ms()))
    }
}

pub(super) fn check_contiguous(records: &[Record]) -> Result<(), StoreError> {
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

/// Longest a [`EventLog::refresh`] waits for the stream.
const REFRESH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
