//! The state and the fold: [`apply`] is the only function that changes it.

use coord_proto::pattern::is_pattern;
use coord_proto::view::{EndedSession, View};
use coord_proto::{Draft, Event, Payload};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The view plus what the log needs to know about it.
///
/// Serializable so the store can snapshot it; the API shows only `view`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    /// The view clients see.
    pub view: View,
    /// Seq of the last applied event (0 for an empty log).
    pub head: u64,
    /// Last seq per consistency key (see [`keys`]); the expectations of a
    /// conditional append are read from here.
    #[serde(default)]
    pub key_heads: BTreeMap<String, u64>,
    /// Resources of live locks that are patterns (`src/**`): a plain
    /// resource can only conflict with these, so an acquire looks here
    /// instead of at every lock.
    #[serde(default)]
    pub pattern_locks: BTreeSet<String>,
    /// The last [`coord_proto::ENDED_SESSIONS_KEPT`] sessions that ended,
    /// oldest first: how each ended, for `session list --ended` and for
    /// errors that name an ended session ("expired at …").
    #[serde(default)]
    pub ended: VecDeque<EndedSession>,
}

impl State {
    /// A state to follow the log from, built from a snapshot of the view at
    /// `seq` (`GET /v1/events?snapshot=true`): folding the events after
    /// `seq` into it keeps the view exactly as the daemon's. For followers
    /// (`coord top`), never for validation: the key heads and the list of
    /// ended sessions are not in a view and start empty.
    pub fn from_view(view: View, seq: u64) -> State {
        let pattern_locks = view
            .locks
            .keys()
            .filter(|r| is_pattern(r))
            .cloned()
            .collect();
        State {
            view,
            head: seq,
            key_heads: BTreeMap::new(),
            pattern_locks,
            ended: VecDeque::new(),
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
        _ => {}
    }
    out
}

/// After a kind folded its event: the index of pattern locks, the key
/// heads and the head seq follow the view.
pub(crate) fn after_apply(state: &mut State, event: &Event) {
    if let Some(r) = event.resource.as_deref().filter(|r| is_pattern(r)) {
        if state.view.locks.contains_key(r) {
            state.pattern_locks.insert(r.to_string());
        } else {
            state.pattern_locks.remove(r);
        }
    }
    if let Payload::SessionDereg(_) = &event.payload {
        // The fold's own cleanup above may have dropped pattern locks.
        let locks = &state.view.locks;
        state.pattern_locks.retain(|r| locks.contains_key(r));
    }
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
    } else {
        false
    }
}
