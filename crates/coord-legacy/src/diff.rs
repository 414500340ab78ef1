//! Diffing two scans of a legacy root into changes (LEGACY_LAYOUT, "What a
//! reader derives").

use crate::layout::{LockFile, Root};
use coord_proto::{
    DeregReason, DispatchIssue, Draft, InboxAck, InboxDeliver, LockAcquire, LockMode, LockRelease,
    Payload, ReleaseReason, SessionDereg, SessionHeartbeat, SessionRegister, Timestamp,
    DEFAULT_SESSION_TTL_MS,
};

/// One change between two scans: the event it means, when it happened by
/// the file's own clock (if the file says), and for a new message its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Time from the file (`started_at`, `last_heartbeat`, `acquired_at`,
    /// `sent_at`, `issued_at`), if any.
    pub ts: Option<Timestamp>,
    /// The event.
    pub draft: Draft,
    /// The body of a delivered message.
    pub body: Option<String>,
}

/// The changes that turn `prev` into `next`, in LEGACY_LAYOUT's fixed
/// order: sessions, locks, inboxes, dispatch orders; by name within each.
///
/// A message file that disappeared (consumed by its reader) is reported as
/// `inbox.ack`: the daemon's bridge records it, the pollers drop it (the
/// legacy poller emitted nothing for it).
pub fn diff(prev: &Root, next: &Root) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let ch = |ts, draft| Change {
        ts,
        draft,
        body: None,
    };
    let draft = |session: &str, resource: Option<&str>, payload| Draft {
        session_id: Some(session.to_string()),
        resource: resource.map(str::to_string),
        payload,
    };
    let names: std::collections::BTreeSet<&String> =
        prev.sessions.keys().chain(next.sessions.keys()).collect();
    for id in names {
        match (prev.sessions.get(id), next.sessions.get(id)) {
            (None, Some(s)) => out.push(ch(
                s.started_at.or(s.last_heartbeat),
                draft(
                    id,
                    None,
                    Payload::SessionRegister(SessionRegister {
                        role: s.role.clone(),
                        task: s.task.clone(),
                        blob: s.blob.clone(),
                        phase: s.phase.clone(),
                        pid: s.pid,
                        parent_session: None,
                        ttl_ms: DEFAULT_SESSION_TTL_MS,
                        tmux: None,
                        activity_file: None,
                        transcript: None,
                        on_expiry: None,
                        kill_grace_ms: None,
                        process_group: false,
                        daemon: None,
                        extra: s.extra.clone(),
                    }),
                ),
            )),
            (Some(a), Some(b)) if a.last_heartbeat != b.last_heartbeat || a.phase != b.phase => out
                .push(ch(
                    b.last_heartbeat,
                    draft(
                        id,
                        None,
                        Payload::SessionHeartbeat(SessionHeartbeat {
                            last_heartbeat: b.last_heartbeat.unwrap_or_default(),
                            phase: b.phase.clone(),
                            reported: None,
                        }),
                    ),
                )),
            (Some(_), None) => out.push(ch(
                None,
                draft(
                    id,
                    None,
                    Payload::SessionDereg(SessionDereg {
                        reason: DeregReason::Removed,
                        exit_code: None,
                        process_alive: false,
                        signal: None,
                        kill_after_ms: None,
                        group_kill_after_ms: None,
                    }),
                ),
            )),
            _ => {}
        }
    }
    let release = |l: &LockFile| {
        ch(
            None,
            draft(
                &l.owner_session,
                Some(&l.resource),
                Payload::LockRelease(LockRelease {
                    resource: l.resource.clone(),
                    owner_session: l.owner_session.clone(),
                    reason: ReleaseReason::Released,
                }),
            ),
        )
    };
    let acquire = |l: &LockFile| {
        ch(
            l.acquired_at,
            draft(
                &l.owner_session,
                Some(&l.resource),
                Payload::LockAcquire(LockAcquire {
                    resource: l.resource.clone(),
                    owner_session: l.owner_session.clone(),
                    mode: LockMode::Exclusive,
                    ttl_ms: None,
                    extra: l.extra.clone(),
                }),
            ),
        )
    };
    let dirs: std::collections::BTreeSet<&String> =
        prev.locks.keys().chain(next.locks.keys()).collect();
    for dir in dirs {
        match (prev.locks.get(dir), next.locks.get(dir)) {
            (None, Some(l)) => out.push(acquire(l)),
            (Some(a), Some(b)) if a.owner_session != b.owner_session => {
                out.push(release(a));
                out.push(acquire(b));
            }
            (Some(a), None) => out.push(release(a)),
            _ => {}
        }
    }
    for ((to, msg_id), m) in &next.messages {
        if prev.messages.contains_key(&(to.clone(), msg_id.clone())) {
            continue;
        }
        out.push(Change {
            ts: m.sent_at,
            body: Some(m.body.clone()),
            draft: draft(
                to,
                None,
                Payload::InboxDeliver(InboxDeliver {
                    to_session: to.clone(),
                    msg_id: msg_id.clone(),
                    kind: m.kind.clone(),
                    from_session: m.from_session.clone(),
                    size: m.body.len() as u64,
                    extra: m.extra.clone(),
                }),
            ),
        });
    }
    for (to, msg_id) in prev.messages.keys() {
        if next.messages.contains_key(&(to.clone(), msg_id.clone())) {
            continue;
        }
        out.push(ch(
            None,
            draft(
                to,
                None,
                Payload::InboxAck(InboxAck {
                    to_session: to.clone(),
                    msg_id: msg_id.clone(),
                }),
            ),
        ));
    }
    for (id, o) in &next.orders {
        if prev.orders.contains_key(id) {
            continue;
        }
        out.push(ch(
            o.issued_at,
            draft(
                &o.assignee,
                None,
                Payload::DispatchIssue(DispatchIssue {
                    order_id: id.clone(),
                    assignee: o.assignee.clone(),
                    ticket: o.ticket.clone(),
                    from_session: None,
                    payload: o.payload.clone(),
                    extra: o.extra.clone(),
                }),
            ),
        ));
    }
    out
}
