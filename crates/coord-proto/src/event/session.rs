//! The payloads of the `session.*` kinds: register, heartbeat, dereg,
//! state, probe errors and reports to a parent.

use super::*;

/// `session.register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRegister {
    /// Free-form role (`worker`, `reviewer`, …).
    #[serde(default)]
    pub role: String,
    /// The task the session works on.
    #[serde(default)]
    pub task: String,
    /// Free JSON the session wants others to see.
    #[serde(default)]
    pub blob: Value,
    /// Initial phase.
    #[serde(default)]
    pub phase: String,
    /// OS process id, watched with a pidfd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The session that spawned this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session: Option<String>,
    /// Lease length, ms.
    pub ttl_ms: u64,
    /// The tmux session the agent runs in (probed by the lifecycle manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmux: Option<String>,
    /// A file the agent touches when it does something (its mtime is
    /// activity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_file: Option<String>,
    /// The agent's JSONL transcript (its last entry tells working from
    /// waiting for input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// What the daemon does to a still-running `pid` when the lease
    /// expires (absent: [`OnExpiry::Signal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<OnExpiry>,
    /// With [`OnExpiry::Signal`]: ms between SIGTERM and SIGKILL (absent:
    /// [`crate::DEFAULT_KILL_GRACE_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// `pid` leads a process group of its own (`coord session run` puts
    /// its agent in one): every end but the session's own dereg signals
    /// the whole group, the agent's children included (PROTOCOL §6.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub process_group: bool,
    /// The daemon the session registered with, on a log shared by many
    /// daemons (NATS JetStream; PROTOCOL §12): only that daemon renews and
    /// expires its lease and watches its pid. Absent on a single-daemon log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// Fields a legacy file carried that coord does not model (kept, not
    /// interpreted).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// What happens to a session's process that is still alive when its lease
/// expires (PROTOCOL §6.3). The session ends either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnExpiry {
    /// SIGTERM at expiry, SIGKILL after the kill grace if it still runs.
    #[default]
    Signal,
    /// Leave it running (the `session.dereg` still says it was alive).
    Never,
}

impl OnExpiry {
    /// Lower-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExpiry::Signal => "signal",
            OnExpiry::Never => "never",
        }
    }
}

impl std::str::FromStr for OnExpiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signal" => Ok(OnExpiry::Signal),
            "never" => Ok(OnExpiry::Never),
            other => Err(format!("{other:?}: expected signal or never")),
        }
    }
}

/// `session.heartbeat`: appended when the phase changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionHeartbeat {
    /// Time of the heartbeat.
    pub last_heartbeat: Timestamp,
    /// The phase after it.
    pub phase: String,
    /// The state the agent itself reported with it (its hook): it holds
    /// until the next report, the process's exit or the lease (PROTOCOL
    /// §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<ReportedState>,
}

/// A state an agent reports of itself, first-hand (a hook): `active`,
/// `idle` or `needs_input`, with what it is about and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportedState {
    /// `active`, `idle` or `needs_input`.
    pub state: LifeState,
    /// What it is about: the tool and its path or command, the question
    /// (at most 512 bytes of text).
    pub reason: String,
    /// The evidence: which agent and hook said so
    /// (`claude:PermissionRequest`).
    pub source: String,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeregReason {
    /// The session asked.
    Explicit,
    /// Its lease ran out.
    Expired,
    /// Its process exited (pidfd).
    ProcessExited,
    /// Its legacy session file disappeared.
    Removed,
    /// An admin forced it.
    Forced,
    /// Its runtime (a tmux session) is gone, as the lifecycle manager found.
    RuntimeGone,
    /// The daemon it registered with stopped renewing its daemon lease
    /// (killed, machine lost, partitioned away); another daemon of the
    /// same log ended it (PROTOCOL §12).
    DaemonLost,
}

/// `session.dereg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDereg {
    /// Why the session ended.
    pub reason: DeregReason,
    /// Exit status of its process, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// For an expiry: the registered process was still running when the
    /// lease ran out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub process_alive: bool,
    /// The signal the daemon sends that process (`SIGTERM`); absent when it
    /// sends none (no live process, or `on_expiry: never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// With `signal`: SIGKILL follows after this many ms if the process
    /// still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_after_ms: Option<u64>,
    /// The session's process group (registered `process_group`) is sent
    /// SIGTERM by the daemon that watches it, and SIGKILL this many ms
    /// later if any member still runs. Absent for the session's own
    /// dereg and for sessions without a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_kill_after_ms: Option<u64>,
}

/// `session.state` (written by the lifecycle manager): one transition of
/// a session's [`LifeState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// State before.
    pub from: LifeState,
    /// State after.
    pub to: LifeState,
    /// Why it changed (`heartbeat`, `no activity for 120000 ms`, …).
    pub reason: String,
}

/// Where a session stands in its life (PROTOCOL §6.1). The thresholds
/// between them are daemon settings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LifeState {
    /// Registered; nothing seen from it yet.
    #[default]
    Starting,
    /// Did something within the idle threshold.
    Active,
    /// Nothing seen for the idle threshold.
    Idle,
    /// Its agent waits for a human (last transcript entry).
    NeedsInput,
    /// No heartbeat for the stale threshold; its lease still runs.
    Stale,
    /// Its process or runtime is gone; the dereg follows in the same commit.
    Dead,
}

impl LifeState {
    /// Lower-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LifeState::Starting => "starting",
            LifeState::Active => "active",
            LifeState::Idle => "idle",
            LifeState::NeedsInput => "needs_input",
            LifeState::Stale => "stale",
            LifeState::Dead => "dead",
        }
    }
}

/// `session.probe_error`: a lifecycle probe failed for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionProbeError {
    /// Which probe (`tmux`, `process`, `activity_file`, `transcript`).
    pub probe: String,
    /// What went wrong.
    pub message: String,
}

/// What a child session tells its parent (`session.report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Report {
    /// The child finished a turn and waits for its next instruction.
    TurnEnded,
    /// The child hit an error.
    Errored {
        /// What went wrong.
        message: String,
    },
    /// The child ended (its scope returns to the parent).
    ShutDown,
    /// The child delegated part of its scope to a session of its own.
    ScopeSubDelegated {
        /// The grandchild.
        sub_session: String,
        /// The patterns it was given.
        scope: Vec<String>,
    },
}

impl Report {
    /// The report kind as on the wire (`turn_ended`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Report::TurnEnded => "turn_ended",
            Report::Errored { .. } => "errored",
            Report::ShutDown => "shut_down",
            Report::ScopeSubDelegated { .. } => "scope_sub_delegated",
        }
    }
}

/// `session.report`: a child (the event's `session_id`) reports to its
/// parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The parent the report is for.
    pub parent_session: String,
    /// What happened.
    #[serde(flatten)]
    pub report: Report,
}
