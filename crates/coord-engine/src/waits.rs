//! Queued lock acquires waiting for their answer: who is told when a
//! `lock.acquire` grants a waiter or a `lock.wait_cancel` drops one.
//!
//! The API handler of a waiting acquire hands its `oneshot` in with the
//! write; the writer registers it here once the `lock.wait` committed and
//! passes every committed event on. Nothing here writes to the log.

use coord_core::State;
use coord_proto::{Event, Payload, WaitCancelReason};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// The outcome of a queued wait on a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitNotice {
    /// Granted by the event with this seq.
    Granted(u64),
    /// The wait was cancelled.
    Cancelled(WaitCancelReason),
}

/// Open waits by (resource, session).
#[derive(Default)]
pub struct Waits {
    open: HashMap<(String, String), oneshot::Sender<WaitNotice>>,
}

impl Waits {
    /// Registers the waiter of a committed `lock.wait`. A later command of
    /// the same batch may already have granted or cancelled it (its event
    /// went by before this registration), so the state after the batch
    /// decides: held is answered now, gone is a cancel, still queued waits.
    pub fn register(
        &mut self,
        state: &State,
        resource: &str,
        session_id: &str,
        tx: oneshot::Sender<WaitNotice>,
    ) {
        let lock = state.view.locks.get(resource);
        let held = lock.and_then(|l| {
            l.holders
                .iter()
                .find(|h| h.session_id == session_id)
                .map(|h| h.acquired_seq)
        });
        let waiting = lock.is_some_and(|l| l.waiters.iter().any(|x| x.session_id == session_id));
        match (held, waiting) {
            (Some(seq), _) => {
                let _ = tx.send(WaitNotice::Granted(seq));
            }
            (None, true) => {
                self.open
                    .insert((resource.to_string(), session_id.to_string()), tx);
            }
            (None, false) => {
                let _ = tx.send(WaitNotice::Cancelled(WaitCancelReason::OwnerGone));
            }
        }
    }

    /// Answers again every open wait against `state`, after the writer
    /// reloaded it from a snapshot (the events that granted or cancelled
    /// a wait may be compacted away).
    pub fn recheck(&mut self, state: &State) {
        for ((resource, session_id), tx) in std::mem::take(&mut self.open) {
            self.register(state, &resource, &session_id, tx);
        }
    }

    /// Follows one committed event: a grant or a cancel answers its waiter.
    pub fn on_event(&mut self, e: &Event) {
        let (key, notice) = match &e.payload {
            Payload::LockAcquire(p) => (
                (p.resource.clone(), p.owner_session.clone()),
                WaitNotice::Granted(e.seq),
            ),
            Payload::LockWaitCancel(p) => (
                (p.resource.clone(), p.owner_session.clone()),
                WaitNotice::Cancelled(p.reason),
            ),
            _ => return,
        };
        if let Some(tx) = self.open.remove(&key) {
            let _ = tx.send(notice);
        }
    }
}
