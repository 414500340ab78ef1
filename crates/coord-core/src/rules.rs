//! [`validate`]: the rules. Reads the state, never changes it.

use crate::command::{Command, Outcome, Probes, Rejection, Reply};
use crate::state::State;
use coord_proto::pattern::{is_pattern, overlap, within};
use coord_proto::view::{Lock, View};
use coord_proto::{ids, ErrorCode, DEFAULT_KILL_GRACE_MS, MAX_DURATION_MS, MIN_SESSION_TTL_MS};
use coord_proto::{
    DeregReason, DispatchAck, DispatchComplete, DispatchIssue, Draft, InboxAck, InboxDeliver,
    LifeState, LockAcquire, LockDelegate, LockMode, LockRelease, LockWait, LockWaitCancel,
    OnExpiry, Payload, ReleaseReason, Report, SessionDereg, SessionHeartbeat, SessionProbeError,
    SessionRegister, SessionReport, SessionState, WaitCancelReason,
};
use std::collections::BTreeMap;

/// Deepest chain a report is re-emitted up (guards against a cycle of
/// parent ids).
const MAX_POD_DEPTH: usize = 16;

/// Longest `errored` message, bytes.
pub const MAX_REPORT_MESSAGE_BYTES: usize = 4096;

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
            probes,
            expiry,
            extra,
        } => {
            id("session_id", session_id)?;
            if expiry.kill_grace_ms.is_some_and(|g| g > MAX_DURATION_MS) {
                return Err(invalid(
                    "kill_grace_ms",
                    format!("must be at most {MAX_DURATION_MS} ms"),
                ));
            }
            check_probes(probes)?;
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
                    tmux: probes.tmux.clone(),
                    activity_file: probes.activity_file.clone(),
                    transcript: probes.transcript.clone(),
                    on_expiry: expiry.on_expiry,
                    kill_grace_ms: expiry.kill_grace_ms,
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
            Ok(dereg_cascade(
                state, session_id, *reason, *exit_code, None, false,
            ))
        }
        Command::ExpireLease {
            session_id,
            registered_seq,
            process_alive,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => dereg_cascade(
                state,
                session_id,
                DeregReason::Expired,
                None,
                None,
                *process_alive && s.pid.is_some(),
            ),
            _ => no_change(),
        }),
        Command::ProcessExited {
            session_id,
            registered_seq,
            exit_code,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => dereg_cascade(
                state,
                session_id,
                DeregReason::ProcessExited,
                *exit_code,
                None,
                false,
            ),
            _ => no_change(),
        }),
        Command::RuntimeGone {
            session_id,
            registered_seq,
            reason,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => dereg_cascade(
                state,
                session_id,
                DeregReason::RuntimeGone,
                None,
                Some(reason.as_str()),
                false,
            ),
            _ => no_change(),
        }),
        Command::SetState {
            session_id,
            registered_seq,
            from,
            to,
            reason,
        } => {
            if *to == LifeState::Dead {
                return Err(invalid(
                    "to",
                    "dead is reached only by ending the session".into(),
                ));
            }
            text("reason", reason)?;
            Ok(match view.sessions.get(session_id) {
                Some(s)
                    if s.registered_seq == *registered_seq && s.state == *from && from != to =>
                {
                    done(vec![Draft {
                        session_id: Some(session_id.clone()),
                        resource: None,
                        payload: Payload::SessionState(SessionState {
                            from: *from,
                            to: *to,
                            reason: reason.clone(),
                        }),
                    }])
                }
                _ => no_change(),
            })
        }
        Command::ProbeError {
            session_id,
            registered_seq,
            probe,
            message,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::SessionProbeError(SessionProbeError {
                    probe: probe.clone(),
                    message: truncate(message, MAX_REPORT_MESSAGE_BYTES),
                }),
            }]),
            _ => no_change(),
        }),
        Command::Report {
            session_id,
            parent_session,
            report,
        } => {
            id("session_id", session_id)?;
            check_report(report)?;
            let parent = match (view.sessions.get(session_id), parent_session) {
                (Some(child), given) => {
                    let Some(registered) = &child.parent_session else {
                        return Err(Rejection::new(
                            ErrorCode::NotChild,
                            format!("{session_id} has no parent session to report to"),
                        )
                        .with("session_id", session_id.as_str()));
                    };
                    if given.as_ref().is_some_and(|g| g != registered) {
                        return Err(Rejection::new(
                            ErrorCode::NotChild,
                            format!(
                                "{session_id} is a child of {registered}, not of the given parent"
                            ),
                        )
                        .with("parent_session", registered.as_str()));
                    }
                    registered.clone()
                }
                // A session of another daemon: the parent must be ours.
                (None, Some(given)) => {
                    session(view, given)?;
                    given.clone()
                }
                (None, None) => {
                    return Err(Rejection::new(
                        ErrorCode::SessionNotFound,
                        format!(
                        "no live session {session_id}; a forwarded report names its parent_session"
                    ),
                    )
                    .with("session_id", session_id.as_str()))
                }
            };
            id("parent_session", &parent)?;
            let mut locks = Locks::new(state);
            let mut out = done(Vec::new());
            report_into(state, &mut locks, session_id, &parent, report, 0, &mut out);
            Ok(out)
        }
        Command::Delegate {
            session_id,
            resource,
            to_session,
        } => delegate(state, session_id, resource, to_session),
        Command::Acquire {
            session_id,
            resource,
            mode,
            ttl_ms,
            wait,
            extra,
        } => acquire(state, session_id, resource, (*mode, *ttl_ms, *wait), extra),
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
            let mut locks = Locks::new(state);
            let mut drafts = Vec::new();
            release_into(&mut locks, resource, session_id, reason, &mut drafts);
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
                Some(_) => {
                    let mut locks = Locks::new(state);
                    let mut drafts = Vec::new();
                    release_into(
                        &mut locks,
                        resource,
                        session_id,
                        ReleaseReason::Expired,
                        &mut drafts,
                    );
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
                    bodies: BTreeMap::new(),
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
                    bodies: BTreeMap::new(),
                });
            }
            let mut locks = Locks::new(state);
            let mut drafts = Vec::new();
            cancel_wait_into(&mut locks, resource, session_id, *reason, &mut drafts);
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

/// The locks as one command changes them: reads fall through to the view,
/// the first change to a lock copies it. Validate never touches the state,
/// so a cascade (a session's end releasing several locks and granting
/// their waiters) works on this overlay.
struct Locks<'s> {
    state: &'s State,
    changed: BTreeMap<String, Lock>,
}

impl<'s> Locks<'s> {
    fn new(state: &'s State) -> Self {
        Locks {
            state,
            changed: BTreeMap::new(),
        }
    }

    fn get(&self, r: &str) -> Option<&Lock> {
        self.changed
            .get(r)
            .or_else(|| self.state.view.locks.get(r))
            .filter(|l| !(l.holders.is_empty() && l.waiters.is_empty()))
    }

    fn get_mut(&mut self, r: &str) -> Option<&mut Lock> {
        if !self.changed.contains_key(r) {
            let l = self.state.view.locks.get(r)?.clone();
            self.changed.insert(r.to_string(), l);
        }
        self.changed.get_mut(r)
    }

    fn entry(&mut self, r: &str, mode: LockMode) -> &mut Lock {
        let base = self.state.view.locks.get(r);
        self.changed.entry(r.to_string()).or_insert_with(|| {
            base.cloned().unwrap_or_else(|| Lock {
                resource: r.to_string(),
                mode,
                holders: Vec::new(),
                waiters: Vec::new(),
            })
        })
    }

    /// Resources other than `r` that conflict with it under the pattern
    /// rule. A plain name can only meet patterns, which the state indexes,
    /// so the common case costs nothing per held lock.
    fn overlapping(&self, r: &str) -> Vec<String> {
        let base: Box<dyn Iterator<Item = &String>> = if is_pattern(r) {
            Box::new(self.state.view.locks.keys())
        } else {
            Box::new(self.state.pattern_locks.iter())
        };
        let mut out: Vec<String> = base
            .chain(self.changed.keys())
            .filter(|k| k.as_str() != r && overlap(k, r))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out.retain(|k| self.get(k).is_some());
        out
    }

    /// The first other lock whose holders keep `who` from taking `r` in
    /// `mode`, with those holders.
    fn blocker(&self, r: &str, who: &str, mode: LockMode) -> Option<(String, Vec<String>)> {
        for k in self.overlapping(r) {
            let Some(l) = self.get(&k) else { continue };
            if mode == LockMode::Shared && l.mode == LockMode::Shared {
                continue;
            }
            let bad: Vec<String> = l
                .holders
                .iter()
                .filter(|h| h.session_id != who && !self.exempt(&h.session_id, who, r))
                .map(|h| h.session_id.clone())
                .collect();
            if !bad.is_empty() {
                return Some((k, bad));
            }
        }
        None
    }

    /// A hold of an ancestor does not block a descendant inside a scope
    /// the descendant was delegated: that part of the ancestor's scope was
    /// handed down on purpose.
    fn exempt(&self, holder: &str, who: &str, r: &str) -> bool {
        if !is_ancestor(&self.state.view, holder, who) {
            return false;
        }
        let mut candidates = self.overlapping(r);
        candidates.push(r.to_string());
        candidates.iter().any(|k| {
            self.get(k).is_some_and(|l| {
                within(r, &l.resource)
                    && l.holders
                        .iter()
                        .any(|h| h.session_id == who && h.delegated_from.is_some())
            })
        })
    }

    fn holds_of(&self, who: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state
            .view
            .locks
            .keys()
            .chain(self.changed.keys())
            .filter(|k| {
                self.get(k)
                    .is_some_and(|l| l.holders.iter().any(|h| h.session_id == who))
            })
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

fn is_ancestor(view: &View, ancestor: &str, of: &str) -> bool {
    let mut cur = of;
    for _ in 0..MAX_POD_DEPTH {
        match view
            .sessions
            .get(cur)
            .and_then(|s| s.parent_session.as_deref())
        {
            Some(p) if p == ancestor => return true,
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

fn acquire(
    state: &State,
    session_id: &str,
    resource: &str,
    (mode, ttl_ms, wait): (LockMode, Option<u64>, bool),
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Outcome> {
    let view = &state.view;
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
                    bodies: BTreeMap::new(),
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
                bodies: BTreeMap::new(),
            });
        }
    }
    let same_free = match lock {
        None => true,
        Some(l) => {
            l.waiters.is_empty()
                && (l.holders.is_empty()
                    || (l.mode == LockMode::Shared && mode == LockMode::Shared))
        }
    };
    let locks = Locks::new(state);
    let blocker = locks.blocker(resource, session_id, mode);
    let draft = |payload| Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload,
    };
    if same_free && blocker.is_none() {
        return Ok(Outcome {
            drafts: vec![draft(Payload::LockAcquire(LockAcquire {
                resource: resource.to_string(),
                owner_session: session_id.to_string(),
                mode,
                ttl_ms,
                extra: extra.clone(),
            }))],
            reply: Reply::Granted,
            bodies: BTreeMap::new(),
        });
    }
    if !wait {
        return Err(match (lock, blocker) {
            (Some(l), _) if !same_free => held(l, resource),
            (_, Some((other, holders))) => Rejection::new(
                ErrorCode::LockHeld,
                format!(
                    "{resource} conflicts with {other}, held by {}",
                    holders.join(", ")
                ),
            )
            .with("resource", resource)
            .with("conflicts_with", other)
            .with("holders", holders),
            _ => not_held(resource),
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
        bodies: BTreeMap::new(),
    })
}

/// `lock.delegate`: the parent must hold an exclusive lock that covers
/// `resource`, the receiver must be its child, and nobody outside the
/// parent may hold anything that conflicts with `resource`.
fn delegate(state: &State, parent: &str, resource: &str, child: &str) -> Result<Outcome> {
    let view = &state.view;
    let p = session(view, parent)?;
    let c = session(view, child)?;
    res(resource)?;
    if c.parent_session.as_deref() != Some(parent) {
        return Err(Rejection::new(
            ErrorCode::NotChild,
            format!("{child} is not a child of {parent}"),
        )
        .with("to_session", child));
    }
    let locks = Locks::new(state);
    let mut scope: Vec<String> = locks.overlapping(resource);
    scope.push(resource.to_string());
    let cover = scope.iter().find(|k| {
        locks.get(k).is_some_and(|l| {
            l.mode == LockMode::Exclusive
                && within(resource, &l.resource)
                && l.holders.iter().any(|h| h.session_id == parent)
                && k.as_str() != resource
        })
    });
    let Some(cover) = cover.cloned() else {
        return Err(Rejection::new(
            ErrorCode::LockNotHeld,
            format!("{parent} holds no exclusive lock that covers {resource}"),
        )
        .with("resource", resource));
    };
    if let Some(l) = locks.get(resource) {
        if l.holders
            .iter()
            .any(|h| h.session_id == child && h.delegated_from.as_deref() == Some(parent))
        {
            return Ok(no_change());
        }
        return Err(held(l, resource));
    }
    for k in locks.overlapping(resource) {
        let Some(l) = locks.get(&k) else { continue };
        let others: Vec<String> = l
            .holders
            .iter()
            .filter(|h| h.session_id != parent && !is_ancestor(view, &h.session_id, parent))
            .map(|h| h.session_id.clone())
            .collect();
        if !others.is_empty() {
            return Err(Rejection::new(
                ErrorCode::LockHeld,
                format!(
                    "{resource} conflicts with {k}, held by {}",
                    others.join(", ")
                ),
            )
            .with("resource", resource)
            .with("conflicts_with", k)
            .with("holders", others));
        }
    }
    let mut out = done(vec![Draft {
        session_id: Some(parent.to_string()),
        resource: Some(resource.to_string()),
        payload: Payload::LockDelegate(LockDelegate {
            resource: resource.to_string(),
            from_session: parent.to_string(),
            to_session: child.to_string(),
            within: cover,
        }),
    }]);
    if let Some(gp) = &p.parent_session {
        let mut locks = Locks::new(state);
        let report = Report::ScopeSubDelegated {
            sub_session: child.to_string(),
            scope: vec![resource.to_string()],
        };
        report_into(state, &mut locks, parent, gp, &report, 0, &mut out);
    }
    Ok(out)
}

/// Everything a session's end takes with it: its lifecycle state goes to
/// `dead`; per lock (in resource order) its wait-cancel or release (a
/// delegated hold is `returned`) and the grants that follow, so waiters
/// get the lock in the same commit; its reports to a parent (`errored`
/// for an abnormal end, then `shut_down`); last the dereg itself.
///
/// `process_alive` (an expiry whose process still runs) makes the dereg
/// say so and name the signal the daemon sends it, per the session's
/// [`coord_proto::OnExpiry`].
fn dereg_cascade(
    state: &State,
    session_id: &str,
    reason: DeregReason,
    exit_code: Option<i32>,
    why: Option<&str>,
    process_alive: bool,
) -> Outcome {
    let view = &state.view;
    let mut out = done(Vec::new());
    let Some(s) = view.sessions.get(session_id) else {
        return no_change();
    };
    let reason_name = match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(n)) => n,
        _ => "ended".into(),
    };
    let signal = (process_alive && s.on_expiry == OnExpiry::Signal).then_some("SIGTERM");
    let why_alive;
    let why = match (process_alive, why) {
        (true, None) => {
            why_alive = match signal {
                Some(sig) => format!("process {} still running; sent {sig}", s.pid.unwrap_or(0)),
                None => format!(
                    "process {} still running; left running (on_expiry: never)",
                    s.pid.unwrap_or(0)
                ),
            };
            Some(why_alive.as_str())
        }
        (_, w) => w,
    };
    out.drafts.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::SessionState(SessionState {
            from: s.state,
            to: LifeState::Dead,
            reason: why.map_or_else(|| reason_name.clone(), |w| format!("{reason_name}: {w}")),
        }),
    });
    let mut locks = Locks::new(state);
    let involved: Vec<String> = view
        .locks
        .values()
        .filter(|l| {
            l.holders.iter().any(|h| h.session_id == session_id)
                || l.waiters.iter().any(|w| w.session_id == session_id)
        })
        .map(|l| l.resource.clone())
        .collect();
    for r in involved {
        let Some(l) = locks.get(&r) else { continue };
        let holds = l
            .holders
            .iter()
            .find(|h| h.session_id == session_id)
            .cloned();
        let waits = l.waiters.iter().any(|w| w.session_id == session_id);
        if waits {
            cancel_wait_into(
                &mut locks,
                &r,
                session_id,
                WaitCancelReason::OwnerGone,
                &mut out.drafts,
            );
        }
        if let Some(h) = holds {
            let why = if h.delegated_from.is_some() {
                ReleaseReason::Returned
            } else {
                ReleaseReason::OwnerGone
            };
            release_into(&mut locks, &r, session_id, why, &mut out.drafts);
        }
    }
    if let Some(parent) = &s.parent_session {
        let abnormal = match (reason, exit_code) {
            (_, Some(code)) if code != 0 => Some(format!("process exited with code {code}")),
            (DeregReason::Expired, _) => Some("lease expired".to_string()),
            (DeregReason::RuntimeGone, _) => Some(format!(
                "runtime gone{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(message) = abnormal {
            let r = Report::Errored { message };
            report_into(state, &mut locks, session_id, parent, &r, 0, &mut out);
        }
        report_into(
            state,
            &mut locks,
            session_id,
            parent,
            &Report::ShutDown,
            0,
            &mut out,
        );
    }
    out.drafts.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::SessionDereg(SessionDereg {
            reason,
            exit_code,
            process_alive,
            signal: signal.map(str::to_string),
            kill_after_ms: signal.map(|_| s.kill_grace_ms.unwrap_or(DEFAULT_KILL_GRACE_MS)),
        }),
    });
    out
}

/// A `session.report` from `child` to `parent`, and what it does on the
/// parent's side when the parent is a session of this daemon: a
/// notification in its inbox, and for `shut_down` the return of the
/// child's delegated scope, for `scope_sub_delegated` the same report one
/// level up. Every effect tolerates repetition and disorder: a child that
/// already shut down changes nothing any more, and a missing registry
/// entry or lock is no error.
fn report_into(
    state: &State,
    locks: &mut Locks<'_>,
    child: &str,
    parent: &str,
    report: &Report,
    depth: usize,
    out: &mut Outcome,
) {
    let seq = state.head + 1 + out.drafts.len() as u64;
    out.drafts.push(Draft {
        session_id: Some(child.to_string()),
        resource: None,
        payload: Payload::SessionReport(SessionReport {
            parent_session: parent.to_string(),
            report: report.clone(),
        }),
    });
    // A parent of another daemon: the forwarder carries the report there.
    let Some(p) = state.view.sessions.get(parent) else {
        return;
    };
    if p.ended_children.contains(child) {
        return;
    }
    let body = notification_body(child, parent, report);
    out.bodies.insert(out.drafts.len(), body.clone());
    out.drafts.push(Draft {
        session_id: Some(parent.to_string()),
        resource: None,
        payload: Payload::InboxDeliver(InboxDeliver {
            to_session: parent.to_string(),
            msg_id: format!("report-{seq}"),
            kind: format!("report.{}", report.kind()),
            from_session: Some(child.to_string()),
            size: body.len() as u64,
            extra: Default::default(),
        }),
    });
    match report {
        Report::ShutDown => {
            for r in locks.holds_of(child) {
                let delegated = locks.get(&r).is_some_and(|l| {
                    l.holders.iter().any(|h| {
                        h.session_id == child && h.delegated_from.as_deref() == Some(parent)
                    })
                });
                if delegated {
                    release_into(locks, &r, child, ReleaseReason::Returned, &mut out.drafts);
                }
            }
        }
        Report::ScopeSubDelegated { .. } => {
            if let Some(gp) = &p.parent_session {
                if depth < MAX_POD_DEPTH && gp != child && gp != parent {
                    report_into(state, locks, parent, gp, report, depth + 1, out);
                }
            }
        }
        Report::TurnEnded | Report::Errored { .. } => {}
    }
}

/// The body of a report notification: the report's fields, who sent it,
/// and its one-line rendering.
fn notification_body(child: &str, parent: &str, report: &Report) -> String {
    let payload = SessionReport {
        parent_session: parent.to_string(),
        report: report.clone(),
    };
    let event = coord_proto::Event {
        seq: 0,
        tx_id: Default::default(),
        ts: coord_proto::Timestamp(0),
        ingress_ts: coord_proto::Timestamp(0),
        source: String::new(),
        session_id: Some(child.to_string()),
        resource: None,
        payload: Payload::SessionReport(payload.clone()),
    };
    let mut body = match serde_json::to_value(&payload) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    body.insert("from_session".into(), child.into());
    body.insert("text".into(), coord_proto::render_event(&event).into());
    serde_json::Value::Object(body).to_string()
}

fn release_into(
    locks: &mut Locks<'_>,
    resource: &str,
    session_id: &str,
    reason: ReleaseReason,
    out: &mut Vec<Draft>,
) {
    if let Some(lock) = locks.get_mut(resource) {
        lock.holders.retain(|h| h.session_id != session_id);
    }
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload: Payload::LockRelease(LockRelease {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    regrant(locks, resource, out);
}

fn cancel_wait_into(
    locks: &mut Locks<'_>,
    resource: &str,
    session_id: &str,
    reason: WaitCancelReason,
    out: &mut Vec<Draft>,
) {
    if let Some(lock) = locks.get_mut(resource) {
        lock.waiters.retain(|w| w.session_id != session_id);
    }
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload: Payload::LockWaitCancel(LockWaitCancel {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    // The leaver may have been what blocked shared waiters behind it.
    regrant(locks, resource, out);
}

/// After `resource` lost a holder or waiter: its queue, then the queues
/// of every lock that conflicts with it, may move.
fn regrant(locks: &mut Locks<'_>, resource: &str, out: &mut Vec<Draft>) {
    grant_into(locks, resource, out);
    for other in locks.overlapping(resource) {
        if locks.get(&other).is_some_and(|l| !l.waiters.is_empty()) {
            grant_into(locks, &other, out);
        }
    }
}

/// Grants the head of the queue while it is compatible with the holders
/// and with every conflicting lock: strict FIFO, so a waiter that cannot
/// go blocks every waiter behind it.
fn grant_into(locks: &mut Locks<'_>, resource: &str, out: &mut Vec<Draft>) {
    loop {
        let Some(lock) = locks.get(resource) else {
            return;
        };
        let Some(w) = lock.waiters.first().cloned() else {
            return;
        };
        let compatible = lock.holders.is_empty()
            || (lock.mode == LockMode::Shared && w.mode == LockMode::Shared);
        if !compatible || locks.blocker(resource, &w.session_id, w.mode).is_some() {
            return;
        }
        let lock = locks.entry(resource, w.mode);
        lock.waiters.remove(0);
        lock.mode = w.mode;
        lock.holders.push(coord_proto::view::Holder {
            session_id: w.session_id.clone(),
            acquired_seq: 0,
            acquired_at: coord_proto::Timestamp(0),
            ttl_ms: w.ttl_ms,
            delegated_from: None,
        });
        out.push(Draft {
            session_id: Some(w.session_id.clone()),
            resource: Some(resource.to_string()),
            payload: Payload::LockAcquire(LockAcquire {
                resource: resource.to_string(),
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

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn check_probes(p: &Probes) -> Result<()> {
    if let Some(t) = &p.tmux {
        text("tmux", t)?;
        if t.is_empty() || t.starts_with('-') || t.contains([':', '.']) {
            return Err(invalid(
                "tmux",
                "must be a tmux session name: not empty, no leading '-', no ':' or '.'".into(),
            ));
        }
    }
    for (field, path) in [
        ("activity_file", &p.activity_file),
        ("transcript", &p.transcript),
    ] {
        if let Some(path) = path {
            if !path.starts_with('/') || path.len() > 4096 || path.chars().any(char::is_control) {
                return Err(invalid(
                    field,
                    "must be an absolute path of at most 4096 bytes without control characters"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_report(r: &Report) -> Result<()> {
    match r {
        Report::Errored { message } => {
            if message.len() > MAX_REPORT_MESSAGE_BYTES || message.contains('\0') {
                return Err(invalid(
                    "message",
                    format!("must be at most {MAX_REPORT_MESSAGE_BYTES} bytes without NUL"),
                ));
            }
        }
        Report::ScopeSubDelegated { sub_session, scope } => {
            id("sub_session", sub_session)?;
            if scope.is_empty() || scope.len() > 64 {
                return Err(invalid("scope", "must hold 1 to 64 patterns".into()));
            }
            for r in scope {
                res(r)?;
            }
        }
        Report::TurnEnded | Report::ShutDown => {}
    }
    Ok(())
}

fn done(drafts: Vec<Draft>) -> Outcome {
    Outcome {
        drafts,
        reply: Reply::Done,
        bodies: BTreeMap::new(),
    }
}

fn no_change() -> Outcome {
    Outcome {
        drafts: Vec::new(),
        reply: Reply::NoChange,
        bodies: BTreeMap::new(),
    }
}
