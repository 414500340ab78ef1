//! The payloads of dispatch orders' events (PROTOCOL §5, §8 "Dispatch
//! orders"): issue, ack, complete, cancel, reassign, and the orphaning of
//! an order whose assignee ended. Shapes only; the rules live in
//! coord-core's `kinds/dispatch.rs`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `dispatch.issue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchIssue {
    /// Order id.
    pub order_id: String,
    /// The session that must do it.
    pub assignee: String,
    /// The ticket it refers to.
    pub ticket: String,
    /// The issuing session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session: Option<String>,
    /// Free JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Fields a legacy file carried that coord does not model (kept, not
    /// interpreted).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// `dispatch.ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchAck {
    /// Order id.
    pub order_id: String,
    /// Its assignee.
    pub assignee: String,
}

/// `dispatch.complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchComplete {
    /// Order id.
    pub order_id: String,
    /// Its assignee.
    pub assignee: String,
    /// Free JSON result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// `dispatch.cancel`: the order is withdrawn; it leaves the view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchCancel {
    /// Order id.
    pub order_id: String,
    /// Its assignee when it was cancelled.
    pub assignee: String,
    /// The session that cancelled it (its issuer); absent when the admin
    /// token did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_session: Option<String>,
    /// Why, in the canceller's words (may be empty).
    #[serde(default)]
    pub reason: String,
}

/// `dispatch.reassign`: the order goes to another session and is `issued`
/// again there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchReassign {
    /// Order id.
    pub order_id: String,
    /// The assignee it leaves.
    pub from_assignee: String,
    /// The new assignee (a live session).
    pub assignee: String,
    /// The session that reassigned it (its issuer); absent when the admin
    /// token did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_session: Option<String>,
}

/// `dispatch.orphan`: the assignee ended with the order still open; it
/// stays in the view as `orphaned` until its issuer (or an admin)
/// reassigns or cancels it. Appended in the commit that ends the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchOrphan {
    /// Order id.
    pub order_id: String,
    /// The assignee that ended.
    pub assignee: String,
    /// The order's issuer, if any: the session that should act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session: Option<String>,
}
