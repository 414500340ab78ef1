//! `coord explain SESSION`: the session's state now and why — the
//! evidence of the `session.state` event that set it (which hook or
//! probe, when, about what), how its liveness is known and its lease.
//!
//! It reads the session and its `session.state` events; it writes
//! nothing.

use anyhow::{Context, Result};
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use coord_proto::Payload;
use serde::Serialize;
use std::process::ExitCode;

/// What `explain` says, also as `--json`.
#[derive(Serialize)]
struct Explanation {
    session_id: String,
    state: String,
    /// When the state was entered and its evidence (`claude:Stop: turn
    /// ended`, `no activity for 60000 ms`), from its `session.state`.
    since: Option<String>,
    why: Option<String>,
    seq: Option<u64>,
    /// Whether its agent reports first-hand (hooks).
    hooks: bool,
    phase: String,
    liveness: String,
    lease_expires: Option<String>,
}

/// Runs `coord explain SESSION`.
pub(crate) async fn explain(base: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let detail = base.session(id).await?;
    let s = detail.session;
    let mut stream = base
        .events(&EventsQuery {
            since: Some("start".into()),
            kinds: Some("session.state".into()),
            session: Some(id.to_string()),
            follow: Some(false),
            ..Default::default()
        })
        .await
        .context("reading the session's state changes")?;
    let mut last = None;
    while let Some(line) = stream.next().await? {
        if let Ok(StreamItem::Event(e)) = line.item {
            if let Payload::SessionState(p) = &e.payload {
                if p.to == s.state {
                    last = Some((e.ingress_ts.to_string(), p.reason.clone(), e.seq));
                }
            }
        }
    }
    let liveness = match (s.pid, &s.tmux) {
        (Some(pid), _) => format!("process {pid}, watched by pidfd: its exit ends the session"),
        (None, Some(t)) => format!("tmux session {t}, probed"),
        (None, None) => "its lease only".to_string(),
    };
    let hooks = s.blob.get("hooks").and_then(serde_json::Value::as_bool) == Some(true);
    let out = Explanation {
        session_id: s.session_id.clone(),
        state: s.state.as_str().to_string(),
        since: last.as_ref().map(|l| l.0.clone()),
        why: last.as_ref().map(|l| l.1.clone()),
        seq: last.as_ref().map(|l| l.2),
        hooks,
        phase: s.phase.clone(),
        liveness,
        lease_expires: s.lease.as_ref().map(|l| l.expires_at.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let safe = |t: &str| coord_proto::ids::terminal_safe(t, false).into_owned();
    println!(
        "{} is {}{}",
        out.session_id,
        out.state,
        out.since
            .as_deref()
            .map(|t| format!(" since {t}"))
            .unwrap_or_default()
    );
    match (&out.why, out.seq) {
        (Some(why), Some(seq)) => println!("  why:      {} (seq {seq})", safe(why)),
        _ => println!("  why:      registered; no change since"),
    }
    println!(
        "  reports:  {}",
        if out.hooks {
            "first-hand, from its agent's hooks (a reported state holds until the next hook)"
        } else {
            "second-hand: activity, heartbeats and its transcript"
        }
    );
    println!("  phase:    {}", safe(&out.phase));
    println!("  liveness: {}", out.liveness);
    if let Some(e) = &out.lease_expires {
        println!("  lease:    expires {e} unless renewed");
    }
    Ok(ExitCode::SUCCESS)
}
