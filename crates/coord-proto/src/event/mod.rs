//! The event envelope (DESIGN §3, PROTOCOL §5) and its typed payloads.
//!
//! On the wire `tx_kind` sits beside `payload`; in Rust the kind *is* the
//! [`Payload`] variant, so an event cannot carry a payload of the wrong
//! shape. `x.*` kinds carry free JSON in [`Payload::Custom`].

pub use crate::dispatch_events::{
    DispatchAck, DispatchCancel, DispatchComplete, DispatchIssue, DispatchOrphan, DispatchReassign,
};
mod session;
pub use session::*;
#[cfg(test)]
mod tests;

use crate::Timestamp;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use ulid::Ulid;

/// One log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the log: starts at 1, +1 per event, never reused.
    pub seq: u64,
    /// ULID chosen by the source; `(source, tx_id)` is unique in the log.
    pub tx_id: Ulid,
    /// When it happened, by the source's clock.
    pub ts: Timestamp,
    /// When the log accepted it.
    pub ingress_ts: Timestamp,
    /// Who produced it: `api`, `lifecycle`, `fs-watch`, …
    pub source: String,
    /// The session the event is about, if any.
    pub session_id: Option<String>,
    /// The lock resource the event is about, if any.
    pub resource: Option<String>,
    /// The typed body; its variant decides `tx_kind`.
    pub payload: Payload,
}

/// An event before the log has placed it: what the state machine decides.
///
/// The writer turns a draft into an [`Event`] by giving it a `seq`, a
/// `tx_id`, a source and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// See [`Event::session_id`].
    pub session_id: Option<String>,
    /// See [`Event::resource`].
    pub resource: Option<String>,
    /// See [`Event::payload`].
    pub payload: Payload,
}

/// Every `tx_kind` coord itself defines, in documentation order.
pub const KNOWN_KINDS: &[&str] = &[
    "session.register",
    "session.heartbeat",
    "session.dereg",
    "session.state",
    "session.probe_error",
    "session.report",
    "lock.acquire",
    "lock.wait",
    "lock.wait_cancel",
    "lock.release",
    "lock.delegate",
    "inbox.deliver",
    "inbox.ack",
    "dispatch.issue",
    "dispatch.ack",
    "dispatch.complete",
    "dispatch.cancel",
    "dispatch.reassign",
    "dispatch.orphan",
    "approval.request",
    "approval.decide",
    "session.notify",
];

/// Exclusive or shared hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LockMode {
    /// One holder at a time.
    #[default]
    Exclusive,
    /// Any number of shared holders, no exclusive one.
    Shared,
}

impl LockMode {
    /// Lower-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }
}

/// `lock.acquire`: a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockAcquire {
    /// The resource.
    pub resource: String,
    /// The new holder.
    pub owner_session: String,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// The lock expires this many ms after the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Fields a legacy file carried that coord does not model (kept, not
    /// interpreted).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// `lock.wait`: a session joins the FIFO queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockWait {
    /// The resource.
    pub resource: String,
    /// The waiting session.
    pub owner_session: String,
    /// The mode it waits for.
    pub mode: LockMode,
    /// TTL to apply once granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Why a waiter left the queue without the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitCancelReason {
    /// Its `wait_ms` ran out.
    Timeout,
    /// The waiting client went away before its wait ended (it closed the
    /// connection: Ctrl-C on `coord lock acquire --wait`, a killed
    /// process).
    ClientGone,
    /// The waiting session ended.
    OwnerGone,
    /// The daemon restarted; nobody was left to answer.
    Restart,
}

/// `lock.wait_cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockWaitCancel {
    /// The resource.
    pub resource: String,
    /// The session that stopped waiting.
    pub owner_session: String,
    /// Why.
    pub reason: WaitCancelReason,
}

/// Why a holder let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The holder released it.
    Released,
    /// The holder's session ended.
    OwnerGone,
    /// Its TTL ran out.
    Expired,
    /// An admin forced it.
    Forced,
    /// A delegated lock went back to its delegator (the holder ended or
    /// shut down).
    Returned,
}

/// `lock.release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRelease {
    /// The resource.
    pub resource: String,
    /// The former holder.
    pub owner_session: String,
    /// Why.
    pub reason: ReleaseReason,
}

/// `lock.delegate`: a parent hands part of its scope to a child. The
/// child then holds `resource` exclusively, delegated from
/// `from_session`; it returns to the parent when the child ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockDelegate {
    /// The delegated pattern.
    pub resource: String,
    /// The delegating parent.
    pub from_session: String,
    /// The child that now holds it.
    pub to_session: String,
    /// The parent's lock that covers `resource`.
    pub within: String,
}

/// `inbox.deliver`: the envelope of a message (the body is fetched by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxDeliver {
    /// Recipient.
    pub to_session: String,
    /// Message id, unique within the recipient's inbox.
    pub msg_id: String,
    /// Message kind (`review-request`, `status`, …).
    pub kind: String,
    /// Sender, if a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session: Option<String>,
    /// Body length in bytes.
    #[serde(default)]
    pub size: u64,
    /// Fields a legacy file carried that coord does not model (kept, not
    /// interpreted).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// `inbox.ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxAck {
    /// Recipient.
    pub to_session: String,
    /// The acked message.
    pub msg_id: String,
}

/// The typed body of an event; the variant decides `tx_kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `session.register`
    SessionRegister(SessionRegister),
    /// `session.heartbeat`
    SessionHeartbeat(SessionHeartbeat),
    /// `session.dereg`
    SessionDereg(SessionDereg),
    /// `session.state`
    SessionState(SessionState),
    /// `session.probe_error`
    SessionProbeError(SessionProbeError),
    /// `session.report`
    SessionReport(SessionReport),
    /// `lock.acquire`
    LockAcquire(LockAcquire),
    /// `lock.wait`
    LockWait(LockWait),
    /// `lock.wait_cancel`
    LockWaitCancel(LockWaitCancel),
    /// `lock.release`
    LockRelease(LockRelease),
    /// `lock.delegate`
    LockDelegate(LockDelegate),
    /// `inbox.deliver`
    InboxDeliver(InboxDeliver),
    /// `inbox.ack`
    InboxAck(InboxAck),
    /// `dispatch.issue`
    DispatchIssue(DispatchIssue),
    /// `dispatch.ack`
    DispatchAck(DispatchAck),
    /// `dispatch.complete`
    DispatchComplete(DispatchComplete),
    /// `dispatch.cancel`
    DispatchCancel(DispatchCancel),
    /// `dispatch.reassign`
    DispatchReassign(DispatchReassign),
    /// `dispatch.orphan`
    DispatchOrphan(DispatchOrphan),
    /// `approval.request`
    ApprovalRequest(crate::approval::ApprovalRequest),
    /// `approval.decide`
    ApprovalDecide(crate::approval::ApprovalDecide),
    /// `session.notify`
    SessionNotify(crate::approval::SessionNotify),
    /// `x.*`: an integrator's kind with a free JSON object.
    Custom {
        /// The kind, starting with `x.`.
        kind: String,
        /// The payload object.
        body: Map<String, Value>,
    },
}

/// Why a stored or received event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The JSON itself is malformed or misses envelope fields.
    #[error("malformed event: {0}")]
    Json(#[from] serde_json::Error),
    /// `tx_kind` is neither a known kind nor `x.*`.
    #[error("unknown tx_kind {0:?}")]
    UnknownKind(String),
    /// The payload does not fit its kind.
    #[error("payload of {kind} does not fit: {source}")]
    Payload {
        /// The kind.
        kind: String,
        /// The serde error.
        source: serde_json::Error,
    },
}

impl Payload {
    /// The `tx_kind` string.
    pub fn kind(&self) -> &str {
        match self {
            Payload::SessionRegister(_) => "session.register",
            Payload::SessionHeartbeat(_) => "session.heartbeat",
            Payload::SessionDereg(_) => "session.dereg",
            Payload::SessionState(_) => "session.state",
            Payload::SessionProbeError(_) => "session.probe_error",
            Payload::SessionReport(_) => "session.report",
            Payload::LockAcquire(_) => "lock.acquire",
            Payload::LockWait(_) => "lock.wait",
            Payload::LockWaitCancel(_) => "lock.wait_cancel",
            Payload::LockRelease(_) => "lock.release",
            Payload::LockDelegate(_) => "lock.delegate",
            Payload::InboxDeliver(_) => "inbox.deliver",
            Payload::InboxAck(_) => "inbox.ack",
            Payload::DispatchIssue(_) => "dispatch.issue",
            Payload::DispatchAck(_) => "dispatch.ack",
            Payload::DispatchComplete(_) => "dispatch.complete",
            Payload::DispatchCancel(_) => "dispatch.cancel",
            Payload::DispatchReassign(_) => "dispatch.reassign",
            Payload::DispatchOrphan(_) => "dispatch.orphan",
            Payload::ApprovalRequest(_) => "approval.request",
            Payload::ApprovalDecide(_) => "approval.decide",
            Payload::SessionNotify(_) => "session.notify",
            Payload::Custom { kind, .. } => kind,
        }
    }

    /// Builds a payload from its kind and JSON body.
    ///
    /// # Errors
    /// [`EventDecodeError::UnknownKind`] for a kind that is neither known nor
    /// `x.*`; [`EventDecodeError::Payload`] when the body does not fit.
    pub fn from_parts(kind: &str, body: Value) -> Result<Self, EventDecodeError> {
        fn typed<T: serde::de::DeserializeOwned>(
            kind: &str,
            body: Value,
        ) -> Result<T, EventDecodeError> {
            serde_json::from_value(body).map_err(|source| EventDecodeError::Payload {
                kind: kind.to_string(),
                source,
            })
        }
        Ok(match kind {
            "session.register" => Payload::SessionRegister(typed(kind, body)?),
            "session.heartbeat" => Payload::SessionHeartbeat(typed(kind, body)?),
            "session.dereg" => Payload::SessionDereg(typed(kind, body)?),
            "session.state" => Payload::SessionState(typed(kind, body)?),
            "session.probe_error" => Payload::SessionProbeError(typed(kind, body)?),
            "session.report" => Payload::SessionReport(typed(kind, body)?),
            "lock.acquire" => Payload::LockAcquire(typed(kind, body)?),
            "lock.wait" => Payload::LockWait(typed(kind, body)?),
            "lock.wait_cancel" => Payload::LockWaitCancel(typed(kind, body)?),
            "lock.release" => Payload::LockRelease(typed(kind, body)?),
            "lock.delegate" => Payload::LockDelegate(typed(kind, body)?),
            "inbox.deliver" => Payload::InboxDeliver(typed(kind, body)?),
            "inbox.ack" => Payload::InboxAck(typed(kind, body)?),
            "dispatch.issue" => Payload::DispatchIssue(typed(kind, body)?),
            "dispatch.ack" => Payload::DispatchAck(typed(kind, body)?),
            "dispatch.complete" => Payload::DispatchComplete(typed(kind, body)?),
            "dispatch.cancel" => Payload::DispatchCancel(typed(kind, body)?),
            "dispatch.reassign" => Payload::DispatchReassign(typed(kind, body)?),
            "dispatch.orphan" => Payload::DispatchOrphan(typed(kind, body)?),
            "approval.request" => Payload::ApprovalRequest(typed(kind, body)?),
            "approval.decide" => Payload::ApprovalDecide(typed(kind, body)?),
            "session.notify" => Payload::SessionNotify(typed(kind, body)?),
            k if crate::ids::check_custom_kind(k).is_ok() => match body {
                Value::Object(body) => Payload::Custom {
                    kind: k.to_string(),
                    body,
                },
                other => {
                    return Err(EventDecodeError::Payload {
                        kind: k.to_string(),
                        source: serde::de::Error::custom(format!(
                            "x.* payload must be an object, got {other}"
                        )),
                    })
                }
            },
            k => return Err(EventDecodeError::UnknownKind(k.to_string())),
        })
    }

    /// Every session id the payload names (owner, sender, recipient,
    /// assignee), for the `session` filter of the events stream.
    pub fn sessions(&self) -> impl Iterator<Item = &str> {
        let (a, b): (Option<&str>, Option<&str>) = match self {
            Payload::LockAcquire(p) => (Some(&p.owner_session), None),
            Payload::LockWait(p) => (Some(&p.owner_session), None),
            Payload::LockWaitCancel(p) => (Some(&p.owner_session), None),
            Payload::LockRelease(p) => (Some(&p.owner_session), None),
            Payload::InboxDeliver(p) => (Some(&p.to_session), p.from_session.as_deref()),
            Payload::InboxAck(p) => (Some(&p.to_session), None),
            Payload::DispatchIssue(p) => (Some(&p.assignee), p.from_session.as_deref()),
            Payload::DispatchAck(p) => (Some(&p.assignee), None),
            Payload::DispatchComplete(p) => (Some(&p.assignee), None),
            Payload::DispatchCancel(p) => (Some(&p.assignee), p.by_session.as_deref()),
            Payload::DispatchReassign(p) => (Some(&p.assignee), Some(&p.from_assignee)),
            Payload::DispatchOrphan(p) => (Some(&p.assignee), p.from_session.as_deref()),
            Payload::SessionRegister(p) => (p.parent_session.as_deref(), None),
            Payload::SessionReport(p) => (
                Some(p.parent_session.as_str()),
                match &p.report {
                    Report::ScopeSubDelegated { sub_session, .. } => Some(sub_session.as_str()),
                    _ => None,
                },
            ),
            Payload::LockDelegate(p) => (Some(&p.from_session), Some(&p.to_session)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }
}

struct PayloadRef<'a>(&'a Payload);

impl Serialize for PayloadRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Payload::SessionRegister(p) => p.serialize(s),
            Payload::SessionHeartbeat(p) => p.serialize(s),
            Payload::SessionDereg(p) => p.serialize(s),
            Payload::SessionState(p) => p.serialize(s),
            Payload::SessionProbeError(p) => p.serialize(s),
            Payload::SessionReport(p) => p.serialize(s),
            Payload::LockAcquire(p) => p.serialize(s),
            Payload::LockWait(p) => p.serialize(s),
            Payload::LockWaitCancel(p) => p.serialize(s),
            Payload::LockRelease(p) => p.serialize(s),
            Payload::LockDelegate(p) => p.serialize(s),
            Payload::InboxDeliver(p) => p.serialize(s),
            Payload::InboxAck(p) => p.serialize(s),
            Payload::DispatchIssue(p) => p.serialize(s),
            Payload::DispatchAck(p) => p.serialize(s),
            Payload::DispatchComplete(p) => p.serialize(s),
            Payload::DispatchCancel(p) => p.serialize(s),
            Payload::DispatchReassign(p) => p.serialize(s),
            Payload::DispatchOrphan(p) => p.serialize(s),
            Payload::ApprovalRequest(p) => p.serialize(s),
            Payload::ApprovalDecide(p) => p.serialize(s),
            Payload::SessionNotify(p) => p.serialize(s),
            Payload::Custom { body, .. } => body.serialize(s),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PayloadRef(self).serialize(s)
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    seq: u64,
    tx_id: Ulid,
    tx_kind: &'a str,
    ts: Timestamp,
    ingress_ts: Timestamp,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    payload: PayloadRef<'a>,
}

#[derive(Deserialize)]
struct WireIn {
    seq: u64,
    tx_id: Ulid,
    tx_kind: String,
    ts: Timestamp,
    ingress_ts: Timestamp,
    source: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    payload: Value,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            seq: self.seq,
            tx_id: self.tx_id,
            tx_kind: self.payload.kind(),
            ts: self.ts,
            ingress_ts: self.ingress_ts,
            source: &self.source,
            session_id: self.session_id.as_deref(),
            resource: self.resource.as_deref(),
            payload: PayloadRef(&self.payload),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        let payload =
            Payload::from_parts(&w.tx_kind, w.payload).map_err(serde::de::Error::custom)?;
        Ok(Event {
            seq: w.seq,
            tx_id: w.tx_id,
            ts: w.ts,
            ingress_ts: w.ingress_ts,
            source: w.source,
            session_id: w.session_id,
            resource: w.resource,
            payload,
        })
    }
}

impl Event {
    /// Encodes the event as one line of JSON (no trailing newline): the
    /// same bytes as `serde_json::to_string(&event)` (a property test
    /// holds the two together), made faster.
    ///
    /// The writer encodes every event it commits once, and through serde
    /// this was 19 % of a batch append's instructions (callgrind,
    /// docs/BENCHMARKS.md, "The write path"): each timestamp went through
    /// `Display` and `collect_str`, the ULID through a `String`, and all
    /// of them byte by byte through JSON string escaping. Here the fields
    /// that cannot hold a character JSON escapes (the seq, the ULID's
    /// Crockford base32, the timestamps' digits) are written as they are;
    /// the strings a client chose and the payload still go through
    /// serde_json.
    pub fn to_json(&self) -> String {
        self.encode_envelope()
            // Serializing owned strings and numbers cannot fail; were it
            // to, the serde path says the same thing more slowly.
            .unwrap_or_else(|| serde_json::to_string(self).unwrap_or_default())
    }

    fn encode_envelope(&self) -> Option<String> {
        fn quoted(out: &mut Vec<u8>, ascii: &[u8]) {
            out.push(b'"');
            out.extend_from_slice(ascii);
            out.push(b'"');
        }
        fn timestamp(out: &mut Vec<u8>, t: Timestamp) -> Option<()> {
            match t.rfc3339_bytes() {
                Some(b) => quoted(out, &b),
                None => serde_json::to_writer(&mut *out, &t).ok()?,
            }
            Some(())
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"seq\":");
        serde_json::to_writer(&mut out, &self.seq).ok()?;
        out.extend_from_slice(b",\"tx_id\":");
        let mut ulid = [0u8; ulid::ULID_LEN];
        quoted(&mut out, self.tx_id.array_to_str(&mut ulid).as_bytes());
        out.extend_from_slice(b",\"tx_kind\":");
        serde_json::to_writer(&mut out, self.payload.kind()).ok()?;
        out.extend_from_slice(b",\"ts\":");
        timestamp(&mut out, self.ts)?;
        out.extend_from_slice(b",\"ingress_ts\":");
        timestamp(&mut out, self.ingress_ts)?;
        out.extend_from_slice(b",\"source\":");
        serde_json::to_writer(&mut out, &self.source).ok()?;
        if let Some(s) = &self.session_id {
            out.extend_from_slice(b",\"session_id\":");
            serde_json::to_writer(&mut out, s).ok()?;
        }
        if let Some(r) = &self.resource {
            out.extend_from_slice(b",\"resource\":");
            serde_json::to_writer(&mut out, r).ok()?;
        }
        out.extend_from_slice(b",\"payload\":");
        serde_json::to_writer(&mut out, &PayloadRef(&self.payload)).ok()?;
        out.push(b'}');
        String::from_utf8(out).ok()
    }

    /// Decodes one event from JSON.
    ///
    /// # Errors
    /// [`EventDecodeError`] naming what is wrong.
    pub fn from_json(s: &str) -> Result<Self, EventDecodeError> {
        let w: WireIn = serde_json::from_str(s)?;
        let payload = Payload::from_parts(&w.tx_kind, w.payload)?;
        Ok(Event {
            seq: w.seq,
            tx_id: w.tx_id,
            ts: w.ts,
            ingress_ts: w.ingress_ts,
            source: w.source,
            session_id: w.session_id,
            resource: w.resource,
            payload,
        })
    }

    /// The `tx_kind` string.
    pub fn kind(&self) -> &str {
        self.payload.kind()
    }
}
