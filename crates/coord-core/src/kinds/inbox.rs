//! Inboxes: deliver a message (the body rides beside the log) and ack
//! it. Owns `inbox.deliver` and `inbox.ack`. Pure: no I/O, no clock.

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::view::Message;
use coord_proto::ErrorCode;
use coord_proto::Event;
use coord_proto::{Draft, InboxAck, InboxDeliver, Payload};

/// Decides what a inbox command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
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
        other => Err(not_mine(other)),
    }
}

/// Folds one of this kind's events into the state (see [`crate::apply`]).
pub(crate) fn apply(state: &mut State, event: &Event) {
    let view = &mut state.view;
    match &event.payload {
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
        _ => {}
    }
}
