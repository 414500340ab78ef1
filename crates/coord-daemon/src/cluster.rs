//! Daemon leases on a shared log (PROTOCOL §12, docs/DISTRIBUTED.md).
//!
//! Each daemon of a NATS JetStream log renews `daemon.<id>` in the log's KV
//! bucket every third of its lease and watches everyone else's. A daemon
//! whose lease is not renewed for `daemon_lease_ms` (as this daemon's clock
//! sees the updates arrive) is gone: this daemon then asks its writer to
//! end every session registered with it (`DaemonLost`, guarded by the
//! registration seq), so their locks pass to the next waiters wherever
//! those are. Every survivor asks; the shared log's conditional appends and
//! the guard make exactly one of them end each session.
//!
//! No polling: one timer for the own renewal and one deadline per peer,
//! moved by the KV watch. It must not touch the state except through the
//! writer.

use coord_core::Command;
use coord_engine::deadline::Deadlines;
use coord_engine::writer::{internal, WriterHandle};
use coord_store::JetStreamLog;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A daemon id from the host name and the socket path: stable across
/// restarts of the same daemon, distinct for two daemons on one host.
pub fn default_daemon_id(socket: &std::path::Path) -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let digest = sha2::Sha256::digest(socket.as_os_str().as_encoded_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{short}")
}

/// Runs until `stop`: renews this daemon's lease and ends the sessions of
/// peers whose leases ran out.
pub async fn run(
    log: JetStreamLog,
    daemon_id: String,
    lease_ms: u64,
    writer: WriterHandle,
    stop: CancellationToken,
) {
    let lease = Duration::from_millis(lease_ms.max(300));
    let renew_every = lease / 3;
    let value = serde_json::json!({
        "pid": std::process::id(),
        "lease_ms": lease_ms,
    })
    .to_string()
    .into_bytes();
    let mut peers: Deadlines<Instant, String> = Deadlines::default();
    // Peers that own sessions in the view but have not renewed since this
    // daemon started get one full lease from now to show up.
    let me = daemon_id.clone();
    let owners: HashSet<String> = writer
        .read(move |s| {
            s.view
                .sessions
                .values()
                .filter_map(|x| x.daemon.clone())
                .filter(|d| *d != me)
                .collect()
        })
        .await
        .unwrap_or_default();
    for d in owners {
        peers.set(d, Instant::now() + lease);
    }
    let mut renew_at = Instant::now();
    tracing::debug!(peers = peers.next().is_some(), "daemon lease task started");
    loop {
        let watch = match log.daemon_leases().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch daemon leases; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut watch = std::pin::pin!(watch);
        loop {
            let next_peer = peers.next();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(renew_at) => {
                    match log.put_daemon_lease(&daemon_id, value.clone()).await {
                        Ok(()) => tracing::trace!("daemon lease renewed"),
                        Err(e) => tracing::warn!(error = %e, "daemon lease not renewed"),
                    }
                    renew_at = Instant::now() + renew_every;
                }
                _ = coord_engine::deadline::sleep_until(next_peer), if next_peer.is_some() => {
                    for gone in peers.pop_due(Instant::now(), usize::MAX) {
                        end_sessions_of(&writer, &gone).await;
                    }
                }
                update = watch.next() => match update {
                    Some((id, Some(_))) if id != daemon_id => {
                        tracing::trace!(daemon = %id, "peer renewed its lease");
                        peers.set(id, Instant::now() + lease);
                    }
                    Some(_) => {}
                    None => {
                        tracing::debug!("daemon lease watch ended; watching again");
                        break;
                    }
                },
            }
        }
    }
}

/// Asks the writer to end every session registered with `daemon`.
async fn end_sessions_of(writer: &WriterHandle, daemon: &str) {
    let d = daemon.to_string();
    let sessions: Vec<(String, u64)> = writer
        .read(move |s| {
            s.view
                .sessions
                .values()
                .filter(|x| x.daemon.as_deref() == Some(d.as_str()))
                .map(|x| (x.session_id.clone(), x.registered_seq))
                .collect()
        })
        .await
        .unwrap_or_default();
    if !sessions.is_empty() {
        tracing::warn!(
            daemon,
            sessions = sessions.len(),
            "daemon lease ran out; ending its sessions"
        );
    }
    for (session_id, registered_seq) in sessions {
        writer.spawn_write(internal(Command::DaemonLost {
            session_id,
            registered_seq,
        }));
    }
}
