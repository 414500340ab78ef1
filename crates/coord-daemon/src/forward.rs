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

use crate::hub::Hub;
use crate::writer::WriterHandle;
use bytes::Bytes;
use coord_proto::api::ReportRequest;
use coord_proto::{Event, Payload, PROTOCOL_VERSION};
use coord_store::EventLog;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest one delivery may take (connect, send, answer).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Follows the log from its current head until shutdown, forwarding
/// reports whose parent is not a local session.
pub async fn run<L: EventLog + Clone>(
    parent: PathBuf,
    writer: WriterHandle,
    store: L,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(parent = %parent.display(), "forwarding reports of top-level sessions");
    let mut head = hub.watch();
    let mut cursor = hub.head();
    let mut failing = false;
    loop {
        tokio::select! {
            r = head.changed() => if r.is_err() { return },
            _ = crate::until_shutdown(&mut shutdown) => return,
        }
        loop {
            let upto = hub.head();
            let batch = match hub.read_after(&store, cursor, upto).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = ?e, "forwarder cannot read the log; skipping to the head");
                    cursor = upto;
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            for p in batch {
                cursor = p.event.seq;
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
                match deliver(&parent, &p.event).await {
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
}

/// Posts one report event to the parent daemon.
async fn deliver(parent: &Path, e: &Event) -> Result<(), String> {
    let Payload::SessionReport(r) = &e.payload else {
        return Ok(());
    };
    let child = e.session_id.as_deref().unwrap_or_default();
    let body = serde_json::to_vec(&ReportRequest {
        parent_session: Some(r.parent_session.clone()),
        report: r.report.clone(),
        tx_id: Some(e.tx_id),
        ts: Some(e.ts),
    })
    .map_err(|err| err.to_string())?;
    let path = format!("/v1/sessions/{child}/report");
    let (status, answer) = tokio::time::timeout(DELIVERY_TIMEOUT, post(parent, &path, body))
        .await
        .map_err(|_| format!("no answer within {} ms", DELIVERY_TIMEOUT.as_millis()))??;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("parent answered {status}: {answer}"))
    }
}

async fn post(socket: &Path, path: &str, body: Vec<u8>) -> Result<(u16, String), String> {
    let mut token_path = socket.as_os_str().to_owned();
    token_path.push(".admin-token");
    let admin = std::fs::read_to_string(&token_path)
        .map_err(|e| format!("reading the parent's admin token: {e}"))?;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, "coord")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("coord-protocol", PROTOCOL_VERSION.to_string())
        .header("coord-admin-token", admin.trim())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
