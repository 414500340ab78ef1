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

/// A resource that may become a new lock: a valid resource, and a pattern
/// no longer than `MAX_PATTERN_BYTES` (the conflict test costs the product
/// of two patterns' lengths).
pub(crate) fn lockable(value: &str) -> Result<()> {
    res(value)?;
    let limit = coord_proto::MAX_PATTERN_BYTES;
    if coord_proto::pattern::is_pattern(value) && value.len() > limit {
        return Err(Rejection::new(
            ErrorCode::PatternTooLong,
            format!(
                "lock pattern is {} bytes, at most {limit}; name a shorter scope",
                value.len()
            ),
        )
        .with("field", "resource")
        .with("limit", limit));
    }
    Ok(())
}

/// Room for one more lock in `session_id`'s holds and waits.
pub(crate) fn room_for_lock(state: &crate::State, session_id: &str) -> Result<()> {
    let (held, limit) = (
        state.lock_index.count_of(session_id),
        coord_proto::MAX_LOCKS_PER_SESSION,
    );
    if held >= limit {
        return Err(Rejection::new(
            ErrorCode::TooManyLocks,
            format!("{session_id} already holds or waits for {held} locks, at most {limit}; release some first"),
        )
        .with("session_id", session_id)
        .with("held", held)
        .with("limit", limit));
    }
    Ok(())
}

pub(crate) fn text(field: &str, value: &str) -> Result<()> {
    ids::check_text(value).map_err(|why| invalid(field, why))
}

/// Most bytes of a reported state's reason and source.
const MAX_REPORTED_BYTES: usize = 512;

/// A state an agent reports of itself: `active`, `idle` or `needs_input`
/// (the others are the daemon's to find), with short plain text.
pub(crate) fn reported_state(r: &coord_proto::ReportedState) -> Result<()> {
    use coord_proto::LifeState;
    if !matches!(
        r.state,
        LifeState::Active | LifeState::Idle | LifeState::NeedsInput
    ) {
        return Err(invalid(
            "reported.state",
            format!(
                "is {}; an agent reports active, idle or needs_input",
                r.state.as_str()
            ),
        ));
    }
    for (field, value) in [
        ("reported.reason", &r.reason),
        ("reported.source", &r.source),
    ] {
        text(field, value)?;
        if value.len() > MAX_REPORTED_BYTES {
            return Err(invalid(
                field,
                format!("is {} bytes, at most {MAX_REPORTED_BYTES}", value.len()),
            ));
        }
    }
    Ok(())
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
