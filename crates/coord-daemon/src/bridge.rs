//! The legacy bridge: changes of a legacy coord root become commands.
//!
//! A `coord_legacy::Feed` (inotify or polling) reports what changed in the
//! root; each change becomes one command with source `fs-watch` or
//! `fs-poll`: session files register, renew (every heartbeat is logged, as
//! the legacy poller did) and end sessions; lock records take and release
//! locks; new message files are deliveries and deleted ones acks; order
//! files issue dispatch orders.
//!
//! Restart: the feed is seeded with what the log already says about
//! bridged sessions (and the locks they hold), so a restarted daemon
//! registers nothing twice and notices files removed while it was down.
//! Messages and orders are not seeded: a re-seen one is refused by the
//! state machine (`message_exists`, `order_exists`) and skipped.
//!
//! Bridged sessions have no token and their pid is not watched (the file
//! may come from another machine); their lease is `--legacy-ttl`.

use crate::observed::Observed;
use coord_core::Command;
use coord_engine::writer::{Extras, Write, WriterHandle};
use coord_legacy::layout::{encode_resource, LockFile, Root, SessionFile};
use coord_legacy::{Change, Feed};
use coord_proto::view::View;
use coord_proto::{DeregReason, ErrorCode, Payload, Timestamp};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the bridge learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegacyMode {
    /// inotify (falls back to polling if watching is impossible).
    #[default]
    Watch,
    /// Rescan on an interval.
    Poll,
}

impl LegacyMode {
    /// The source name of the events it produces.
    pub fn source(self) -> &'static str {
        match self {
            LegacyMode::Watch => "fs-watch",
            LegacyMode::Poll => "fs-poll",
        }
    }
}

impl std::str::FromStr for LegacyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "watch" => Ok(LegacyMode::Watch),
            "poll" => Ok(LegacyMode::Poll),
            other => Err(format!("legacy mode {other:?}: expected watch or poll")),
        }
    }
}

/// Bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The root to read.
    pub root: PathBuf,
    /// Watch or poll.
    pub mode: LegacyMode,
    /// Rescan interval when polling (or when watching is impossible).
    pub poll_interval: Duration,
    /// Lease of bridged sessions, ms.
    pub ttl_ms: u64,
}

/// True for the sources the bridge writes with.
pub fn is_bridged(source: &str) -> bool {
    source == "fs-watch" || source == "fs-poll"
}

/// What the log already knows about the root: bridged sessions and the
/// locks they hold, as the files that would have produced them.
fn seed(view: &View) -> Root {
    let mut root = Root::default();
    for s in view.sessions.values().filter(|s| is_bridged(&s.source)) {
        root.sessions.insert(
            s.session_id.clone(),
            SessionFile {
                session_id: s.session_id.clone(),
                role: s.role.clone(),
                task: s.task.clone(),
                blob: s.blob.clone(),
                phase: s.phase.clone(),
                pid: s.pid,
                started_at: Some(s.registered_at),
                last_heartbeat: Some(s.last_heartbeat),
                extra: Default::default(),
            },
        );
    }
    for lock in view.locks.values() {
        for h in &lock.holders {
            if root.sessions.contains_key(&h.session_id) {
                root.locks.insert(
                    encode_resource(&lock.resource),
                    LockFile {
                        resource: lock.resource.clone(),
                        owner_session: h.session_id.clone(),
                        acquired_at: Some(h.acquired_at),
                        extra: Default::default(),
                    },
                );
            }
        }
    }
    root
}

/// The command a change means, with its extras.
fn command(change: Change, ttl_ms: u64) -> Option<(Command, Extras)> {
    let session = change.draft.session_id.clone().unwrap_or_default();
    let mut extras = Extras::default();
    let cmd = match change.draft.payload {
        Payload::SessionRegister(p) => Command::Register {
            session_id: session,
            role: p.role,
            task: p.task,
            blob: p.blob,
            phase: p.phase,
            pid: p.pid,
            parent_session: p.parent_session,
            ttl_ms,
            probes: Default::default(),
            expiry: Default::default(),
            extra: p.extra,
        },
        Payload::SessionHeartbeat(p) => Command::Heartbeat {
            session_id: session,
            phase: Some(p.phase),
            at: p.last_heartbeat,
            log_always: true,
            reported: p.reported,
        },
        Payload::SessionDereg(_) => Command::Dereg {
            session_id: session,
            reason: DeregReason::Removed,
            exit_code: None,
        },
        Payload::LockAcquire(p) => Command::Acquire {
            session_id: p.owner_session,
            resource: p.resource,
            mode: p.mode,
            ttl_ms: None,
            wait: false,
            extra: p.extra,
        },
        Payload::LockRelease(p) => Command::Release {
            session_id: p.owner_session,
            resource: p.resource,
            force: false,
        },
        Payload::InboxDeliver(p) => {
            extras.body = change.body;
            Command::Deliver {
                to_session: p.to_session,
                msg_id: p.msg_id,
                kind: p.kind,
                from_session: p.from_session,
                size: p.size,
                extra: p.extra,
            }
        }
        Payload::InboxAck(p) => Command::AckMessage {
            session_id: p.to_session,
            msg_id: p.msg_id,
        },
        Payload::DispatchIssue(p) => Command::Issue {
            order_id: p.order_id,
            assignee: p.assignee,
            ticket: p.ticket,
            from_session: p.from_session,
            payload: p.payload,
            extra: p.extra,
        },
        _ => return None,
    };
    Some((cmd, extras))
}

/// True if the change is about a live session that did not come from a
/// legacy root (its file can only be an export of it).
async fn foreign(writer: &WriterHandle, change: &Change) -> bool {
    let owner = match &change.draft.payload {
        Payload::SessionRegister(_) | Payload::SessionHeartbeat(_) | Payload::SessionDereg(_) => {
            change.draft.session_id.clone()
        }
        Payload::LockAcquire(p) => Some(p.owner_session.clone()),
        Payload::LockRelease(p) => Some(p.owner_session.clone()),
        _ => None,
    };
    let Some(owner) = owner else { return false };
    writer
        .read(move |s| {
            s.view
                .sessions
                .get(&owner)
                .is_some_and(|x| !is_bridged(&x.source))
        })
        .await
        .unwrap_or(false)
}

/// Runs the bridge until `shutdown` is cancelled.
pub async fn run(
    config: BridgeConfig,
    writer: WriterHandle,
    shutdown: CancellationToken,
    observed: Arc<Observed>,
) {
    let source = config.mode.source();
    let known = match writer.read(|s| seed(&s.view)).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "legacy bridge cannot read the view; not started");
            return;
        }
    };
    tracing::info!(root = %config.root.display(), source, seeded_sessions = known.sessions.len(), "legacy bridge started");
    let feed = match config.mode {
        LegacyMode::Watch => Feed::watching(&config.root),
        LegacyMode::Poll => Feed::polling(&config.root),
    };
    let mut feed = feed
        .with_known(known)
        .with_poll_interval(config.poll_interval);
    observed.bridge(|b| {
        b.root = config.root.display().to_string();
        b.mode = source.trim_start_matches("fs-").to_string();
    });
    loop {
        let next = tokio::select! {
            r = feed.next() => r,
            _ = shutdown.cancelled() => break,
        };
        let changes = match next {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "legacy scan failed; retrying");
                let msg = format!("scan failed: {e}");
                observed.bridge(|b| {
                    b.last_error = Some(msg);
                    b.last_error_at = Some(crate::observed::now());
                });
                Vec::new()
            }
        };
        let fallback = feed.is_fallback();
        let seen = changes.len() as u64;
        let skipped = feed.skipped();
        observed.bridge(|b| {
            b.skipped_malformed = skipped;
            if fallback {
                b.mode = "polling fallback".into();
                b.fallback_reason =
                    Some("the root could not be watched (inotify); see the daemon log".into());
            }
            b.changes_seen += seen;
            b.batches += u64::from(seen > 0);
        });
        let idle = changes.is_empty();
        // A session file and its lock records that vanish in one scan mean
        // "released, then gone": deregistrations go last, so the locks are
        // released for what they were (`released`, not `owner_gone`).
        let (deregs, mut changes): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| matches!(c.draft.payload, Payload::SessionDereg(_)));
        changes.extend(deregs);
        for change in changes {
            if foreign(&writer, &change).await {
                // The file is an export of a session that lives in the log
                // (an API session): importing it would feed the export back.
                continue;
            }
            let ts = change.ts.unwrap_or_else(Timestamp::now);
            let (about_session, about_resource) = (
                change.draft.session_id.clone().unwrap_or_default(),
                change.draft.resource.clone().unwrap_or_default(),
            );
            let Some((cmd, extras)) = command(change, config.ttl_ms) else {
                continue;
            };
            let w = Write {
                cmd,
                source: source.to_string(),
                tx_id: None,
                digest: None,
                ts,
                extras,
                reply: None,
            };
            let written = writer.write(w).await;
            if written.is_ok() {
                observed.bridge(|b| b.imports += 1);
            }
            if let Err(e) = written {
                let expected = matches!(
                    e.code(),
                    ErrorCode::SessionExists
                        | ErrorCode::MessageExists
                        | ErrorCode::OrderExists
                        | ErrorCode::LockNotHeld
                        | ErrorCode::SessionNotFound
                        | ErrorCode::MessageNotFound
                );
                if expected {
                    tracing::debug!(session_id = %about_session, resource = %about_resource, code = %e.code(), message = %e, "legacy change already applied or moot");
                } else {
                    tracing::warn!(session_id = %about_session, resource = %about_resource, code = %e.code(), message = %e, "legacy change refused");
                    let msg = format!("change refused: {e}");
                    observed.bridge(|b| {
                        b.last_error = Some(msg);
                        b.last_error_at = Some(crate::observed::now());
                    });
                }
            }
        }
        if idle && config.mode == LegacyMode::Poll {
            tokio::select! {
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    tracing::info!("legacy bridge stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_name_their_source() {
        assert_eq!("watch".parse::<LegacyMode>(), Ok(LegacyMode::Watch));
        assert_eq!(
            "poll".parse::<LegacyMode>().map(LegacyMode::source),
            Ok("fs-poll")
        );
        assert!("inotify".parse::<LegacyMode>().is_err());
    }
}
