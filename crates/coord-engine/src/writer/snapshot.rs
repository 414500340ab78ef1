//! Snapshots and the state they start from: loading the state (snapshot
//! plus the log's tail), taking a snapshot every so many events, and
//! compaction by the retention policy.
//!
//! It must not block the writer: encoding and saving run off its task.

use super::*;

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

impl<L: EventLog + Clone> Writer<L> {
    /// Counts the events since the log's latest snapshot, not since this
    /// start: a daemon killed every few thousand events would otherwise
    /// never reach `snapshot_every` and fold a longer tail at every start.
    /// Snapshots at once when that distance is already due.
    pub(super) async fn measure_snapshot_distance(&mut self) {
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
    pub(super) async fn snapshot(&mut self) {
        if let Some(running) = self.snapshotting.take() {
            let _ = running.await;
        }
        self.since_snapshot = 0;
        save_snapshot(
            self.store.clone(),
            self.state.clone(),
            self.config.retention,
            self.config.metrics.counts.clone(),
        )
        .await;
    }

    /// Takes a snapshot while the writer goes on committing: the state is
    /// copied here, encoded and saved (then the log compacted) by a task
    /// of its own, so a large view does not hold every caller up for its
    /// encoding. One at a time: while one runs, the next waits for the
    /// following commit.
    pub(super) fn snapshot_in_background(&mut self) {
        if self.snapshotting.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.since_snapshot = 0;
        self.snapshotting = Some(tokio::spawn(save_snapshot(
            self.store.clone(),
            self.state.clone(),
            self.config.retention,
            self.config.metrics.counts.clone(),
        )));
    }
}

/// Encodes `state` (on the blocking pool), saves it as the log's snapshot
/// and compacts the log by `retention`. Failures are logged: the log stays
/// whole and the next snapshot tries again.
pub(super) async fn save_snapshot<L: EventLog>(
    store: L,
    state: State,
    retention: Retention,
    counts: Arc<crate::stats::Counts>,
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
            counts.compacted(coord_proto::api::CompactionStatus {
                at: Timestamp::now(),
                deleted: r.deleted,
                oldest_seq: r.oldest_seq,
            });
        }
        Err(e) => tracing::warn!(error = %e, "compaction failed"),
    }
}

pub(super) trait CloneLite {
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
