//! The daemons of a shared log (PROTOCOL §12, docs/DISTRIBUTED.md):
//! their leases, their election, and who is judged lost.
//!
//! Every tick (a third of `--daemon-lease`) a daemon renews `daemon.<id>`
//! in the log's KV bucket, moves the election one step (`election`), and
//! judges the peers that own sessions in its view. A peer is lost only on
//! the cluster's evidence: its lease key, read fresh from the server, kept
//! one revision for a whole lease **while this daemon's own view was
//! continuous** — its own renewals succeeded and it was not paused. A
//! daemon that cannot read a peer's key, cannot renew its own, or has
//! just woken from a pause judges nobody until it has watched for a full
//! lease again; losing a NATS node, a watcher or a few seconds of an
//! election therefore ends no session. A lost peer's sessions end through
//! the writer (`DaemonLost`, guarded by the registration seq), so exactly
//! one `session.dereg` lands per session whoever asks.
//!
//! It must not touch the state except through the writer.

mod election;
mod rpc;

pub use rpc::NatsForward;

use coord_core::Command;
use coord_engine::writer::{internal, Role, WriterHandle};
use coord_store::JetStreamLog;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
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

/// Runs until `stop`: renews this daemon's lease, takes part in the
/// election (its outcome goes to `role`), serves forwarded writes, and
/// ends the sessions of peers the cluster shows lost.
///
/// The renewal runs on its own, with nothing before it that could wait
/// (not the writer, not another read): a daemon whose writer is busy or
/// whose reads hang in a NATS election must still renew on time.
pub async fn run(
    log: JetStreamLog,
    daemon_id: String,
    lease_ms: u64,
    writer: WriterHandle,
    role: watch::Sender<Role>,
    stop: CancellationToken,
) {
    let lease = Duration::from_millis(lease_ms.max(300));
    let tick = lease / 3;
    // Since when this daemon's view of the cluster is continuous: moved
    // by a failed renewal and by a pause, read by the judge and the
    // election.
    let (distrust, trusted) = watch::channel(Instant::now());
    let serving = tokio::spawn(rpc::serve(
        log.clone(),
        daemon_id.clone(),
        writer.clone(),
        stop.clone(),
    ));
    let renewing = tokio::spawn(renew(
        log.clone(),
        daemon_id.clone(),
        lease_ms,
        tick,
        distrust,
        stop.clone(),
    ));
    let mut election = election::Election::new(daemon_id.clone(), lease, role);
    let mut judge = Judge::default();
    let mut next_tick = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next_tick) => {}
        }
        let since = *trusted.borrow();
        election.step(&log, Instant::now(), since).await;
        let since = *trusted.borrow();
        judge.step(&log, &daemon_id, &writer, since, lease).await;
        next_tick = Instant::now() + tick;
    }
    election.resign(&log).await;
    let _ = renewing.await;
    let _ = serving.await;
}

/// Renews `daemon.<id>` every `tick` (a failure: again after [`RETRY`]),
/// each put bounded by a tick so a hung request cannot delay the next.
/// A failed renewal or a late wake-up (this process was paused or
/// starved) moves `distrust` to now.
async fn renew(
    log: JetStreamLog,
    daemon_id: String,
    lease_ms: u64,
    tick: Duration,
    distrust: watch::Sender<Instant>,
    stop: CancellationToken,
) {
    let value = serde_json::json!({
        "pid": std::process::id(),
        "lease_ms": lease_ms,
    })
    .to_string()
    .into_bytes();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let late = Instant::now().saturating_duration_since(next);
        if late > tick {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "woke up late (paused?); judging no peer for a lease"
            );
            distrust.send_replace(Instant::now());
        }
        let put = tokio::time::timeout(tick, log.put_daemon_lease(&daemon_id, value.clone())).await;
        let renewed = match put {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "daemon lease not renewed; judging no peer until it is");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = tick.as_millis() as u64,
                    "daemon lease renewal unanswered; judging no peer until it is"
                );
                false
            }
        };
        if !renewed {
            distrust.send_replace(Instant::now());
        }
        // A failed renewal is retried soon: a NATS leader election takes
        // a few seconds, and peers must not see this daemon go quiet.
        next = Instant::now() + if renewed { tick } else { RETRY.min(tick) };
    }
}

/// How soon a failed lease renewal is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// The peers this daemon has judged: each one's lease revision and since
/// when it has held it.
#[derive(Default)]
struct Judge {
    seen: HashMap<String, (Option<u64>, Instant)>,
}

impl Judge {
    /// Reads the lease of every peer that owns sessions here and ends the
    /// sessions of each whose revision did not move for a lease of
    /// trusted time.
    async fn step(
        &mut self,
        log: &JetStreamLog,
        me: &str,
        writer: &WriterHandle,
        trusted_since: Instant,
        lease: Duration,
    ) {
        let me_owned = me.to_string();
        let owners: HashSet<String> = writer
            .read(move |s| {
                s.view
                    .sessions
                    .values()
                    .filter_map(|x| x.daemon.clone())
                    .filter(|d| *d != me_owned)
                    .collect()
            })
            .await
            .unwrap_or_default();
        self.seen.retain(|d, _| owners.contains(d));
        for d in owners {
            let read = tokio::time::timeout(lease / 3, log.daemon_lease_revision(&d)).await;
            // The time of the evidence: after the read, never before it.
            let now = Instant::now();
            let rev = match read
                .unwrap_or_else(|_| Err(coord_store::StoreError::Unavailable("no answer".into())))
            {
                Ok(r) => r,
                Err(e) => {
                    // No evidence either way: unknown, nothing ends.
                    tracing::debug!(daemon = %d, error = %e, "cannot read a peer's lease");
                    continue;
                }
            };
            let entry = self.seen.entry(d.clone()).or_insert((rev, now));
            if entry.0 != rev {
                *entry = (rev, now);
                continue;
            }
            let quiet = now.duration_since(entry.1.max(trusted_since));
            if quiet >= lease {
                tracing::warn!(daemon = %d, quiet_ms = quiet.as_millis() as u64, revision = ?rev, "a peer's lease did not move for a whole lease");
                end_sessions_of(writer, &d).await;
                entry.1 = now;
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
