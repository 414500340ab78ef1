//! A permission request as an approval (PROTOCOL §14): the hook asks the
//! daemon, waits for whoever decides first — a person at `coord
//! approvals`, `coord top` or the dashboard, a coordinator over MCP, a
//! policy rule — and hands the decision to the agent in its own format
//! (`hookSpecificOutput.decision.behavior`, the same for Claude Code and
//! Codex).
//!
//! Claude Code draws its dialog while the hook waits; Codex draws its own
//! only after the hook answers nothing (docs/AGENTS.md). When its dialog
//! is answered, yes or no, Claude Code ends the waiting hook with
//! `SIGTERM`; the hook then withdraws the request before it exits, so it
//! is pending nowhere. A hook killed outright (Codex on Esc) cannot: the
//! daemon sees its wait cut off and withdraws it (PROTOCOL §14). The
//! agent's next hook (the tool's `PostToolUse`, a new prompt, the end of
//! the turn) withdraws anything still pending.
//!
//! Every failure leaves the agent at its own prompt: no output, exit 0.
//! A daemon that cannot be asked within [`super::run::DAEMON_BUDGET`], a
//! wait that runs out (the approval is then `expired`), a daemon that goes
//! away while the hook waits, a decision of `ask`: the terminal decides.

use super::event::HookEvent;
use super::run::Run;
use anyhow::{Context, Result};
use coord_client::ClientError;
use coord_proto::api::{ApprovalAsk, WithdrawRequest, Withdrawal};
use coord_proto::approval::{Approval, Decision};
use coord_proto::{ErrorCode, LifeState};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The longest one wait request asks the daemon for; the hook asks again
/// until its own budget ends (a long poll a proxy or a restart can cut).
const ONE_WAIT: Duration = Duration::from_secs(60);

/// How long past a wait's end the hook still waits for the daemon's
/// answer (`timeout` or the decision) before it asks again. Wide, as
/// giving up cuts the requester's wait off (the daemon then withdraws the
/// approval), but well inside the 30 s the agent's own hook timeout
/// leaves beyond the approval wait.
const WAIT_MARGIN: Duration = Duration::from_secs(10);

/// What a permission request is about, as the hook read it.
pub(crate) struct Asked<'a> {
    pub(crate) tool: &'a str,
    pub(crate) about: &'a str,
    pub(crate) edits: &'a [String],
    pub(crate) command: Option<&'a str>,
    pub(crate) input: &'a Value,
}

impl Run {
    /// Asks for an approval and waits up to `wait` for its decision: the
    /// JSON line the agent reads, or `None` for its own prompt.
    pub(crate) async fn approval(
        &self,
        event: &HookEvent,
        asked: &Asked<'_>,
        wait: Duration,
    ) -> Option<String> {
        let started = Instant::now();
        // Before the first request: a terminal answer that comes while
        // the hook still asks is then seen as soon as it has asked.
        let mut answered = Answered::watch();
        let me = match self.me() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("coord hook: {e:#}; the terminal decides");
                return None;
            }
        };
        let first =
            tokio::time::timeout(super::run::DAEMON_BUDGET, self.ask(&me, event, asked)).await;
        let a = match first {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                eprintln!(
                    "coord hook: could not ask for an approval ({e:#}); the terminal decides"
                );
                return None;
            }
            Err(_) => {
                eprintln!("coord hook: the daemon did not answer in time; the terminal decides");
                return None;
            }
        };
        if a.decision.is_some() {
            return answer(&a);
        }
        let waiting = self.wait(&me, &a, wait.saturating_sub(started.elapsed()));
        tokio::pin!(waiting);
        let decided = tokio::select! {
            d = &mut waiting => d?,
            () = answered.recv() => {
                // The wait stays open until the withdrawal has landed: a
                // wait cut off first is withdrawn by the daemon as a hook
                // that went away, and the reason would say so.
                self.answered_in_terminal(&me, &a).await;
                return None;
            }
        };
        answer(&decided)
    }

    async fn ask(
        &self,
        me: &coord_client::Client,
        event: &HookEvent,
        asked: &Asked<'_>,
    ) -> Result<Approval> {
        let cwd = event.cwd.clone().unwrap_or_else(|| "/".into());
        let paths: Vec<String> = asked
            .edits
            .iter()
            .map(|p| super::run::split_root(&super::run::absolute(&cwd, p)).1)
            .collect();
        // The call's id: the payload's, else the one its PreToolUse hook
        // kept for the same tool, so a retried hook is the same approval
        // and two equal calls are two.
        let tool_use_id = event.tool_use_id.clone().or_else(|| {
            self.kept()
                .ok()
                .and_then(|k| k.last_tool)
                .filter(|(tool, _)| tool == asked.tool)
                .map(|(_, id)| id)
        });
        let a = me
            .ask_approval(&ApprovalAsk {
                approval_id: None,
                session_id: self.id.clone(),
                agent: self.agent.name().into(),
                tool: asked.tool.into(),
                summary: coord_proto::ids::terminal_safe(asked.about, false).into_owned(),
                paths,
                command: asked.command.map(str::to_string),
                cwd: event.cwd.clone(),
                tool_use_id,
                input: asked.input.clone(),
                tx_id: None,
            })
            .await
            .context("asking for an approval")?
            .body;
        if a.decision.is_none() {
            self.report_state(
                LifeState::NeedsInput,
                &format!("permission: {} (approval {})", asked.about, a.approval_id),
                &format!("{}:{}", self.agent.name(), event.name),
                Some("waiting"),
            )
            .await?;
        }
        Ok(a)
    }

    /// Waits up to `budget` for the decision; on running out, withdraws
    /// the request as `expired` (the terminal decides). `None`: no
    /// decision for the agent.
    async fn wait(
        &self,
        me: &coord_client::Client,
        a: &Approval,
        budget: Duration,
    ) -> Option<Approval> {
        let deadline = Instant::now() + budget;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let slice = left.min(ONE_WAIT);
            // The requester's wait: if the agent kills this hook, the
            // daemon sees the connection close and withdraws the request.
            // The margin is wide because giving up on a slow daemon cuts
            // the wait off too.
            let asked = tokio::time::timeout(
                slice + WAIT_MARGIN,
                me.wait_approval(&a.approval_id, slice.as_millis() as u64, Some(&self.id)),
            )
            .await;
            match asked {
                Ok(Ok(a)) => return Some(a),
                Ok(Err(e)) if matches!(e.code(), Some(ErrorCode::Timeout)) => continue,
                Ok(Err(ClientError::Connect { .. })) => {
                    eprintln!("coord hook: the daemon went away; the terminal decides");
                    return None;
                }
                Ok(Err(e)) => {
                    eprintln!(
                        "coord hook: waiting for approval {} failed ({e}); the terminal decides",
                        a.approval_id
                    );
                    return None;
                }
                Err(_) => continue,
            }
        }
        let gone = tokio::time::timeout(
            super::run::DAEMON_BUDGET,
            me.withdraw_approval(
                &a.approval_id,
                &WithdrawRequest {
                    session_id: self.id.clone(),
                    decision: Withdrawal::Expired,
                    reason: format!("nobody decided within {} s", budget.as_secs()),
                },
            ),
        )
        .await;
        match gone {
            // Decided in the last instant: that decision counts.
            Ok(Err(e)) if matches!(e.code(), Some(ErrorCode::ApprovalDecided)) => {
                me.approval(&a.approval_id).await.ok()
            }
            _ => None,
        }
    }

    /// The agent ended the hook because its terminal answered: the
    /// request is withdrawn (a decision made in the same instant stands)
    /// and the session is no longer waiting for a permission. Whether the
    /// answer was yes (the tool runs) or no (the prompt is back) the hook
    /// cannot see: `active` says the agent is not waiting on coord, and
    /// its next hook (`PostToolUse`, `Stop`, the idle notification) says
    /// more. Bounded by [`super::run::DAEMON_BUDGET`], as the agent does
    /// not wait long for a hook it ended.
    async fn answered_in_terminal(&self, me: &coord_client::Client, a: &Approval) {
        let withdraw = async {
            match self.withdraw_answered_one(me, &a.approval_id).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    eprintln!("coord hook: could not withdraw {}: {e}", a.approval_id);
                    return;
                }
            }
            let reason = format!("the terminal answered approval {}", a.approval_id);
            let source = format!("{}:PermissionRequest", self.agent.name());
            if let Err(e) = self
                .report_state(LifeState::Active, &reason, &source, None)
                .await
            {
                eprintln!("coord hook: {e:#}");
            }
        };
        if tokio::time::timeout(super::run::DAEMON_BUDGET, withdraw)
            .await
            .is_err()
        {
            eprintln!(
                "coord hook: the daemon did not take the withdrawal of {} in time",
                a.approval_id
            );
        }
    }
}

/// The agent ending a waiting hook: `SIGTERM` (Claude Code, when its
/// dialog is answered) or `SIGINT`. Where a handler cannot be installed
/// the hook keeps the default (it dies, and the next hook withdraws).
struct Answered {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Answered {
    fn watch() -> Answered {
        use tokio::signal::unix::{signal, SignalKind};
        Answered {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves at the first signal (at once if one came already).
    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.term) => {}
            () = one(&mut self.int) => {}
        }
    }
}

impl Run {
    /// Withdraws this session's pending approvals that its terminal
    /// answered: after a tool ran (`call`: the tool and its call id), the
    /// approval of that call; at a new prompt or the end of a turn
    /// (`None`), every one. Another tool's hook (a parallel read) leaves
    /// an approval alone.
    /// `pending` is what the hook's heartbeat answered (PROTOCOL §8), so
    /// a tool call costs no extra request when nothing is pending.
    pub(crate) async fn withdraw_answered(
        &self,
        pending: Vec<Approval>,
        call: Option<(&str, Option<&str>)>,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let me = self.me()?;
        for a in pending {
            let answered = match call {
                None => true,
                Some((tool, Some(id))) => {
                    a.tool_use_id.as_deref() == Some(id)
                        || (a.tool_use_id.is_none() && a.tool == tool)
                }
                Some((tool, None)) => a.tool == tool,
            };
            if !answered {
                continue;
            }
            self.withdraw_answered_one(&me, &a.approval_id)
                .await
                .context("withdrawing an answered approval")?;
        }
        Ok(())
    }

    /// Withdraws one approval the terminal answered: `true` if this took
    /// it back, `false` if someone decided in the same instant (that
    /// decision stands).
    async fn withdraw_answered_one(
        &self,
        me: &coord_client::Client,
        approval_id: &str,
    ) -> Result<bool, ClientError> {
        let r = me
            .withdraw_approval(
                approval_id,
                &WithdrawRequest {
                    session_id: self.id.clone(),
                    decision: Withdrawal::Withdrawn,
                    reason: "answered in the agent's terminal".into(),
                },
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code(), Some(ErrorCode::ApprovalDecided)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The agent's answer for a decision (`None`: its own prompt decides).
fn answer(a: &Approval) -> Option<String> {
    let d = a.decision.as_ref()?;
    let decision = match d.decision {
        Decision::Allow => serde_json::json!({"behavior": "allow"}),
        Decision::Deny => serde_json::json!({
            "behavior": "deny",
            "message": if d.reason.is_empty() {
                format!("{} denied this ({})", d.by, a.approval_id)
            } else {
                d.reason.clone()
            },
        }),
        Decision::Ask | Decision::Expired | Decision::Withdrawn => return None,
    };
    Some(
        serde_json::json!({"hookSpecificOutput": {
            "hookEventName": "PermissionRequest",
            "decision": decision,
        }})
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::approval::Decided;
    use coord_proto::Timestamp;

    fn decided(decision: Decision, reason: &str) -> Approval {
        Approval {
            approval_id: "ap-1".into(),
            session_id: "claude-1".into(),
            agent: "claude".into(),
            tool: "Write".into(),
            summary: "Write a".into(),
            paths: vec![],
            command: None,
            cwd: None,
            tool_use_id: None,
            input_bytes: 0,
            requested_seq: 1,
            requested_at: Timestamp(0),
            decision: Some(Decided {
                decision,
                reason: reason.into(),
                by: "alice".into(),
                via: "socket".into(),
                rule: None,
                decided_seq: 2,
                decided_at: Timestamp(5),
                waited_ms: 5,
            }),
            notified: false,
            input: None,
        }
    }

    #[test]
    fn decisions_in_the_agents_format() {
        let allow: Value =
            serde_json::from_str(&answer(&decided(Decision::Allow, "")).expect("allow"))
                .expect("json");
        assert_eq!(
            allow["hookSpecificOutput"]["hookEventName"],
            "PermissionRequest"
        );
        assert_eq!(allow["hookSpecificOutput"]["decision"]["behavior"], "allow");
        let deny: Value =
            serde_json::from_str(&answer(&decided(Decision::Deny, "use src2/")).expect("deny"))
                .expect("json");
        assert_eq!(deny["hookSpecificOutput"]["decision"]["behavior"], "deny");
        assert_eq!(
            deny["hookSpecificOutput"]["decision"]["message"],
            "use src2/"
        );
        for d in [Decision::Ask, Decision::Expired, Decision::Withdrawn] {
            assert!(
                answer(&decided(d, "")).is_none(),
                "{d:?} leaves it to the terminal"
            );
        }
    }
}
