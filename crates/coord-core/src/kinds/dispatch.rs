//! Dispatch orders: issue, ack, complete, cancel, reassign, and orphaning
//! when the assignee ends. Owns `dispatch.issue`, `dispatch.ack`,
//! `dispatch.complete`, `dispatch.cancel`, `dispatch.reassign` and
//! `dispatch.orphan`. Pure: no I/O, no clock.
//!
//! Who may act: the assignee acks and completes; the issuer (or the admin)
//! cancels and reassigns. An order whose assignee ends is never left
//! `issued` to nobody: the session's end orphans it, in the same commit.

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::view::{Order, OrderState, View};
use coord_proto::ErrorCode;
use coord_proto::Event;
use coord_proto::{
    DispatchAck, DispatchCancel, DispatchComplete, DispatchIssue, DispatchOrphan, DispatchReassign,
    Draft, Payload,
};

/// Decides what a dispatch command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
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
        Command::CancelOrder {
            order_id,
            by,
            reason,
        } => {
            let order = issued_by(view, order_id, by.as_deref())?;
            text("reason", reason)?;
            Ok(done(vec![Draft {
                session_id: Some(order.assignee.clone()),
                resource: None,
                payload: Payload::DispatchCancel(DispatchCancel {
                    order_id: order_id.clone(),
                    assignee: order.assignee.clone(),
                    by_session: by.clone(),
                    reason: reason.clone(),
                }),
            }]))
        }
        Command::ReassignOrder {
            order_id,
            by,
            assignee,
        } => {
            let order = issued_by(view, order_id, by.as_deref())?;
            session(view, assignee)?;
            if order.assignee == *assignee && order.state != OrderState::Orphaned {
                return Err(Rejection::new(
                    ErrorCode::OrderState,
                    format!("order {order_id} is assigned to {assignee} already"),
                )
                .with("state", order.state.as_str()));
            }
            Ok(done(vec![Draft {
                session_id: Some(assignee.clone()),
                resource: None,
                payload: Payload::DispatchReassign(DispatchReassign {
                    order_id: order_id.clone(),
                    from_assignee: order.assignee.clone(),
                    assignee: assignee.clone(),
                    by_session: by.clone(),
                }),
            }]))
        }
        other => Err(not_mine(other)),
    }
}

/// The `dispatch.orphan` drafts for every open order of `session_id`,
/// which is ending (part of the session's end cascade).
pub(crate) fn orphans_of(view: &View, session_id: &str) -> Vec<Draft> {
    view.orders
        .values()
        .filter(|o| o.assignee == session_id && o.state != OrderState::Orphaned)
        .map(|o| Draft {
            session_id: Some(session_id.to_string()),
            resource: None,
            payload: Payload::DispatchOrphan(DispatchOrphan {
                order_id: o.order_id.clone(),
                assignee: session_id.to_string(),
                from_session: o.from_session.clone(),
            }),
        })
        .collect()
}

/// The open order `order_id`, if `by` may cancel or reassign it: its
/// issuer, or the admin (`None`).
fn issued_by<'v>(view: &'v View, order_id: &str, by: Option<&str>) -> Result<&'v Order> {
    let order = open_order(view, order_id)?;
    if let Some(by) = by {
        if order.from_session.as_deref() != Some(by) {
            return Err(Rejection::new(
                ErrorCode::NotOwner,
                format!(
                    "order {order_id} was issued by {}; only its issuer or the admin may change it",
                    order.from_session.as_deref().unwrap_or("no session")
                ),
            )
            .with("order_id", order_id));
        }
    }
    Ok(order)
}

/// Folds one of this kind's events into the state (see [`crate::apply`]).
pub(crate) fn apply(state: &mut State, event: &Event) {
    let view = &mut state.view;
    match &event.payload {
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
        Payload::DispatchCancel(p) => {
            view.orders.remove(&p.order_id);
        }
        Payload::DispatchReassign(p) => {
            if let Some(o) = view.orders.get_mut(&p.order_id) {
                o.assignee = p.assignee.clone();
                o.state = OrderState::Issued;
            }
        }
        Payload::DispatchOrphan(p) => {
            if let Some(o) = view.orders.get_mut(&p.order_id) {
                o.state = OrderState::Orphaned;
            }
        }
        _ => {}
    }
}

pub(crate) fn order_ack(order_id: &str, session_id: &str) -> Draft {
    Draft {
        session_id: Some(session_id.to_string()),
        resource: None,
        payload: Payload::DispatchAck(DispatchAck {
            order_id: order_id.to_string(),
            assignee: session_id.to_string(),
        }),
    }
}

pub(crate) fn order_of<'v>(
    view: &'v View,
    order_id: &str,
    session_id: &str,
) -> Result<&'v coord_proto::view::Order> {
    let order = open_order(view, order_id)?;
    if order.assignee != session_id {
        return Err(Rejection::new(
            ErrorCode::NotAssignee,
            format!("order {order_id} is assigned to {}", order.assignee),
        )
        .with("assignee", order.assignee.as_str()));
    }
    Ok(order)
}

/// The open (issued, acked or orphaned) order `order_id`.
fn open_order<'v>(view: &'v View, order_id: &str) -> Result<&'v Order> {
    id("order_id", order_id)?;
    view.orders.get(order_id).ok_or_else(|| {
        Rejection::new(
            ErrorCode::OrderNotFound,
            format!("no open order {order_id}"),
        )
        .with("order_id", order_id)
    })
}
