//! Arguments shared by several subcommands (acting for a session, naming
//! a lock, describing a session at registration) and the small parsers
//! behind them; plus the admin token and the shutdown signal, each read in
//! one place.

use crate::output::{code, Exit};
use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use coord_proto::api::RegisterRequest;
use std::path::PathBuf;
use std::time::Duration;

/// Acting for a session: its id and token (set by `coord session run`).
#[derive(Args, Debug, Clone)]
pub(crate) struct Acting {
    /// The session to act for.
    #[arg(long, env = "COORD_SESSION")]
    pub(crate) session: Option<String>,
    /// Its token.
    #[arg(long, env = "COORD_SESSION_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl Acting {
    pub(crate) fn id(&self) -> Result<String> {
        self.session.clone().ok_or_else(|| {
            anyhow!(Exit(
                code::USAGE,
                "no session: pass --session ID or run inside `coord session run` (COORD_SESSION)"
                    .into()
            ))
        })
    }
}

/// The resource a lock command is about: given as text, or as a file.
#[derive(Args, Debug)]
pub(crate) struct Target {
    /// The resource: a name, a path (./a//b is a/b) or a pattern (src/**).
    /// Taken as text: `src/a.rs` and `/repo/src/a.rs` are two different
    /// locks; name files with --path so every agent agrees.
    #[arg(required_unless_present = "path", conflicts_with = "path")]
    pub(crate) resource: Option<String>,
    /// Name the resource after FILE, relative to its git work tree, so
    /// every checkout of a repository takes the same lock for it.
    #[arg(long, value_name = "FILE")]
    pub(crate) path: Option<PathBuf>,
}

impl Target {
    pub(crate) fn resource(&self) -> Result<String> {
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
pub(crate) struct SessionAbout {
    /// Its role (worker, reviewer, …), free text.
    #[arg(long, default_value = "")]
    pub(crate) role: String,
    /// The task it works on (a ticket id, …), free text.
    #[arg(long, default_value = "")]
    pub(crate) task: String,
    /// Its initial phase (default: starting; `session run`: running).
    #[arg(long)]
    pub(crate) phase: Option<String>,
    /// Parent session (it enters the parent's pod).
    #[arg(long)]
    pub(crate) parent: Option<String>,
    /// Free JSON shown to others.
    #[arg(long)]
    pub(crate) blob: Option<String>,
    /// The tmux session the agent runs in (its end ends the session).
    #[arg(long)]
    pub(crate) tmux: Option<String>,
    /// A file whose mtime is the agent's activity.
    #[arg(long)]
    pub(crate) activity_file: Option<PathBuf>,
    /// The agent's JSONL transcript (tells working from waiting for input).
    #[arg(long)]
    pub(crate) transcript: Option<PathBuf>,
    /// What to do to the process if it still runs when the lease expires:
    /// signal (SIGTERM, then SIGKILL after --kill-grace) or never.
    #[arg(long, value_enum)]
    pub(crate) on_expiry: Option<OnExpiryArg>,
    /// Time from that SIGTERM to SIGKILL [default: 5s].
    #[arg(long, value_parser = duration)]
    pub(crate) kill_grace: Option<Duration>,
}

impl SessionAbout {
    /// Fills the descriptive fields of a register request.
    pub(crate) fn fill(&self, req: &mut RegisterRequest) -> Result<()> {
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
        req.on_expiry = self.on_expiry.map(Into::into);
        req.kill_grace_ms = self.kill_grace.map(ms);
        Ok(())
    }
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 500ms, 10s, 2m)"))
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(coord_proto::MAX_DURATION_MS)) as u64
}

pub(crate) fn parse_json_arg(name: &str, v: Option<String>) -> Result<Option<serde_json::Value>> {
    v.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| anyhow!(Exit(code::INVALID, format!("--{name} is not JSON: {e}"))))
    })
    .transpose()
}

/// A fresh token: 52 characters from two ULIDs' randomness.
pub(crate) fn new_token() -> String {
    format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new()).to_lowercase()
}

pub(crate) fn admin_token(socket: &std::path::Path) -> Result<String> {
    let p = coord_client::admin_token_path(socket);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .with_context(|| {
            format!(
                "this needs the admin token in {} (written by the daemon for its user)",
                p.display()
            )
        })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that comes
/// early is not lost to the default action.
///
/// # Errors
/// The signal handlers could not be installed.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// `--on-expiry`: what the daemon does to a process that outlives its
/// lease (PROTOCOL §6.3).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum OnExpiryArg {
    /// SIGTERM, then SIGKILL after the kill grace.
    Signal,
    /// Leave it running.
    Never,
}

impl From<OnExpiryArg> for coord_proto::OnExpiry {
    fn from(a: OnExpiryArg) -> Self {
        match a {
            OnExpiryArg::Signal => coord_proto::OnExpiry::Signal,
            OnExpiryArg::Never => coord_proto::OnExpiry::Never,
        }
    }
}

/// `coord events --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One line per event for people.
    Text,
    /// Each event's JSON line as the daemon sent it.
    Json,
}

/// `coord sentinel --source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SourceArg {
    /// Scan a legacy root on a timer.
    FsPoll,
    /// Rescan a legacy root when inotify reports a change.
    FsWatch,
    /// The daemon's log.
    EventManager,
}

impl SourceArg {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SourceArg::FsPoll => "fs-poll",
            SourceArg::FsWatch => "fs-watch",
            SourceArg::EventManager => "event-manager",
        }
    }
}

/// `coord session report KIND`.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum ReportKind {
    /// The child finished a turn.
    TurnEnded,
    /// Something went wrong (needs --message).
    Errored,
    /// The child is done.
    ShutDown,
    /// The child handed scope on (needs --sub-session and --scope).
    ScopeSubDelegated,
}

/// `coord dispatch list --state`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum OrderStateArg {
    /// Issued, not yet taken.
    Issued,
    /// Taken by the assignee.
    Acked,
    /// Its assignee ended with it open: waits for its issuer.
    Orphaned,
}

impl OrderStateArg {
    /// The name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OrderStateArg::Issued => "issued",
            OrderStateArg::Acked => "acked",
            OrderStateArg::Orphaned => "orphaned",
        }
    }
}

/// `coord daemon --sync`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum SyncArg {
    /// WAL with synchronous=NORMAL: survives a crash of the daemon.
    Normal,
    /// fsync every commit: survives a power loss.
    Full,
}

impl From<SyncArg> for coord_store::SyncMode {
    fn from(a: SyncArg) -> Self {
        match a {
            SyncArg::Normal => coord_store::SyncMode::Normal,
            SyncArg::Full => coord_store::SyncMode::Full,
        }
    }
}

/// `coord daemon --legacy-mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LegacyModeArg {
    /// inotify, with a polling fallback.
    Watch,
    /// Rescan on an interval.
    Poll,
}
