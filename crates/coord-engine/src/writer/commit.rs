//! The commit of one batch: validate each write on the state, apply its
//! events, append the batch in one transaction (group commit), roll the
//! state back if the append fails, then publish and answer.
//!
//! It must not touch a timer, a wait or a pid watch itself: those follow
//! the commit in `effects`.

use super::snapshot::CloneLite;
use super::*;

impl<L: EventLog + Clone> Writer<L> {
    /// Validates, appends and applies a batch; answers every caller. On a
    /// log shared with other daemons, an append refused because another
    /// daemon appended first is retried after catching up, so callers see
    /// one answer, never the conflict.
    pub(super) async fn commit(&mut self, writes: Vec<Write>) {
        self.commit_as(writes, false).await;
    }

    /// [`commit`](Self::commit) for a group that is appended all or none
    /// (a batch append): one refused write refuses them all, and a group
    /// too large for one append is refused, not split.
    pub(super) async fn commit_group(&mut self, writes: Vec<Write>) {
        self.commit_as(writes, true).await;
    }

    pub(super) async fn commit_as(&mut self, mut writes: Vec<Write>, atomic: bool) {
        if let Some(leader) = self.forward_to().filter(|_| !writes.is_empty()) {
            match self.forward(&leader, writes, atomic).await {
                Ok(()) => return,
                Err(back) => writes = back,
            }
        }
        if writes.is_empty() {
            return;
        }
        // Batches still at the leader come first: this daemon's own
        // order is kept across a change of role.
        self.land_all().await;
        self.commit_here(writes, atomic).await;
    }

    /// Validates and appends here (leader, no leader known, or a batch
    /// the leader certainly did not apply).
    pub(super) async fn commit_here(&mut self, mut writes: Vec<Write>, atomic: bool) {
        if writes.is_empty() {
            return;
        }
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
    pub(super) async fn try_commit(
        &mut self,
        writes: Vec<Write>,
        last: bool,
        atomic: bool,
    ) -> Attempt {
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
                    if let Some(id) = w.extras.origin.as_ref().or(self.config.daemon_id.as_ref()) {
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
                    self.config.metrics.counts.refused(e.code(), 1);
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
            self.config.metrics.counts.refused(
                ErrorCode::StoreUnavailable,
                (answers.len() + deferred.len()) as u64,
            );
            tracing::error!(error = %e, "append failed; nothing of this batch is committed");
            // The state already holds the batch: go back to the last
            // committed state (rebuilt from the store if the cheap copy is
            // not enough) and tell every caller nothing happened.
            self.roll_back(before).await;
            self.keep_must_land(answers.iter().map(|(w, _)| w).chain(deferred.iter()));
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
        self.count(&published, &answers, commit_us);
        for (mut w, answer) in answers {
            if matches!(&answer, Ok(c) if c.reply == Reply::Unfinished) {
                self.unfinished.push(w);
                continue;
            }
            // A forwarded write's request-bound effects happen at the
            // daemon it came from, once it folded this commit.
            if let (Ok(c), None) = (&answer, &w.extras.origin) {
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
}
