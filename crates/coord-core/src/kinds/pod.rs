//! Pods: a child's reports to its parent and a parent's delegation of
//! part of its scope to a child. Owns `session.report` and
//! `lock.delegate` (delegation is a pod relation: it reports up the pod).
//! Pure: no I/O, no clock.

use super::{MAX_POD_DEPTH, MAX_REPORT_MESSAGE_BYTES};
use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::kinds::lock::*;
use crate::state::State;
use coord_proto::pattern::within;
use coord_proto::view::Holder;
use coord_proto::ErrorCode;
use coord_proto::Event;
use coord_proto::{
    Draft, InboxDeliver, LockDelegate, LockMode, Payload, ReleaseReason, Report, SessionReport,
};

/// Decides what a pod command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
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
        other => Err(not_mine(other)),
    }
}

/// Folds one of this kind's events into the state (see [`crate::apply`]).
pub(crate) fn apply(state: &mut State, event: &Event) {
    let view = &mut state.view;
    match &event.payload {
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
                    acquired_at: event.ingress_ts,
                    ttl_ms: None,
                    delegated_from: Some(p.from_session.clone()),
                },
            );
            if let Some(parent) = view.sessions.get_mut(&p.from_session) {
                let child = parent.children.entry(p.to_session.clone()).or_default();
                add_scope(&mut child.scope, std::slice::from_ref(&p.resource));
            }
        }
        _ => {}
    }
}

/// `lock.delegate`: the parent must hold an exclusive lock that covers
/// `resource`, the receiver must be its child, and nobody outside the
/// parent may hold anything that conflicts with `resource`.
pub(crate) fn delegate(
    state: &State,
    parent: &str,
    resource: &str,
    child: &str,
) -> Result<Outcome> {
    let view = &state.view;
    let p = session(view, parent)?;
    let c = session(view, child)?;
    lockable(resource)?;
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
    room_for_lock(state, child)?;
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

/// A `session.report` from `child` to `parent`, and what it does on the
/// parent's side when the parent is a session of this daemon: a
/// notification in its inbox, and for `shut_down` the return of the
/// child's delegated scope, for `scope_sub_delegated` the same report one
/// level up. Every effect tolerates repetition and disorder: a child that
/// already shut down changes nothing any more, and a missing registry
/// entry or lock is no error.
pub(crate) fn report_into(
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
pub(crate) fn notification_body(child: &str, parent: &str, report: &Report) -> String {
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

pub(crate) fn check_report(r: &Report) -> Result<()> {
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

/// Adds patterns to a registry entry's scope, each once.
pub(crate) fn add_scope(scope: &mut Vec<String>, patterns: &[String]) {
    for p in patterns {
        if !scope.contains(p) {
            scope.push(p.clone());
        }
    }
}
