//! The error vocabulary (PROTOCOL §3): stable codes with their HTTP status,
//! and the JSON body `{"error":{"code":…,"message":…,…}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = ($name:literal, $status:literal),)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of PROTOCOL §3.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as on the wire (`lock_held`).
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The HTTP status that goes with it.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Parses a wire code; `None` for codes this version does not know.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    /// The request is not valid HTTP/1.1 (answered before any handler:
    /// garbage, a bad or duplicate `Content-Length`, a control character
    /// in the path).
    BadRequest = ("bad_request", 400),
    /// The body is not JSON or not an object.
    BadJson = ("bad_json", 400),
    /// A field the endpoint does not know.
    UnknownField = ("unknown_field", 400),
    /// A field has the wrong type or an out-of-range value.
    InvalidField = ("invalid_field", 400),
    /// An identifier breaks the rules of PROTOCOL §2.
    InvalidId = ("invalid_id", 400),
    /// A lock pattern longer than `MAX_PATTERN_BYTES` (`limit`).
    PatternTooLong = ("pattern_too_long", 400),
    /// A custom event kind outside `x.*`.
    UnknownKind = ("unknown_kind", 400),
    /// A cursor that is not a number, `start` or `now`.
    BadCursor = ("bad_cursor", 400),
    /// Client and daemon speak different protocol versions.
    ProtocolMismatch = ("protocol_mismatch", 400),
    /// The call acts for a session and carries no token.
    TokenRequired = ("token_required", 401),
    /// The token is not the session's.
    BadToken = ("bad_token", 403),
    /// `force` without the admin token; over HTTP/TCP, a write without
    /// the admin token in a header (a cookie never authorizes a write).
    AdminRequired = ("admin_required", 403),
    /// Over HTTP/TCP: the `Host` header names no address this daemon
    /// serves (a DNS-rebinding page).
    HostNotAllowed = ("host_not_allowed", 403),
    /// Releasing a lock held by another session.
    NotOwner = ("not_owner", 403),
    /// Acting on an order assigned to another session.
    NotAssignee = ("not_assignee", 403),
    /// Delegating to, or reporting for, a session that is not the
    /// parent's child.
    NotChild = ("not_child", 409),
    /// No such endpoint.
    NotFound = ("not_found", 404),
    /// No such session.
    SessionNotFound = ("session_not_found", 404),
    /// No such message.
    MessageNotFound = ("message_not_found", 404),
    /// No such order.
    OrderNotFound = ("order_not_found", 404),
    /// No pending or recently decided approval of that id.
    ApprovalNotFound = ("approval_not_found", 404),
    /// Known path, wrong method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// A wait ran out.
    Timeout = ("timeout", 408),
    /// Registering a live session id.
    SessionExists = ("session_exists", 409),
    /// The lock is held in a conflicting mode.
    LockHeld = ("lock_held", 409),
    /// Releasing a lock nobody holds.
    LockNotHeld = ("lock_not_held", 409),
    /// The session already holds or waits for `MAX_LOCKS_PER_SESSION`
    /// locks (`limit`).
    TooManyLocks = ("too_many_locks", 409),
    /// A `tx_id` already used by a different request (another endpoint,
    /// or another body on the same one).
    TxIdReused = ("tx_id_reused", 409),
    /// A message id already in the inbox.
    MessageExists = ("message_exists", 409),
    /// An order id that exists.
    OrderExists = ("order_exists", 409),
    /// Deciding an approval that is no longer pending.
    ApprovalDecided = ("approval_decided", 409),
    /// An order in the wrong state for the transition.
    OrderState = ("order_state", 409),
    /// The cursor is past the head of this log (`head_seq`): it was saved
    /// from another log, or the log was replaced.
    CursorAhead = ("cursor_ahead", 409),
    /// The cursor was saved from another log (`log_id` names this one).
    LogMismatch = ("log_mismatch", 409),
    /// The cursor is older than the retained history.
    Compacted = ("compacted", 410),
    /// The request body is over 1 MiB.
    BodyTooLarge = ("body_too_large", 413),
    /// The message body is over 64 KiB.
    MessageTooLarge = ("message_too_large", 413),
    /// The request target is longer than the daemon reads.
    UriTooLong = ("uri_too_long", 414),
    /// The body is not `application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// The request line and headers are longer than the daemon reads.
    HeadersTooLarge = ("headers_too_large", 431),
    /// The registered pid does not exist.
    NoSuchProcess = ("no_such_process", 422),
    /// A bug in the daemon.
    Internal = ("internal", 500),
    /// A request method HTTP does not define (RFC 9110 §9.1); a defined
    /// one on the wrong path is `method_not_allowed`.
    NotImplemented = ("not_implemented", 501),
    /// The store refused the write.
    StoreUnavailable = ("store_unavailable", 503),
    /// The daemon is stopping.
    ShuttingDown = ("shutting_down", 503),
    /// The daemon holds its budget of request bodies in flight
    /// (`--body-memory-mib`; `limit` in bytes); retry shortly.
    Overloaded = ("overloaded", 503),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The inside of an error body: code, message and code-specific fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// The wire code (kept as a string so newer codes still decode).
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Code-specific fields (`field`, `holders`, `oldest_seq`, …).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `{"error": ErrorDetail}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error with a code and a message and no other fields.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: message.into(),
                fields: Map::new(),
            },
        }
    }

    /// Adds a code-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.fields.insert(key.to_string(), value.into());
        self
    }

    /// The typed code, if this version knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.error.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let b = ErrorBody::new(ErrorCode::LockHeld, "held").with("resource", "a");
        let json = serde_json::to_string(&b).expect("encode");
        assert_eq!(
            json,
            r#"{"error":{"code":"lock_held","message":"held","resource":"a"}}"#
        );
        let back: ErrorBody = serde_json::from_str(&json).expect("decode");
        assert_eq!(back.code(), Some(ErrorCode::LockHeld));
        assert_eq!(ErrorCode::LockHeld.status(), 409);
    }
}
