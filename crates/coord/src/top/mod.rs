//! `coord top`: a live terminal view of the fleet.
//!
//! Three parts with one job each: [`model`] (the view, folded from the log
//! by the daemon's own `apply`, and what keys do to it — pure), [`render`]
//! (drawing the model — pure), and this module: the terminal, the keyboard
//! and the stream, which it follows across daemon restarts (resuming after
//! its last seq on the same log; a snapshot again when its cursor was
//! compacted or the log changed).
//!
//! It redraws only when something changed: an event, a key, the connection,
//! or the once-a-second tick that moves the ages on screen.

pub mod approvals;
pub mod model;
pub mod render;

use anyhow::{Context, Result};
use clap::Args;
use coord_client::Client;
use coord_proto::api::{EventsQuery, StreamItem};
use coord_proto::{ErrorCode, Timestamp};
use model::{Key, Model, Outcome};
use ratatui::crossterm::event::{self as term, Event as TermEvent, KeyCode, KeyModifiers};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;

/// `coord top` flags.
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// Do not ring the terminal bell when a session enters needs_input.
    #[arg(long)]
    no_bell: bool,
    /// No colours (states keep their glyphs); also when NO_COLOR is set.
    #[arg(long)]
    no_color: bool,
}

/// What the stream task tells the screen.
enum Feed {
    Snapshot(coord_proto::api::Snapshot),
    Event(Box<coord_proto::Event>),
    Lost(String),
    /// A session's events read from the log for its detail.
    Detail(String, Vec<coord_proto::Event>),
    /// Every live session's lease, renewals included.
    Leases(std::collections::BTreeMap<String, coord_proto::view::Lease>),
    /// How a decision made with a key went.
    Notice(String),
}

/// Runs the view until `q`.
pub(crate) async fn run(client: Client, args: TopArgs) -> Result<std::process::ExitCode> {
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none();
    let theme = render::Theme { color };
    let mut model = Model::new(&client.socket().display().to_string(), !args.no_bell);
    let (feed_tx, mut feed) = mpsc::channel::<Feed>(4096);
    let follower = tokio::spawn(follow(client.clone(), feed_tx.clone()));
    let renewals = tokio::spawn(leases(client.clone(), feed_tx.clone()));
    let (key_tx, mut keys) = mpsc::unbounded_channel::<TermEvent>();
    // crossterm's read blocks: it gets a thread of its own.
    std::thread::spawn(move || {
        while let Ok(ev) = term::read() {
            if key_tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut terminal = ratatui::init();
    let result = async {
        let mut dirty = true;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if dirty {
                let now = Timestamp::now();
                terminal
                    .draw(|f| render::draw(f, &model, now, theme))
                    .context("drawing")?;
                if model.bells > 0 {
                    model.bells = 0;
                    let mut out = std::io::stdout();
                    let _ = out.write_all(b"\x07");
                    let _ = out.flush();
                }
                dirty = false;
            }
            tokio::select! {
                f = feed.recv() => match f {
                    Some(f) => {
                        apply_feed(&mut model, f);
                        // Fold everything already queued before drawing.
                        while let Ok(f) = feed.try_recv() {
                            apply_feed(&mut model, f);
                        }
                        dirty = true;
                    }
                    None => return Ok(()),
                },
                k = keys.recv() => match k {
                    Some(TermEvent::Key(k)) => {
                        let Some(key) = decode(k) else { continue };
                        let before = model.detail.clone();
                        let outcome = model.key(key);
                        if let (Some(sid), true) = (&model.detail, model.detail != before) {
                            tokio::spawn(session_history(client.clone(), sid.clone(), feed_tx.clone()));
                        }
                        for d in model.decisions.drain(..) {
                            tokio::spawn(send_decision(client.clone(), d, feed_tx.clone()));
                        }
                        match outcome {
                            Outcome::Quit => return Ok(()),
                            Outcome::Redraw => dirty = true,
                            Outcome::Same => {}
                        }
                    }
                    Some(TermEvent::Resize(..)) => dirty = true,
                    Some(_) => {}
                    None => return Ok(()),
                },
                _ = tick.tick() => dirty = true,
            }
        }
    }
    .await;
    ratatui::restore();
    follower.abort();
    renewals.abort();
    result.map(|()| std::process::ExitCode::SUCCESS)
}

/// `coord ui`: asks the daemon (over its socket, with the admin token) for
/// a one-time login URL to its web dashboard, prints it, and with `open`
/// hands it to `xdg-open`.
///
/// With `revoke`, ends that viewer's login instead (`all`: every login).
pub(crate) async fn ui(
    base: &Client,
    open: bool,
    revoke: Option<String>,
    approver: Option<Option<String>>,
    json: bool,
) -> Result<std::process::ExitCode> {
    let token = crate::args::admin_token(base.socket())?;
    let admin = base.clone().with_admin_token(Some(token));
    if let Some(viewer) = revoke {
        let viewer = if viewer == "all" {
            "*".to_string()
        } else {
            viewer
        };
        let answer = admin.ui_revoke(&viewer).await?;
        if json {
            println!("{}", serde_json::to_string(&answer)?);
        } else {
            println!("revoked {} login(s)", answer.revoked);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let answer = match &approver {
        Some(name) => admin.ui_login_as("approver", name.as_deref()).await?,
        None => admin.ui_login().await?,
    };
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("{}", answer.url);
        eprintln!(
            "{} {} (coord ui --revoke {} ends this login)",
            if approver.is_some() {
                "approver"
            } else {
                "viewer"
            },
            answer.viewer,
            answer.viewer
        );
    }
    if open {
        let status = std::process::Command::new("xdg-open")
            .arg(&answer.url)
            .status()
            .context("running xdg-open (is a desktop session there? open the URL by hand)")?;
        if !status.success() {
            anyhow::bail!("xdg-open failed ({status}); open the URL by hand");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn apply_feed(model: &mut Model, f: Feed) {
    match f {
        Feed::Snapshot(s) => model.reset(s.view, s.seq),
        Feed::Event(e) => model.apply(*e),
        Feed::Lost(why) => model.lost(Timestamp::now().as_millis(), why),
        Feed::Detail(sid, events) => model.detail_events = Some((sid, events)),
        Feed::Leases(l) => model.leases = l,
        Feed::Notice(n) => model.notice = Some(n),
    }
}

/// Sends a decision made in the approvals pane, with the admin token, and
/// says how it went.
async fn send_decision(client: Client, d: approvals::Decision, tx: mpsc::Sender<Feed>) {
    let by = std::env::var("USER").ok().filter(|u| !u.is_empty());
    let sent = async {
        let token = crate::args::admin_token(client.socket())?;
        let a = client
            .with_admin_token(Some(token))
            .decide_approval(
                &d.approval_id,
                &coord_proto::api::DecideRequest {
                    decision: d.verdict,
                    reason: d.reason.clone(),
                    by,
                    session_id: None,
                    tx_id: None,
                },
            )
            .await?;
        anyhow::Ok(a)
    }
    .await;
    let note = match sent {
        Ok(a) => format!(
            "{} {} ({})",
            a.decision.as_ref().map_or("?", |x| x.decision.as_str()),
            a.approval_id,
            a.summary
        ),
        Err(e) => format!("not decided: {e:#}"),
    };
    let _ = tx.send(Feed::Notice(note)).await;
}

/// How often the view asks for the leases (the HB column's resolution).
const LEASE_POLL: Duration = Duration::from_secs(2);

/// Asks the daemon for the sessions' leases every [`LEASE_POLL`]: bare
/// renewals are not events (they would flood the log), so the stream alone
/// cannot tell when a lease was last renewed. A failed ask is skipped; the
/// follower reports a lost daemon.
async fn leases(client: Client, tx: mpsc::Sender<Feed>) {
    let mut tick = tokio::time::interval(LEASE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(r) = client.sessions().await {
            let map = r
                .sessions
                .into_iter()
                .filter_map(|s| s.lease.map(|l| (s.session_id, l)))
                .collect();
            if tx.send(Feed::Leases(map)).await.is_err() {
                return;
            }
        }
    }
}

/// Reads `session`'s events from the log (the last 200), for its detail.
async fn session_history(client: Client, session: String, tx: mpsc::Sender<Feed>) {
    let query = EventsQuery {
        since: Some("start".into()),
        session: Some(session.clone()),
        follow: Some(false),
        ..Default::default()
    };
    let Ok(mut stream) = client.events(&query).await else {
        return;
    };
    let mut events = std::collections::VecDeque::new();
    while let Ok(Some(line)) = stream.next().await {
        if let Ok(StreamItem::Event(e)) = line.item {
            events.push_back(e);
            if events.len() > 200 {
                events.pop_front();
            }
        }
    }
    let _ = tx.send(Feed::Detail(session, events.into())).await;
}

fn decode(k: term::KeyEvent) -> Option<Key> {
    if k.kind != term::KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Char('q'),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Follows the log forever: a snapshot first, then events; after a
/// disconnect, resumes after the last seq on the same log, or takes a new
/// snapshot when the cursor was compacted or the log is another one.
async fn follow(client: Client, tx: mpsc::Sender<Feed>) {
    let mut cursor: Option<u64> = None;
    let mut log_id: Option<String> = None;
    let mut backoff =
        coord_client::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let query = match cursor {
            Some(seq) => EventsQuery {
                since: Some(seq.to_string()),
                log_id: log_id.clone(),
                ..Default::default()
            },
            None => EventsQuery {
                snapshot: Some(true),
                ..Default::default()
            },
        };
        let why = match client.events(&query).await {
            Ok(mut stream) => {
                backoff.reset();
                if let Some(id) = stream.log_id() {
                    log_id = Some(id.to_string());
                }
                loop {
                    match stream.next().await {
                        Ok(Some(line)) => match line.item {
                            Ok(StreamItem::Snapshot(s)) => {
                                cursor = Some(s.seq);
                                if tx.send(Feed::Snapshot(s)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(StreamItem::Event(e)) => {
                                cursor = Some(e.seq);
                                if tx.send(Feed::Event(Box::new(e))).await.is_err() {
                                    return;
                                }
                            }
                            Err(body) => break body.error.message.clone(),
                        },
                        Ok(None) => break "the daemon closed the stream".to_string(),
                        Err(e) => break format!("the stream broke: {e}"),
                    }
                }
            }
            Err(e) => {
                if matches!(
                    e.code(),
                    Some(ErrorCode::Compacted | ErrorCode::LogMismatch | ErrorCode::CursorAhead)
                ) {
                    // The cursor cannot resume here: start from a snapshot.
                    cursor = None;
                    log_id = None;
                }
                e.to_string()
            }
        };
        if tx.send(Feed::Lost(why)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests;
