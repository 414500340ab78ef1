//! `coord events`: follow the log, as text or JSON lines.

use crate::args::*;
use crate::output::{self, code, Exit};
use anyhow::{anyhow, Result};
use clap::Args;
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub(crate) struct EventsArgs {
    /// Where to start: a seq (events after it), start, or now.
    #[arg(long, default_value = "now")]
    since: String,
    /// Only kinds matching these globs (repeatable): --kind 'lock.*'.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Only events about this session.
    #[arg(long)]
    session: Option<String>,
    /// Only events about this resource.
    #[arg(long)]
    resource: Option<String>,
    /// Start with a snapshot of the view.
    #[arg(long)]
    snapshot: bool,
    /// json (one event per line, as the daemon sends it) or text; --json
    /// is the same as --format json.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop at the current head instead of following.
    #[arg(long)]
    no_follow: bool,
    /// When the daemon goes away, wait for it and resume after the last
    /// event [default: on when stdout is a terminal].
    #[arg(long, overrides_with = "no_reconnect")]
    reconnect: bool,
    /// Exit (code 3) when the daemon goes away.
    #[arg(long)]
    no_reconnect: bool,
}

pub(crate) async fn events(base: &Client, args: EventsArgs, json: bool) -> Result<ExitCode> {
    let text = args.format == Format::Text && !json;
    let since: crate::follow::Since = args
        .since
        .parse()
        .map_err(|e: String| anyhow!(Exit(code::USAGE, format!("--since {e}"))))?;
    let reconnect = if args.no_reconnect {
        false
    } else {
        args.reconnect || std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let filters = EventsQuery {
        kinds: (!args.kinds.is_empty()).then(|| args.kinds.join(",")),
        session: args.session.clone(),
        resource: args.resource.clone(),
        ..Default::default()
    };
    let mut stream = crate::follow::Follower::new(base.clone(), since, filters)
        .with_snapshot(args.snapshot)
        .with_follow(!args.no_follow)
        .with_reconnect(reconnect);
    while let Some(line) = stream.next().await? {
        match line.item {
            Err(body) => {
                return Err(anyhow!(coord_client::ClientError::Api {
                    status: 200,
                    body
                }))
            }
            Ok(item) if !text => {
                let _ = item;
                output::line(std::str::from_utf8(&line.raw).unwrap_or_default())?;
            }
            Ok(StreamItem::Event(e)) => output::line(&output::render(&e))?,
            Ok(StreamItem::Snapshot(s)) => output::line(&format!(
                "snapshot at seq {}: {} sessions, {} locks, {} open orders",
                s.seq,
                s.view.sessions.len(),
                s.view.locks.len(),
                s.view.orders.len()
            ))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
