//! Request and answer bodies of the approvals endpoints (PROTOCOL §14).

use super::*;
use crate::approval::{Approval, Decision};

/// `POST /v1/approvals`: an agent's hook asks for a permission.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalAsk {
    /// `ap-` and 16 hex digits; absent: derived from the session and
    /// `tool_use_id` (or the tool and its input).
    #[serde(default)]
    pub approval_id: Option<String>,
    /// The asking session (its token).
    pub session_id: String,
    /// `claude`, `codex`, `gemini`.
    pub agent: String,
    /// The tool.
    pub tool: String,
    /// One line about the call.
    #[serde(default)]
    pub summary: String,
    /// Files it would write, relative to the session's work tree.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The command it would run.
    #[serde(default)]
    pub command: Option<String>,
    /// The agent's working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The agent's id of the tool call.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// The tool's full input, any JSON (at most 256 KiB encoded).
    #[serde(default)]
    pub input: Value,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
}

/// What a decider may decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Verdict {
    /// Run the tool.
    Allow,
    /// Do not; the model reads the reason.
    Deny,
    /// Leave it to the agent's terminal prompt.
    Ask,
}

impl From<Verdict> for Decision {
    fn from(v: Verdict) -> Decision {
        match v {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny => Decision::Deny,
            Verdict::Ask => Decision::Ask,
        }
    }
}

/// `POST /v1/approvals/{id}/decide`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideRequest {
    /// Allow, deny or ask.
    pub decision: Verdict,
    /// Why (a deny's reason reaches the model).
    #[serde(default)]
    pub reason: String,
    /// Who decides (default: the user, the login or the session).
    #[serde(default)]
    pub by: Option<String>,
    /// A coordinating session deciding for one of its descendants (its
    /// token).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Idempotency key.
    #[serde(default, deserialize_with = "crate::ids::deserialize_opt_ulid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tx_id: Option<Ulid>,
}

/// How a requester takes its own request back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Withdrawal {
    /// Its wait ran out.
    Expired,
    /// It no longer asks.
    Withdrawn,
}

/// `POST /v1/approvals/{id}/withdraw`: the requesting session takes its
/// request back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WithdrawRequest {
    /// The requesting session (its token).
    pub session_id: String,
    /// `expired` or `withdrawn`.
    pub decision: Withdrawal,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `GET /v1/approvals`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalsResponse {
    /// Head seq the answer reflects.
    pub seq: u64,
    /// Pending (oldest first), then decided (oldest first).
    pub approvals: Vec<Approval>,
}
