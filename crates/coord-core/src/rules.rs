//! [`validate`]: the rules. Reads the state, never changes it.

use crate::command::{Command, Outcome, Rejection, Reply};
use crate::state::State;
use coord_proto::view::{Lock, View};
use coord_proto::{ids, ErrorCode, MAX_DURATION_MS, MIN_SESSION_TTL_MS};
use coord_proto::{
    DeregReason, DispatchAck, DispatchComplete, DispatchIssue, Draft, InboxAck, InboxDeliver,
    LockAcquire, LockMode, LockRelease, LockWait, LockWaitCancel, Payload, ReleaseReason,
    SessionDereg, SessionHeartbeat, SessionRegister, WaitCancelReason,
};

type Result<T> = std::result::Result<T, Rejection>;

/// Decides what `cmd` does to `state`: the events to append and the answer,
/// or a rejection with its error code. Never panics, never mutates.
///
/// # Errors
/// A [`Rejection`] carrying the PROTOCOL §3 code (`lock_held`,
/// `session_not_found`, `invalid_id`, …) and its details.
pub fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
        Command::Register {
            session_id,
            role,
            task,
            blob,
            phase,
            pid,
            parent_session,
            ttl_ms,
            extra,
        } => {
            id("session_id", session_id)?;
            text("role", role)?;
            text("task", task)?;
            text("phase", phase)?;
            if let Some(p) = parent_session {
                id("parent_session", p)?;
            }
            if !(MIN_SESSION_TTL_MS..=MAX_DURATION_MS).contains(ttl_ms) {
                return Err(invalid(
                    "ttl_ms",
                    format!("must be {MIN_SESSION_TTL_MS}..={MAX_DURATION_MS} ms"),
                ));
            }
            if *pid == Some(0) {
                return Err(invalid("pid", "must be a process id > 0".into()));
            }
            if view.sessions.contains_key(session_id) {
                return Err(Rejection::new(
                    ErrorCode::SessionExists,
                    format!("session {session_id} is already registered"),
                )
                .with("session_id", session_id.as_str()));
            }
            Ok(done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::SessionRegister(SessionRegister {
                    role: role.clone(),
                    task: task.clone(),
                    blob: blob.clone(),
                    phase: phase.clone(),
                    pid: *pid,
                    parent_session: parent_session.clone(),
                    ttl_ms: *ttl_ms,
                    extra: extra.clone(),
                }),
            }]))
        }
        Command::Heartbeat {
            session_id,
            phase,
            at,
            log_always,
        } => {
            let s = session(view, session_id)?;
            if let Some(p) = phase {
                text("phase", p)?;
            }
            let new_phase = phase.clone().unwrap_or_else(|| s.phase.clone());
            if new_phase == s.phase && !log_always {
                return Ok(no_change());
            }
            Ok(done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::SessionHeartbeat(SessionHeartbeat {
                    last_heartbeat: *at,
                    phase: new_phase,
                }),
            }]))
        }
        Command::Dereg {
            session_id,
            reason,
            exit_code,
        } => {
            session(view, session_id)?;
            Ok(done(dereg_cascade(view, session_id, *reason, *exit_code)))
        }
        Command::ExpireLease {
            session_id,
            registered_seq,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => {
                done(dereg_cascade(view, session_id, DeregReason::Expired, None))
            }
            _ => no_change(),
        }),
        Command::ProcessExited {
            session_id,
            registered_seq,
            exit_code,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => done(dereg_cascade(
                view,
                session_id,
                DeregReason::ProcessExited,
                *exit_code,
            )),
            _ => no_change(),
        }),
        Command::Acquire {
            session_id,
            resource,
            mode,
            ttl_ms,
            wait,
            extra,
        } => acquire(view, session_id, resource, (*mode, *ttl_ms, *wait), extra),
        Command::Release {
            session_id,
            resource,
            force,
        } => {
            id("session_id", session_id)?;
            res(resource)?;
            let Some(lock) = view.locks.get(resource) else {
                return Err(not_held(resource));
            };
            if !lock.holders.iter().any(|h| &h.session_id == session_id) {
                if lock.holders.is_empty() {
                    return Err(not_held(resource));
                }
                return Err(Rejection::new(
                    ErrorCode::NotOwner,
                    format!(
                        "{session_id} does not hold {resource}; it is held by {}",
                        holder_names(lock).join(", ")
                    ),
                )
                .with("resource", resource.as_str())
                .with("holders", holder_names(lock)));
            }
            let reason = if *force {
                ReleaseReason::Forced
            } else {
                ReleaseReason::Released
            };
            let mut lock = lock.clone();
            let mut drafts = Vec::new();
            release_into(&mut lock, session_id, reason, &mut drafts);
            Ok(done(drafts))
        }
        Command::ExpireLock {
            resource,
            session_id,
            acquired_seq,
        } => {
            let held = view.locks.get(resource).filter(|l| {
                l.holders
                    .iter()
                    .any(|h| &h.session_id == session_id && h.acquired_seq == *acquired_seq)
            });
            Ok(match held {
                Some(lock) => {
                    let mut lock = lock.clone();
                    let mut drafts = Vec::new();
                    release_into(&mut lock, session_id, ReleaseReason::Expired, &mut drafts);
                    done(drafts)
                }
                None => no_change(),
            })
        }
        Command::CancelWait {
            resource,
            session_id,
            reason,
        } => {
            let Some(lock) = view.locks.get(resource) else {
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::NotWaiting { held_seq: None },
                });
            };
            if !lock.waiters.iter().any(|w| &w.session_id == session_id) {
                let held_seq = lock
                    .holders
                    .iter()
                    .find(|h| &h.session_id == session_id)
                    .map(|h| h.acquired_seq);
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::NotWaiting { held_seq },
                });
            }
            let mut lock = lock.clone();
            let mut drafts = Vec::new();
            cancel_wait_into(&mut lock, session_id, *reason, &mut drafts);
            Ok(done(drafts))
        }
        Command::CancelAllWaits => {
            let mut drafts = Vec::new();
            for lock in view.locks.values() {
                for w in &lock.waiters {
                    drafts.push(Draft {
                        session_id: Some(w.session_id.clone()),
                        resource: Some(lock.resource.clone()),
                        payload: Payload::LockWaitCancel(LockWaitCancel {
                            resource: lock.resource.clone(),
                            owner_session: w.session_id.clone(),
                            reason: WaitCancelReason::Restart,
                        }),
                    });
                }
            }
            Ok(if drafts.is_empty() {
                no_change()
            } else {
                done(drafts)
            })
        }
        Command::Deliver {
            to_session,
            msg_id,
            kind,
            from_session,
            size,
            extra,
        } => {
            id("msg_id", msg_id)?;
            text("kind", kind)?;
            if let Some(f) = from_session {
                session(view, f)?;
            }
            session(view, to_session)?;
            if view
                .inboxes
                .get(to_session)
                .is_some_and(|inbox| inbox.iter().any(|m| &m.msg_id == msg_id))
            {
                return Err(Rejection::new(
                    ErrorCode::MessageExists,
                    format!("message {msg_id} is already in the inbox of {to_session}"),
                )
                .with("msg_id", msg_id.as_str()));
            }
            Ok(done(vec![Draft {
                session_id: Some(to_session.clone()),
                resource: None,
                payload: Payload::InboxDeliver(InboxDeliver {
                    to_session: to_session.clone(),
                    msg_id: msg_id.clone(),
                    kind: kind.clone(),
                    from_session: from_session.clone(),
                    size: *size,
                    extra: extra.clone(),
                }),
            }]))
        }
        Command::AckMessage { session_id, msg_id } => {
            id("msg_id", msg_id)?;
            session(view, session_id)?;
            let found = view
                .inboxes
                .get(session_id)
                .is_some_and(|inbox| inbox.iter().any(|m| &m.msg_id == msg_id));
            if !found {
                return Err(Rejection::new(
                    ErrorCode::MessageNotFound,
                    format!("no unacked message {msg_id} in the inbox of {session_id}"),
                )
                .with("msg_id", msg_id.as_str()));
            }
            Ok(done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::InboxAck(InboxAck {
                    to_session: session_id.clone(),
                    msg_id: msg_id.clone(),
                }),
            }]))
        }
        Command::Issue {
            order_id,
            assignee,
            ticket,
            from_session,
            payload,
            extra,
        } => {
            id("order_id", order_id)?;
            text("ticket", ticket)?;
            if let Some(f) = from_session {
                session(view, f)?;
            }
            session(view, assignee)?;
            if view.orders.contains_key(order_id) {
                return Err(Rejection::new(
                    ErrorCode::OrderExists,
                    format!("order {order_id} already exists"),
                )
                .with("order_id", order_id.as_str()));
            }
            Ok(done(vec![Draft {
                session_id: Some(assignee.clone()),
                resource: None,
                payload: Payload::DispatchIssue(DispatchIssue {
                    order_id: order_id.clone(),
                    assignee: assignee.clone(),
                    ticket: ticket.clone(),
                    from_session: from_session.clone(),
                    payload: payload.clone(),
                    extra: extra.clone(),
                }),
            }]))
        }
        Command::AckOrder {
            order_id,
            session_id,
        } => {
            let order = order_of(view, order_id, session_id)?;
            if order.state != coord_proto::view::OrderState::Issued {
                return Err(Rejection::new(
                    ErrorCode::OrderState,
                    format!("order {order_id} is {}, not issued", order.state.as_str()),
                )
                .with("state", order.state.as_str()));
            }
            Ok(done(vec![order_ack(order_id, session_id)]))
        }
        Command::Complete {
            order_id,
            session_id,
            result,
        } => {
            let order = order_of(view, order_id, session_id)?;
            let mut drafts = Vec::new();
            if order.state == coord_proto::view::OrderState::Issued {
                drafts.push(order_ack(order_id, session_id));
            }
            drafts.push(Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::DispatchComplete(DispatchComplete {
                    order_id: order_id.clone(),
                    assignee: session_id.clone(),
                    result: result.clone(),
                }),
            });
            Ok(done(drafts))
        }
        Command::Custom {
            kind,
            body,
            session_id,
            resource,
        } => {
            if let Err(why) = ids::check_custom_kind(kind) {
                return Err(Rejection::new(
                    ErrorCode::UnknownKind,
                    format!("tx_kind {kind:?}: {why}"),
                )
                .with("tx_kind", kind.as_str()));
            }
            if let Some(s) = session_id {
                id("session_id", s)?;
            }
            if let Some(r) = resource {
                res(r)?;
            }
            Ok(done(vec![Draft {
                session_id: session_id.clone(),
                resource: resource.clone(),
                payload: Payload::Custom {
                    kind: kind.clone(),
                    body: body.clone(),
                },
            }]))
        }
    }
}

fn acquire(
    view: &View,
    session_id: &str,
    resource: &str,
    (mode, ttl_ms, wait): (LockMode, Option<u64>, bool),
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Outcome> {
    session(view, session_id)?;
    res(resource)?;
    if let Some(t) = ttl_ms {
        if !(1..=MAX_DURATION_MS).contains(&t) {
            return Err(invalid(
                "ttl_ms",
                format!("must be 1..={MAX_DURATION_MS} ms"),
            ));
        }
    }
    let lock = view.locks.get(resource);
    if let Some(lock) = lock {
        if let Some(h) = lock.holders.iter().find(|h| h.session_id == session_id) {
            if lock.mode == mode {
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::AlreadyHeld {
                        acquired_seq: h.acquired_seq,
                    },
                });
            }
            return Err(Rejection::new(
                ErrorCode::LockHeld,
                format!(
                    "{session_id} holds {resource} in {} mode; release it before asking for {}",
                    lock.mode.as_str(),
                    mode.as_str()
                ),
            )
            .with("resource", resource)
            .with("holders", holder_names(lock))
            .with("mode", lock.mode.as_str()));
        }
        if wait && lock.waiters.iter().any(|w| w.session_id == session_id) {
            return Ok(Outcome {
                drafts: Vec::new(),
                reply: Reply::AlreadyWaiting,
            });
        }
    }
    let free = match lock {
        None => true,
        Some(l) => {
            l.waiters.is_empty()
                && (l.holders.is_empty()
                    || (l.mode == LockMode::Shared && mode == LockMode::Shared))
        }
    };
    let draft = |payload| Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload,
    };
    if free {
        return Ok(Outcome {
            drafts: vec![draft(Payload::LockAcquire(LockAcquire {
                resource: resource.to_string(),
                owner_session: session_id.to_string(),
                mode,
                ttl_ms,
                extra: extra.clone(),
            }))],
            reply: Reply::Granted,
        });
    }
    if !wait {
        // `free` is false only when a lock exists.
        return Err(match lock {
            Some(l) => held(l, resource),
            None => not_held(resource),
        });
    }
    Ok(Outcome {
        drafts: vec![draft(Payload::LockWait(LockWait {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            mode,
            ttl_ms,
        }))],
        reply: Reply::Waiting,
    })
}

/// Everything a session's end takes with it, then the dereg itself: per
/// lock (in resource order) its release or wait-cancel and the grants that
/// follow, so waiters get the lock in the same commit.
fn dereg_cascade(
    view: &View,
    session_id: &str,
    reason: DeregReason,
    exit_code: Option<i32>,
) -> Vec<coord_proto::Draft> {
    let mut drafts = Vec::new();
    for lock in view.locks.values() {
        let holds = lock.holders.iter().any(|h| h.session_id == session_id);
        let waits = lock.waiters.iter().any(|w| w.session_id == session_id);
        if !holds && !waits {
            continue;
        }
        let mut lock = lock.clone();
        if waits {
            cancel_wait_into(
                &mut lock,
                session_id,
                WaitCancelReason::OwnerGone,
                &mut drafts,
            );
        }
        if holds {
            release_into(&mut lock, session_id, ReleaseReason::OwnerGone, &mut drafts);
        }
    }
    drafts.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::SessionDereg(SessionDereg { reason, exit_code }),
    });
    drafts
}

fn release_into(lock: &mut Lock, session_id: &str, reason: ReleaseReason, out: &mut Vec<Draft>) {
    lock.holders.retain(|h| h.session_id != session_id);
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(lock.resource.clone()),
        payload: Payload::LockRelease(LockRelease {
            resource: lock.resource.clone(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    grant_into(lock, out);
}

fn cancel_wait_into(
    lock: &mut Lock,
    session_id: &str,
    reason: WaitCancelReason,
    out: &mut Vec<Draft>,
) {
    lock.waiters.retain(|w| w.session_id != session_id);
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(lock.resource.clone()),
        payload: Payload::LockWaitCancel(LockWaitCancel {
            resource: lock.resource.clone(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    // The leaver may have been what blocked shared waiters behind it.
    grant_into(lock, out);
}

/// Grants the head of the queue while it is compatible with the holders:
/// strict FIFO, so an exclusive waiter blocks every waiter behind it.
fn grant_into(lock: &mut Lock, out: &mut Vec<Draft>) {
    while let Some(w) = lock.waiters.first() {
        let compatible = lock.holders.is_empty()
            || (lock.mode == LockMode::Shared && w.mode == LockMode::Shared);
        if !compatible {
            break;
        }
        let w = lock.waiters.remove(0);
        lock.mode = w.mode;
        lock.holders.push(coord_proto::view::Holder {
            session_id: w.session_id.clone(),
            acquired_seq: 0,
            acquired_at: coord_proto::Timestamp(0),
            ttl_ms: w.ttl_ms,
        });
        out.push(Draft {
            session_id: Some(w.session_id.clone()),
            resource: Some(lock.resource.clone()),
            payload: Payload::LockAcquire(LockAcquire {
                resource: lock.resource.clone(),
                owner_session: w.session_id,
                mode: w.mode,
                ttl_ms: w.ttl_ms,
                extra: Default::default(),
            }),
        });
    }
}

fn order_ack(order_id: &str, session_id: &str) -> Draft {
    Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::DispatchAck(DispatchAck {
            order_id: order_id.to_string(),
            assignee: session_id.to_string(),
        }),
    }
}

fn order_of<'v>(
    view: &'v View,
    order_id: &str,
    session_id: &str,
) -> Result<&'v coord_proto::view::Order> {
    id("order_id", order_id)?;
    let Some(order) = view.orders.get(order_id) else {
        return Err(Rejection::new(
            ErrorCode::OrderNotFound,
            format!("no open order {order_id}"),
        )
        .with("order_id", order_id));
    };
    if order.assignee != session_id {
        return Err(Rejection::new(
            ErrorCode::NotAssignee,
            format!("order {order_id} is assigned to {}", order.assignee),
        )
        .with("assignee", order.assignee.as_str()));
    }
    Ok(order)
}

fn session<'v>(view: &'v View, session_id: &str) -> Result<&'v coord_proto::view::Session> {
    id("session_id", session_id)?;
    view.sessions.get(session_id).ok_or_else(|| {
        Rejection::new(
            ErrorCode::SessionNotFound,
            format!("no live session {session_id}"),
        )
        .with("session_id", session_id)
    })
}

fn held(lock: &Lock, resource: &str) -> Rejection {
    Rejection::new(
        ErrorCode::LockHeld,
        format!(
            "{resource} is held by {} ({})",
            holder_names(lock).join(", "),
            lock.mode.as_str()
        ),
    )
    .with("resource", resource)
    .with("holders", holder_names(lock))
    .with("mode", lock.mode.as_str())
}

fn not_held(resource: &str) -> Rejection {
    Rejection::new(ErrorCode::LockNotHeld, format!("nobody holds {resource}"))
        .with("resource", resource)
}

fn holder_names(lock: &Lock) -> Vec<String> {
    lock.holders.iter().map(|h| h.session_id.clone()).collect()
}

fn id(field: &str, value: &str) -> Result<()> {
    ids::check_id(value).map_err(|why| {
        Rejection::new(ErrorCode::InvalidId, format!("{field} {value:?} {why}"))
            .with("field", field)
    })
}

fn res(value: &str) -> Result<()> {
    ids::check_resource(value).map_err(|why| {
        Rejection::new(ErrorCode::InvalidId, format!("resource {value:?} {why}"))
            .with("field", "resource")
    })
}

fn text(field: &str, value: &str) -> Result<()> {
    ids::check_text(value).map_err(|why| invalid(field, why))
}

fn invalid(field: &str, why: String) -> Rejection {
    Rejection::new(ErrorCode::InvalidField, format!("{field} {why}")).with("field", field)
}

fn done(drafts: Vec<Draft>) -> Outcome {
    Outcome {
        drafts,
        reply: Reply::Done,
    }
}

fn no_change() -> Outcome {
    Outcome {
        drafts: Vec::new(),
        reply: Reply::NoChange,
    }
}
