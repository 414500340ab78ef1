//! The state and the fold: [`apply`] is the only function that changes it.

use crate::lock_index::LockIndex;
use coord_proto::view::{EndedSession, View};
use coord_proto::{Draft, Event, Payload};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The view plus what the log needs to know about it.
///
/// Serializable so the store can snapshot it; the API shows only `view`.
/// The lock index is derived from the view, so a snapshot leaves it out
/// and reading one rebuilds it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct State {
    /// The view clients see.
    pub view: View,
    /// Seq of the last applied event (0 for an empty log).
    pub head: u64,
    /// Last seq per consistency key (see [`keys`]); the expectations of a
    /// conditional append are read from here.
    #[serde(default)]
    pub key_heads: BTreeMap<String, u64>,
    /// The last [`coord_proto::ENDED_SESSIONS_KEPT`] sessions that ended,
    /// oldest first: how each ended, for `session list --ended` and for
    /// errors that name an ended session ("expired at …").
    #[serde(default)]
    pub ended: VecDeque<EndedSession>,
    /// The last [`coord_proto::approval::DECIDED_APPROVALS_KEPT`] decided
    /// approvals, oldest first, for `approvals log` (PROTOCOL §14).
    #[serde(default)]
    pub decided: VecDeque<coord_proto::approval::Approval>,
    /// Live locks by literal prefix, suffix and session, so that no lock
    /// command scans every lock (kept in step by the fold).
    #[serde(skip)]
    pub lock_index: LockIndex,
}

/// A snapshot as stored: the state without what is derived from the view.
/// Snapshots of older versions carry a `pattern_locks` field, ignored.
#[derive(Deserialize)]
struct Stored {
    view: View,
    head: u64,
    #[serde(default)]
    key_heads: BTreeMap<String, u64>,
    #[serde(default)]
    ended: VecDeque<EndedSession>,
    #[serde(default)]
    decided: VecDeque<coord_proto::approval::Approval>,
}

impl From<Stored> for State {
    fn from(s: Stored) -> State {
        State {
            lock_index: LockIndex::from_view(&s.view),
            view: s.view,
            head: s.head,
            key_heads: s.key_heads,
            ended: s.ended,
            decided: s.decided,
        }
    }
}

impl State {
    /// A state to follow the log from, built from a snapshot of the view at
    /// `seq` (`GET /v1/events?snapshot=true`): folding the events after
    /// `seq` into it keeps the view exactly as the daemon's. For followers
    /// (`coord top`), never for validation: the key heads and the list of
    /// ended sessions are not in a view and start empty.
    pub fn from_view(view: View, seq: u64) -> State {
        State {
            lock_index: LockIndex::from_view(&view),
            view,
            head: seq,
            key_heads: BTreeMap::new(),
            ended: VecDeque::new(),
            decided: VecDeque::new(),
        }
    }

    /// The most recent end of `session_id`, if it is still remembered.
    pub fn ended_session(&self, session_id: &str) -> Option<&EndedSession> {
        self.ended.iter().rev().find(|e| e.session_id == session_id)
    }
}

/// The consistency keys an event touches: `session/<id>`, `lock/<resource>`,
/// `order/<id>`. A conditional append expects each key's last seq to be
/// what this state says; a backend shared by several writers (JetStream)
/// enforces it, so two daemons cannot both take one lock.
///
/// Only keys of live objects are tracked: when a session, lock or order
/// disappears its key is dropped, so the table stays as small as the view.
pub fn keys(draft: &Draft) -> Vec<String> {
    keys_of(
        draft.session_id.as_deref(),
        draft.resource.as_deref(),
        &draft.payload,
    )
}

fn keys_of(session_id: Option<&str>, resource: Option<&str>, payload: &Payload) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Some(s) = session_id {
        out.push(format!("session/{s}"));
    }
    if let Some(r) = resource {
        out.push(format!("lock/{r}"));
    }
    match payload {
        Payload::DispatchIssue(p) => out.push(format!("order/{}", p.order_id)),
        Payload::DispatchAck(p) => out.push(format!("order/{}", p.order_id)),
        Payload::DispatchComplete(p) => out.push(format!("order/{}", p.order_id)),
        Payload::ApprovalRequest(p) => out.push(format!("approval/{}", p.approval_id)),
        Payload::ApprovalDecide(p) => out.push(format!("approval/{}", p.approval_id)),
        _ => {}
    }
    out
}

/// After a kind folded its event: the lock index, the key heads and the
/// head seq follow the view.
pub(crate) fn after_apply(state: &mut State, event: &Event) {
    index_locks(state, event);
    for k in keys_of(
        event.session_id.as_deref(),
        event.resource.as_deref(),
        &event.payload,
    ) {
        if live(&state.view, &k) {
            state.key_heads.insert(k, event.seq);
        } else {
            state.key_heads.remove(&k);
        }
    }
    state.head = event.seq;
}

fn live(view: &View, key: &str) -> bool {
    if let Some(id) = key.strip_prefix("session/") {
        view.sessions.contains_key(id)
    } else if let Some(r) = key.strip_prefix("lock/") {
        view.locks.contains_key(r)
    } else if let Some(id) = key.strip_prefix("order/") {
        view.orders.contains_key(id)
    } else if let Some(id) = key.strip_prefix("approval/") {
        view.approvals.contains_key(id)
    } else {
        false
    }
}

/// Keeps [`State::lock_index`] in step with the view after `event`: the
/// lock it names and the session(s) whose hold or wait it changed, or,
/// for a session's end, every lock that session was in (which the session
/// fold already left).
fn index_locks(state: &mut State, event: &Event) {
    let (view, index) = (&state.view, &mut state.lock_index);
    let member = |s: &str, r: &str| {
        view.locks.get(r).is_some_and(|l| {
            l.holders.iter().any(|h| h.session_id == s)
                || l.waiters.iter().any(|w| w.session_id == s)
        })
    };
    let mut touch = |s: &str, r: &str| {
        if member(s, r) {
            index.join(s, r);
        } else {
            index.leave(s, r);
        }
        if view.locks.contains_key(r) {
            index.insert(r);
        } else {
            index.remove(r);
        }
    };
    match &event.payload {
        Payload::LockAcquire(p) => touch(&p.owner_session, &p.resource),
        Payload::LockWait(p) => touch(&p.owner_session, &p.resource),
        Payload::LockWaitCancel(p) => touch(&p.owner_session, &p.resource),
        Payload::LockRelease(p) => touch(&p.owner_session, &p.resource),
        Payload::LockDelegate(p) => touch(&p.to_session, &p.resource),
        Payload::SessionDereg(_) => {
            if let Some(sid) = event.session_id.as_deref() {
                for r in index.leave_all(sid) {
                    if !view.locks.contains_key(&r) {
                        index.remove(&r);
                    }
                }
            }
        }
        _ => {}
    }
}
