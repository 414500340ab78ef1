//! Dispatch orders: issue, ack, complete. Owns `dispatch.issue`,
//! `dispatch.ack`, `dispatch.complete`. Pure: no I/O, no clock.

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::view::{Order, OrderState, View};
use coord_proto::ErrorCode;
use coord_proto::Event;
use coord_proto::{DispatchAck, DispatchComplete, DispatchIssue, Draft, Payload};

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
        other => Err(not_mine(other)),
    }
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
