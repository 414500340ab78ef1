//! `coord dispatch ...`: issue, list, take, complete, cancel, reassign and
//! wait for dispatch orders.

use crate::args::*;
use crate::output::{self, print_write};
use anyhow::Result;
use clap::Subcommand;
use coord_client::Client;
use coord_proto::api::*;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum DispatchCmd {
    /// Issue an order to a session.
    Issue {
        /// The session that must do it (a live session).
        assignee: String,
        /// The ticket it is about (free text, at most 256 bytes).
        ticket: String,
        /// Order id [default: a new ULID].
        #[arg(long = "id")]
        id: Option<String>,
        /// Free JSON.
        #[arg(long)]
        payload: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// List open orders.
    List {
        /// Only orders of this session.
        #[arg(long)]
        assignee: Option<String>,
        /// Only orders in this state.
        #[arg(long, value_enum)]
        state: Option<OrderStateArg>,
    },
    /// Take an order.
    Ack {
        /// The order id.
        order_id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Complete an order.
    Complete {
        /// The order id.
        order_id: String,
        /// Free JSON result.
        #[arg(long)]
        result: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Withdraw an open order: as its issuer (--session / COORD_SESSION),
    /// else with the admin token.
    Cancel {
        /// The order id.
        order_id: String,
        /// Why (shown in the event).
        #[arg(long, default_value = "")]
        reason: String,
        /// Act with the admin token even inside a session.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Give an open or orphaned order to another live session: as its
    /// issuer (--session / COORD_SESSION), else with the admin token.
    Reassign {
        /// The order id.
        order_id: String,
        /// The new assignee.
        #[arg(long)]
        to: String,
        /// Act with the admin token even inside a session.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Wait for the next order issued to this session and print it.
    Wait {
        /// Give up after this long (exit 5).
        #[arg(long, value_parser = duration)]
        timeout: Option<Duration>,
        /// Ack it once received.
        #[arg(long)]
        ack: bool,
        #[command(flatten)]
        acting: Acting,
    },
}

pub(crate) async fn dispatch(base: &Client, cmd: DispatchCmd, json: bool) -> Result<ExitCode> {
    let print_order = |o: &coord_proto::view::Order| -> Result<()> {
        if json {
            output::json(o)
        } else {
            output::line(&format!(
                "order {} ({}) for {}: {}{}",
                o.order_id,
                o.ticket,
                o.assignee,
                o.state.as_str(),
                o.payload
                    .as_ref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default()
            ))
        }
    };
    match cmd {
        DispatchCmd::Issue {
            assignee,
            ticket,
            id,
            payload,
            acting,
        } => {
            let a = base
                .clone()
                .with_token(acting.token.clone())
                .issue(&IssueRequest {
                    order_id: id,
                    assignee: assignee.clone(),
                    ticket,
                    from_session: acting.session.clone(),
                    payload: parse_json_arg("payload", payload)?,
                    ..Default::default()
                })
                .await?;
            output::json_or_line(json, &a.body, || {
                format!(
                    "issued {} to {assignee} (seq {})",
                    a.body.order_id, a.body.seq
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        DispatchCmd::List { assignee, state } => {
            let r = base
                .orders(assignee.as_deref(), state.map(OrderStateArg::as_str))
                .await?;
            output::json_or_table(
                json,
                &r,
                &["ORDER", "ASSIGNEE", "TICKET", "STATE", "ISSUED"],
                || {
                    r.orders
                        .iter()
                        .map(|o| {
                            vec![
                                o.order_id.clone(),
                                o.assignee.clone(),
                                o.ticket.clone(),
                                o.state.as_str().to_string(),
                                o.issued_at.to_string(),
                            ]
                        })
                        .collect()
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        DispatchCmd::Ack { order_id, acting } => {
            let a = base
                .clone()
                .with_token(acting.token)
                .ack_order(&order_id)
                .await?;
            print_write(json, &a.body, &format!("took {order_id}"))
        }
        DispatchCmd::Complete {
            order_id,
            result,
            acting,
        } => {
            let a = base
                .clone()
                .with_token(acting.token)
                .complete_order(
                    &order_id,
                    &CompleteRequest {
                        result: parse_json_arg("result", result)?,
                        ..Default::default()
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("completed {order_id}"))
        }
        DispatchCmd::Cancel {
            order_id,
            reason,
            admin,
            acting,
        } => {
            let (c, session_id) = as_issuer(base, acting, admin)?;
            let a = c
                .cancel_order(
                    &order_id,
                    &CancelOrderRequest {
                        session_id,
                        reason,
                        ..Default::default()
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("cancelled {order_id}"))
        }
        DispatchCmd::Reassign {
            order_id,
            to,
            admin,
            acting,
        } => {
            let (c, session_id) = as_issuer(base, acting, admin)?;
            let a = c
                .reassign_order(
                    &order_id,
                    &ReassignOrderRequest {
                        session_id,
                        assignee: to.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("reassigned {order_id} to {to}"))
        }
        DispatchCmd::Wait {
            timeout,
            ack,
            acting,
        } => {
            let id = acting.id()?;
            let c = base.clone().with_token(acting.token);
            let deadline = timeout.map(|t| std::time::Instant::now() + t);
            let order = loop {
                let left = match deadline {
                    Some(d) => ms(d.saturating_duration_since(std::time::Instant::now())),
                    None => 3_600_000,
                };
                match c.next_order(&id, left).await {
                    Ok(o) => break o,
                    Err(e)
                        if e.code() == Some(coord_proto::ErrorCode::Timeout)
                            && deadline.is_none() => {}
                    Err(e) => return Err(e.into()),
                }
            };
            if ack {
                c.ack_order(&order.order_id).await?;
            }
            print_order(&order)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The client and acting session for a cancel or reassign: the session
/// (its token) when one is named and `--admin` is not given, else the
/// admin token read beside the socket.
fn as_issuer(base: &Client, acting: Acting, admin: bool) -> Result<(Client, Option<String>)> {
    match acting.session {
        Some(s) if !admin => Ok((base.clone().with_token(acting.token), Some(s))),
        _ => Ok((
            base.clone()
                .with_admin_token(Some(admin_token(base.socket())?)),
            None,
        )),
    }
}
