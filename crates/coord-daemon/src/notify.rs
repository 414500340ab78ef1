//! The notifier: a session that has waited for a human longer than
//! `--notify-after` — on a pending approval, or in `needs_input` without
//! one — gets one `session.notify` (PROTOCOL §14), which the sentinel's
//! sinks carry to a phone (`coord sentinel --kind session.notify --sink
//! exec:…`).
//!
//! It owns the clock reading and the look at the view; the state machine
//! decides (a second notice for the same approval or `needs_input` spell
//! appends nothing, so two daemons of a shared log racing here still
//! notify once). It must not notify a turn that merely ended (idle is not
//! waiting for a human), and it must not poll: it sleeps until the next
//! wait comes due or the log changes, so an idle daemon stays asleep.

use coord_core::{Command, State};
use coord_engine::writer::{internal, WriterHandle};
use coord_proto::{LifeState, Timestamp};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Shortest time between two looks at the view while the log changes
/// (a busy log is looked at after bursts, not after every commit).
const SETTLE: Duration = Duration::from_millis(200);

/// The notices due at `now` after `after`, and when the next one will be
/// (ms since the epoch), if any wait is still short of it.
pub(crate) fn due(state: &State, now: Timestamp, after: Duration) -> (Vec<Command>, Option<i64>) {
    let next = waits(state)
        .into_iter()
        .map(|since| since.as_millis() + after.as_millis() as i64)
        .filter(|at| *at > now.as_millis())
        .min();
    (notices(state, now, after), next)
}

/// When each unnotified wait began.
fn waits(state: &State) -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = state
        .view
        .approvals
        .values()
        .filter(|a| !a.notified)
        .map(|a| a.requested_at)
        .collect();
    out.extend(
        state
            .view
            .sessions
            .values()
            .filter(|s| s.state == LifeState::NeedsInput && s.notified_since != s.state_since)
            .filter_map(|s| s.state_since),
    );
    out
}

/// The notices due at `now`.
fn notices(state: &State, now: Timestamp, after: Duration) -> Vec<Command> {
    let after_ms = after.as_millis() as i64;
    let waited = |since: Timestamp| now.as_millis() - since.as_millis();
    let mut out = Vec::new();
    for a in state.view.approvals.values() {
        if !a.notified && waited(a.requested_at) >= after_ms {
            out.push(Command::Notify {
                session_id: a.session_id.clone(),
                approval_id: Some(a.approval_id.clone()),
                since: a.requested_at,
                waited_ms: waited(a.requested_at).max(0) as u64,
            });
        }
    }
    for s in state.view.sessions.values() {
        let Some(since) = s.state_since else { continue };
        if s.state != LifeState::NeedsInput
            || s.notified_since == Some(since)
            || waited(since) < after_ms
        {
            continue;
        }
        // An approval live during this spell was (or will be) the notice.
        let approval = state
            .view
            .approvals
            .values()
            .any(|a| a.session_id == s.session_id)
            || state.decided.iter().any(|a| {
                a.session_id == s.session_id
                    && a.decision.as_ref().is_some_and(|d| d.decided_at >= since)
            });
        if !approval {
            out.push(Command::Notify {
                session_id: s.session_id.clone(),
                approval_id: None,
                since,
                waited_ms: waited(since).max(0) as u64,
            });
        }
    }
    out
}

/// Until `stop`: looks at the view, appends the notices that are due, and
/// sleeps until the next one comes due or the log changes (`head`).
pub(crate) async fn run(
    writer: WriterHandle,
    mut head: tokio::sync::watch::Receiver<u64>,
    after: Duration,
    stop: CancellationToken,
) {
    loop {
        let now = Timestamp::now();
        let Ok((notices, next)) = writer.read(move |s| due(s, now, after)).await else {
            return;
        };
        for cmd in notices {
            if let Err(e) = writer.write(internal(cmd)).await {
                tracing::warn!(error = %e, "a session.notify was not appended; retried at the next change");
            }
        }
        let wake = next.map(|at| {
            let ms = (at - Timestamp::now().as_millis()).max(0) as u64;
            tokio::time::Instant::now() + Duration::from_millis(ms)
        });
        head.borrow_and_update();
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = head.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(SETTLE) => {}
                }
            }
            _ = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::{apply, validate, ExpiryPolicy, Probes};
    use coord_proto::Event;

    fn run(state: &mut State, cmd: &Command, at: i64) {
        let o = validate(state, cmd).expect("valid");
        for d in o.drafts {
            let e = Event {
                seq: state.head + 1,
                tx_id: ulid::Ulid::nil(),
                ts: Timestamp(at),
                ingress_ts: Timestamp(at),
                source: "t".into(),
                session_id: d.session_id,
                resource: d.resource,
                payload: d.payload,
            };
            apply(state, &e);
        }
    }

    #[test]
    fn each_wait_is_told_once_and_a_turn_that_ended_never() {
        let mut s = State::default();
        for id in ["asks", "idles", "waits"] {
            run(
                &mut s,
                &Command::Register {
                    session_id: id.into(),
                    role: "claude".into(),
                    task: String::new(),
                    blob: serde_json::Value::Null,
                    phase: String::new(),
                    pid: None,
                    parent_session: None,
                    ttl_ms: 60_000,
                    probes: Probes::default(),
                    expiry: ExpiryPolicy::default(),
                    extra: Default::default(),
                },
                0,
            );
        }
        let set = |s: &mut State, id: &str, to: LifeState, at: i64| {
            let seq = s.view.sessions[id].registered_seq;
            let from = s.view.sessions[id].state;
            run(
                s,
                &Command::SetState {
                    session_id: id.into(),
                    registered_seq: seq,
                    from,
                    to,
                    reason: "t".into(),
                },
                at,
            );
        };
        set(&mut s, "idles", LifeState::Idle, 1_000);
        set(&mut s, "waits", LifeState::NeedsInput, 1_000);
        set(&mut s, "asks", LifeState::NeedsInput, 1_000);
        run(
            &mut s,
            &Command::RequestApproval {
                session_id: "asks".into(),
                request: coord_proto::approval::ApprovalRequest {
                    approval_id: "ap-1".into(),
                    agent: "claude".into(),
                    tool: "Bash".into(),
                    summary: "Bash cargo publish".into(),
                    paths: vec![],
                    command: Some("cargo publish".into()),
                    cwd: None,
                    tool_use_id: None,
                    input_bytes: 2,
                },
                policy: None,
            },
            1_000,
        );
        let after = Duration::from_secs(30);
        let (none, next) = due(&s, Timestamp(20_000), after);
        assert!(none.is_empty(), "not yet");
        assert_eq!(
            next,
            Some(31_000),
            "the next wait comes due 30 s after it began"
        );
        let (notices, _) = due(&s, Timestamp(31_000), after);
        let who: Vec<(String, Option<String>)> = notices
            .iter()
            .filter_map(|c| match c {
                Command::Notify {
                    session_id,
                    approval_id,
                    ..
                } => Some((session_id.clone(), approval_id.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            who,
            [
                ("asks".to_string(), Some("ap-1".to_string())),
                ("waits".to_string(), None)
            ],
            "the approval once (not its session too), the waiting session; never the idle one"
        );
        for c in &notices {
            run(&mut s, c, 31_000);
        }
        let (again, next) = due(&s, Timestamp(90_000), after);
        assert!(again.is_empty(), "once each");
        assert_eq!(next, None, "nothing left to wake for");
        // A new spell of needs_input is a new notice.
        set(&mut s, "waits", LifeState::Active, 91_000);
        set(&mut s, "waits", LifeState::NeedsInput, 92_000);
        assert_eq!(due(&s, Timestamp(130_000), after).0.len(), 1);
    }
}
