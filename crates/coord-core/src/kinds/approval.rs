//! Approvals (PROTOCOL §14): a permission prompt of an agent as a pending
//! approval, and its one decision. Owns `approval.request` and
//! `approval.decide`. Pure: no I/O, no clock; the policy's verdict comes
//! in on the command (the daemon reads the rules file at the edge).
//!
//! Also owns `session.notify`: a session that waited for a human past the
//! daemon's threshold is told to people once per approval and once per
//! `needs_input` spell.
//!
//! Invariants: an approval is decided exactly once (a second decision is
//! `approval_decided`); a request whose id is pending or decided appends
//! nothing (duplicates are one); a session that ends withdraws its pending
//! approvals in the same commit, so nothing stays pending for an agent
//! that is gone (one answered in its terminal is withdrawn by its next
//! hook, `coord hook`).

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::kinds::MAX_POD_DEPTH;
use crate::state::State;
use coord_proto::approval::{
    Approval, ApprovalDecide, ApprovalRequest, Decided, Decision, SessionNotify,
    DECIDED_APPROVALS_KEPT,
};
use coord_proto::{Draft, ErrorCode, Event, Payload};

/// Longest summary, reason, `by` or `via` kept, bytes.
const MAX_LINE_BYTES: usize = 512;

/// Most paths one request names.
const MAX_PATHS: usize = 64;

/// Decides what an approval command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
        Command::RequestApproval {
            session_id,
            request: r,
            policy,
        } => {
            id("approval_id", &r.approval_id)?;
            let asker = session(view, session_id)?;
            for (field, value) in [
                ("agent", &r.agent),
                ("tool", &r.tool),
                ("summary", &r.summary),
            ] {
                text(field, value)?;
            }
            if r.paths.len() > MAX_PATHS {
                return Err(invalid(
                    "paths",
                    format!("names {} paths, at most {MAX_PATHS}", r.paths.len()),
                ));
            }
            if find(state, &r.approval_id).is_some() {
                // A retried hook: the approval it asked for already exists.
                return Ok(no_change());
            }
            let mut drafts = vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::ApprovalRequest(ApprovalRequest {
                    approval_id: r.approval_id.clone(),
                    agent: truncate(&r.agent, 64),
                    tool: truncate(&r.tool, 128),
                    summary: truncate(&r.summary, MAX_LINE_BYTES),
                    paths: r.paths.clone(),
                    command: r.command.as_deref().map(|c| truncate(c, 4096)),
                    cwd: r.cwd.clone(),
                    tool_use_id: r.tool_use_id.clone(),
                    input_bytes: r.input_bytes,
                }),
            }];
            if let Some(p) = policy.as_ref().and_then(|p| p.decide(r, &asker.role)) {
                drafts.push(decide_draft(
                    session_id,
                    &r.approval_id,
                    p.decision,
                    &p.reason,
                    "policy",
                    "policy",
                    Some(&p.rule),
                ));
            }
            Ok(done(drafts))
        }
        Command::DecideApproval {
            approval_id,
            decision,
            reason,
            by,
            via,
            as_session,
            requester,
        } => {
            id("approval_id", approval_id)?;
            let a = pending(state, approval_id)?;
            if let Some(r) = requester {
                if *r != a.session_id {
                    return Err(Rejection::new(
                        ErrorCode::NotOwner,
                        format!(
                            "approval {approval_id} was asked by {}, not {r}",
                            a.session_id
                        ),
                    )
                    .with("session_id", a.session_id.as_str()));
                }
            }
            if let Some(coordinator) = as_session {
                session(view, coordinator)?;
                if !descends(state, &a.session_id, coordinator) {
                    return Err(Rejection::new(
                        ErrorCode::NotChild,
                        format!(
                            "{} is not a child of {coordinator}: a session decides for its own children only",
                            a.session_id
                        ),
                    )
                    .with("session_id", a.session_id.as_str()));
                }
            }
            for (field, value) in [("reason", reason), ("by", by), ("via", via)] {
                text(field, value)?;
            }
            Ok(done(vec![decide_draft(
                &a.session_id,
                approval_id,
                *decision,
                reason,
                by,
                via,
                None,
            )]))
        }
        Command::Notify {
            session_id,
            approval_id,
            since,
            waited_ms,
        } => {
            let Some(s) = view.sessions.get(session_id) else {
                return Ok(no_change());
            };
            let reason = match approval_id {
                Some(id) => match view.approvals.get(id) {
                    Some(a) if !a.notified && a.session_id == *session_id => {
                        format!("approval {id}: {}", a.summary)
                    }
                    _ => return Ok(no_change()),
                },
                None => {
                    let spell = s.state == coord_proto::LifeState::NeedsInput
                        && s.state_since == Some(*since)
                        && s.notified_since != Some(*since);
                    if !spell {
                        return Ok(no_change());
                    }
                    format!("needs input: {}", s.state_reason)
                }
            };
            Ok(done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::SessionNotify(SessionNotify {
                    reason: truncate(&reason, MAX_LINE_BYTES),
                    approval_id: approval_id.clone(),
                    since: *since,
                    waited_ms: *waited_ms,
                }),
            }]))
        }
        other => Err(not_mine(other)),
    }
}

fn decide_draft(
    session_id: &str,
    approval_id: &str,
    decision: Decision,
    reason: &str,
    by: &str,
    via: &str,
    rule: Option<&str>,
) -> Draft {
    Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::ApprovalDecide(ApprovalDecide {
            approval_id: approval_id.to_string(),
            decision,
            reason: truncate(reason, MAX_LINE_BYTES * 8),
            by: truncate(by, MAX_LINE_BYTES),
            via: truncate(via, MAX_LINE_BYTES),
            rule: rule.map(str::to_string),
        }),
    }
}

/// The pending approval `approval_id`, or why it cannot be decided.
fn pending<'s>(state: &'s State, approval_id: &str) -> Result<&'s Approval> {
    if let Some(a) = state.view.approvals.get(approval_id) {
        return Ok(a);
    }
    match find(state, approval_id) {
        Some(a) => {
            let d = a.decision.as_ref();
            Err(Rejection::new(
                ErrorCode::ApprovalDecided,
                format!(
                    "approval {approval_id} is decided already: {} by {}",
                    d.map_or("?", |d| d.decision.as_str()),
                    d.map_or("?", |d| d.by.as_str())
                ),
            )
            .with("approval_id", approval_id)
            .with("decision", d.map_or("?", |d| d.decision.as_str()))
            .with("by", d.map_or("?", |d| d.by.as_str())))
        }
        None => Err(Rejection::new(
            ErrorCode::ApprovalNotFound,
            format!("no approval {approval_id}"),
        )
        .with("approval_id", approval_id)),
    }
}

/// A pending or recently decided approval.
pub fn find<'s>(state: &'s State, approval_id: &str) -> Option<&'s Approval> {
    state
        .view
        .approvals
        .get(approval_id)
        .or_else(|| state.decided.iter().find(|a| a.approval_id == approval_id))
}

/// Whether `session` is `ancestor` or lies below it.
fn descends(state: &State, session: &str, ancestor: &str) -> bool {
    let mut at = state.view.sessions.get(session);
    for _ in 0..MAX_POD_DEPTH {
        let Some(s) = at else { return false };
        match s.parent_session.as_deref() {
            Some(p) if p == ancestor => return true,
            Some(p) => at = state.view.sessions.get(p),
            None => return false,
        }
    }
    false
}

/// The `approval.decide` events that withdraw `session_id`'s pending
/// approvals as it ends, for the command that ends it.
pub(crate) fn withdrawals(state: &State, session_id: &str, why: &str) -> Vec<Draft> {
    state
        .view
        .approvals
        .values()
        .filter(|a| a.session_id == session_id)
        .map(|a| {
            decide_draft(
                session_id,
                &a.approval_id,
                Decision::Withdrawn,
                why,
                "coord",
                "hook",
                None,
            )
        })
        .collect()
}

/// Folds `approval.request` and `approval.decide`.
pub(crate) fn apply(state: &mut State, event: &Event) {
    match &event.payload {
        Payload::ApprovalRequest(p) => {
            let Some(session_id) = event.session_id.clone() else {
                return;
            };
            state.view.approvals.insert(
                p.approval_id.clone(),
                Approval {
                    approval_id: p.approval_id.clone(),
                    session_id,
                    agent: p.agent.clone(),
                    tool: p.tool.clone(),
                    summary: p.summary.clone(),
                    paths: p.paths.clone(),
                    command: p.command.clone(),
                    cwd: p.cwd.clone(),
                    tool_use_id: p.tool_use_id.clone(),
                    input_bytes: p.input_bytes,
                    requested_seq: event.seq,
                    requested_at: event.ts,
                    decision: None,
                    notified: false,
                    input: None,
                },
            );
        }
        Payload::SessionNotify(p) => match &p.approval_id {
            Some(id) => {
                if let Some(a) = state.view.approvals.get_mut(id) {
                    a.notified = true;
                }
            }
            None => {
                if let Some(s) = event
                    .session_id
                    .as_deref()
                    .and_then(|sid| state.view.sessions.get_mut(sid))
                {
                    s.notified_since = Some(p.since);
                }
            }
        },
        Payload::ApprovalDecide(p) => {
            let Some(mut a) = state.view.approvals.remove(&p.approval_id) else {
                return;
            };
            a.decision = Some(Decided {
                decision: p.decision,
                reason: p.reason.clone(),
                by: p.by.clone(),
                via: p.via.clone(),
                rule: p.rule.clone(),
                decided_seq: event.seq,
                decided_at: event.ts,
                waited_ms: u64::try_from(event.ts.as_millis() - a.requested_at.as_millis())
                    .unwrap_or(0),
            });
            state.decided.push_back(a);
            while state.decided.len() > DECIDED_APPROVALS_KEPT {
                state.decided.pop_front();
            }
        }
        _ => {}
    }
}
