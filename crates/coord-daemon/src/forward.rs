//! `--parent-socket`: the reports of this daemon's top-level sessions (a
//! `session.report` whose parent is not a session here) are sent on to a
//! parent daemon, fire-and-forget.
//!
//! The forwarder follows the log like any subscriber, so a child never
//! waits for it: its report is committed here first, and a parent that is
//! down costs a warning, never a blocked write. Each report is posted with
//! the tx_id of its event as the idempotency key, so a repeated delivery
//! appends nothing on the parent. Nothing is queued or retried beyond one
//! attempt: the session list and lease expiry remain the real fallback.

use coord_client::Client;
use coord_engine::hub::{Hub, LogCursor};
use coord_engine::writer::WriterHandle;
use coord_proto::api::ReportRequest;
use coord_proto::{Event, Payload};
use coord_store::EventLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest one delivery may take (connect, send, answer).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Follows the log from its current head until shutdown, forwarding
/// reports whose parent is not a local session.
pub async fn run<L: EventLog + Clone>(
    parent: PathBuf,
    writer: WriterHandle,
    store: L,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    tracing::info!(parent = %parent.display(), "forwarding reports of top-level sessions");
    let client = Client::new(&parent);
    let mut log = LogCursor::new(&hub, store, hub.head());
    let mut failing = false;
    loop {
        let batch = tokio::select! {
            r = log.next() => r,
            _ = shutdown.cancelled() => return,
        };
        let batch = match batch {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = ?e, "forwarder cannot read the log; skipping to the head");
                log.seek(hub.head());
                continue;
            }
        };
        for p in batch {
            let Payload::SessionReport(r) = &p.event.payload else {
                continue;
            };
            let parent_id = r.parent_session.clone();
            let local = writer
                .read(move |s| s.view.sessions.contains_key(&parent_id))
                .await
                .unwrap_or(true);
            if local {
                continue;
            }
            match deliver(&client, &p.event).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(parent = %parent.display(), "parent daemon answers again");
                    }
                    failing = false;
                }
                Err(e) => {
                    // One warning per outage, not one per report.
                    if !failing {
                        tracing::warn!(parent = %parent.display(), error = %e, "cannot forward a report to the parent daemon; reports are dropped until it answers");
                    } else {
                        tracing::debug!(error = %e, "report not forwarded");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// Posts one report event to the parent daemon with its admin token.
async fn deliver(parent: &Client, e: &Event) -> Result<(), String> {
    let Payload::SessionReport(r) = &e.payload else {
        return Ok(());
    };
    let child = e.session_id.as_deref().unwrap_or_default();
    let token_path = coord_client::admin_token_path(parent.socket());
    let admin = std::fs::read_to_string(&token_path).map_err(|err| {
        format!(
            "reading the parent's admin token {}: {err}",
            token_path.display()
        )
    })?;
    let client = parent
        .clone()
        .with_admin_token(Some(admin.trim().to_string()));
    let req = ReportRequest {
        parent_session: Some(r.parent_session.clone()),
        report: r.report.clone(),
        tx_id: Some(e.tx_id),
        ts: Some(e.ts),
    };
    tokio::time::timeout(DELIVERY_TIMEOUT, client.report(child, &req))
        .await
        .map_err(|_| format!("no answer within {} ms", DELIVERY_TIMEOUT.as_millis()))?
        .map(|_| ())
        .map_err(|err| err.to_string())
}
