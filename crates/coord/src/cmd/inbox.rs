//! `coord inbox ...`, the reading side of mail: list, read (and
//! follow), ack.

use crate::args::*;
use crate::output::{self, print_write};
use anyhow::{bail, Result};
use clap::Subcommand;
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use coord_proto::Payload;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum InboxCmd {
    /// List unacked messages.
    List {
        #[command(flatten)]
        acting: Acting,
    },
    /// Print a message with its body; with --follow, every message now and to come.
    Read {
        /// Message id (all unacked messages when omitted).
        msg_id: Option<String>,
        /// Keep printing new messages as they arrive.
        #[arg(long)]
        follow: bool,
        /// Ack each message after printing it.
        #[arg(long)]
        ack: bool,
        /// With --follow: when the daemon goes away (or is not up yet when
        /// the command starts), wait for it and go on after the last
        /// message seen.
        #[arg(long, requires = "follow")]
        reconnect: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Ack a message.
    Ack {
        /// The message id (from `inbox list`).
        msg_id: String,
        #[command(flatten)]
        acting: Acting,
    },
}

pub(crate) async fn inbox(base: &Client, cmd: InboxCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        InboxCmd::List { acting } => {
            let id = acting.id()?;
            let r = base.clone().with_token(acting.token).inbox(&id).await?;
            output::json_or_table(json, &r, &["MSG", "FROM", "KIND", "BYTES", "SENT"], || {
                r.messages
                    .iter()
                    .map(|m| {
                        vec![
                            m.msg_id.clone(),
                            m.from_session.clone().unwrap_or_else(|| "-".into()),
                            m.kind.clone(),
                            m.size.to_string(),
                            m.sent_at.to_string(),
                        ]
                    })
                    .collect()
            })?;
            Ok(ExitCode::SUCCESS)
        }
        InboxCmd::Read {
            msg_id,
            follow,
            ack,
            reconnect,
            acting,
        } => {
            let id = acting.id()?;
            let c = base.clone().with_token(acting.token);
            let print = |m: &coord_proto::view::Message| -> Result<()> {
                if json {
                    output::json(m)
                } else {
                    // Another session wrote the body: its escape sequences
                    // are shown, not run by the terminal.
                    output::line(&format!(
                        "[{}] {} from {}: {}",
                        m.msg_id,
                        m.kind,
                        m.from_session.as_deref().unwrap_or("-"),
                        coord_proto::ids::terminal_safe(m.body.as_deref().unwrap_or(""), true)
                    ))
                }
            };
            if let Some(msg) = msg_id {
                let m = c.read_message(&id, &msg).await?;
                print(&m)?;
                if ack {
                    c.ack_message(&id, &msg).await?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            // With --reconnect, a daemon that is down when the command
            // starts is waited for too, not only one lost while following.
            let mut said = false;
            let listed = loop {
                match c.inbox(&id).await {
                    Ok(l) => break l,
                    Err(e) if follow && reconnect && e.daemon_lost() => {
                        if !said {
                            eprintln!("coord: {e}; retrying");
                            said = true;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            for m in &listed.messages {
                take_message(&c, &id, &m.msg_id, ack, reconnect, &print).await?;
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            // Everything after the listed state, so nothing is missed or doubled.
            let mut stream = crate::follow::Follower::new(
                c.clone(),
                crate::follow::Since::After(listed.seq),
                EventsQuery {
                    kinds: Some("inbox.deliver".into()),
                    session: Some(id.clone()),
                    ..Default::default()
                },
            )
            .with_reconnect(reconnect);
            while let Some(line) = stream.next().await? {
                match line.item {
                    Ok(StreamItem::Event(e)) => {
                        if let Payload::InboxDeliver(d) = &e.payload {
                            if d.to_session != id {
                                continue;
                            }
                            take_message(&c, &id, &d.msg_id, ack, reconnect, &print).await?;
                        }
                    }
                    Ok(StreamItem::Snapshot(_)) => {}
                    Err(body) => bail!("{}: {}", body.error.code, body.error.message),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        InboxCmd::Ack { msg_id, acting } => {
            let id = acting.id()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .ack_message(&id, &msg_id)
                .await?;
            print_write(json, &a.body, &format!("acked {msg_id}"))
        }
    }
}

/// Reads one message, prints it and (with `ack`) acks it. A message acked
/// elsewhere in the meantime is skipped. With `reconnect`, a daemon lost
/// in between is waited for: the caller's stream resumes after this
/// message, so giving up here would skip it.
pub(crate) async fn take_message(
    c: &Client,
    id: &str,
    msg_id: &str,
    ack: bool,
    reconnect: bool,
    print: &impl Fn(&coord_proto::view::Message) -> Result<()>,
) -> Result<()> {
    let lost = |e: &coord_client::ClientError| reconnect && e.daemon_lost();
    let gone =
        |e: &coord_client::ClientError| e.code() == Some(coord_proto::ErrorCode::MessageNotFound);
    // Said once per message, not once per attempt.
    let mut said = false;
    let say_once = |said: &mut bool, e: &coord_client::ClientError| {
        if !*said {
            eprintln!("coord: lost the daemon while reading {msg_id}: {e}; retrying");
            *said = true;
        }
    };
    let m = loop {
        match c.read_message(id, msg_id).await {
            Ok(m) => break m,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) if lost(&e) => {
                say_once(&mut said, &e);
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    print(&m)?;
    if !ack {
        return Ok(());
    }
    loop {
        match c.ack_message(id, msg_id).await {
            Ok(_) => return Ok(()),
            Err(e) if gone(&e) => return Ok(()),
            Err(e) if lost(&e) => {
                say_once(&mut said, &e);
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}
