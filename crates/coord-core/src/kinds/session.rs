//! Sessions and their leases: register, heartbeat (a renewal that is
//! logged when the phase changes), every way a session ends (dereg,
//! expiry, process exit, runtime gone: one cascade), and the lifecycle
//! manager's transitions and probe errors. Owns `session.register`,
//! `session.heartbeat`, `session.dereg`, `session.state`,
//! `session.probe_error`. Pure: no I/O, no clock.

use super::MAX_REPORT_MESSAGE_BYTES;
use crate::command::{Command, Outcome, Probes, Rejection, Reply};
use crate::kinds::check::*;
use crate::kinds::lock::*;
use crate::kinds::pod::*;
use crate::state::State;
use coord_proto::view::{EndedSession, Session};
use coord_proto::Event;
use coord_proto::{
    DeregReason, Draft, LifeState, OnExpiry, Payload, ReleaseReason, Report, SessionDereg,
    SessionHeartbeat, SessionProbeError, SessionRegister, SessionState, WaitCancelReason,
};
use coord_proto::{
    ErrorCode, CASCADE_CHUNK, DEFAULT_KILL_GRACE_MS, MAX_DURATION_MS, MIN_SESSION_TTL_MS,
};
use std::collections::{BTreeMap, BTreeSet};

/// Decides what a session command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
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
            if expiry.process_group && pid.is_none() {
                return Err(invalid(
                    "process_group",
                    "needs a pid: the group is the one that pid leads".into(),
                ));
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
                    process_group: expiry.process_group,
                    daemon: None,
                    extra: extra.clone(),
                }),
            }]))
        }
        Command::Heartbeat {
            session_id,
            phase,
            at,
            log_always,
            reported,
        } => {
            let s = session(view, session_id)?;
            if let Some(p) = phase {
                text("phase", p)?;
            }
            if let Some(r) = reported {
                reported_state(r)?;
            }
            let new_phase = phase.clone().unwrap_or_else(|| s.phase.clone());
            if new_phase == s.phase && !log_always && reported.is_none() {
                return Ok(no_change());
            }
            Ok(done(vec![Draft {
                session_id: Some(session_id.clone()),
                resource: None,
                payload: Payload::SessionHeartbeat(SessionHeartbeat {
                    last_heartbeat: *at,
                    phase: new_phase,
                    reported: reported.clone(),
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
        Command::DaemonLost {
            session_id,
            registered_seq,
        } => Ok(match view.sessions.get(session_id) {
            Some(s) if s.registered_seq == *registered_seq => dereg_cascade(
                state,
                session_id,
                DeregReason::DaemonLost,
                None,
                Some("its daemon stopped renewing its daemon lease"),
                false,
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
        other => Err(not_mine(other)),
    }
}

/// Folds one of this kind's events into the state (see [`crate::apply`]).
pub(crate) fn apply(state: &mut State, event: &Event) {
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
                if p.reported.is_some() {
                    s.reported.clone_from(&p.reported);
                }
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
                // total for logs that do not. The index names the session's
                // locks, so an end costs what it holds, not every lock.
                for r in state.lock_index.of_session(id) {
                    if let Some(lock) = view.locks.get_mut(r) {
                        lock.holders.retain(|h| &h.session_id != id);
                        lock.waiters.retain(|w| &w.session_id != id);
                        if lock.holders.is_empty() && lock.waiters.is_empty() {
                            view.locks.remove(r);
                        }
                    }
                }
            }
        }
        Payload::SessionState(p) => {
            if let Some(s) = event
                .session_id
                .as_ref()
                .and_then(|id| view.sessions.get_mut(id))
            {
                s.state = p.to;
                s.state_reason.clone_from(&p.reason);
                s.state_since = Some(event.ts);
            }
        }
        _ => {}
    }
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
pub(crate) fn dereg_cascade(
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
    let involved: Vec<String> = state
        .lock_index
        .of_session(session_id)
        .take(CASCADE_CHUNK + 1)
        .cloned()
        .collect();
    if involved.len() > CASCADE_CHUNK {
        // Too many locks for one commit: release the first chunk now and
        // end the session when what is left fits (Reply::Unfinished).
        let mut part = Outcome {
            drafts: Vec::new(),
            reply: Reply::Unfinished,
            bodies: BTreeMap::new(),
        };
        for r in &involved[..CASCADE_CHUNK] {
            leave_lock(&mut locks, r, session_id, &mut part.drafts);
        }
        return part;
    }
    for r in involved {
        leave_lock(&mut locks, &r, session_id, &mut out.drafts);
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
    // Its open orders go back to their issuers, never left `issued` to
    // nobody.
    out.drafts
        .extend(crate::kinds::dispatch::orphans_of(&state.view, session_id));
    out.drafts.extend(crate::kinds::approval::withdrawals(
        state,
        session_id,
        "the session ended",
    ));
    out.drafts.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::SessionDereg(SessionDereg {
            reason,
            exit_code,
            process_alive,
            signal: signal.map(str::to_string),
            kill_after_ms: signal.map(|_| s.kill_grace_ms.unwrap_or(DEFAULT_KILL_GRACE_MS)),
            // The agent's tree goes with it, whoever ended it, unless it
            // ended its session itself (PROTOCOL §6.3).
            group_kill_after_ms: (s.process_group && reason != DeregReason::Explicit)
                .then(|| s.kill_grace_ms.unwrap_or(DEFAULT_KILL_GRACE_MS)),
        }),
    });
    out
}

/// A session's end as one lock sees it: its wait cancelled, its hold
/// released (`returned` for a delegated one), and the grants that follow.
fn leave_lock(locks: &mut Locks<'_>, r: &str, session_id: &str, out: &mut Vec<Draft>) {
    let Some(l) = locks.get(r) else { return };
    let holds = l
        .holders
        .iter()
        .find(|h| h.session_id == session_id)
        .cloned();
    let waits = l.waiters.iter().any(|w| w.session_id == session_id);
    if waits {
        cancel_wait_into(locks, r, session_id, WaitCancelReason::OwnerGone, out);
    }
    if let Some(h) = holds {
        let why = if h.delegated_from.is_some() {
            ReleaseReason::Returned
        } else {
            ReleaseReason::OwnerGone
        };
        release_into(locks, r, session_id, why, out);
    }
}

pub(crate) fn check_probes(p: &Probes) -> Result<()> {
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
        state_reason: String::new(),
        state_since: None,
        reported: None,
        notified_since: None,
        tmux: p.tmux.clone(),
        activity_file: p.activity_file.clone(),
        transcript: p.transcript.clone(),
        children: BTreeMap::new(),
        ended_children: BTreeSet::new(),
        on_expiry: p.on_expiry.unwrap_or_default(),
        kill_grace_ms: p.kill_grace_ms,
        process_group: p.process_group,
        daemon: p.daemon.clone(),
        lease: None,
        waiting_on: Vec::new(),
    }
}
