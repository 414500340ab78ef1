//! [`render_event`]: one human line per event, shared by `coord events
//! --format text`, the parent notifications of `session.report` and the
//! sentinel's observations. Pure: no clock, no I/O.

use crate::{Event, Payload, Report};

/// One short human sentence for an event, naming who did what to what
/// (`alice took src/main.rs (exclusive)`). No seq, time or kind: callers add
/// what they need.
///
/// Every `tx_kind` has its own wording; `x.*` kinds print their JSON.
pub fn render_event(e: &Event) -> String {
    let who = e.session_id.as_deref().unwrap_or("-");
    match &e.payload {
        Payload::SessionRegister(p) => format!(
            "{who} registered (role {}, task {}{})",
            or_dash(&p.role),
            or_dash(&p.task),
            p.pid.map(|pid| format!(", pid {pid}")).unwrap_or_default()
        ),
        Payload::SessionHeartbeat(p) => format!("{who} is now {}", p.phase),
        Payload::SessionDereg(p) => format!(
            "{who} deregistered ({}{}){}{}",
            name(&p.reason),
            p.exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default(),
            p.signal
                .as_deref()
                .map(|s| format!("; its process was sent {s}"))
                .unwrap_or_default(),
            p.group_kill_after_ms
                .map(|ms| format!("; its process group was sent SIGTERM (SIGKILL after {ms} ms)"))
                .unwrap_or_default()
        ),
        Payload::SessionState(p) => format!(
            "{who}: {} -> {} ({})",
            p.from.as_str(),
            p.to.as_str(),
            p.reason
        ),
        Payload::SessionProbeError(p) => {
            format!("{who}: {} probe failed: {}", p.probe, p.message)
        }
        Payload::SessionReport(p) => match &p.report {
            Report::TurnEnded => format!("{who} -> {}: turn ended", p.parent_session),
            Report::Errored { message } => {
                format!("{who} -> {}: errored: {message}", p.parent_session)
            }
            Report::ShutDown => format!("{who} -> {}: shut down", p.parent_session),
            Report::ScopeSubDelegated { sub_session, scope } => format!(
                "{who} -> {}: delegated {} to {sub_session}",
                p.parent_session,
                scope.join(", ")
            ),
        },
        Payload::LockDelegate(p) => format!(
            "{} delegated {} to {} (within {})",
            p.from_session, p.resource, p.to_session, p.within
        ),
        Payload::LockAcquire(p) => format!(
            "{} took {} ({})",
            p.owner_session,
            p.resource,
            p.mode.as_str()
        ),
        Payload::LockWait(p) => format!("{} waits for {}", p.owner_session, p.resource),
        Payload::LockWaitCancel(p) => format!(
            "{} stopped waiting for {} ({})",
            p.owner_session,
            p.resource,
            name(&p.reason)
        ),
        Payload::LockRelease(p) => format!(
            "{} released {} ({})",
            p.owner_session,
            p.resource,
            name(&p.reason)
        ),
        Payload::InboxDeliver(p) => format!(
            "{} -> {}: {} message {} ({} bytes)",
            p.from_session.as_deref().unwrap_or("-"),
            p.to_session,
            p.kind,
            p.msg_id,
            p.size
        ),
        Payload::InboxAck(p) => format!("{} acked {}", p.to_session, p.msg_id),
        Payload::DispatchIssue(p) => {
            format!(
                "order {} ({}) issued to {}",
                p.order_id, p.ticket, p.assignee
            )
        }
        Payload::DispatchAck(p) => format!("{} took order {}", p.assignee, p.order_id),
        Payload::DispatchComplete(p) => format!("{} completed order {}", p.assignee, p.order_id),
        Payload::DispatchCancel(p) => format!(
            "order {} of {} cancelled by {}{}",
            p.order_id,
            p.assignee,
            p.by_session.as_deref().unwrap_or("the admin"),
            if p.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", p.reason)
            }
        ),
        Payload::DispatchReassign(p) => format!(
            "order {} reassigned from {} to {}",
            p.order_id, p.from_assignee, p.assignee
        ),
        Payload::DispatchOrphan(p) => format!(
            "order {} orphaned: its assignee {} ended{}",
            p.order_id,
            p.assignee,
            p.from_session
                .as_deref()
                .map(|f| format!(" (issued by {f})"))
                .unwrap_or_default()
        ),
        Payload::ApprovalRequest(p) => {
            format!("{who} asks to run {} ({})", p.summary, p.approval_id)
        }
        Payload::ApprovalDecide(p) => format!(
            "approval {} of {who}: {} by {} via {}{}{}",
            p.approval_id,
            p.decision.as_str(),
            p.by,
            p.via,
            p.rule
                .as_deref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default(),
            if p.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", p.reason)
            }
        ),
        Payload::SessionNotify(p) => format!(
            "{who} has waited {}s for a human: {}",
            p.waited_ms / 1000,
            p.reason
        ),
        Payload::Custom { kind, body } => {
            format!("{kind} {}", serde_json::Value::Object(body.clone()))
        }
    }
}

/// The wire name of a reason enum (`owner_gone`).
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}
