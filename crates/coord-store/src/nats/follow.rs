//! Keeping the in-memory index of coord seq to stream sequence current:
//! rebuilding it, syncing it in bulk, the live follower that moves the
//! head watch, snapshots in the object store, daemon leases in the KV
//! bucket, and the conditional publish of a batch.
//!
//! It must not decide what a batch holds: that is the `EventLog` impl.

use super::*;

impl JetStreamLog {
    pub(super) fn touch(&self) {
        self.inner
            .last_contact_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every
        // update is a few inserts); recover it instead of poisoning reads.
        self.inner
            .index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads the snapshot's records, then reads every message of the
    /// stream once to index it.
    pub(super) async fn rebuild(&self) -> Result<(), StoreError> {
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
    pub(super) async fn stream_is_ahead(&self) -> bool {
        let mut stream = self.inner.stream.clone();
        match stream.info().await {
            Ok(info) => info.state.last_sequence > self.index().last_stream,
            Err(_) => false,
        }
    }

    pub(super) async fn sync(&self) -> Result<(), StoreError> {
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
        if self.index().hole {
            return Err(StoreError::Invalid(
                "the log was compacted past this daemon's index".into(),
            ));
        }
        let head = self.index().head;
        self.inner.head_tx.send_replace(head);
        Ok(())
    }

    /// Throws the index away and builds it again from the latest snapshot
    /// and the stream: the way back after the log was compacted past what
    /// this daemon had indexed (it slept through a compaction). Readers
    /// that were behind then find their seqs compacted, as after any
    /// compaction; the writer reloads its state from the same snapshot.
    pub(super) async fn reload(&self) -> Result<(), StoreError> {
        tracing::warn!(
            "the log was compacted past this daemon's index; reloading it from the snapshot"
        );
        *self.index() = Index::default();
        self.rebuild().await
    }

    /// Indexes one message read by [`sync`](Self::sync): batches older
    /// than the snapshot only enter the seq → stream index (for reads).
    pub(super) fn index_synced(&self, stream_seq: u64, payload: &[u8]) -> Result<(), StoreError> {
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
    pub(super) async fn bulk_sync(&self, from: u64, to: u64) -> Result<(), StoreError> {
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
    pub(super) fn spawn_follower(&self) {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                if log.index().hole {
                    if let Err(e) = log.reload().await {
                        tracing::warn!(error = %e, "cannot reload the index yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
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
                            let (added, hole) = {
                                let mut idx = log.index();
                                let added = idx.add(stream_seq, d).then_some(idx.head);
                                (added, idx.hole)
                            };
                            if let Some(head) = added {
                                log.inner.head_tx.send_replace(head);
                            }
                            if hole {
                                break;
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

    pub(super) async fn fetch_snapshot(
        &self,
    ) -> Result<Option<(u64, SnapshotHeader, Vec<u8>)>, StoreError> {
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

    pub(super) async fn publish(
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
