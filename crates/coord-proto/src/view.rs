//! The state objects of the view (PROTOCOL §6) as they appear in API
//! answers and snapshots. The logic that changes them lives in coord-core;
//! this module only gives them a shape.

use crate::{DeregReason, LifeState, LockMode, OnExpiry, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A registered session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Its id.
    pub session_id: String,
    /// Free-form role.
    pub role: String,
    /// Its task.
    pub task: String,
    /// Free JSON.
    pub blob: Value,
    /// Current phase.
    pub phase: String,
    /// Watched process, if any.
    pub pid: Option<u32>,
    /// The session that spawned it.
    pub parent_session: Option<String>,
    /// Lease length, ms.
    pub ttl_ms: u64,
    /// Seq of its `session.register`.
    pub registered_seq: u64,
    /// When it registered.
    pub registered_at: Timestamp,
    /// Last logged heartbeat (registration time until one is logged).
    pub last_heartbeat: Timestamp,
    /// Who registered it (`api`, `fs-watch`, `fs-poll`, …). Only sessions
    /// registered through the API have their pid watched.
    #[serde(default)]
    pub source: String,
    /// Where it stands in its life (the last `session.state`).
    #[serde(default)]
    pub state: LifeState,
    /// Why it is in that state: the last `session.state`'s reason, with
    /// its evidence (`claude:PermissionRequest: permission: Write
    /// src/a.rs`); empty until its first change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state_reason: String,
    /// When it entered that state (absent until its first change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<Timestamp>,
    /// The state the agent last reported of itself (its hooks, PROTOCOL
    /// §6.1), from its last heartbeat that carried one: it outlives a
    /// daemon restart, so no guess overrides it after one either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<crate::ReportedState>,
    /// The `state_since` of the `needs_input` spell a `session.notify`
    /// was appended for (once per spell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_since: Option<Timestamp>,
    /// The tmux session it runs in, probed by the lifecycle manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmux: Option<String>,
    /// File whose mtime is its activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_file: Option<String>,
    /// Its agent's JSONL transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// The pod below it: children and the grandchildren they reported,
    /// by session id (the parent's registry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<String, PodMember>,
    /// Children that reported `shut_down`: their late reports change
    /// nothing.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ended_children: BTreeSet<String>,
    /// What the daemon does to a live `pid` when the lease expires.
    #[serde(default, skip_serializing_if = "is_default_expiry")]
    pub on_expiry: OnExpiry,
    /// ms between SIGTERM and SIGKILL at expiry (absent: the default,
    /// [`crate::DEFAULT_KILL_GRACE_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// Its `pid` leads a process group of its own, which every end but
    /// its own dereg signals (PROTOCOL §6.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub process_group: bool,
    /// The daemon it registered with, on a log shared by many daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// The lease as the daemon holds it, renewals included (bare renewals
    /// are not events, so the fold never fills this: only API answers
    /// carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Locks it is queued for, oldest first (API answers only; derived
    /// from the locks' queues).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<WaitingOn>,
}

impl Session {
    /// What a `needs_input` session waits for: its state reason without
    /// the evidence before the first `": "` (`permission: Write src/a.rs`
    /// of `claude:PermissionRequest: permission: Write src/a.rs`); `None`
    /// in any other state or without a reason.
    pub fn waits_for(&self) -> Option<&str> {
        if self.state != LifeState::NeedsInput || self.state_reason.is_empty() {
            return None;
        }
        Some(
            self.state_reason
                .split_once(": ")
                .map_or(self.state_reason.as_str(), |(_, what)| what),
        )
    }

    /// The pid the daemon watches (pidfd), signals at expiry and probes:
    /// only a session registered through the API names a process of this
    /// machine (a bridged session's pid is whatever its file says, maybe of
    /// another machine). Sessions from snapshots older than `source` count
    /// as API sessions. The one place this rule is written.
    pub fn watched_pid(&self) -> Option<u32> {
        self.pid
            .filter(|_| self.source == crate::SOURCE_API || self.source.is_empty())
    }
}

fn is_default_expiry(e: &OnExpiry) -> bool {
    *e == OnExpiry::Signal
}

/// A session's lease in an API answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// When it was last renewed (registration, heartbeat or bare renewal;
    /// a daemon restart renews every lease).
    pub renewed_at: Timestamp,
    /// When it runs out unless renewed.
    pub expires_at: Timestamp,
}

/// One lock a session waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingOn {
    /// The lock's resource (or pattern).
    pub resource: String,
    /// The mode it wants.
    pub mode: LockMode,
    /// When it joined the queue.
    pub since: Timestamp,
    /// Its place in the queue, 1 = next.
    pub position: usize,
}

/// A session that ended, as `GET /v1/sessions?ended=true` lists it (the
/// last [`crate::ENDED_SESSIONS_KEPT`], newest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndedSession {
    /// Its id.
    pub session_id: String,
    /// Its role.
    pub role: String,
    /// Its task.
    pub task: String,
    /// Its watched process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When it registered.
    pub registered_at: Timestamp,
    /// When it ended.
    pub ended_at: Timestamp,
    /// Seq of its `session.dereg`.
    pub ended_seq: u64,
    /// How it ended.
    pub reason: DeregReason,
    /// Exit status of its process, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal sent to its still-running process at expiry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// One entry of a parent's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PodMember {
    /// For a grandchild (or deeper): the direct child that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Patterns delegated to it, as far as the parent knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
    /// Kind of its last report (`turn_ended`, `errored`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<String>,
}

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Holder {
    /// The holding session.
    pub session_id: String,
    /// Seq of the `lock.acquire` that granted it.
    pub acquired_seq: u64,
    /// When it was granted: the grant's `ingress_ts`, the daemon's clock
    /// (a lock TTL counts from here, also after a restart).
    pub acquired_at: Timestamp,
    /// Expiry after the grant, ms.
    pub ttl_ms: Option<u64>,
    /// The parent that delegated this hold (`lock.delegate`); it returns
    /// to that parent when this holder ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_from: Option<String>,
}

/// One waiter in a lock's FIFO queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Waiter {
    /// The waiting session.
    pub session_id: String,
    /// The mode it wants.
    pub mode: LockMode,
    /// Seq of its `lock.wait`.
    pub since_seq: u64,
    /// When it joined the queue (the `lock.wait`'s `ingress_ts`).
    #[serde(default)]
    pub since_at: Timestamp,
    /// TTL to apply once granted.
    pub ttl_ms: Option<u64>,
}

/// A lock: its holders (one if exclusive) and its queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lock {
    /// The resource.
    pub resource: String,
    /// Mode of the current holders.
    pub mode: LockMode,
    /// Current holders, in grant order.
    pub holders: Vec<Holder>,
    /// Waiters, first in line first.
    pub waiters: Vec<Waiter>,
}

/// An inbox message's envelope (plus its body when read by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Message id.
    pub msg_id: String,
    /// Recipient.
    pub to_session: String,
    /// Sender, if a session.
    pub from_session: Option<String>,
    /// Message kind.
    pub kind: String,
    /// Body length, bytes.
    pub size: u64,
    /// Seq of its `inbox.deliver`.
    pub seq: u64,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// The body, only in answers to a read by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Where a dispatch order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OrderState {
    /// Issued, not yet taken.
    Issued,
    /// Taken by the assignee.
    Acked,
    /// Done (only seen in the event; the view drops completed orders).
    Completed,
    /// Its assignee ended with the order open: it waits for its issuer
    /// (or an admin) to reassign or cancel it.
    Orphaned,
}

impl OrderState {
    /// Lower-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Issued => "issued",
            OrderState::Acked => "acked",
            OrderState::Completed => "completed",
            OrderState::Orphaned => "orphaned",
        }
    }
}

/// A dispatch order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// The session that must do it.
    pub assignee: String,
    /// The ticket.
    pub ticket: String,
    /// The issuing session.
    pub from_session: Option<String>,
    /// Free JSON.
    pub payload: Option<Value>,
    /// Where it stands.
    pub state: OrderState,
    /// Seq of its `dispatch.issue`.
    pub issued_seq: u64,
    /// When it was issued.
    pub issued_at: Timestamp,
}

/// The whole view: what the log says is true after some seq.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct View {
    /// Live sessions by id.
    pub sessions: BTreeMap<String, Session>,
    /// Held or awaited locks by resource.
    pub locks: BTreeMap<String, Lock>,
    /// Unacked messages per recipient, in delivery order.
    pub inboxes: BTreeMap<String, Vec<Message>>,
    /// Open (issued or acked) orders by id.
    pub orders: BTreeMap<String, Order>,
    /// Pending approvals by id (PROTOCOL §14); a decided one leaves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<String, crate::approval::Approval>,
}
