//! Checks of a state the fold produced, for `coord verify` and the chaos
//! run: the lock-safety invariant (PROTOCOL §7.1) around one resource,
//! and where two states first differ.
//!
//! Pure like the rest of the crate; it decides nothing for the writer
//! (validate already refuses what these checks would find) and only
//! reports, so a store written by a buggy or tampered-with daemon is
//! named, not repaired.

use crate::kinds::lock::is_ancestor;
use crate::state::State;
use coord_proto::pattern::overlap;
use coord_proto::LockMode;

/// Lock safety around `resource`: an exclusive lock has at most one
/// holder, every holder and waiter is a live session, and no other lock
/// that conflicts with it is held by a session other than its holders or
/// their pod relatives (delegation), unless both holds are shared.
///
/// # Errors
/// One sentence naming the locks and sessions that break it.
pub fn lock_safety(state: &State, resource: &str) -> Result<(), String> {
    let Some(lock) = state.view.locks.get(resource) else {
        return Ok(());
    };
    if lock.mode == LockMode::Exclusive && lock.holders.len() > 1 {
        let who: Vec<&str> = lock.holders.iter().map(|h| h.session_id.as_str()).collect();
        return Err(format!(
            "{resource} is held exclusively by {} sessions: {}",
            who.len(),
            who.join(", ")
        ));
    }
    for s in lock
        .holders
        .iter()
        .map(|h| &h.session_id)
        .chain(lock.waiters.iter().map(|w| &w.session_id))
    {
        if !state.view.sessions.contains_key(s) {
            return Err(format!("{resource} names {s}, which is not a live session"));
        }
    }
    for other in state.lock_index.candidates(resource) {
        if other == resource || !overlap(other, resource) {
            continue;
        }
        let Some(o) = state.view.locks.get(other) else {
            continue;
        };
        if lock.mode == LockMode::Shared && o.mode == LockMode::Shared {
            continue;
        }
        for h1 in &lock.holders {
            for h2 in &o.holders {
                let (a, b) = (&h1.session_id, &h2.session_id);
                let related = is_ancestor(&state.view, a, b) || is_ancestor(&state.view, b, a);
                if a != b && !related {
                    return Err(format!(
                        "{resource} held by {a} and {other} held by {b} conflict ({} / {})",
                        lock.mode.as_str(),
                        o.mode.as_str()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Approvals are asked once and decided once (PROTOCOL §14), checked
/// before `event` folds into `state`: an `approval.decide` must find its
/// approval pending, an `approval.request` must not repeat a pending or
/// recently decided one.
///
/// # Errors
/// One sentence naming the approval and what is wrong.
pub fn approval_order(state: &State, event: &coord_proto::Event) -> Result<(), String> {
    use coord_proto::Payload;
    match &event.payload {
        Payload::ApprovalDecide(p) => {
            if state.view.approvals.contains_key(&p.approval_id) {
                return Ok(());
            }
            match crate::find_approval(state, &p.approval_id).and_then(|a| a.decision.as_ref()) {
                Some(d) => Err(format!(
                    "approval {} is decided twice: {} at seq {}, then {} by {}",
                    p.approval_id,
                    d.decision.as_str(),
                    d.decided_seq,
                    p.decision.as_str(),
                    p.by
                )),
                None => Err(format!(
                    "approval {} is decided ({} by {}) without a pending request",
                    p.approval_id,
                    p.decision.as_str(),
                    p.by
                )),
            }
        }
        Payload::ApprovalRequest(p) => match crate::find_approval(state, &p.approval_id) {
            Some(a) => Err(format!(
                "approval {} is requested again (first at seq {})",
                p.approval_id, a.requested_seq
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Where `a` and `b` first differ, as a JSON path into the state
/// (`view.sessions.agent-1.phase`), or `None` when they are equal.
pub fn first_difference(a: &State, b: &State) -> Option<String> {
    if a == b {
        return None;
    }
    let (x, y) = (serde_json::to_value(a).ok()?, serde_json::to_value(b).ok()?);
    Some(diff_path(&x, &y, String::new()).unwrap_or_else(|| "(derived index)".to_string()))
}

fn diff_path(x: &serde_json::Value, y: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value::Object;
    match (x, y) {
        (Object(m), Object(n)) => {
            let keys: std::collections::BTreeSet<&String> = m.keys().chain(n.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (m.get(k), n.get(k)) {
                    (Some(p), Some(q)) => diff_path(p, q, path),
                    _ => Some(path),
                }
            })
        }
        (serde_json::Value::Array(m), serde_json::Value::Array(n)) if m.len() == n.len() => m
            .iter()
            .zip(n)
            .enumerate()
            .find_map(|(i, (p, q))| diff_path(p, q, format!("{at}[{i}]"))),
        _ if x == y => None,
        _ => Some(if at.is_empty() { "(root)".into() } else { at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::view::{Holder, Lock};
    use coord_proto::Timestamp;

    fn hold(state: &mut State, r: &str, s: &str, mode: LockMode) {
        let lock = state.view.locks.entry(r.into()).or_insert_with(|| Lock {
            resource: r.into(),
            mode,
            holders: Vec::new(),
            waiters: Vec::new(),
        });
        lock.holders.push(Holder {
            session_id: s.into(),
            acquired_seq: 1,
            acquired_at: Timestamp(0),
            ttl_ms: None,
            delegated_from: None,
        });
        state.lock_index.insert(r);
        state.lock_index.join(s, r);
    }

    fn with_sessions(ids: &[&str]) -> State {
        let mut s = State::default();
        for id in ids {
            s.view.sessions.insert(
                id.to_string(),
                serde_json::from_value(serde_json::json!({
                    "session_id": id, "role": "", "task": "", "blob": {}, "phase": "",
                    "ttl_ms": 1000, "registered_seq": 1,
                    "registered_at": "2026-01-01T00:00:00Z",
                    "last_heartbeat": "2026-01-01T00:00:00Z", "source": "t",
                    "state": "starting"
                }))
                .expect("session"),
            );
        }
        s
    }

    #[test]
    fn conflicting_holds_are_named() {
        let mut s = with_sessions(&["a", "b"]);
        hold(&mut s, "src/**", "a", LockMode::Exclusive);
        assert!(lock_safety(&s, "src/**").is_ok());
        hold(&mut s, "src/main.rs", "b", LockMode::Exclusive);
        let e = lock_safety(&s, "src/main.rs").expect_err("conflict");
        assert!(
            e.contains("src/**") && e.contains('a') && e.contains('b'),
            "{e}"
        );
        // Shared with shared is fine.
        let mut s = with_sessions(&["a", "b"]);
        hold(&mut s, "db", "a", LockMode::Shared);
        hold(&mut s, "db", "b", LockMode::Shared);
        assert!(lock_safety(&s, "db").is_ok());
        // Two exclusive holders of one lock.
        let mut s = with_sessions(&["a", "b"]);
        hold(&mut s, "db", "a", LockMode::Exclusive);
        hold(&mut s, "db", "b", LockMode::Exclusive);
        assert!(lock_safety(&s, "db").is_err());
        // A holder that is no live session.
        let mut s = with_sessions(&["a"]);
        hold(&mut s, "db", "ghost", LockMode::Exclusive);
        assert!(lock_safety(&s, "db").expect_err("ghost").contains("ghost"));
    }

    #[test]
    fn the_first_difference_is_a_path() {
        let a = with_sessions(&["a"]);
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        if let Some(s) = b.view.sessions.get_mut("a") {
            s.phase = "testing".into();
        }
        assert_eq!(
            first_difference(&a, &b).as_deref(),
            Some("view.sessions.a.phase")
        );
    }
}
