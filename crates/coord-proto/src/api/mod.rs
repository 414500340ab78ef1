//! Request and response bodies of every endpoint (PROTOCOL §8). Requests
//! reject unknown fields so a typo is an error, not a silent default.

mod approvals;
mod status;
pub use approvals::*;
pub use status::*;

use crate::view::{EndedSession, Lock, Message, Order, Session, View};
use crate::{Event, LockMode, OnExpiry, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use ulid::Ulid;

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// The id to register.
    pub session_id: String,
    /// Free-form role.
    #[serde(default)]
    pub role: String,
    /// Its task.
    #[serde(default)]
    pub task: String,
    /// Free JSON (default `{}`).
    #[serde(default)]
    pub blob: Option<Value>,
    /// Initial phase (default `starting`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Process to watch.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Parent session.
    #[serde(default)]
    pub parent_session: Option<String>,
    /// Lease, ms (default 30,000).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// tmux session the agent runs in (probed for liveness).
    #[serde(default)]
    pub tmux: Option<String>,
    /// Absolute path of a file whose mtime is the agent's activity.
    #[serde(default)]
    pub activity_file: Option<String>,
    /// Absolute path of the agent's JSONL transcript.
    #[serde(default)]
    pub transcript: Option<String>,
    /// What the daemon does to `pid` if it still runs when the lease
    /// expires: `signal` (default: SIGTERM, then SIGKILL after
    /// `kill_grace_ms`) or `never`.
    #[serde(default)]
    pub on_expiry: Option<OnExpiry>,
    /// ms between that SIGTERM and SIGKILL (default 5,000).
    #[serde(default)]
    pub kill_grace_ms: Option<u64>,
    /// `pid` leads a process group of its own (it called `setpgid(0, 0)`
    /// or was started so): when the session ends for any reason but its
    /// own dereg, the daemon sends the whole group SIGTERM, then SIGKILL
    /// after `kill_grace_ms` if a member remains (PROTOCOL §6.3). Refused
    /// without `pid`, or when `pid` does not lead its group.
    #[serde(default)]
    pub process_group: bool,
    /// Token chosen by the client (32–128 of `A-Za-z0-9_-`).
    #[serde(default)]
    pub token: Option<String>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time (default: now).
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to a register.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The id.
    pub session_id: String,
    /// The session token: send it as `Authorization: Bearer`.
    pub token: String,
    /// Seq of the `session.register`.
    pub seq: u64,
    /// The lease, ms.
    pub ttl_ms: u64,
}

/// `POST /v1/sessions/{id}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    /// New phase, if it changed.
    #[serde(default)]
    pub phase: Option<String>,
    /// The state the agent reports of itself (a hook): always logged, and
    /// the session's state until the next report (PROTOCOL §6.1).
    #[serde(default)]
    pub reported: Option<crate::ReportedState>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Seq of the `session.heartbeat`, if one was appended.
    pub seq: Option<u64>,
    /// The renewed lease, ms.
    pub ttl_ms: u64,
    /// The session's pending approvals (PROTOCOL §14), oldest first;
    /// absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<crate::approval::Approval>,
}

/// `POST /v1/sessions/{id}/dereg`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeregRequest {
    /// Exit status of the session's process.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Admin override (needs `Coord-Admin-Token`).
    #[serde(default)]
    pub force: bool,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// The answer of most writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WriteResponse {
    /// Seq of the last appended event; `None` if nothing was appended.
    pub seq: Option<u64>,
}

/// `POST /v1/locks/acquire`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireRequest {
    /// The acting session.
    pub session_id: String,
    /// The resource.
    pub resource: String,
    /// Exclusive (default) or shared.
    #[serde(default)]
    pub mode: LockMode,
    /// Expiry after the grant, ms.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// How long to wait in the queue, ms (0: fail at once).
    #[serde(default)]
    pub wait_ms: u64,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to a successful acquire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireResponse {
    /// Seq of the `lock.acquire` (or of the existing grant if already held).
    pub seq: u64,
    /// The grant's fencing token: its seq, strictly increasing per
    /// resource. Pass it to whatever the lock protects, which can ask
    /// `GET /v1/locks/check` whether it is still current.
    pub fencing_token: u64,
    /// The resource (normalised, PROTOCOL §2).
    pub resource: String,
    /// The granted mode.
    pub mode: LockMode,
    /// The session held it already; nothing was appended.
    pub already_held: bool,
    /// Time spent in the queue, ms.
    pub waited_ms: u64,
    /// The log that issued the token (PROTOCOL §9.1): a token is only
    /// current on its own log, so a fencing check passes it back. Empty
    /// from a daemon older than the field.
    #[serde(default)]
    pub log_id: String,
}

/// `POST /v1/locks/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRequest {
    /// The acting session (the holder, or any with `force`).
    pub session_id: String,
    /// The resource.
    pub resource: String,
    /// Admin override.
    #[serde(default)]
    pub force: bool,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/locks/delegate`: the parent `session_id` hands `resource`
/// (within one of its exclusive locks) to its child `to_session`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateRequest {
    /// The delegating parent (its token authorizes).
    pub session_id: String,
    /// The pattern handed over.
    pub resource: String,
    /// The child receiving it.
    pub to_session: String,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/sessions/{id}/report`: the child `{id}` reports to its
/// parent. The report's own fields (`kind`, `message`, `sub_session`,
/// `scope`) sit at the top level, as in the `session.report` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportRequest {
    /// The parent; default: the child's registered `parent_session`.
    /// Required when the child is not a session of this daemon (a report
    /// forwarded by a peer daemon).
    #[serde(default)]
    pub parent_session: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub report: crate::Report,
    /// Idempotency key (a forwarding daemon sends the tx_id of the
    /// original event, so a repeated delivery appends nothing).
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/inbox/{to_session}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendRequest {
    /// Sender session (needs its token).
    #[serde(default)]
    pub from_session: Option<String>,
    /// Message kind (default `message`).
    #[serde(default)]
    pub kind: Option<String>,
    /// The body, at most 64 KiB.
    pub body: String,
    /// Message id (default: a new ULID).
    #[serde(default)]
    pub msg_id: Option<String>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to a send.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendResponse {
    /// Seq of the `inbox.deliver`.
    pub seq: u64,
    /// The message id.
    pub msg_id: String,
}

/// `POST /v1/inbox/{session}/{msg_id}/ack` and dispatch ack bodies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckRequest {
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/dispatch/{order_id}/cancel`: withdraw an open order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelOrderRequest {
    /// The acting session, which must be the order's issuer (its token
    /// authorizes); absent: the admin token must.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Why (at most 256 bytes, no control characters).
    #[serde(default)]
    pub reason: String,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/dispatch/{order_id}/reassign`: give an open or orphaned
/// order to another live session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReassignOrderRequest {
    /// The acting session, which must be the order's issuer (its token
    /// authorizes); absent: the admin token must.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The new assignee (a live session).
    pub assignee: String,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/dispatch`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssueRequest {
    /// Order id (default: a new ULID).
    #[serde(default)]
    pub order_id: Option<String>,
    /// The session that must do it.
    pub assignee: String,
    /// The ticket.
    #[serde(default)]
    pub ticket: String,
    /// Issuing session (needs its token).
    #[serde(default)]
    pub from_session: Option<String>,
    /// Free JSON.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to an issue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssueResponse {
    /// Seq of the `dispatch.issue`.
    pub seq: u64,
    /// The order id.
    pub order_id: String,
}

/// `POST /v1/dispatch/{order_id}/complete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteRequest {
    /// Free JSON result.
    #[serde(default)]
    pub result: Option<Value>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// `POST /v1/events`: an `x.*` event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomEventRequest {
    /// The kind, `x.…`.
    pub tx_kind: String,
    /// A JSON object (default `{}`).
    #[serde(default)]
    pub payload: Option<Value>,
    /// The session it is about (needs its token).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The resource it is about.
    #[serde(default)]
    pub resource: Option<String>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
    /// Source time.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Answer to `POST /v1/events/batch` (PROTOCOL §9.2): every line's seq,
/// in the order of the lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    /// Seq of each line's event (a replayed line: its first seq).
    pub seqs: Vec<u64>,
    /// Lines that were replays of an earlier write (same `tx_id`).
    pub replayed: u64,
}

/// `GET /v1/events` query (PROTOCOL §9), as a client sends it; absent
/// fields are left out of the query string.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventsQuery {
    /// `N`, `start` or `now` (the daemon's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Comma-separated kind globs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinds: Option<String>,
    /// Only events about this session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Only events about this resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// First a snapshot of the view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<bool>,
    /// `false`: stop at the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    /// The log the cursor belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
}

/// `POST /v1/admin/export` (admin token).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The legacy root to write, an absolute path.
    pub legacy_root: String,
}

/// Answer to an export: files written, removed and left as they were.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportResponse {
    /// The root written.
    pub legacy_root: String,
    /// Files written (new or changed).
    pub written: u64,
    /// Files removed (objects that left the view).
    pub removed: u64,
    /// Files already current.
    pub unchanged: u64,
}

/// `POST /v1/ui/login` (admin token): a one-time login URL for the web
/// dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UiLoginResponse {
    /// `http://ADDR/login?token=…`: opening it sets the dashboard's
    /// cookie; usable once, within 120 s.
    pub url: String,
    /// The id of the viewer login it makes (`v-` and 12 hex digits): each
    /// login has a cookie of its own, which `POST /v1/ui/revoke` ends.
    pub viewer: String,
}

/// `POST /v1/ui/revoke` (admin token): ends one dashboard login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UiRevokeRequest {
    /// A viewer id from `POST /v1/ui/login` (`coord ui`), or `*` for every
    /// login.
    pub viewer: String,
}

/// The answer to `POST /v1/ui/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UiRevokeResponse {
    /// How many logged-in viewers lost their cookie (a login URL not yet
    /// opened is ended too, and not counted).
    pub revoked: u64,
}

/// Store part of the status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreStatus {
    /// Path of the store file.
    pub path: String,
    /// Size on disk (database and WAL), bytes.
    pub bytes: u64,
    /// `normal` or `full`.
    pub sync: String,
    /// `sqlite`.
    #[serde(default)]
    pub backend: String,
    /// Seq of the latest snapshot.
    #[serde(default)]
    pub snapshot_seq: Option<u64>,
    /// How long ago it was taken, ms.
    #[serde(default)]
    pub snapshot_age_ms: Option<u64>,
    /// The last compaction since the daemon started, if any ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<CompactionStatus>,
    /// Remote store (`nats`) only: connected to a server now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Remote store only: ms since the store last answered. While it does
    /// not answer, reads serve the view as of then and writes get
    /// `503 store_unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_ms: Option<u64>,
    /// Remote store only: this daemon's id on the shared log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_id: Option<String>,
    /// Remote store only: this daemon's part in the log's election,
    /// `leader` (it appends), `follower` (it forwards writes to `leader`)
    /// or `unknown` (no leader known: it appends on its own, conditionally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Remote store only: the daemon id of the log's leader, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Remote store only: the leader's term (the revision of the leader
    /// key; it grows with every renewal and takeover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

/// One compaction: when, how many events it dropped, the oldest seq left.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompactionStatus {
    /// When it ran.
    pub at: Timestamp,
    /// Events dropped.
    pub deleted: u64,
    /// The oldest seq retained after it.
    pub oldest_seq: u64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsResponse {
    /// Seq the list reflects.
    pub seq: u64,
    /// Sessions by id.
    pub sessions: Vec<Session>,
    /// With `?ended=true`: recently ended sessions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<EndedSession>,
}

/// `GET /v1/locks/check?resource=R&token=T`: is T still a current grant?
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockCheckResponse {
    /// Seq the answer reflects.
    pub seq: u64,
    /// The resource (normalised).
    pub resource: String,
    /// The token asked about.
    pub token: u64,
    /// True when a current holder's grant carries this token.
    pub current: bool,
    /// The current holders with their tokens (empty when nobody holds it).
    pub holders: Vec<LockCheckHolder>,
    /// This daemon's log (PROTOCOL §9.1).
    #[serde(default)]
    pub log_id: String,
    /// Why the token is not current, when it is not: `not_held` (nobody
    /// holds the lock), `moved_on` (others hold it under other tokens) or
    /// `other_log` (the token was issued by another log than this one,
    /// whatever its number: a store was replaced or another served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A current holder in a [`LockCheckResponse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockCheckHolder {
    /// The holding session.
    pub session_id: String,
    /// Its grant's fencing token.
    pub fencing_token: u64,
}

/// `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// Resources it holds.
    pub locks: Vec<String>,
}

/// `GET /v1/locks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocksResponse {
    /// Seq the list reflects.
    pub seq: u64,
    /// Locks by resource.
    pub locks: Vec<Lock>,
}

/// `GET /v1/inbox/{session}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxResponse {
    /// Seq the list reflects.
    pub seq: u64,
    /// Unacked messages, oldest first, without bodies.
    pub messages: Vec<Message>,
}

/// `GET /v1/dispatch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrdersResponse {
    /// Seq the list reflects.
    pub seq: u64,
    /// Open orders by id.
    pub orders: Vec<Order>,
}

/// `GET /v1/snapshot`, and the first line of a stream with `snapshot=true`
/// (wrapped as `{"snapshot": …}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    /// The view is the state after this seq.
    pub seq: u64,
    /// The view.
    pub view: View,
}

/// One line of an NDJSON events stream.
// Events are nearly every item of a stream and the snapshot at most the
// first, so the event stays inline rather than costing a box per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The snapshot that opens a `snapshot=true` stream.
    Snapshot(Snapshot),
    /// An event.
    Event(Event),
}

impl StreamItem {
    /// Decodes one NDJSON line.
    ///
    /// # Errors
    /// The decode error, for a line that is neither a snapshot nor an event.
    pub fn from_line(line: &str) -> Result<Self, crate::EventDecodeError> {
        #[derive(Deserialize)]
        struct Wrapped {
            snapshot: Snapshot,
        }
        if line.starts_with("{\"snapshot\"") {
            let w: Wrapped = serde_json::from_str(line)?;
            return Ok(StreamItem::Snapshot(w.snapshot));
        }
        Event::from_json(line).map(StreamItem::Event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<AcquireRequest>(
            r#"{"session_id":"a","resource":"r","wiat_ms":5}"#,
        )
        .expect_err("typo must fail");
        assert!(err.to_string().contains("wiat_ms"), "{err}");
    }
}
