//! The state and the fold: [`apply`] is the only function that changes it.

use coord_proto::pattern::is_pattern;
use coord_proto::view::{
    EndedSession, Holder, Lock, Message, Order, OrderState, Session, View, Waiter,
};
use coord_proto::{Draft, Event, LifeState, LockMode, Payload, Report, SessionRegister};
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

/// The session a `session.register` event creates (as the fold enters it
/// in the view; the lifecycle manager starts tracking from the same).
pub fn registered_session(id: &str, event: &Event, p: &SessionRegister) -> Session {
    Session {
        session_id: id.to_string(),
        role: p.role.clone(),
        task: p.task.clone(),
        blob: p.blob.clone(),
        phase: p.phase.clone(),
        pid: p.pid,
        parent_session: p.parent_session.clone(),
        ttl_ms: p.ttl_ms,
        registered_seq: event.seq,
        registered_at: event.ts,
        last_heartbeat: event.ts,
        source: event.source.clone(),
        state: LifeState::Starting,
        tmux: p.tmux.clone(),
        activity_file: p.activity_file.clone(),
        transcript: p.transcript.clone(),
        children: BTreeMap::new(),
        ended_children: BTreeSet::new(),
        on_expiry: p.on_expiry.unwrap_or_default(),
        kill_grace_ms: p.kill_grace_ms,
        lease: None,
        waiting_on: Vec::new(),
    }
}

/// Folds one committed event into the state.
///
/// Total: an event that refers to something absent changes nothing rather
/// than failing, so a log written by an older version still folds.
pub fn apply(state: &mut State, event: &Event) {
    let view = &mut state.view;
    match &event.payload {
        Payload::SessionRegister(p) => {
            if let Some(id) = &event.session_id {
                if let Some(parent) = p
                    .parent_session
                    .as_ref()
                    .and_then(|ps| view.sessions.get_mut(ps))
                {
                    parent.ended_children.remove(id);
                    parent.children.entry(id.clone()).or_default();
                }
                view.sessions
                    .insert(id.clone(), registered_session(id, event, p));
            }
        }
        Payload::SessionHeartbeat(p) => {
            if let Some(s) = event
                .session_id
                .as_ref()
                .and_then(|id| view.sessions.get_mut(id))
            {
                s.phase = p.phase.clone();
                s.last_heartbeat = p.last_heartbeat;
            }
        }
        Payload::SessionDereg(d) => {
            if let Some(id) = &event.session_id {
                if let Some(s) = view.sessions.remove(id) {
                    if state.ended.len() >= coord_proto::ENDED_SESSIONS_KEPT {
                        state.ended.pop_front();
                    }
                    state.ended.push_back(EndedSession {
                        session_id: s.session_id,
                        role: s.role,
                        task: s.task,
                        pid: s.pid,
                        registered_at: s.registered_at,
                        ended_at: event.ts,
                        ended_seq: event.seq,
                        reason: d.reason,
                        exit_code: d.exit_code,
                        signal: d.signal.clone(),
                    });
                }
                view.inboxes.remove(id);
                // Validate releases locks and waits first; this keeps the fold
                // total for logs that do not.
                view.locks.retain(|_, lock| {
                    lock.holders.retain(|h| &h.session_id != id);
                    lock.waiters.retain(|w| &w.session_id != id);
                    !(lock.holders.is_empty() && lock.waiters.is_empty())
                });
            }
        }
        Payload::SessionState(p) => {
            if let Some(s) = event
                .session_id
                .as_ref()
                .and_then(|id| view.sessions.get_mut(id))
            {
                s.state = p.to;
            }
        }
        Payload::SessionReport(p) => {
            if let (Some(child), Some(parent)) = (
                event.session_id.as_ref(),
                view.sessions.get_mut(&p.parent_session),
            ) {
                if !parent.ended_children.contains(child) {
                    match &p.report {
                        Report::ShutDown => {
                            parent.children.remove(child);
                            parent
                                .children
                                .retain(|_, m| m.via.as_deref() != Some(child));
                            parent.ended_children.insert(child.clone());
                        }
                        r => {
                            let entry = parent.children.entry(child.clone()).or_default();
                            entry.last_report = Some(r.kind().to_string());
                            if let Report::ScopeSubDelegated { sub_session, scope } = r {
                                let sub = parent.children.entry(sub_session.clone()).or_default();
                                if sub.via.is_none() && sub_session != child {
                                    sub.via = Some(child.clone());
                                }
                                add_scope(&mut sub.scope, scope);
                            }
                        }
                    }
                }
            }
        }
        Payload::LockDelegate(p) => {
            grant(
                view,
                &p.resource,
                LockMode::Exclusive,
                Holder {
                    session_id: p.to_session.clone(),
                    acquired_seq: event.seq,
                    acquired_at: event.ts,
                    ttl_ms: None,
                    delegated_from: Some(p.from_session.clone()),
                },
            );
            if let Some(parent) = view.sessions.get_mut(&p.from_session) {
                let child = parent.children.entry(p.to_session.clone()).or_default();
                add_scope(&mut child.scope, std::slice::from_ref(&p.resource));
            }
        }
        Payload::SessionProbeError(_) | Payload::Custom { .. } => {}
        Payload::LockAcquire(p) => grant(
            view,
            &p.resource,
            p.mode,
            Holder {
                session_id: p.owner_session.clone(),
                acquired_seq: event.seq,
                acquired_at: event.ts,
                ttl_ms: p.ttl_ms,
                delegated_from: None,
            },
        ),
        Payload::LockWait(p) => {
            let lock = lock_entry(view, &p.resource, LockMode::Exclusive);
            lock.waiters.retain(|w| w.session_id != p.owner_session);
            lock.waiters.push(Waiter {
                session_id: p.owner_session.clone(),
                mode: p.mode,
                since_seq: event.seq,
                since_at: event.ts,
                ttl_ms: p.ttl_ms,
            });
        }
        Payload::LockWaitCancel(p) => {
            if let Some(lock) = view.locks.get_mut(&p.resource) {
                lock.waiters.retain(|w| w.session_id != p.owner_session);
                if lock.holders.is_empty() && lock.waiters.is_empty() {
                    view.locks.remove(&p.resource);
                }
            }
        }
        Payload::LockRelease(p) => {
            if let Some(lock) = view.locks.get_mut(&p.resource) {
                lock.holders.retain(|h| h.session_id != p.owner_session);
                if lock.holders.is_empty() && lock.waiters.is_empty() {
                    view.locks.remove(&p.resource);
                }
            }
        }
        Payload::InboxDeliver(p) => {
            view.inboxes
                .entry(p.to_session.clone())
                .or_default()
                .push(Message {
                    msg_id: p.msg_id.clone(),
                    to_session: p.to_session.clone(),
                    from_session: p.from_session.clone(),
                    kind: p.kind.clone(),
                    size: p.size,
                    seq: event.seq,
                    sent_at: event.ts,
                    body: None,
                });
        }
        Payload::InboxAck(p) => {
            if let Some(inbox) = view.inboxes.get_mut(&p.to_session) {
                inbox.retain(|m| m.msg_id != p.msg_id);
                if inbox.is_empty() {
                    view.inboxes.remove(&p.to_session);
                }
            }
        }
        Payload::DispatchIssue(p) => {
            view.orders.insert(
                p.order_id.clone(),
                Order {
                    order_id: p.order_id.clone(),
                    assignee: p.assignee.clone(),
                    ticket: p.ticket.clone(),
                    from_session: p.from_session.clone(),
                    payload: p.payload.clone(),
                    state: OrderState::Issued,
                    issued_seq: event.seq,
                    issued_at: event.ts,
                },
            );
        }
        Payload::DispatchAck(p) => {
            if let Some(o) = view.orders.get_mut(&p.order_id) {
                o.state = OrderState::Acked;
            }
        }
        Payload::DispatchComplete(p) => {
            view.orders.remove(&p.order_id);
        }
    }
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

/// The lock on `resource`, created (in `mode`, empty) if absent.
fn lock_entry<'v>(view: &'v mut View, resource: &str, mode: LockMode) -> &'v mut Lock {
    view.locks
        .entry(resource.to_string())
        .or_insert_with(|| Lock {
            resource: resource.to_string(),
            mode,
            holders: Vec::new(),
            waiters: Vec::new(),
        })
}

/// A new hold (a grant or a delegation): the holder leaves the queue and
/// any older hold of its own, and the lock takes the hold's mode.
fn grant(view: &mut View, resource: &str, mode: LockMode, holder: Holder) {
    let lock = lock_entry(view, resource, mode);
    lock.waiters.retain(|w| w.session_id != holder.session_id);
    lock.holders.retain(|h| h.session_id != holder.session_id);
    lock.mode = mode;
    lock.holders.push(holder);
}

/// Adds patterns to a registry entry's scope, each once.
fn add_scope(scope: &mut Vec<String>, patterns: &[String]) {
    for p in patterns {
        if !scope.contains(p) {
            scope.push(p.clone());
        }
    }
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
