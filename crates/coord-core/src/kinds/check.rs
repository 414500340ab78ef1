//! Checks and answers every kind uses: identifier and text rules, the
//! "no such session" rejection, and the two shapes of an outcome.

use crate::command::{Command, Outcome, Rejection, Reply};
use coord_proto::view::View;
use coord_proto::{ids, Draft, ErrorCode};
use std::collections::BTreeMap;

/// What validation returns.
pub(crate) type Result<T> = std::result::Result<T, Rejection>;

/// A command routed to a kind that does not own it: a bug in the
/// dispatch, answered as `internal` rather than a panic.
pub(crate) fn not_mine(cmd: &Command) -> Rejection {
    Rejection::new(
        ErrorCode::Internal,
        format!("command routed to the wrong kind: {cmd:?}"),
    )
}

pub(crate) fn session<'v>(
    view: &'v View,
    session_id: &str,
) -> Result<&'v coord_proto::view::Session> {
    id("session_id", session_id)?;
    view.sessions.get(session_id).ok_or_else(|| {
        Rejection::new(
            ErrorCode::SessionNotFound,
            format!("no live session {session_id}"),
        )
        .with("session_id", session_id)
    })
}

pub(crate) fn id(field: &str, value: &str) -> Result<()> {
    ids::check_id(value).map_err(|why| {
        Rejection::new(ErrorCode::InvalidId, format!("{field} {value:?} {why}"))
            .with("field", field)
    })
}

pub(crate) fn res(value: &str) -> Result<()> {
    ids::check_resource(value).map_err(|why| {
        Rejection::new(ErrorCode::InvalidId, format!("resource {value:?} {why}"))
            .with("field", "resource")
    })
}

pub(crate) fn text(field: &str, value: &str) -> Result<()> {
    ids::check_text(value).map_err(|why| invalid(field, why))
}

pub(crate) fn invalid(field: &str, why: String) -> Rejection {
    Rejection::new(ErrorCode::InvalidField, format!("{field} {why}")).with("field", field)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn done(drafts: Vec<Draft>) -> Outcome {
    Outcome {
        drafts,
        reply: Reply::Done,
        bodies: BTreeMap::new(),
    }
}

pub(crate) fn no_change() -> Outcome {
    Outcome {
        drafts: Vec::new(),
        reply: Reply::NoChange,
        bodies: BTreeMap::new(),
    }
}
