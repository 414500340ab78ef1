//! One module per kind of request, as mini-redis keeps one file per
//! command: each owns its commands' validation ([`validate`] here only
//! routes) and the fold of its events (`apply`, routed by
//! [`crate::apply`]). Adding a kind adds a module here, its variants to
//! [`crate::Command`] and its payloads to `coord_proto::Payload`.
//!
//! Dependencies point one way: `check` ← `lock` ← `pod` ← `session`;
//! `inbox`, `dispatch` and `custom` use `check` only; `session` uses
//! `approval` (an ending session withdraws its approvals).

pub(crate) mod approval;
pub(crate) mod check;
pub(crate) mod custom;
pub(crate) mod dispatch;
pub(crate) mod inbox;
pub(crate) mod lock;
pub(crate) mod pod;
pub mod session;

use crate::command::{Command, Outcome};
use crate::state::{after_apply, State};
use coord_proto::{Event, Payload};

/// Deepest chain of parents followed (a report re-emitted up, an
/// ancestor looked for): guards against a cycle of parent ids.
const MAX_POD_DEPTH: usize = 16;

/// Longest `errored` message, bytes.
pub const MAX_REPORT_MESSAGE_BYTES: usize = 4096;

/// Decides what `cmd` does to `state`: the events to append and the answer,
/// or a rejection with its error code. Never panics, never mutates.
///
/// # Errors
/// A [`crate::Rejection`] carrying the PROTOCOL §3 code (`lock_held`,
/// `session_not_found`, `invalid_id`, …) and its details.
pub fn validate(state: &State, cmd: &Command) -> check::Result<Outcome> {
    match cmd {
        Command::Register { .. }
        | Command::Heartbeat { .. }
        | Command::Dereg { .. }
        | Command::ExpireLease { .. }
        | Command::DaemonLost { .. }
        | Command::ProcessExited { .. }
        | Command::RuntimeGone { .. }
        | Command::SetState { .. }
        | Command::ProbeError { .. } => session::validate(state, cmd),
        Command::Report { .. } | Command::Delegate { .. } => pod::validate(state, cmd),
        Command::Acquire { .. }
        | Command::Release { .. }
        | Command::ExpireLock { .. }
        | Command::CancelWait { .. }
        | Command::CancelAllWaits { .. } => lock::validate(state, cmd),
        Command::Deliver { .. } | Command::AckMessage { .. } => inbox::validate(state, cmd),
        Command::Issue { .. }
        | Command::AckOrder { .. }
        | Command::Complete { .. }
        | Command::CancelOrder { .. }
        | Command::ReassignOrder { .. } => dispatch::validate(state, cmd),
        Command::RequestApproval { .. }
        | Command::DecideApproval { .. }
        | Command::Notify { .. } => approval::validate(state, cmd),
        Command::Custom { .. } => custom::validate(state, cmd),
    }
}

/// Folds one committed event into the state.
///
/// Total: an event that refers to something absent changes nothing rather
/// than failing, so a log written by an older version still folds.
pub fn apply(state: &mut State, event: &Event) {
    match &event.payload {
        Payload::SessionRegister(_)
        | Payload::SessionHeartbeat(_)
        | Payload::SessionDereg(_)
        | Payload::SessionState(_) => session::apply(state, event),
        Payload::SessionReport(_) | Payload::LockDelegate(_) => pod::apply(state, event),
        Payload::LockAcquire(_)
        | Payload::LockWait(_)
        | Payload::LockWaitCancel(_)
        | Payload::LockRelease(_) => lock::apply(state, event),
        Payload::InboxDeliver(_) | Payload::InboxAck(_) => inbox::apply(state, event),
        Payload::DispatchIssue(_)
        | Payload::DispatchAck(_)
        | Payload::DispatchComplete(_)
        | Payload::DispatchCancel(_)
        | Payload::DispatchReassign(_)
        | Payload::DispatchOrphan(_) => dispatch::apply(state, event),
        Payload::ApprovalRequest(_) | Payload::ApprovalDecide(_) | Payload::SessionNotify(_) => {
            approval::apply(state, event)
        }
        Payload::SessionProbeError(_) | Payload::Custom { .. } => {}
    }
    after_apply(state, event);
}
