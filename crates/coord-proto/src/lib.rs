//! Wire types of coord: everything that crosses a process boundary.
//!
//! This crate owns the shapes that clients and the daemon agree on
//! (`docs/PROTOCOL.md` is their contract):
//!
//! * [`Event`] — the envelope of one log entry, with a typed [`Payload`] per
//!   `tx_kind`;
//! * [`Timestamp`] — milliseconds since the Unix epoch, RFC 3339 on the wire;
//! * [`ids`] — the validation rules for session ids, resources, kinds;
//! * [`pattern`] — lock patterns (`src/**`) and when two of them conflict;
//! * [`render_event`] — one human line per event;
//! * [`approval`] — approvals: their events and their shape;
//! * [`view`] — the state objects (sessions, locks, messages, orders);
//! * [`api`] — request and response bodies of every endpoint;
//! * [`ErrorCode`] and [`ErrorBody`] — the error vocabulary.
//!
//! It must not do I/O, read clocks other than through [`Timestamp::now`], or
//! hold any logic beyond encoding, decoding and validating single values.
#![deny(missing_docs)]

pub mod api;
pub mod approval;
mod dispatch_events;
mod error;
mod event;
pub mod ids;
pub mod pattern;
mod render;
mod timestamp;
pub mod view;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{
    DeregReason, DispatchAck, DispatchCancel, DispatchComplete, DispatchIssue, DispatchOrphan,
    DispatchReassign, Draft, Event, EventDecodeError, InboxAck, InboxDeliver, LifeState,
    LockAcquire, LockDelegate, LockMode, LockRelease, LockWait, LockWaitCancel, OnExpiry, Payload,
    ReleaseReason, Report, ReportedState, SessionDereg, SessionHeartbeat, SessionProbeError,
    SessionRegister, SessionReport, SessionState, WaitCancelReason, KNOWN_KINDS,
};
pub use render::render_event;
pub use timestamp::Timestamp;

/// The protocol version this crate describes; sent as the `Coord-Protocol`
/// header by clients and the daemon alike.
pub const PROTOCOL_VERSION: u32 = 1;

/// The version of the coord crates, sent as `Coord-Version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest request body the daemon accepts, in bytes (1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Largest `POST /v1/events/batch` body, in bytes (16 MiB).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Most events in one `POST /v1/events/batch` (65,536).
pub const MAX_BATCH_EVENTS: usize = 65_536;

/// Largest inbox message body, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// Longest lock *pattern* (a resource with `*` or `?`), in bytes (256).
/// Deciding whether two patterns conflict costs up to the product of their
/// lengths; plain names keep the 1,024-byte limit of every resource.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Most locks one session may hold or wait for at once (10,000); one more
/// is `409 too_many_locks`. A session's end releases them in chunks of
/// [`CASCADE_CHUNK`], so it never holds other writers up for all of them.
pub const MAX_LOCKS_PER_SESSION: usize = 10_000;

/// Most lock releases (and the grants they cause) one commit of a
/// session's end carries (64): a session with more locks ends over
/// several commits, with other writers' requests between them.
pub const CASCADE_CHUNK: usize = 64;

/// Most kind globs one events subscription may filter by
/// (`GET /v1/events?kinds=…`): 64, each at most 128 bytes.
pub const MAX_KINDS: usize = 64;

/// The `source` of events written through the HTTP API.
pub const SOURCE_API: &str = "api";

/// Default session lease, in ms.
pub const DEFAULT_SESSION_TTL_MS: u64 = 30_000;

/// Shortest session lease accepted, in ms.
pub const MIN_SESSION_TTL_MS: u64 = 1_000;

/// Longest lease, lock TTL or wait accepted, in ms (one day).
pub const MAX_DURATION_MS: u64 = 86_400_000;

/// Default time between the SIGTERM and the SIGKILL the daemon sends a
/// session's process that outlived its lease, in ms.
pub const DEFAULT_KILL_GRACE_MS: u64 = 5_000;

/// Most events kept in the list of recently ended sessions
/// (`GET /v1/sessions?ended=true`).
pub const ENDED_SESSIONS_KEPT: usize = 256;
