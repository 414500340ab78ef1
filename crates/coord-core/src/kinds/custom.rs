//! Custom `x.*` events: an integrator's own kinds, appended as given.
//! Pure: no I/O, no clock.

use crate::command::{Command, Outcome, Rejection};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::{ids, ErrorCode};
use coord_proto::{Draft, Payload};

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
            if let Err(why) = ids::check_custom_kind(kind) {
                return Err(Rejection::new(
                    ErrorCode::UnknownKind,
                    format!("tx_kind {kind:?}: {why}"),
                )
                .with("tx_kind", kind.as_str()));
            }
            if let Some(s) = session_id {
                id("session_id", s)?;
            }
            if let Some(r) = resource {
                res(r)?;
            }
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
