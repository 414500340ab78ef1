//! Arguments and the commands behind them.

use crate::output::{self, code, Exit};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use coord_client::{enc, Client};
use coord_proto::api::StreamItem;
use coord_proto::api::*;
use coord_proto::{LockMode, Payload, Report};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// coord: a durable, ordered event log for coordinating agent sessions.
#[derive(Parser, Debug)]
#[command(name = "coord", version, about, long_about = None)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/coord/coord.sock].
    #[arg(long, global = true, env = "COORD_SOCKET")]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables and prose (every subcommand); errors
    /// go to stderr as {"error":{"code","message"}}.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Acting for a session: its id and token (set by `coord session run`).
#[derive(Args, Debug, Clone)]
pub struct Acting {
    /// The session to act for.
    #[arg(long, env = "COORD_SESSION")]
    session: Option<String>,
    /// Its token.
    #[arg(long, env = "COORD_SESSION_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Acting {
    fn id(&self) -> Result<String> {
        self.session.clone().ok_or_else(|| {
            anyhow!(Exit(
                code::USAGE,
                "no session: pass --session ID or run inside `coord session run` (COORD_SESSION)"
                    .into()
            ))
        })
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Show the daemon's status and counters.
    Status,
    /// Register, renew, end and list sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Take, release and list locks.
    #[command(subcommand)]
    Lock(LockCmd),
    /// Send a message to a session's inbox.
    Send {
        /// Recipient session (a live session).
        to: String,
        /// The body ("-" reads standard input).
        body: String,
        /// Message kind.
        #[arg(long, default_value = "message")]
        kind: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// List, read and ack your inbox.
    #[command(subcommand)]
    Inbox(InboxCmd),
    /// Issue, take and complete dispatch orders.
    #[command(subcommand)]
    Dispatch(DispatchCmd),
    /// Follow the event log.
    Events(EventsArgs),
    /// Watch coordination through a source and write one observation per event.
    Sentinel(SentinelArgs),
    /// Write the current view into a legacy coord root (once).
    Export {
        /// The root to write (created if missing).
        #[arg(long)]
        legacy_root: PathBuf,
    },
    /// Publish a custom x.* event.
    Publish {
        /// The kind, x.something.
        kind: String,
        /// A JSON object.
        #[arg(long)]
        payload: Option<String>,
        /// A resource the event is about.
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
}

#[derive(Args, Debug)]
struct SentinelArgs {
    /// Where events come from: fs-poll (scan a legacy root on a timer),
    /// fs-watch (rescan it when inotify reports a change) or event-manager
    /// (the daemon's log).
    #[arg(long, env = "SENTINEL_SOURCE", default_value = "event-manager",
          value_parser = ["fs-poll", "fs-watch", "event-manager"])]
    source: String,
    /// The legacy coord root (fs-poll, fs-watch).
    #[arg(long)]
    coord_root: Option<PathBuf>,
    /// jsonl:PATH, stdout or exec:CMD.
    #[arg(long, default_value = "stdout")]
    sink: String,
    /// Pause between polls that found nothing [default: 2s for fs-poll].
    /// fs-watch and event-manager wait for changes instead; fs-watch uses
    /// it as its fallback polling interval.
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    /// Cursor file of the event-manager source [default: one per log,
    /// $XDG_STATE_HOME/coord/sentinel-<log_id>.cursor]. A cursor saved from
    /// another log is refused.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Most events taken per poll.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Only observe kinds matching these globs (repeatable): --kind 'lock.*'.
    #[arg(long = "kind")]
    kinds: Vec<String>,
}

#[derive(Args, Debug)]
struct DaemonArgs {
    /// The SQLite store [default: $XDG_DATA_HOME/coord/coord.db].
    #[arg(long, env = "COORD_STORE")]
    store: Option<PathBuf>,
    /// Commit durability: normal (survives a crash of the daemon) or full (fsync every commit).
    #[arg(long, default_value = "normal")]
    sync: String,
    /// Keep at least the last N events when compacting.
    #[arg(long)]
    keep_events: Option<u64>,
    /// Keep at least the events of the last D days when compacting.
    #[arg(long)]
    keep_days: Option<u64>,
    /// Snapshot (and compact) every N events.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Append a session.heartbeat for every renewal, not only phase changes.
    #[arg(long)]
    log_heartbeats: bool,
    /// Most connections (event streams included) served at once.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Recent events kept in memory for live subscribers; slower ones read
    /// the store.
    #[arg(long, default_value_t = 8_192)]
    ring_events: usize,
    /// Bridge this legacy coord root into the log (sessions, locks, inbox
    /// files and dispatch orders become events).
    #[arg(long)]
    legacy_root: Option<PathBuf>,
    /// How the bridge sees changes: watch (inotify) or poll.
    #[arg(long, default_value = "watch", value_parser = ["watch", "poll"])]
    legacy_mode: String,
    /// Rescan interval of the bridge when polling.
    #[arg(long, default_value = "2s", value_parser = duration)]
    legacy_interval: Duration,
    /// Lease of bridged sessions (renewed by their heartbeats).
    #[arg(long, default_value = "24h", value_parser = duration)]
    legacy_ttl: Duration,
    /// Keep DIR a legacy-layout copy of the view (may be the --legacy-root:
    /// bridged objects are left to their own writers, so nothing feeds back).
    #[arg(long)]
    export_legacy: Option<PathBuf>,
    /// Forward the reports of top-level sessions (whose parent is not a
    /// session here) to the daemon on this socket, fire-and-forget.
    #[arg(long)]
    parent_socket: Option<PathBuf>,
    /// Lifecycle: a session with no activity for this long is idle.
    #[arg(long, default_value = "60s", value_parser = duration)]
    idle_after: Duration,
    /// Lifecycle: a session without a heartbeat for this percentage of its
    /// lease is stale.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    stale_after_pct: u8,
    /// Lifecycle: probe tmux sessions and activity files this often (only
    /// while such sessions exist).
    #[arg(long, default_value = "5s", value_parser = duration)]
    probe_interval: Duration,
    /// tmux server socket name for liveness probes (tmux -L NAME).
    #[arg(long)]
    tmux_socket: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SessionCmd {
    /// Register a session; prints its token.
    Register {
        /// Session id (A-Z a-z 0-9 . _ - : @, at most 128 bytes).
        #[arg(long = "id")]
        id: String,
        #[command(flatten)]
        about: SessionAbout,
        /// Process to watch: its exit ends the session, and it is signalled
        /// if it outlives the lease (see --on-expiry).
        #[arg(long)]
        pid: Option<u32>,
        /// Lease, e.g. 30s: the session ends unless renewed within it.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Print only `export COORD_SESSION=… COORD_SESSION_TOKEN=…`, for
        /// `eval "$(coord session register --id ID --env)"`.
        #[arg(long, conflicts_with = "json")]
        env: bool,
    },
    /// Report to the parent session: turn_ended, errored, shut_down or
    /// scope_sub_delegated.
    Report {
        /// turn_ended | errored | shut_down | scope_sub_delegated
        #[arg(value_parser = ["turn_ended", "errored", "shut_down", "scope_sub_delegated"])]
        kind: String,
        /// For errored: what went wrong.
        #[arg(long)]
        message: Option<String>,
        /// For scope_sub_delegated: the grandchild.
        #[arg(long)]
        sub_session: Option<String>,
        /// For scope_sub_delegated: a pattern it was given (repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// The parent (default: the registered parent).
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Renew the lease (and change the phase).
    Heartbeat {
        /// The new phase (a logged heartbeat); without it the lease is
        /// only renewed.
        #[arg(long)]
        phase: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// End the session.
    Dereg {
        /// Record this exit status.
        #[arg(long)]
        exit_code: Option<i32>,
        /// End another session with the admin token.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// List live sessions with their lease and what they wait for.
    List {
        /// Also list recently ended sessions and how each ended.
        #[arg(long, visible_alias = "all")]
        ended: bool,
    },
    /// Show one session, its lease, its locks and what it waits for.
    Show {
        /// Session id.
        id: String,
    },
    /// Run a command as a session: registers with its pid, exports
    /// COORD_SESSION and COORD_SESSION_TOKEN to it, heartbeats while it
    /// runs, deregisters with its exit status and exits with its code.
    Run(crate::run::RunArgs),
}

#[derive(Subcommand, Debug)]
enum LockCmd {
    /// Take a lock (exit 4 if held, 5 if --wait ran out); prints its
    /// fencing token.
    Acquire {
        #[command(flatten)]
        target: Target,
        /// Wait in the FIFO queue this long, e.g. 10s.
        #[arg(long, value_parser = duration)]
        wait: Option<Duration>,
        /// Release automatically this long after the grant.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Shared instead of exclusive.
        #[arg(long)]
        shared: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Release a lock.
    Release {
        #[command(flatten)]
        target: Target,
        /// Release with the admin token: the --session's hold, or without
        /// --session every hold of the resource.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Hand part of your scope (a pattern within one of your exclusive
    /// locks) to a child session; it returns when the child ends.
    Delegate {
        #[command(flatten)]
        target: Target,
        /// The child receiving it.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// List held and awaited locks with their fencing tokens.
    List,
    /// Ask whether a fencing token is still the current grant of a lock
    /// (exit 0 if it is, 4 if not): refuse a holder whose lock has moved on.
    Check {
        #[command(flatten)]
        target: Target,
        /// The fencing token the holder presented (from `lock acquire`).
        #[arg(long)]
        token: u64,
    },
}

/// The resource a lock command is about: given as text, or as a file.
#[derive(Args, Debug)]
struct Target {
    /// The resource: a name, a path (./a//b is a/b) or a pattern (src/**).
    #[arg(required_unless_present = "path", conflicts_with = "path")]
    resource: Option<String>,
    /// Name the resource after FILE, relative to its git work tree, so
    /// every checkout of a repository takes the same lock for it.
    #[arg(long, value_name = "FILE")]
    path: Option<PathBuf>,
}

impl Target {
    fn resource(&self) -> Result<String> {
        match (&self.resource, &self.path) {
            (_, Some(p)) => crate::paths::resource_for(p),
            (Some(r), None) => Ok(coord_proto::ids::normalize_resource(r)),
            (None, None) => Err(anyhow!(Exit(
                code::USAGE,
                "name a RESOURCE or --path FILE".into()
            ))),
        }
    }
}

/// What a session says about itself at registration.
#[derive(Args, Debug, Clone)]
pub struct SessionAbout {
    /// Its role (worker, reviewer, …), free text.
    #[arg(long, default_value = "")]
    pub role: String,
    /// The task it works on (a ticket id, …), free text.
    #[arg(long, default_value = "")]
    pub task: String,
    /// Its initial phase (default: starting; `session run`: running).
    #[arg(long)]
    pub phase: Option<String>,
    /// Parent session (it enters the parent's pod).
    #[arg(long)]
    pub parent: Option<String>,
    /// Free JSON shown to others.
    #[arg(long)]
    pub blob: Option<String>,
    /// The tmux session the agent runs in (its end ends the session).
    #[arg(long)]
    pub tmux: Option<String>,
    /// A file whose mtime is the agent's activity.
    #[arg(long)]
    pub activity_file: Option<PathBuf>,
    /// The agent's JSONL transcript (tells working from waiting for input).
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// What to do to the process if it still runs when the lease expires:
    /// signal (SIGTERM, then SIGKILL after --kill-grace) or never.
    #[arg(long, value_parser = ["signal", "never"])]
    pub on_expiry: Option<String>,
    /// Time from that SIGTERM to SIGKILL [default: 5s].
    #[arg(long, value_parser = duration)]
    pub kill_grace: Option<Duration>,
}

impl SessionAbout {
    /// Fills the descriptive fields of a register request.
    pub fn fill(&self, req: &mut RegisterRequest) -> Result<()> {
        let path = |p: &Option<PathBuf>| -> Result<Option<String>> {
            p.as_ref()
                .map(|p| {
                    std::path::absolute(p)
                        .map(|p| p.to_string_lossy().into_owned())
                        .with_context(|| format!("resolving {}", p.display()))
                })
                .transpose()
        };
        req.role = self.role.clone();
        req.task = self.task.clone();
        if self.phase.is_some() {
            req.phase = self.phase.clone();
        }
        req.parent_session = self.parent.clone();
        req.blob = parse_json_arg("blob", self.blob.clone())?;
        req.tmux = self.tmux.clone();
        req.activity_file = path(&self.activity_file)?;
        req.transcript = path(&self.transcript)?;
        req.on_expiry = self
            .on_expiry
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow!(Exit(code::USAGE, format!("--on-expiry {e}"))))?;
        req.kill_grace_ms = self.kill_grace.map(ms);
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
enum InboxCmd {
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
        /// With --follow: when the daemon goes away, wait for it and go on
        /// after the last message seen.
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

#[derive(Subcommand, Debug)]
enum DispatchCmd {
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
        #[arg(long, value_parser = ["issued", "acked"])]
        state: Option<String>,
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

#[derive(Args, Debug)]
struct EventsArgs {
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
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
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

impl Cli {
    /// True for `coord daemon`.
    pub fn is_daemon(&self) -> bool {
        matches!(self.cmd, Cmd::Daemon(_))
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 500ms, 10s, 2m)"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(coord_proto::MAX_DURATION_MS)) as u64
}

fn parse_json_arg(name: &str, v: Option<String>) -> Result<Option<serde_json::Value>> {
    v.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| anyhow!(Exit(code::INVALID, format!("--{name} is not JSON: {e}"))))
    })
    .transpose()
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(coord_daemon::default_socket_path);
    let json = cli.json;
    let base = Client::new(socket.clone());
    let client = |a: &Acting| base.clone().with_token(a.token.clone());
    match cli.cmd {
        Cmd::Daemon(args) => daemon(socket, args, json).await,
        Cmd::Status => {
            let s = base.status().await?;
            if json {
                output::json(&s)?;
            } else {
                output::line(&format!(
                    "coord {} (protocol {}) pid {} up {}\nsocket  {}\nstore   {} ({} bytes, sync {})\nlog     seq {}..={}  sessions {}  locks {}  subscribers {}",
                    s.version,
                    s.protocol,
                    s.pid,
                    humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000)),
                    s.socket,
                    s.store.path,
                    s.store.bytes,
                    s.store.sync,
                    s.oldest_seq,
                    s.head_seq,
                    s.sessions,
                    s.locks,
                    s.subscribers
                ))?;
                for (k, n) in &s.events_by_kind {
                    output::line(&format!("  {k:<18} {n}"))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Session(cmd) => session(&base, cmd, json, &socket).await,
        Cmd::Lock(cmd) => lock(&base, cmd, json).await,
        Cmd::Send {
            to,
            body,
            kind,
            acting,
        } => {
            let body = if body == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading the body from standard input")?;
                s
            } else {
                body
            };
            let a = client(&acting)
                .send_message(
                    &to,
                    &SendRequest {
                        from_session: acting.session.clone(),
                        kind: Some(kind),
                        body,
                        ..Default::default()
                    },
                )
                .await?;
            if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!(
                    "sent {} to {} (seq {})",
                    a.body.msg_id, to, a.body.seq
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inbox(cmd) => inbox(&base, cmd, json).await,
        Cmd::Dispatch(cmd) => dispatch(&base, cmd, json).await,
        Cmd::Events(args) => events(&base, args, json).await,
        Cmd::Sentinel(args) => sentinel(base, args).await,
        Cmd::Export { legacy_root } => {
            let root = std::path::absolute(&legacy_root)
                .with_context(|| format!("resolving {}", legacy_root.display()))?;
            let r = base
                .clone()
                .with_admin_token(Some(admin_token(&socket)?))
                .export_legacy(&root)
                .await?;
            if json {
                output::json(&r)?;
            } else {
                output::line(&format!(
                    "exported to {}: {} written, {} removed, {} unchanged",
                    root.display(),
                    r["written"],
                    r["removed"],
                    r["unchanged"]
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Publish {
            kind,
            payload,
            resource,
            acting,
        } => {
            let a = client(&acting)
                .publish(&CustomEventRequest {
                    tx_kind: kind,
                    payload: parse_json_arg("payload", payload)?,
                    session_id: acting.session.clone(),
                    resource,
                    ..Default::default()
                })
                .await?;
            print_write(json, &a.body, "published")
        }
    }
}

fn print_write(json: bool, w: &WriteResponse, what: &str) -> Result<ExitCode> {
    if json {
        output::json(w)?;
    } else {
        match w.seq {
            Some(seq) => output::line(&format!("{what} (seq {seq})"))?,
            None => output::line(&format!("{what} (nothing to append)"))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn daemon(socket: PathBuf, args: DaemonArgs, json: bool) -> Result<ExitCode> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if json {
        // One JSON object per log line, for log shippers.
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let store = args.store.unwrap_or_else(coord_daemon::default_store_path);
    let mut config = coord_daemon::Config::new(store, socket);
    config.sync = args
        .sync
        .parse()
        .map_err(|e: String| anyhow!(Exit(code::INVALID, e)))?;
    config.retention = coord_store::Retention {
        keep_events: args.keep_events,
        keep_ms: args.keep_days.map(|d| d.saturating_mul(86_400_000)),
    };
    config.snapshot_every = args.snapshot_every;
    config.log_heartbeats = args.log_heartbeats;
    config.max_connections = args.max_connections;
    config.ring_capacity = args.ring_events.max(1);
    config.export_legacy = args.export_legacy;
    config.parent_socket = args.parent_socket;
    config.lifecycle.thresholds = coord_daemon::Thresholds {
        idle_after_ms: ms(args.idle_after).max(1),
        stale_after_pct: args.stale_after_pct,
        probe_interval_ms: ms(args.probe_interval).max(1),
    };
    config.lifecycle.runtime = std::sync::Arc::new(coord_daemon::probes::HostRuntime {
        tmux_socket: args.tmux_socket,
    });
    if let Some(root) = args.legacy_root {
        config.legacy = Some(coord_daemon::BridgeConfig {
            root,
            mode: args
                .legacy_mode
                .parse()
                .map_err(|e: String| anyhow!(Exit(code::INVALID, e)))?,
            poll_interval: args.legacy_interval,
            ttl_ms: ms(args.legacy_ttl).max(coord_proto::MIN_SESSION_TTL_MS),
        });
    }
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    coord_daemon::run(config, shutdown)
        .await
        .context("the daemon could not start")?;
    Ok(ExitCode::SUCCESS)
}

/// A fresh token: 52 characters from two ULIDs' randomness.
pub fn new_token() -> String {
    format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new()).to_lowercase()
}

async fn session(
    base: &Client,
    cmd: SessionCmd,
    json: bool,
    socket: &std::path::Path,
) -> Result<ExitCode> {
    match cmd {
        SessionCmd::Register {
            id,
            about,
            pid,
            ttl,
            env,
        } => {
            let mut req = RegisterRequest {
                session_id: id,
                pid,
                ttl_ms: ttl.map(ms),
                token: Some(new_token()),
                ..Default::default()
            };
            about.fill(&mut req)?;
            let a = base.register(&req).await?;
            if env {
                // Ids and tokens are drawn from shell-safe characters.
                output::line(&format!(
                    "export COORD_SESSION={} COORD_SESSION_TOKEN={}",
                    a.body.session_id, a.body.token
                ))?;
            } else if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!(
                    "registered {} (seq {}, lease {} ms)\nexport COORD_SESSION={} COORD_SESSION_TOKEN={}",
                    a.body.session_id, a.body.seq, a.body.ttl_ms, a.body.session_id, a.body.token
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Report {
            kind,
            message,
            sub_session,
            scope,
            parent,
            acting,
        } => {
            let id = acting.id()?;
            let need = |what: &str| anyhow!(Exit(code::INVALID, format!("{kind} needs {what}")));
            let report = match kind.as_str() {
                "turn_ended" => Report::TurnEnded,
                "shut_down" => Report::ShutDown,
                "errored" => Report::Errored {
                    message: message.ok_or_else(|| need("--message"))?,
                },
                _ => {
                    if scope.is_empty() {
                        return Err(need("--scope PATTERN"));
                    }
                    Report::ScopeSubDelegated {
                        sub_session: sub_session.ok_or_else(|| need("--sub-session"))?,
                        scope,
                    }
                }
            };
            let a = base
                .clone()
                .with_token(acting.token)
                .report(
                    &id,
                    &ReportRequest {
                        parent_session: parent,
                        report,
                        tx_id: Some(ulid::Ulid::new()),
                        ts: None,
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("{id} reported {kind}"))
        }
        SessionCmd::Heartbeat { phase, acting } => {
            let id = acting.id()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .heartbeat(
                    &id,
                    &HeartbeatRequest {
                        phase,
                        ..Default::default()
                    },
                )
                .await?;
            if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!("lease of {id} renewed for {} ms", a.body.ttl_ms))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Dereg {
            exit_code,
            force,
            acting,
        } => {
            let id = acting.id()?;
            let mut c = base.clone().with_token(acting.token);
            if force {
                c = c.with_admin_token(Some(admin_token(socket)?));
            }
            let a = c
                .dereg(
                    &id,
                    &DeregRequest {
                        exit_code,
                        force,
                        ..Default::default()
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("deregistered {id}"))
        }
        SessionCmd::List { ended } => {
            let r = if ended {
                base.sessions_with_ended().await?
            } else {
                base.sessions().await?
            };
            if json {
                output::json(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            let now = coord_proto::Timestamp::now();
            output::table(
                &[
                    "SESSION",
                    "STATE",
                    "ROLE",
                    "TASK",
                    "PHASE",
                    "PID",
                    "PARENT",
                    "RENEWED",
                    "EXPIRES",
                    "WAITING ON",
                ],
                &r.sessions
                    .iter()
                    .map(|s| {
                        let (renewed, expires) = match &s.lease {
                            Some(l) => (
                                format!("{} ago", output::span(now, l.renewed_at)),
                                format!("in {}", output::span(l.expires_at, now)),
                            ),
                            None => ("-".into(), "-".into()),
                        };
                        let waiting = if s.waiting_on.is_empty() {
                            "-".to_string()
                        } else {
                            s.waiting_on
                                .iter()
                                .map(|w| {
                                    format!(
                                        "{}, {} (#{} in queue)",
                                        w.resource,
                                        output::span(now, w.since),
                                        w.position
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        vec![
                            s.session_id.clone(),
                            if s.waiting_on.is_empty() {
                                s.state.as_str().to_string()
                            } else {
                                format!("{} (waiting)", s.state.as_str())
                            },
                            s.role.clone(),
                            s.task.clone(),
                            s.phase.clone(),
                            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            s.parent_session.clone().unwrap_or_else(|| "-".into()),
                            renewed,
                            expires,
                            waiting,
                        ]
                    })
                    .collect::<Vec<_>>(),
            )?;
            if ended {
                output::line("")?;
                output::table(
                    &["ENDED SESSION", "ROLE", "TASK", "PID", "ENDED", "HOW"],
                    &r.ended
                        .iter()
                        .rev()
                        .map(|e| {
                            vec![
                                e.session_id.clone(),
                                e.role.clone(),
                                e.task.clone(),
                                e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                                format!("{} ago", output::span(now, e.ended_at)),
                                output::how_ended(e),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Show { id } => {
            let s = base.session(&id).await?;
            if json {
                output::json(&s)?;
            } else {
                output::line(&serde_json::to_string_pretty(&s)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Run(args) => crate::run::run(base, args).await,
    }
}

fn admin_token(socket: &std::path::Path) -> Result<String> {
    let mut p = socket.as_os_str().to_owned();
    p.push(".admin-token");
    let p = PathBuf::from(p);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .with_context(|| format!("--force needs the admin token in {}", p.display()))
}

async fn lock(base: &Client, cmd: LockCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        LockCmd::Acquire {
            target,
            wait,
            ttl,
            shared,
            acting,
        } => {
            let id = acting.id()?;
            let resource = target.resource()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .acquire(&AcquireRequest {
                    session_id: id.clone(),
                    resource,
                    mode: if shared {
                        LockMode::Shared
                    } else {
                        LockMode::Exclusive
                    },
                    ttl_ms: ttl.map(ms),
                    wait_ms: wait.map(ms).unwrap_or(0),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let hint = match e.code() {
                        Some(coord_proto::ErrorCode::LockHeld) if wait.is_none() => {
                            Some("queue for it with --wait DURATION (e.g. --wait 30s)")
                        }
                        Some(coord_proto::ErrorCode::Timeout) => {
                            Some("the lock is still held; wait longer, or see who holds it with `coord lock list`")
                        }
                        _ => None,
                    };
                    match hint {
                        Some(h) => anyhow!(output::Hinted(e, h)),
                        None => anyhow!(e),
                    }
                })?;
            if json {
                output::json(&a.body)?;
            } else {
                let b = &a.body;
                output::line(&if b.already_held {
                    format!(
                        "{id} already holds {} ({}, fencing token {})",
                        b.resource,
                        b.mode.as_str(),
                        b.fencing_token
                    )
                } else {
                    format!(
                        "{id} holds {} ({}, fencing token {}, waited {} ms)",
                        b.resource,
                        b.mode.as_str(),
                        b.fencing_token,
                        b.waited_ms
                    )
                })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LockCmd::Check { target, token } => {
            let resource = target.resource()?;
            let r = base.check_lock(&resource, token).await?;
            if json {
                output::json(&r)?;
            } else if r.current {
                output::line(&format!(
                    "fencing token {token} is current for {}",
                    r.resource
                ))?;
            } else if r.holders.is_empty() {
                output::line(&format!(
                    "fencing token {token} is stale: nobody holds {} now",
                    r.resource
                ))?;
            } else {
                output::line(&format!(
                    "fencing token {token} is stale: {} is held by {}",
                    r.resource,
                    r.holders
                        .iter()
                        .map(|h| format!("{} (token {})", h.session_id, h.fencing_token))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
            }
            Ok(if r.current {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(code::CONFLICT)
            })
        }
        LockCmd::Delegate { target, to, acting } => {
            let id = acting.id()?;
            let resource = target.resource()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .delegate(&DelegateRequest {
                    session_id: id.clone(),
                    resource: resource.clone(),
                    to_session: to.clone(),
                    tx_id: Some(ulid::Ulid::new()),
                    ts: None,
                })
                .await?;
            print_write(json, &a.body, &format!("{id} delegated {resource} to {to}"))
        }
        LockCmd::Release {
            target,
            force,
            acting,
        } => {
            let resource = target.resource()?;
            if force && acting.session.is_none() {
                return force_release_all(base, &resource, json).await;
            }
            let id = acting.id()?;
            let mut c = base.clone().with_token(acting.token);
            if force {
                c = c.with_admin_token(Some(admin_token(base.socket())?));
            }
            let a = c
                .release(&ReleaseRequest {
                    session_id: id.clone(),
                    resource: resource.clone(),
                    force,
                    ..Default::default()
                })
                .await?;
            print_write(json, &a.body, &format!("{id} released {resource}"))
        }
        LockCmd::List => {
            let r = base.locks().await?;
            let now = coord_proto::Timestamp::now();
            output::json_or_table(
                json,
                &r,
                &["RESOURCE", "MODE", "HOLDERS (FENCING TOKEN)", "WAITERS"],
                || {
                    r.locks
                        .iter()
                        .map(|l| {
                            let holders = l
                                .holders
                                .iter()
                                .map(|h| match &h.delegated_from {
                                    Some(p) => {
                                        format!("{} ({}, from {p})", h.session_id, h.acquired_seq)
                                    }
                                    None => format!("{} ({})", h.session_id, h.acquired_seq),
                                })
                                .collect::<Vec<_>>();
                            let waiters = l
                                .waiters
                                .iter()
                                .map(|w| {
                                    format!("{} ({})", w.session_id, output::span(now, w.since_at))
                                })
                                .collect::<Vec<_>>();
                            vec![
                                l.resource.clone(),
                                l.mode.as_str().to_string(),
                                if holders.is_empty() {
                                    "-".into()
                                } else {
                                    holders.join(", ")
                                },
                                if waiters.is_empty() {
                                    "-".into()
                                } else {
                                    waiters.join(", ")
                                },
                            ]
                        })
                        .collect()
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lock release --force RESOURCE` without `--session`: every hold of the
/// resource is released with the admin token.
async fn force_release_all(base: &Client, resource: &str, json: bool) -> Result<ExitCode> {
    let admin = base
        .clone()
        .with_admin_token(Some(admin_token(base.socket())?));
    let locks = base.locks().await?;
    let holders: Vec<String> = locks
        .locks
        .iter()
        .filter(|l| l.resource == resource)
        .flat_map(|l| l.holders.iter().map(|h| h.session_id.clone()))
        .collect();
    if holders.is_empty() {
        return Err(anyhow!(Exit(
            code::CONFLICT,
            format!("lock_not_held: nobody holds {resource}")
        )));
    }
    let mut answers = Vec::new();
    for h in &holders {
        let a = admin
            .release(&ReleaseRequest {
                session_id: h.clone(),
                resource: resource.to_string(),
                force: true,
                ..Default::default()
            })
            .await?;
        if !json {
            print_write(false, &a.body, &format!("released {resource} held by {h}"))?;
        }
        answers.push(serde_json::json!({"session_id": h, "seq": a.body.seq}));
    }
    if json {
        output::json(&serde_json::json!({ "resource": resource, "released": answers }))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn inbox(base: &Client, cmd: InboxCmd, json: bool) -> Result<ExitCode> {
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
                    output::line(&format!(
                        "[{}] {} from {}: {}",
                        m.msg_id,
                        m.kind,
                        m.from_session.as_deref().unwrap_or("-"),
                        m.body.as_deref().unwrap_or("")
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
            let listed = c.inbox(&id).await?;
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
                format!("kinds=inbox.deliver&session={}", enc(&id)),
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
async fn take_message(
    c: &Client,
    id: &str,
    msg_id: &str,
    ack: bool,
    reconnect: bool,
    print: &impl Fn(&coord_proto::view::Message) -> Result<()>,
) -> Result<()> {
    let lost = |e: &coord_client::ClientError| {
        reconnect
            && matches!(
                e,
                coord_client::ClientError::Connect { .. } | coord_client::ClientError::Transport(_)
            )
    };
    let gone =
        |e: &coord_client::ClientError| e.code() == Some(coord_proto::ErrorCode::MessageNotFound);
    let m = loop {
        match c.read_message(id, msg_id).await {
            Ok(m) => break m,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) if lost(&e) => tokio::time::sleep(Duration::from_millis(200)).await,
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
            Err(e) if lost(&e) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn dispatch(base: &Client, cmd: DispatchCmd, json: bool) -> Result<ExitCode> {
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
            if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!(
                    "issued {} to {assignee} (seq {})",
                    a.body.order_id, a.body.seq
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DispatchCmd::List { assignee, state } => {
            let r = base.orders(assignee.as_deref(), state.as_deref()).await?;
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

async fn events(base: &Client, args: EventsArgs, json: bool) -> Result<ExitCode> {
    let text = args.format == "text" && !json;
    let since: crate::follow::Since = args
        .since
        .parse()
        .map_err(|e: String| anyhow!(Exit(code::USAGE, format!("--since {e}"))))?;
    let reconnect = if args.no_reconnect {
        false
    } else {
        args.reconnect || std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let mut q = Vec::new();
    if !args.kinds.is_empty() {
        q.push(format!("kinds={}", enc(&args.kinds.join(","))));
    }
    if let Some(s) = &args.session {
        q.push(format!("session={}", enc(s)));
    }
    if let Some(r) = &args.resource {
        q.push(format!("resource={}", enc(r)));
    }
    let mut stream = crate::follow::Follower::new(base.clone(), since, q.join("&"))
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

/// The event-manager cursor file of the log `log_id`: one per log, so
/// sentinels of two daemons never share a cursor.
fn default_state_file(log_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("coord").join(format!("sentinel-{log_id}.cursor"))
}

async fn sentinel(base: Client, args: SentinelArgs) -> Result<ExitCode> {
    use coord_sentinel::sentinel::run;
    use coord_sentinel::{EventManagerSource, FsPollSource, FsWatchSource, Sink, SinkSpec};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let spec: SinkSpec = args
        .sink
        .parse()
        .map_err(|e: String| anyhow!(Exit(code::INVALID, e)))?;
    let mut sink = Sink::open(&spec)
        .await
        .with_context(|| format!("opening the sink {}", args.sink))?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let root = || {
        let root = args.coord_root.clone().ok_or_else(|| {
            anyhow!(Exit(
                code::USAGE,
                format!("--source {} needs --coord-root DIR", args.source)
            ))
        })?;
        if !root.is_dir() {
            eprintln!(
                "coord sentinel: warning: --coord-root {} does not exist or is not a directory; it reads as empty until it appears",
                root.display()
            );
        }
        Ok::<_, anyhow::Error>(root)
    };
    match args.source.as_str() {
        "fs-watch" => {
            let mut src = FsWatchSource::new(root()?)
                .with_poll_interval(args.interval.unwrap_or(Duration::from_secs(2)));
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            run(&mut src, &mut sink, Duration::ZERO, &args.kinds, shutdown).await?;
        }
        "fs-poll" => {
            let mut src = FsPollSource::new(root()?);
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            let interval = args.interval.unwrap_or(Duration::from_secs(2));
            run(&mut src, &mut sink, interval, &args.kinds, shutdown).await?;
        }
        _ => {
            let log_id = base.status().await?.log_id;
            let state = args
                .state_file
                .unwrap_or_else(|| default_state_file(&log_id));
            eprintln!(
                "coord sentinel: following log {log_id} at {}; cursor in {}",
                base.socket().display(),
                state.display()
            );
            let kinds: Vec<&str> = args.kinds.iter().map(String::as_str).collect();
            let mut src = EventManagerSource::new(base, &state)?
                .with_log_id(&log_id)
                .map_err(|e| anyhow!(Exit(code::COMPACTED, e.to_string())))?;
            if !kinds.is_empty() {
                src = src.with_kinds(&kinds);
            }
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            run(&mut src, &mut sink, Duration::ZERO, &args.kinds, shutdown).await?;
            // Everything returned was handled: remember it.
            src.save()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and flag of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "coord", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
