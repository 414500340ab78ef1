//! Commands (what writers ask for), their answers and their rejections.

use coord_proto::Draft;
use coord_proto::{
    DeregReason, ErrorBody, ErrorCode, LifeState, LockMode, OnExpiry, Report, Timestamp,
    WaitCancelReason,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One request to change the state. Auth has happened before a command is
/// built; the state machine only checks what the view can decide.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Register a new session.
    Register {
        /// Id.
        session_id: String,
        /// Role.
        role: String,
        /// Task.
        task: String,
        /// Free JSON.
        blob: Value,
        /// Initial phase.
        phase: String,
        /// Process to watch.
        pid: Option<u32>,
        /// Parent session.
        parent_session: Option<String>,
        /// Lease, ms.
        ttl_ms: u64,
        /// What the lifecycle manager may probe.
        probes: Probes,
        /// What happens to its live process when the lease expires.
        expiry: ExpiryPolicy,
        /// Legacy fields carried along (see the payload's `extra`).
        extra: Map<String, Value>,
    },
    /// Renew a lease; logged when the phase changes (or always with
    /// `log_always`).
    Heartbeat {
        /// Id.
        session_id: String,
        /// New phase.
        phase: Option<String>,
        /// Time of the heartbeat.
        at: Timestamp,
        /// Log even a bare renewal.
        log_always: bool,
        /// The state the agent reports of itself (always logged).
        reported: Option<coord_proto::ReportedState>,
    },
    /// End a session: release its locks, cancel its waits, drop its inbox.
    Dereg {
        /// Id.
        session_id: String,
        /// Why (`explicit`, `forced`, `removed`).
        reason: DeregReason,
        /// Exit status of its process.
        exit_code: Option<i32>,
    },
    /// A lease deadline passed (sent by the daemon's timer).
    ExpireLease {
        /// Id.
        session_id: String,
        /// Which registration the timer was for.
        registered_seq: u64,
        /// The daemon saw the registered process still running (its pidfd
        /// answered): the dereg then says so and, unless the session chose
        /// `on_expiry: never`, names the signal the daemon sends it.
        process_alive: bool,
    },
    /// A watched process exited (sent by the pidfd watcher).
    ProcessExited {
        /// Id.
        session_id: String,
        /// Which registration the watch was for.
        registered_seq: u64,
        /// Exit status, when known.
        exit_code: Option<i32>,
    },
    /// A lifecycle transition (sent by the lifecycle manager). Changes
    /// nothing unless the session is still the registration the manager
    /// looked at and still in `from`.
    SetState {
        /// Id.
        session_id: String,
        /// Which registration the manager observed.
        registered_seq: u64,
        /// The state the manager saw.
        from: LifeState,
        /// The new state (never `dead`: see [`Command::RuntimeGone`]).
        to: LifeState,
        /// Why.
        reason: String,
    },
    /// A lifecycle probe failed for one session.
    ProbeError {
        /// Id.
        session_id: String,
        /// Which registration the probe was for.
        registered_seq: u64,
        /// Which probe (`tmux`, `transcript`, …).
        probe: String,
        /// What went wrong.
        message: String,
    },
    /// The session's runtime is gone (a tmux session ended): it is dead
    /// and ends like an expired one.
    RuntimeGone {
        /// Id.
        session_id: String,
        /// Which registration the probe was for.
        registered_seq: u64,
        /// What the probe saw.
        reason: String,
    },
    /// A child reports to its parent (`session.report`).
    Report {
        /// The reporting child (may be a session of another daemon).
        session_id: String,
        /// The parent; defaults to the child's registered parent.
        parent_session: Option<String>,
        /// What happened.
        report: Report,
    },
    /// A parent hands part of its scope to a child (`lock.delegate`).
    Delegate {
        /// The parent.
        session_id: String,
        /// The pattern handed over.
        resource: String,
        /// The child.
        to_session: String,
    },
    /// Take a lock, or queue for it with `wait`.
    Acquire {
        /// Acting session.
        session_id: String,
        /// Resource.
        resource: String,
        /// Mode.
        mode: LockMode,
        /// Expiry after the grant, ms.
        ttl_ms: Option<u64>,
        /// Queue instead of failing.
        wait: bool,
        /// Legacy fields carried along (see the payload's `extra`).
        extra: Map<String, Value>,
    },
    /// Let go of a lock (`force`: on behalf of an admin).
    Release {
        /// The holder.
        session_id: String,
        /// Resource.
        resource: String,
        /// Admin release.
        force: bool,
    },
    /// A lock TTL passed (sent by the daemon's timer).
    ExpireLock {
        /// Resource.
        resource: String,
        /// The holder the timer was for.
        session_id: String,
        /// Which grant the timer was for.
        acquired_seq: u64,
    },
    /// Leave a lock's queue.
    CancelWait {
        /// Resource.
        resource: String,
        /// Waiting session.
        session_id: String,
        /// Why.
        reason: WaitCancelReason,
    },
    /// Cancel every wait of the sessions of one daemon (`Some(id)`), or
    /// every wait (`None`): a daemon starting cancels its own sessions'
    /// waits, since no waiter survives a restart.
    CancelAllWaits {
        /// Only sessions registered with this daemon.
        daemon: Option<String>,
    },
    /// The daemon a session registered with is gone (its daemon lease ran
    /// out): end the session as `daemon_lost`. Sent by another daemon of
    /// the same log; a no-op unless the registration is still the one the
    /// sender saw, so of many survivors exactly one ends it.
    DaemonLost {
        /// Id.
        session_id: String,
        /// Which registration the sender saw.
        registered_seq: u64,
    },
    /// Deliver a message (the body is stored beside the log).
    Deliver {
        /// Recipient.
        to_session: String,
        /// Message id.
        msg_id: String,
        /// Kind.
        kind: String,
        /// Sender.
        from_session: Option<String>,
        /// Body length, bytes.
        size: u64,
        /// Legacy fields carried along (see the payload's `extra`).
        extra: Map<String, Value>,
    },
    /// Ack a message.
    AckMessage {
        /// Recipient.
        session_id: String,
        /// Message id.
        msg_id: String,
    },
    /// Issue a dispatch order.
    Issue {
        /// Order id.
        order_id: String,
        /// Assignee.
        assignee: String,
        /// Ticket.
        ticket: String,
        /// Issuer.
        from_session: Option<String>,
        /// Free JSON.
        payload: Option<Value>,
        /// Legacy fields carried along (see the payload's `extra`).
        extra: Map<String, Value>,
    },
    /// The assignee takes an order.
    AckOrder {
        /// Order id.
        order_id: String,
        /// Acting session.
        session_id: String,
    },
    /// The assignee finishes an order.
    Complete {
        /// Order id.
        order_id: String,
        /// Acting session.
        session_id: String,
        /// Free JSON.
        result: Option<Value>,
    },
    /// Withdraw an open order (its issuer, or the admin when `by` is
    /// `None`).
    CancelOrder {
        /// Order id.
        order_id: String,
        /// The acting session, which must be the order's issuer; `None`:
        /// the admin.
        by: Option<String>,
        /// Why (may be empty).
        reason: String,
    },
    /// Give an open (or orphaned) order to another live session.
    ReassignOrder {
        /// Order id.
        order_id: String,
        /// The acting session, which must be the order's issuer; `None`:
        /// the admin.
        by: Option<String>,
        /// The new assignee.
        assignee: String,
    },
    /// An agent asks for a permission (PROTOCOL §14).
    RequestApproval {
        /// The asking session.
        session_id: String,
        /// What it asks.
        request: coord_proto::approval::ApprovalRequest,
        /// The approvals policy in force (read by the daemon at the edge);
        /// its first matching rule decides at once.
        policy: Option<crate::policy::Policy>,
    },
    /// The one decision of a pending approval.
    DecideApproval {
        /// The approval.
        approval_id: String,
        /// What was decided.
        decision: coord_proto::approval::Decision,
        /// Why.
        reason: String,
        /// Who.
        by: String,
        /// From where.
        via: String,
        /// A coordinating session deciding for one of its descendants.
        as_session: Option<String>,
        /// The asking session itself withdrawing its own request.
        requester: Option<String>,
    },
    /// A session has waited for a human past the daemon's threshold
    /// (sent by the daemon's notifier, with the clock's reading).
    Notify {
        /// The waiting session.
        session_id: String,
        /// The approval it waits on; `None`: its `needs_input` spell.
        approval_id: Option<String>,
        /// Since when it waits (the approval's `requested_at`, or the
        /// session's `state_since`): a later spell is another notice.
        since: Timestamp,
        /// How long it has waited, ms.
        waited_ms: u64,
    },
    /// Publish an `x.*` event.
    Custom {
        /// Kind.
        kind: String,
        /// Object payload.
        body: Map<String, Value>,
        /// Session it is about.
        session_id: Option<String>,
        /// Resource it is about.
        resource: Option<String>,
    },
}

/// What the lifecycle manager may probe for a session (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Probes {
    /// tmux session name.
    pub tmux: Option<String>,
    /// Absolute path of an activity file.
    pub activity_file: Option<String>,
    /// Absolute path of a JSONL transcript.
    pub transcript: Option<String>,
}

/// What the daemon does to a session's process that outlives its lease
/// (PROTOCOL §6.3); both default when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExpiryPolicy {
    /// Signal it (default) or leave it.
    pub on_expiry: Option<OnExpiry>,
    /// ms from SIGTERM to SIGKILL (default 5,000).
    pub kill_grace_ms: Option<u64>,
    /// `pid` leads a process group the daemon signals as a whole.
    pub process_group: bool,
}

/// What the writer should answer, beyond the events. Serializable because
/// the daemon keeps it in idempotency records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Events were produced; the answer is their seq.
    Done,
    /// Nothing changed (a bare heartbeat, a timer that lost a race).
    NoChange,
    /// The lock was granted by this command.
    Granted,
    /// The session already held the lock in that mode (grant seq).
    AlreadyHeld {
        /// Seq of the existing grant.
        acquired_seq: u64,
    },
    /// The session joined the queue.
    Waiting,
    /// The session was already in the queue.
    AlreadyWaiting,
    /// A cancel found the session not waiting.
    NotWaiting {
        /// Grant seq if it holds the lock (it was granted before the cancel).
        held_seq: Option<u64>,
    },
    /// Events were produced but the command is not finished: a session's
    /// end with more than `CASCADE_CHUNK` locks releases them over several
    /// commits. The writer commits these events, lets other requests in,
    /// and runs the same command again; callers never see this answer and
    /// no idempotency record holds it.
    Unfinished,
}

/// The result of a valid command.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The events to append, in order (may be empty).
    pub drafts: Vec<Draft>,
    /// What to answer.
    pub reply: Reply,
    /// Message bodies the state machine wrote itself (report
    /// notifications), by index into `drafts` of their `inbox.deliver`.
    pub bodies: BTreeMap<usize, String>,
}

/// Why a command was refused: an error code plus details, ready to send.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {}", .0.error.code, .0.error.message)]
pub struct Rejection(pub ErrorBody);

impl Rejection {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection(ErrorBody::new(code, message))
    }

    pub(crate) fn with(self, key: &str, value: impl Into<Value>) -> Self {
        Rejection(self.0.with(key, value))
    }

    /// The error code.
    pub fn code(&self) -> Option<ErrorCode> {
        self.0.code()
    }
}
