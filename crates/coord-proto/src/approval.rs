//! Approvals (PROTOCOL §14): the payloads of `approval.request` and
//! `approval.decide`, and the approval as the view and the API show it.
//! Shapes only; the rules live in coord-core's `kinds/approval.rs` and
//! `policy.rs`.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest tool input kept with an approval, in bytes (256 KiB); a larger
/// one is refused `413 message_too_large`.
pub const MAX_APPROVAL_INPUT_BYTES: usize = 256 << 10;

/// Most decided approvals the daemon keeps for `approvals log` (512); the
/// events stay in the log.
pub const DECIDED_APPROVALS_KEPT: usize = 512;

/// How an approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Decision {
    /// Run the tool.
    Allow,
    /// Do not run it; the model reads the reason.
    Deny,
    /// Let the agent's own terminal prompt decide.
    Ask,
    /// The agent moved on (answered in its terminal) or its session ended.
    Withdrawn,
    /// The hook's wait ran out; the terminal prompt decides.
    Expired,
}

impl Decision {
    /// The name as on the wire (`allow`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Ask => "ask",
            Decision::Withdrawn => "withdrawn",
            Decision::Expired => "expired",
        }
    }
}

/// `approval.request` (the requesting session is the envelope's
/// `session_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// `ap-` and 16 hex digits (PROTOCOL §14).
    pub approval_id: String,
    /// `claude`, `codex`, `gemini`, or what the hook says.
    pub agent: String,
    /// The tool the agent asks to run (`Write`, `Bash`).
    pub tool: String,
    /// One line: the path, the command, the URL.
    pub summary: String,
    /// The files it would write, relative to the session's work tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The command it would run (`Bash`), for policy rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The agent's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The agent's id of the tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// Size of the full input (fetched by id), bytes.
    #[serde(default)]
    pub input_bytes: u64,
}

/// `approval.decide`: the one decision of an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecide {
    /// The approval.
    pub approval_id: String,
    /// What was decided.
    pub decision: Decision,
    /// Why (a deny's reason reaches the model).
    #[serde(default)]
    pub reason: String,
    /// Who: a person's name, a login, `session:ID`, `policy`, `coord`.
    pub by: String,
    /// From where: `socket`, `web v-… from ADDR`, `mcp`, `policy`, `hook`.
    pub via: String,
    /// The policy rule that decided, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// `session.notify`: a session has waited for a human longer than the
/// daemon's `--notify-after` — on an approval, or in `needs_input` without
/// one. Appended once per approval, once per `needs_input` spell, never
/// for a turn that merely ended; the sentinel's sinks carry it to a phone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionNotify {
    /// What it waits for, one line.
    pub reason: String,
    /// The approval it waits on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Since when it waits (the approval's request, or its `needs_input`).
    pub since: Timestamp,
    /// How long it had waited, ms.
    pub waited_ms: u64,
}

/// A decision as an approval carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decided {
    /// What was decided.
    pub decision: Decision,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// From where.
    pub via: String,
    /// The policy rule, if one decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Seq of the `approval.decide`.
    pub decided_seq: u64,
    /// When it was decided.
    pub decided_at: Timestamp,
    /// How long the agent waited, ms.
    pub waited_ms: u64,
}

/// One approval: pending (in the view) or decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// Its id.
    pub approval_id: String,
    /// The session that asks.
    pub session_id: String,
    /// Its agent.
    pub agent: String,
    /// The tool.
    pub tool: String,
    /// One line about the call.
    pub summary: String,
    /// Files it would write, relative to the work tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The command it would run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The agent's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The agent's id of the tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// Size of the full input, bytes.
    pub input_bytes: u64,
    /// Seq of its `approval.request`.
    pub requested_seq: u64,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// The decision, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decided>,
    /// A `session.notify` was appended for it (once per approval).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notified: bool,
    /// The tool's full input (`GET /v1/approvals/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}
