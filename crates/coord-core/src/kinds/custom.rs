//! Custom `x.*` events: an integrator's own kinds, appended as given.
//! Pure: no I/O, no clock.

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::{ids, ErrorCode};
use coord_proto::{Draft, Payload};

/// Checks what a custom event's validity depends on — its kind and the
/// ids it names — without the view (a custom event never depends on it)
/// and without copying its body: the batch endpoint checks every line
/// with this before it queues any.
///
/// # Errors
/// `unknown_kind` for a kind outside `x.*`, `invalid_id` for a malformed
/// session id or resource.
pub fn check_custom(kind: &str, session_id: Option<&str>, resource: Option<&str>) -> Result<()> {
    if let Err(why) = ids::check_custom_kind(kind) {
        return Err(
            Rejection::new(ErrorCode::UnknownKind, format!("tx_kind {kind:?}: {why}"))
                .with("tx_kind", kind),
        );
    }
    if let Some(s) = session_id {
        id("session_id", s)?;
    }
    if let Some(r) = resource {
        res(r)?;
    }
    Ok(())
}

/// Decides what a custom command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let _view = &state.view;
    match cmd {
        Command::Custom {
            kind,
            body,
            session_id,
            resource,
        } => {
            check_custom(kind, session_id.as_deref(), resource.as_deref())?;
            Ok(done(vec![Draft {
                session_id: session_id.clone(),
                resource: resource.clone(),
                payload: Payload::Custom {
                    kind: kind.clone(),
                    body: body.clone(),
                },
            }]))
        }
        other => Err(not_mine(other)),
    }
}
